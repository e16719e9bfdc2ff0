package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// Helpers of the coordination tests: reading the lease and worker rows straight from the
// database, sampling them, a bounded load generator that remembers the request ids it saw
// completed, and a probe of SQLite's WAL write lock.

// fastCoordination are timings that make failover observable in seconds instead of the
// production 30 s; each test overrides what it measures.
func fastCoordination(extra map[string]string) map[string]string {
	env := map[string]string{
		"LLM_PROXY_HEARTBEAT_INTERVAL": "1s",
		"LLM_PROXY_FAILOVER_TIMEOUT":   "5s",
		"LLM_PROXY_WATCHDOG_TIMEOUT":   "2s",
		"LLM_PROXY_SHUTDOWN_TIMEOUT":   "10s",
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

// leaseRow is the leader row.
type leaseRow struct {
	Holder   string
	PID      int
	Epoch    int64
	RenewSeq int64
}

// workerRow is the part of a workers row the tests check.
type workerRow struct {
	ID   string
	PID  int
	Role string
}

// snapshot is the lease and the worker rows read in one read transaction.
type snapshot struct {
	at      time.Time
	lease   leaseRow
	workers []workerRow
}

// primaries returns the worker rows whose role is primary.
func (s snapshot) primaries() []workerRow {
	var out []workerRow
	for _, w := range s.workers {
		if w.Role == "primary" {
			out = append(out, w)
		}
	}
	return out
}

func (s snapshot) role(pid int) string {
	for _, w := range s.workers {
		if w.PID == pid {
			return w.Role
		}
	}
	return ""
}

// openDB opens a read-only connection to the gateway's database for the test's lifetime.
func (g *gateway) openDB(t *testing.T) *sqlite.Conn {
	t.Helper()
	conn, err := sqlite.OpenConn(g.dbPath, sqlite.OpenReadOnly)
	if err != nil {
		t.Fatalf("open %s: %v", g.dbPath, err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := sqlitex.ExecuteTransient(conn, "PRAGMA busy_timeout = 5000;", nil); err != nil {
		t.Fatalf("busy_timeout: %v", err)
	}
	return conn
}

// readSnapshot reads the lease and the workers in one transaction, so both belong to the
// same moment.
func readSnapshot(conn *sqlite.Conn) (s snapshot, err error) {
	if err := sqlitex.ExecuteTransient(conn, "BEGIN", nil); err != nil {
		return s, err
	}
	defer func() {
		if rerr := sqlitex.ExecuteTransient(conn, "ROLLBACK", nil); err == nil {
			err = rerr
		}
	}()
	s.at = time.Now()
	err = sqlitex.ExecuteTransient(conn, "SELECT holder, pid, epoch, renew_seq FROM leader WHERE id = 1", &sqlitex.ExecOptions{
		ResultFunc: func(st *sqlite.Stmt) error {
			s.lease = leaseRow{Holder: st.ColumnText(0), PID: st.ColumnInt(1), Epoch: st.ColumnInt64(2), RenewSeq: st.ColumnInt64(3)}
			return nil
		}})
	if err != nil {
		return s, err
	}
	err = sqlitex.ExecuteTransient(conn, "SELECT id, pid, role FROM workers ORDER BY id", &sqlitex.ExecOptions{
		ResultFunc: func(st *sqlite.Stmt) error {
			s.workers = append(s.workers, workerRow{ID: st.ColumnText(0), PID: st.ColumnInt(1), Role: st.ColumnText(2)})
			return nil
		}})
	return s, err
}

// sampler reads a snapshot every 100 ms until stopped.
type sampler struct {
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	samples []snapshot
	errs    int
}

func (g *gateway) startSampler(t *testing.T) *sampler {
	t.Helper()
	conn := g.openDB(t)
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			snap, err := readSnapshot(conn)
			s.mu.Lock()
			if err != nil {
				s.errs++
			} else {
				s.samples = append(s.samples, snap)
			}
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(s.halt)
	return s
}

// halt stops sampling (idempotent) and waits for the goroutine.
func (s *sampler) halt() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

// last returns the newest sample.
func (s *sampler) last() (snapshot, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.samples) == 0 {
		return snapshot{}, false
	}
	return s.samples[len(s.samples)-1], true
}

// all returns a copy of every sample so far.
func (s *sampler) all() []snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]snapshot(nil), s.samples...)
}

