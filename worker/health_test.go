package worker

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/llm-proxy/llm-proxy/routing"
	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/store/secret"
)

// probeServer is a fake provider answering GET /v1/models with a settable status and
// recording every probe it gets.
type probeServer struct {
	srv    *httptest.Server
	status atomic.Int32
	delay  atomic.Int64 // ns before answering

	mu   sync.Mutex
	reqs []*http.Request

	inFlight, maxInFlight atomic.Int32
}

func newProbeServer(t *testing.T) *probeServer {
	t.Helper()
	p := &probeServer{}
	p.status.Store(http.StatusOK)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := p.inFlight.Add(1)
		defer p.inFlight.Add(-1)
		for {
			m := p.maxInFlight.Load()
			if n <= m || p.maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		p.mu.Lock()
		p.reqs = append(p.reqs, r.Clone(context.Background()))
		p.mu.Unlock()
		if d := time.Duration(p.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(int(p.status.Load()))
		_, _ = w.Write([]byte(`{"object":"list","data":[{"id":"gpt-4o","object":"model"}]}`))
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *probeServer) requests() []*http.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*http.Request(nil), p.reqs...)
}

// healthEnv is a migrated store holding the primary lease.
type healthEnv struct {
	st    *store.Store
	epoch int64
}

func newHealthEnv(t *testing.T) *healthEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dir := t.TempDir()
	box, _, err := secret.Load("health-test-secret-key-0123456789", dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, store.Config{Path: filepath.Join(dir, "llm-proxy.db"), MaxOpenConns: 4, MaxIdleConns: 2}, box, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	l, won, err := st.TryAcquire(ctx, "health-test", 1, 0, time.Now())
	if err != nil || !won {
		t.Fatalf("acquire lease: won=%v err=%v", won, err)
	}
	return &healthEnv{st: st, epoch: l.Epoch}
}

