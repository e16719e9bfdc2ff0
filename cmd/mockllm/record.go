package main

import (
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// maxRecordedBody caps the body kept per recorded request, so a ring of
// --record entries stays bounded even when a test posts huge bodies.
const maxRecordedBody = 1 << 20

// entry is one recorded request as GET /debug/requests shows it.
type entry struct {
	Seq           uint64            `json:"seq"`
	Time          time.Time         `json:"time"` // arrival; JSON is RFC 3339 with nanoseconds
	Method        string            `json:"method"`
	Path          string            `json:"path"`
	Headers       map[string]string `json:"headers"` // first value of each header, as received
	Body          string            `json:"body"`
	BodyTruncated bool              `json:"body_truncated,omitempty"`
	Model         string            `json:"model"` // without the @fault suffix
	Fault         string            `json:"fault,omitempty"`
	Stream        bool              `json:"stream"`
	InFlight      bool              `json:"in_flight"`
	Status        int               `json:"status"` // 0: no status line was sent
	Completed     bool              `json:"completed"`
	ClientClosed  bool              `json:"client_closed"`
	ClosedAfterMS float64           `json:"closed_after_ms"`
	DurationMS    float64           `json:"duration_ms"`
}

// outcome is what finish learns about a request once its handler is done.
type outcome struct {
	status       int
	completed    bool
	clientClosed bool
	closedAfter  time.Duration
	duration     time.Duration
}

// recorder keeps the newest entries in a fixed ring plus running totals. One
// mutex guards everything: it is taken twice per request for a few
// nanoseconds each, far below the cost of serving the request.
type recorder struct {
	mu           sync.Mutex
	ring         []entry // slot (seq-1)%len(ring); preallocated, so recording allocates nothing itself
	seq          uint64  // last assigned
	first        uint64  // oldest seq still eligible after the last clear
	total        uint64
	clientClosed uint64
	inFlight     int64
	byPath       map[string]uint64
}

func newRecorder(size int) *recorder {
	return &recorder{ring: make([]entry, size), first: 1, byPath: map[string]uint64{}}
}

// begin stores e (its Seq is assigned here) and returns the seq that finish
// needs.
func (rc *recorder) begin(e entry, statsPath string) uint64 {
	rc.mu.Lock()
	rc.seq++
	e.Seq = rc.seq
	e.InFlight = true
	rc.total++
	rc.inFlight++
	rc.byPath[statsPath]++
	if len(rc.ring) > 0 {
		rc.ring[(e.Seq-1)%uint64(len(rc.ring))] = e
	}
	rc.mu.Unlock()
	return e.Seq
}

func (rc *recorder) finish(seq uint64, o outcome) {
	rc.mu.Lock()
	rc.inFlight--
	if o.clientClosed {
		rc.clientClosed++
	}
	if len(rc.ring) > 0 {
		// The slot may already hold a newer request (ring wrapped) or be
		// cleared; then this one is simply no longer recorded.
		if e := &rc.ring[(seq-1)%uint64(len(rc.ring))]; e.Seq == seq {
			e.InFlight = false
			e.Status = o.status
			e.Completed = o.completed
			e.ClientClosed = o.clientClosed
			if o.clientClosed {
				e.ClosedAfterMS = ms(o.closedAfter)
			}
			e.DurationMS = ms(o.duration)
		}
	}
	rc.mu.Unlock()
}

// snapshot returns the kept entries with seq > since, oldest first.
func (rc *recorder) snapshot(since uint64, path string) []entry {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := []entry{}
	n := uint64(len(rc.ring))
	if n == 0 {
		return out
	}
	lo := rc.first
	if rc.seq >= n && rc.seq-n+1 > lo {
		lo = rc.seq - n + 1
	}
	if since+1 > lo {
		lo = since + 1
	}
	for s := lo; s <= rc.seq; s++ {
		e := rc.ring[(s-1)%n]
		if e.Seq != s || (path != "" && e.Path != path) {
			continue
		}
		out = append(out, e)
	}
	return out
}

// clear forgets recorded entries and totals; in-flight requests are still
// counted in in_flight until they finish.
func (rc *recorder) clear() {
	rc.mu.Lock()
	clear(rc.ring)
	rc.first = rc.seq + 1
	rc.total = 0
	rc.clientClosed = 0
	rc.byPath = map[string]uint64{}
	rc.mu.Unlock()
}

type stats struct {
	Total        uint64            `json:"total"`
	InFlight     int64             `json:"in_flight"`
	ClientClosed uint64            `json:"client_closed"`
	ByPath       map[string]uint64 `json:"by_path"`
}

func (rc *recorder) stats() stats {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	st := stats{Total: rc.total, InFlight: rc.inFlight, ClientClosed: rc.clientClosed, ByPath: make(map[string]uint64, len(rc.byPath))}
	for k, v := range rc.byPath {
		st.ByPath[k] = v
	}
	return st
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// serveDebug answers /debug/*; these requests are not recorded so that
// polling them does not disturb what a test asserts.
func (s *server) serveDebug(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/debug/requests" && r.Method == http.MethodGet:
		q := r.URL.Query()
		var since uint64
		if v := q.Get("since"); v != "" {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				writeError(w, http.StatusBadRequest, "invalid_request_error", "", "since must be a sequence number")
				return
			}
			since = n
		}
		writeJSON(w, map[string][]entry{"requests": s.rec.snapshot(since, q.Get("path"))})
	case r.URL.Path == "/debug/requests" && r.Method == http.MethodDelete:
		s.rec.clear()
		s.resetFailFirst()
		w.WriteHeader(http.StatusNoContent)
	case r.URL.Path == "/debug/stats" && r.Method == http.MethodGet:
		writeJSON(w, s.rec.stats())
	case r.URL.Path == "/debug/requests" || r.URL.Path == "/debug/stats":
		writeError(w, http.StatusMethodNotAllowed, "invalid_request_error", "", "method "+r.Method+" not allowed on "+r.URL.Path)
	default:
		writeError(w, http.StatusNotFound, "invalid_request_error", "unknown_url", "unknown debug endpoint "+r.URL.Path)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "server_error", "", "encode: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}