// waitFor polls the samples until cond holds for the newest one and returns it.
func (s *sampler) waitFor(t *testing.T, within time.Duration, what string, cond func(snapshot) bool) snapshot {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if snap, ok := s.last(); ok && cond(snap) {
			return snap
		}
		if time.Now().After(deadline) {
			snap, _ := s.last()
			t.Fatalf("%s: not within %s; last sample %+v", what, within, snap)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkOnePrimary asserts the safety invariants over every sample: never two worker rows
// that call themselves primary, the epoch never goes back, and one epoch is only ever held
// by one worker (a new holder means a new epoch). It returns the distinct holders in order.
func (s *sampler) checkOnePrimary(t *testing.T) []leaseRow {
	t.Helper()
	samples := s.all()
	if len(samples) < 10 {
		t.Errorf("only %d lease samples (%d read errors); the sampler did not run", len(samples), s.errs)
	}
	holderOf := map[int64]string{}
	var terms []leaseRow
	var prev leaseRow
	for i, sn := range samples {
		if p := sn.primaries(); len(p) > 1 {
			t.Errorf("sample %d (%s): %d workers claim the primary role: %+v (lease %+v)", i, sn.at.Format("15:04:05.000"), len(p), p, sn.lease)
		}
		l := sn.lease
		if l.Epoch < prev.Epoch {
			t.Errorf("sample %d: epoch went back from %d to %d", i, prev.Epoch, l.Epoch)
		}
		if l.Holder != "" {
			if h, ok := holderOf[l.Epoch]; ok && h != l.Holder {
				t.Errorf("sample %d: epoch %d held by %s and then by %s", i, l.Epoch, h, l.Holder)
			}
			if _, ok := holderOf[l.Epoch]; !ok {
				holderOf[l.Epoch] = l.Holder
				terms = append(terms, l)
			}
		}
		prev = l
	}
	return terms
}

// statusJSON is the part of `llm-proxy status` the tests read.
type statusJSON struct {
	Workers []struct {
		ID      string          `json:"id"`
		PID     int             `json:"pid"`
		Role    string          `json:"role"`
		BeatAge float64         `json:"last_beat_age_seconds"`
		Stats   json.RawMessage `json:"stats"`
	} `json:"workers"`
	Primary struct {
		Holder string `json:"holder"`
		PID    int    `json:"pid"`
		Epoch  int64  `json:"epoch"`
	} `json:"primary"`
}

// status runs `llm-proxy status` from another process, as an operator would.
func (g *gateway) status(t *testing.T) statusJSON {
	t.Helper()
	out := g.cli(t, "status")
	var s statusJSON
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("llm-proxy status: %v\n%s", err, out)
	}
	return s
}

// requestIDs returns every request_id in request_logs.
func (g *gateway) requestIDs(t *testing.T) map[string]bool {
	t.Helper()
	conn := g.openDB(t)
	ids := map[string]bool{}
	err := sqlitex.Execute(conn, "SELECT request_id FROM request_logs", &sqlitex.ExecOptions{
		ResultFunc: func(st *sqlite.Stmt) error {
			ids[st.ColumnText(0)] = true
			return nil
		}})
	if err != nil {
		t.Fatalf("read request_logs: %v", err)
	}
	return ids
}

// countRows returns the number of request_logs rows.
func countRows(conn *sqlite.Conn) (int64, error) {
	var n int64
	err := sqlitex.ExecuteTransient(conn, "SELECT count(*) FROM request_logs", &sqlitex.ExecOptions{
		ResultFunc: func(st *sqlite.Stmt) error { n = st.ColumnInt64(0); return nil }})
	return n, err
}

// integrityCheck runs PRAGMA integrity_check on a fresh connection and returns its answer.
func (g *gateway) integrityCheck(t *testing.T) string {
	t.Helper()
	conn, err := sqlite.OpenConn(g.dbPath, sqlite.OpenReadOnly)
	if err != nil {
		t.Fatalf("open %s: %v", g.dbPath, err)
	}
	defer conn.Close()
	var lines []string
	err = sqlitex.ExecuteTransient(conn, "PRAGMA integrity_check", &sqlitex.ExecOptions{
		ResultFunc: func(st *sqlite.Stmt) error { lines = append(lines, st.ColumnText(0)); return nil }})
	if err != nil {
		t.Fatalf("integrity_check: %v", err)
	}
	return strings.Join(lines, "; ")
}

// stopGracefully sends SIGTERM to the supervisor and waits for a clean exit; the
// supervisor ingests every spool after its workers are gone.
func (g *gateway) stopGracefully(t *testing.T) {
	t.Helper()
	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM the supervisor: %v", err)
	}
	select {
	case <-g.exited:
		if g.exitErr != nil {
			t.Errorf("supervisor exit after SIGTERM: %v, want status 0", g.exitErr)
		}
	case <-time.After(stopTimeout + 10*time.Second):
		t.Fatalf("supervisor still runs %s after SIGTERM", stopTimeout+10*time.Second)
	}
}