func (e *healthEnv) add(t *testing.T, u store.Upstream) int64 {
	t.Helper()
	if u.Weight == 0 {
		u.Weight = 1
	}
	id, err := e.st.AddUpstream(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (e *healthEnv) healths(t *testing.T) map[int64]store.UpstreamHealth {
	t.Helper()
	hs, err := e.st.UpstreamHealths(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return hs
}

func (e *healthEnv) healthGen(t *testing.T) int64 {
	t.Helper()
	g, err := e.st.Generations(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return g.Health
}

func healthConfig() routing.Config {
	return routing.Config{Strategy: routing.Weighted, HealthCheckEnabled: true, HealthCheckInterval: 60, HealthCheckTimeout: 5}
}

// closedURL is a base URL on 127.0.0.1 where nothing listens.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/v1"
}

// TestHealthVerdicts runs rounds against a healthy, a failing, an unreachable and a
// disabled upstream and checks each round's verdicts: unhealthy only after two
// consecutive failures, healthy again after one success, disabled never probed, and
// the workers' change counter moved only when a verdict flipped.
func TestHealthVerdicts(t *testing.T) {
	e := newHealthEnv(t)
	good, bad, off := newProbeServer(t), newProbeServer(t), newProbeServer(t)
	bad.status.Store(http.StatusServiceUnavailable)
	idGood := e.add(t, store.Upstream{Name: "good", BaseURL: good.srv.URL + "/v1", APIKey: "sk-good-key", Enabled: true})
	idBad := e.add(t, store.Upstream{Name: "bad", BaseURL: bad.srv.URL + "/v1/", Enabled: true})
	idGone := e.add(t, store.Upstream{Name: "gone", BaseURL: closedURL(t), Enabled: true})
	idOff := e.add(t, store.Upstream{Name: "off", BaseURL: off.srv.URL + "/v1", Enabled: false})
	h := NewHealthChecker(e.st, healthConfig(), nil)
	ctx := context.Background()

	type verdict struct {
		healthy  bool
		failures int
	}
	rounds := []struct {
		name   string
		before func()
		want   map[int64]verdict
		// flips says whether the health change counter must move in this round.
		flips bool
	}{
		{"first failure is tolerated", nil,
			map[int64]verdict{idGood: {true, 0}, idBad: {true, 1}, idGone: {true, 1}}, true},
		{"second failure marks unhealthy", nil,
			map[int64]verdict{idGood: {true, 0}, idBad: {false, 2}, idGone: {false, 2}}, true},
		{"still failing: no flip", nil,
			map[int64]verdict{idGood: {true, 0}, idBad: {false, 3}, idGone: {false, 3}}, false},
		{"one success recovers", func() { bad.status.Store(http.StatusOK) },
			map[int64]verdict{idGood: {true, 0}, idBad: {true, 0}, idGone: {false, 4}}, true},
	}
	for _, r := range rounds {
		if r.before != nil {
			r.before()
		}
		gen := e.healthGen(t)
		if err := h.CheckAll(ctx, e.epoch); err != nil {
			t.Fatalf("%s: CheckAll: %v", r.name, err)
		}
		got := e.healths(t)
		if _, ok := got[idOff]; ok {
			t.Errorf("%s: the disabled upstream has a verdict", r.name)
		}
		for id, want := range r.want {
			g, ok := got[id]
			if !ok {
				t.Errorf("%s: upstream %d has no verdict", r.name, id)
				continue
			}
			if gv := (verdict{g.Healthy, g.Failures}); gv != want {
				t.Errorf("%s: upstream %d = %+v, want %+v (error %q)", r.name, id, gv, want, g.Error)
			}
			if g.Healthy == (g.Failures >= unhealthyAfter) {
				t.Errorf("%s: upstream %d healthy=%v with %d failures", r.name, id, g.Healthy, g.Failures)
			}
			if g.CheckedAt.IsZero() || time.Since(g.CheckedAt) > time.Minute {
				t.Errorf("%s: upstream %d checked_at %v", r.name, id, g.CheckedAt)
			}
		}
		if moved := e.healthGen(t) != gen; moved != r.flips {
			t.Errorf("%s: health change counter moved=%v, want %v", r.name, moved, r.flips)
		}
	}
	hs := e.healths(t)
	if e := hs[idGone].Error; !strings.Contains(e, "GET /v1/models") || !strings.Contains(e, "refused") {
		t.Errorf("unreachable upstream's error = %q, want the probe path and the connection error", e)
	}
	if len(off.requests()) != 0 {
		t.Errorf("the disabled upstream got %d probes, want 0", len(off.requests()))
	}
	reqs := good.requests()
	if len(reqs) != len(rounds) {
		t.Fatalf("good upstream got %d probes in %d rounds", len(reqs), len(rounds))
	}
	for _, r := range reqs {
		if r.Method != http.MethodGet || r.URL.Path != "/v1/models" || r.Header.Get("Authorization") != "Bearer sk-good-key" {
			t.Errorf("probe = %s %s Authorization %q, want GET /v1/models with the upstream's key as Bearer",
				r.Method, r.URL.Path, r.Header.Get("Authorization"))
		}
	}
	// A trailing slash in the base URL does not double the slash.
	for _, r := range bad.requests() {
		if r.URL.Path != "/v1/models" {
			t.Errorf("bad upstream probed at %q", r.URL.Path)
		}
	}
}

// TestHealthProviderProbes checks each provider's probe: its model list, with the key
// in the header that provider expects and in no other.
func TestHealthProviderProbes(t *testing.T) {
	e := newHealthEnv(t)
	const key = "provider-key-0123456789"
	tests := []struct {
		provider  string
		path      string
		query     string
		keyHeader string
		keyValue  string
		extra     map[string]string
	}{
		{"openai", "/base/models", "", "Authorization", "Bearer " + key, nil},
		{"azure", "/base/openai/models", "api-version=2024-10-21", "Api-Key", key, nil},
		{"anthropic", "/base/models", "", "X-Api-Key", key, map[string]string{"Anthropic-Version": "2023-06-01"}},
		{"gemini", "/base/models", "", "X-Goog-Api-Key", key, nil},
	}
	keyHeaders := []string{"Authorization", "Api-Key", "X-Api-Key", "X-Goog-Api-Key"}
	for _, tt := range tests {
		t.Run(tt.provider, func(t *testing.T) {
			srv := newProbeServer(t)
			e.add(t, store.Upstream{Name: tt.provider, Provider: tt.provider, BaseURL: srv.srv.URL + "/base", APIKey: key, Enabled: true})
			h := NewHealthChecker(e.st, healthConfig(), nil)
			if err := h.CheckAll(context.Background(), e.epoch); err != nil {
				t.Fatal(err)
			}
			reqs := srv.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d probes, want 1", len(reqs))
			}
			r := reqs[0]
			if r.Method != http.MethodGet || r.URL.Path != tt.path || r.URL.RawQuery != tt.query {
				t.Errorf("probe = %s %s?%s, want GET %s?%s", r.Method, r.URL.Path, r.URL.RawQuery, tt.path, tt.query)
			}
			for _, hk := range keyHeaders {
				got, want := r.Header.Get(hk), ""
				if hk == tt.keyHeader {
					want = tt.keyValue
				}
				if got != want {
					t.Errorf("header %s = %q, want %q", hk, got, want)
				}
			}
			for k, want := range tt.extra {
				if got := r.Header.Get(k); got != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

// TestHealthTimeoutAndParallel: a probe that does not answer within the timeout
// fails with a timeout error, and probes of many upstreams run side by side, never
// more than healthParallel at once.
func TestHealthTimeoutAndParallel(t *testing.T) {
	e := newHealthEnv(t)
	slow := newProbeServer(t)
	slow.delay.Store(int64(10 * time.Second))
	idSlow := e.add(t, store.Upstream{Name: "slow", BaseURL: slow.srv.URL + "/v1", Enabled: true})
	shared := newProbeServer(t)
	shared.delay.Store(int64(150 * time.Millisecond))
	const n = 2 * healthParallel
	for i := range n {
		e.add(t, store.Upstream{Name: "u" + string(rune('a'+i)), BaseURL: shared.srv.URL + "/v1", Enabled: true})
	}
	h := NewHealthChecker(e.st, healthConfig(), nil)
	h.timeout = 400 * time.Millisecond

	start := time.Now()
	if err := h.CheckAll(context.Background(), e.epoch); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	// 16 probes of 150 ms, 8 at a time, and one timing out at 400 ms: well under the
	// 2.4 s a sequential round would take.
	if took > 1500*time.Millisecond {
		t.Errorf("round took %s, want the probes in parallel", took)
	}
	if got := shared.maxInFlight.Load(); got > healthParallel || got < 2 {
		t.Errorf("max probes in flight = %d, want 2..%d", got, healthParallel)
	}
	if got := len(shared.requests()); got != n {
		t.Errorf("%d probes of %d upstreams", got, n)
	}
	hs := e.healths(t)
	if g := hs[idSlow]; g.Failures != 1 || !strings.Contains(g.Error, "no answer within 400ms") {
		t.Errorf("slow upstream = %+v, want one failure with a timeout error", g)
	}
}

// TestHealthFenced: a deposed primary records nothing and gets ErrFenced, which
// makes the coordinator step down.
func TestHealthFenced(t *testing.T) {
	e := newHealthEnv(t)
	srv := newProbeServer(t)
	e.add(t, store.Upstream{Name: "a", BaseURL: srv.srv.URL + "/v1", Enabled: true})
	h := NewHealthChecker(e.st, healthConfig(), nil)
	err := h.CheckAll(context.Background(), e.epoch+1)
	if !errors.Is(err, store.ErrFenced) {
		t.Fatalf("CheckAll with a stale epoch = %v, want ErrFenced", err)
	}
	if hs := e.healths(t); len(hs) != 0 {
		t.Errorf("a fenced round recorded %v", hs)
	}
}

// TestHealthTask: the task's interval follows the configuration; with checks
// disabled it probes nothing and clears a verdict left unhealthy by an earlier run.
func TestHealthTask(t *testing.T) {
	e := newHealthEnv(t)
	srv := newProbeServer(t)
	id := e.add(t, store.Upstream{Name: "a", BaseURL: srv.srv.URL + "/v1", Enabled: true})
	ctx := context.Background()

	cfg := healthConfig()
	cfg.HealthCheckInterval = 7
	task := NewHealthChecker(e.st, cfg, nil).Task()
	if task.Name != "health" || task.Interval != 7*time.Second {
		t.Errorf("task = %q every %s, want health every 7s", task.Name, task.Interval)
	}

	if err := e.st.RecordHealth(ctx, e.epoch, store.UpstreamHealth{UpstreamID: id, Healthy: false, Failures: 5, CheckedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	cfg.HealthCheckEnabled = false
	hc := NewHealthChecker(e.st, cfg, nil)
	t0 := time.Now().Truncate(time.Millisecond)
	hc.now = func() time.Time { return t0 }
	off := hc.Task()
	if off.Interval != disabledInterval {
		t.Errorf("disabled task runs every %s, want %s", off.Interval, disabledInterval)
	}
	if err := off.Run(ctx, e.epoch); err != nil {
		t.Fatal(err)
	}
	if g := e.healths(t)[id]; !g.Healthy || g.Failures != 0 {
		t.Errorf("with checks disabled the stale verdict is %+v, want healthy", g)
	}
	if n := len(srv.requests()); n != 0 {
		t.Errorf("disabled checks sent %d probes", n)
	}
	// Nothing is left to clear: a later run writes nothing (checked_at stays).
	hc.now = func() time.Time { return t0.Add(time.Hour) }
	if err := off.Run(ctx, e.epoch); err != nil {
		t.Fatal(err)
	}
	if g := e.healths(t)[id]; !g.CheckedAt.Equal(t0) {
		t.Errorf("a second disabled run rewrote the verdict: checked_at %v, want %v", g.CheckedAt, t0)
	}
}