// logLines returns the lines of logs/<name> that contain every one of subs.
func (g *gateway) logLines(t *testing.T, name string, subs ...string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(g.logDir, name))
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	var out []string
next:
	for _, line := range strings.Split(string(b), "\n") {
		for _, s := range subs {
			if !strings.Contains(line, s) {
				continue next
			}
		}
		out = append(out, line)
	}
	return out
}

// continueOnCleanup makes sure a process the test stopped with SIGSTOP is continued (or
// gone) before the gateway's own cleanup drains it.
func continueOnCleanup(t *testing.T, pid int) {
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
}

// ---- load ----

const chatBody = `{"model":"mock-1","messages":[{"role":"user","content":"load"}]}`

// loadFailure is one request of the load that did not end in a 200.
type loadFailure struct {
	client int
	pid    int // the worker the connection led to, when attribution is on; 0 unknown
	err    error
}

// load is a bounded closed-loop load of non-streaming chats: clients goroutines, each with
// one keep-alive connection (a failed one is replaced), at most maxPerClient requests each.
type load struct {
	stop chan struct{}
	wg   sync.WaitGroup

	served atomic.Int64
	mu     sync.Mutex
	ids    map[string]bool // X-Request-Id of every 200 answer
	fails  []loadFailure
}

type loadOptions struct {
	clients      int
	maxPerClient int
	// attribute asks /api/health on the same connection before each chat, so a failed
	// request can be pinned to the worker its connection led to.
	attribute bool
	// fresh uses a new connection for every request instead of keep-alive.
	fresh bool
	// pinned, when set, is the client every request goes through (a connection pinned to
	// one worker by pinWorkers); clients then share it.
	pinned *http.Client
}

func (g *gateway) startLoad(t *testing.T, key string, o loadOptions) *load {
	t.Helper()
	if o.maxPerClient == 0 {
		o.maxPerClient = 100000
	}
	l := &load{stop: make(chan struct{}), ids: map[string]bool{}}
	for i := 0; i < o.clients; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tr := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, DisableKeepAlives: o.fresh}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr, Timeout: requestTimeout}
			if o.pinned != nil {
				hc = o.pinned
			}
			connPID := map[string]int{}
			var cur string
			trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
				cur = info.Conn.LocalAddr().String()
			}}
			for n := 0; n < o.maxPerClient; n++ {
				select {
				case <-l.stop:
					return
				default:
				}
				ctx := httptrace.WithClientTrace(context.Background(), trace)
				cur = ""
				if o.attribute {
					h, err := g.health(ctx, hc)
					if err != nil {
						l.fail(i, connPID[cur], err)
						continue
					}
					connPID[cur] = h.PID
				}
				id, err := chatOnce(ctx, hc, g.baseURL(), key)
				if err != nil {
					l.fail(i, connPID[cur], err)
					continue
				}
				l.mu.Lock()
				l.ids[id] = true
				l.mu.Unlock()
				l.served.Add(1)
			}
		}()
	}
	t.Cleanup(l.halt)
	return l
}

// add counts a request the test made itself as seen completed.
func (l *load) add(id string) {
	l.mu.Lock()
	l.ids[id] = true
	l.mu.Unlock()
}

func (l *load) fail(client, pid int, err error) {
	l.mu.Lock()
	l.fails = append(l.fails, loadFailure{client: client, pid: pid, err: err})
	l.mu.Unlock()
}

// halt stops the clients (idempotent) and waits for them.
func (l *load) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

func (l *load) failures() []loadFailure {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]loadFailure(nil), l.fails...)
}

func (l *load) seen() map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]bool, len(l.ids))
	for id := range l.ids {
		out[id] = true
	}
	return out
}

// waitServed waits until the load has served n more requests than now.
func (l *load) waitServed(t *testing.T, n int64, within time.Duration) {
	t.Helper()
	want := l.served.Load() + n
	deadline := time.Now().Add(within)
	for l.served.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("the load served %d requests, want %d within %s (failures: %d)", l.served.Load(), want, within, len(l.failures()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// chatOnce sends one non-streaming chat and returns its X-Request-Id; any answer but a
// complete 200 is an error.
func chatOnce(ctx context.Context, hc *http.Client, baseURL, key string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/chat/completions", strings.NewReader(chatBody))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	id := resp.Header.Get("X-Request-Id")
	if id == "" || !json.Valid(body) {
		return "", errors.New("200 without a request id or a JSON body")
	}
	return id, nil
}

// compareIDs checks that request_logs holds exactly the ids the load saw completed. A
// request whose response a kill -9 cut off after its record was spooled is in the log but
// was never seen by the client: allowed is how many such cut-off requests the test can
// account for (failed requests on the killed worker's connections), and extras are only
// accepted from the request-id prefix of the killed process (victimPrefix).
func compareIDs(t *testing.T, seen, logged map[string]bool, allowed int, victimPrefix string) {
	t.Helper()
	var missing, extra []string
	for id := range seen {
		if !logged[id] {
			missing = append(missing, id)
		}
	}
	for id := range logged {
		if !seen[id] {
			extra = append(extra, id)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d completed requests have no request_logs row (lost records), e.g. %v", len(missing), len(seen), missing[:min(5, len(missing))])
	}
	explained := len(extra) <= allowed
	for _, id := range extra {
		explained = explained && victimPrefix != "" && strings.HasPrefix(id, victimPrefix)
	}
	if len(extra) > 0 && !explained {
		t.Errorf("request_logs has %d rows the load never saw completed (allowed %d from the killed worker %q): %v",
			len(extra), allowed, victimPrefix, extra[:min(5, len(extra))])
	}
	t.Logf("request ids: %d completed, %d in request_logs, %d missing, %d extra", len(seen), len(logged), len(missing), len(extra))
}

// requestPrefix returns the request-id prefix ("req_<hex>_") of the worker behind hc.
func requestPrefix(t *testing.T, hc *http.Client, baseURL, key string) string {
	t.Helper()
	id, err := chatOnce(context.Background(), hc, baseURL, key)
	if err != nil {
		t.Fatalf("chat to learn a worker's request-id prefix: %v", err)
	}
	i := strings.LastIndexByte(id, '_')
	if i < 0 {
		t.Fatalf("request id %q has no prefix", id)
	}
	return id[:i+1]
}

// ---- the WAL write lock ----

// walWriteLockOffset is where SQLite's WAL_WRITE_LOCK byte lives in the -shm file
// (WALINDEX_LOCK_OFFSET = 2*sizeof(WalIndexHdr) + sizeof(WalCkptInfo) = 120, lock 0). A
// connection holds it, with a POSIX fcntl lock, exactly while it has a write transaction.
const walWriteLockOffset = 120

// writeLockProbe reports which process holds the database's write lock.
type writeLockProbe struct{ f *os.File }

// newWriteLockProbe opens the -shm file. The descriptor stays open until the test ends:
// closing any descriptor of a file drops every POSIX lock this process holds on it, which
// would pull the locks from under the test's own SQLite connections.
func (g *gateway) newWriteLockProbe(t *testing.T) *writeLockProbe {
	t.Helper()
	f, err := os.Open(g.dbPath + "-shm")
	if err != nil {
		t.Fatalf("open the -shm file: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return &writeLockProbe{f: f}
}

// holder returns the pid holding the write lock, 0 when nobody does.
func (p *writeLockProbe) holder() (int, error) {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart, Start: walWriteLockOffset, Len: 1}
	if err := unix.FcntlFlock(p.f.Fd(), unix.F_GETLK, &lk); err != nil {
		return 0, fmt.Errorf("F_GETLK on the -shm file: %w", err)
	}
	if lk.Type == unix.F_UNLCK {
		return 0, nil
	}
	return int(lk.Pid), nil
}
