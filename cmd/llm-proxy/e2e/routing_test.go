package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// Routing and resilience, end to end: two workers, several mockllm upstreams, routes
// and upstreams configured with the CLI. Counts are taken where the requests land
// (mockllm's /debug/stats and /debug/requests) and checked against the response
// headers the gateway adds (X-LLM-Proxy-Upstream, X-LLM-Proxy-Attempts).

// ---- helpers ----

// mockStats is mockllm's GET /debug/stats.
type mockStats struct {
	Total  int            `json:"total"`
	ByPath map[string]int `json:"by_path"`
}

func (m *mockServer) stats(t *testing.T) mockStats {
	t.Helper()
	resp, err := http.Get("http://" + m.addr + "/debug/stats")
	if err != nil {
		t.Fatalf("GET /debug/stats: %v", err)
	}
	defer resp.Body.Close()
	var s mockStats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("decode /debug/stats: %v", err)
	}
	return s
}

func (m *mockServer) chats(t *testing.T) int {
	return m.stats(t).ByPath["/v1/chat/completions"]
}

// reset forgets mockllm's recorded requests and totals.
func (m *mockServer) reset(t *testing.T) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, "http://"+m.addr+"/debug/requests", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("DELETE /debug/requests: %v", err)
	}
	resp.Body.Close()
}

// modelRequests returns the chat requests mockllm received for model (fault suffix
// stripped), oldest first.
func (m *mockServer) modelRequests(t *testing.T, model string) []mockRequest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reqs, err := m.requests(ctx)
	if err != nil {
		t.Fatalf("mockllm requests: %v", err)
	}
	var out []mockRequest
	for _, r := range reqs {
		if r.Path == "/v1/chat/completions" && r.Model == model {
			out = append(out, r)
		}
	}
	return out
}

// faultFront is a reverse proxy in front of a mockllm that adds an X-Mock-Fault
// header, one for POSTs (completions) and one for GETs (health probes), switchable
// while the test runs: the gateway never forwards a client's headers, and the
// CLI's "public=upstream" syntax leaves no room for mockllm's "@k=v" model faults.
type faultFront struct {
	srv       *httptest.Server
	post, get atomic.Pointer[string]
}

func startFront(t *testing.T, m *mockServer, postFault string) *faultFront {
	t.Helper()
	target, err := url.Parse("http://" + m.addr)
	if err != nil {
		t.Fatal(err)
	}
	f := &faultFront{}
	f.setPost(postFault)
	f.setGet("")
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			fault := *f.get.Load()
			if pr.In.Method == http.MethodPost {
				fault = *f.post.Load()
			}
			if fault != "" {
				pr.Out.Header.Set("X-Mock-Fault", fault)
			}
		},
		// Pass each streamed chunk on at once, as the real upstream would send it.
		FlushInterval: -1,
		ErrorLog:      log.New(io.Discard, "", 0),
	}
	f.srv = httptest.NewServer(rp)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *faultFront) baseURL() string  { return f.srv.URL + "/v1" }
func (f *faultFront) setPost(s string) { f.post.Store(&s) }
func (f *faultFront) setGet(s string)  { f.get.Store(&s) }

// rtResult is one gateway answer.
type rtResult struct {
	status    int
	upstream  string // X-LLM-Proxy-Upstream
	attempts  string // X-LLM-Proxy-Attempts
	requestID string
	body      string
	took      time.Duration
}

// prefix is the request-id prefix of the worker process that answered.
func (r rtResult) prefix() string {
	if i := strings.LastIndexByte(r.requestID, '_'); i >= 0 {
		return r.requestID[:i+1]
	}
	return ""
}

// rtChat sends one chat for model through hc with the extra headers hdr.
func rtChat(hc *http.Client, g *gateway, key, model string, stream bool, hdr ...string) (rtResult, error) {
	body := fmt.Sprintf(`{"model":%q,"stream":%t,"messages":[{"role":"user","content":"route me"}]}`, model, stream)
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.baseURL()+"/chat/completions", strings.NewReader(body))
	if err != nil {
		return rtResult{}, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	start := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return rtResult{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	r := rtResult{
		status:    resp.StatusCode,
		upstream:  resp.Header.Get("X-LLM-Proxy-Upstream"),
		attempts:  resp.Header.Get("X-LLM-Proxy-Attempts"),
		requestID: resp.Header.Get("X-Request-Id"),
		body:      string(b),
		took:      time.Since(start),
	}
	if err != nil {
		return r, fmt.Errorf("read body: %w", err)
	}
	return r, nil
}

// rtParallel sends n chats from conc goroutines, each with its own keep-alive
// connection (so SO_REUSEPORT spreads them over both workers); req(i) gives the
// model and headers of request i. It fails the test on any error or non-200.
func rtParallel(t *testing.T, g *gateway, key string, n, conc int, req func(i int) (string, []string)) []rtResult {
	t.Helper()
	out := make([]rtResult, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []string
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr}
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				model, hdr := req(i)
				r, err := rtChat(hc, g, key, model, false, hdr...)
				if err == nil && r.status != http.StatusOK {
					err = fmt.Errorf("status %d: %s", r.status, r.body)
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err.Error())
					mu.Unlock()
					continue
				}
				out[i] = r
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d requests failed, e.g. %s", len(errs), n, errs[0])
	}
	return out
}

// byUpstream counts results per X-LLM-Proxy-Upstream.
func byUpstream(rs []rtResult) map[string]int {
	m := map[string]int{}
	for _, r := range rs {
		m[r.upstream]++
	}
	return m
}

// workersSeen counts the worker processes (request-id prefixes) that answered.
func workersSeen(rs []rtResult) int {
	m := map[string]bool{}
	for _, r := range rs {
		m[r.prefix()] = true
	}
	return len(m)
}

// warm sends n quick chats for model over new connections: both workers' retry
// budgets (retries may be 20% of recent requests, minimum 3) then have room for the
// retries a fault test provokes.
func warm(t *testing.T, g *gateway, key, model string, n int) {
	t.Helper()
	hc := freshClient(requestTimeout)
	for range n {
		if r, err := rtChat(hc, g, key, model, false); err != nil || r.status != http.StatusOK {
			t.Fatalf("warm-up chat: %v %+v", err, r)
		}
	}
}

// attemptsRow reads request_logs.attempts and attempt_count of requestID.
func (g *gateway) attemptsRow(t *testing.T, requestID string) (attempts []map[string]any, count int) {
	t.Helper()
	g.waitLogRow(t, requestID)
	conn := g.openDB(t)
	var raw string
	err := sqlitex.Execute(conn, `SELECT attempts, attempt_count FROM request_logs WHERE request_id = :id`, &sqlitex.ExecOptions{
		Named: map[string]any{":id": requestID},
		ResultFunc: func(st *sqlite.Stmt) error {
			raw, count = st.ColumnText(0), st.ColumnInt(1)
			return nil
		}})
	if err != nil {
		t.Fatalf("read attempts: %v", err)
	}
	if err := json.Unmarshal([]byte(raw), &attempts); err != nil {
		t.Fatalf("attempts %q is not a JSON array: %v", raw, err)
	}
	return attempts, count
}

// upstreamHealth reads the upstream_health row of the named upstream.
func (g *gateway) upstreamHealth(t *testing.T, conn *sqlite.Conn, name string) (healthy bool, failures int, errText string, ok bool) {
	t.Helper()
	err := sqlitex.Execute(conn, `SELECT h.healthy, h.failures, h.error FROM upstream_health h JOIN upstreams u ON u.id = h.upstream_id
		WHERE u.name = :name`, &sqlitex.ExecOptions{
		Named: map[string]any{":name": name},
		ResultFunc: func(st *sqlite.Stmt) error {
			healthy, failures, errText, ok = st.ColumnBool(0), st.ColumnInt(1), st.ColumnText(2), true
			return nil
		}})
	if err != nil {
		t.Fatalf("read upstream_health: %v", err)
	}
	return healthy, failures, errText, ok
}

func pct(n, total int) float64 { return 100 * float64(n) / float64(total) }

// ---- strategies ----

// TestRoutingStrategies checks each balancing strategy's distribution across two
// workers and three (four) mockllm instances, and that only the primary probes the
// upstreams, once per interval.
func TestRoutingStrategies(t *testing.T) {
	a, b, c := startMock(t), startMock(t), startMock(t)
	slow := startMock(t, "--latency", "150ms")
	g := newGateway(t, map[string]string{
		"LLM_PROXY_HEALTH_CHECK_INTERVAL": "1",
		"LLM_PROXY_LOAD_BALANCE_STRATEGY": "weighted",
	})
	// Equal upstreams for round_robin and conversation_hash; weighted ones for weighted;
	// one slow upstream for least_connections.
	for _, u := range []struct {
		name   string
		m      *mockServer
		models string
		weight string
	}{
		{"a", a, "rr,ch", "1"}, {"b", b, "rr,ch", "1"}, {"c", c, "rr,ch", "1"},
		{"w5", a, "wt", "5"}, {"w3", b, "wt", "3"}, {"w2", c, "wt", "2"},
		{"la", a, "lc", "1"}, {"lb", b, "lc", "1"}, {"ls", slow, "lc", "1"},
	} {
		g.cli(t, "upstreams", "add", "--name", u.name, "--base-url", u.m.baseURL(), "--models", u.models,
			"--weight", u.weight, "--api-key", "sk-upstream-"+u.name)
	}
	g.cli(t, "routes", "add", "--model", "rr", "--strategy", "round_robin")
	g.cli(t, "routes", "add", "--model", "wt", "--strategy", "weighted")
	g.cli(t, "routes", "add", "--model", "lc", "--strategy", "least_connections")
	g.cli(t, "routes", "add", "--model", "ch", "--strategy", "conversation_hash")
	_, key := g.createKey(t, "routing")
	g.start(t)

	t.Run("probe_is_a_model_list_with_the_key", func(t *testing.T) {
		r, ok := slow.waitRequest(t, 5*time.Second, func(r mockRequest) bool { return r.Path == "/v1/models" })
		if !ok {
			t.Fatal("no health probe reached the upstream within 5s")
		}
		if got := r.Headers["Authorization"]; got != "Bearer sk-upstream-ls" {
			t.Errorf("probe Authorization = %q, want the upstream's key as Bearer", got)
		}
		if n := len(slow.modelRequests(t, "lc")); n != 0 {
			t.Errorf("the probe sent %d completions", n)
		}
	})

	t.Run("round_robin", func(t *testing.T) {
		for _, m := range []*mockServer{a, b, c} {
			m.reset(t)
		}
		const n = 300
		rs := rtParallel(t, g, key, n, 30, func(int) (string, []string) { return "rr", nil })
		got := map[string]int{"a": a.chats(t), "b": b.chats(t), "c": c.chats(t)}
		t.Logf("round_robin: %d requests over %d workers: per upstream %v (headers %v)", n, workersSeen(rs), got, byUpstream(rs))
		if workersSeen(rs) < 2 {
			t.Errorf("only %d worker answered; the test needs both", workersSeen(rs))
		}
		for name, k := range got {
			if k < n/3-1 || k > n/3+1 {
				t.Errorf("upstream %s got %d of %d, want %d±1 (strict rotation across workers)", name, k, n, n/3)
			}
		}
		if h := byUpstream(rs); h["a"] != got["a"] || h["b"] != got["b"] || h["c"] != got["c"] {
			t.Errorf("X-LLM-Proxy-Upstream counts %v differ from what the upstreams received %v", h, got)
		}
	})

	t.Run("weighted_5_3_2", func(t *testing.T) {
		for _, m := range []*mockServer{a, b, c} {
			m.reset(t)
		}
		const n = 1200
		rs := rtParallel(t, g, key, n, 24, func(int) (string, []string) { return "wt", nil })
		got := map[string]int{"w5": a.chats(t), "w3": b.chats(t), "w2": c.chats(t)}
		want := map[string]float64{"w5": 50, "w3": 30, "w2": 20}
		t.Logf("weighted: %d requests over %d workers: %v", n, workersSeen(rs), got)
		for name, w := range want {
			if share := pct(got[name], n); share < w-2 || share > w+2 {
				t.Errorf("upstream %s got %.1f%% of requests, want %.0f%% ±2", name, share, w)
			}
		}
	})

	t.Run("least_connections", func(t *testing.T) {
		for _, m := range []*mockServer{a, b, slow} {
			m.reset(t)
		}
		const n = 600
		rs := rtParallel(t, g, key, n, 20, func(int) (string, []string) { return "lc", nil })
		got := map[string]int{"la": a.chats(t), "lb": b.chats(t), "ls (150ms)": slow.chats(t)}
		t.Logf("least_connections: %d requests over %d workers: %v", n, workersSeen(rs), got)
		if s := got["ls (150ms)"]; s*3 > min(got["la"], got["lb"]) || pct(s, n) > 10 {
			t.Errorf("the slow upstream got %d of %d (%.1f%%), want clearly fewer than each fast one (under a third of %d and 10%%)",
				s, n, pct(s, n), min(got["la"], got["lb"]))
		}
	})

	t.Run("one_probe_per_upstream_per_interval", func(t *testing.T) {
		// Nothing resets the mocks' totals during this window.
		upstreamsOn := map[*mockServer]int{a: 3, b: 3, c: 2, slow: 1}
		names := map[*mockServer]string{a: "a", b: "b", c: "c", slow: "slow"}
		before := map[*mockServer]int{}
		for m := range upstreamsOn {
			before[m] = m.stats(t).ByPath["/v1/models"]
		}
		start := time.Now()
		time.Sleep(5 * time.Second)
		elapsed := time.Since(start).Seconds()
		for m, k := range upstreamsOn {
			probes := m.stats(t).ByPath["/v1/models"] - before[m]
			rounds := float64(probes) / float64(k)
			t.Logf("mock %s: %d probes for %d upstream(s) in %.1fs: %.1f per upstream (interval 1s, 2 workers)", names[m], probes, k, elapsed, rounds)
			// One primary probing every second (plus the round's own time) gives about
			// 5 rounds; two workers probing would give about 10.
			if rounds < 3.5 || rounds > 6.5 {
				t.Errorf("mock %s: %.1f probes per upstream in %.1fs, want about 5: one per interval from the primary alone", names[m], rounds, elapsed)
			}
		}
	})

	t.Run("conversation_hash", func(t *testing.T) {
		const convs, reps = 200, 3
		order := make([]int, 0, convs*reps)
		for i := range convs {
			for range reps {
				order = append(order, i)
			}
		}
		rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		convHeader := func(i int) (string, []string) {
			return "ch", []string{"X-Conversation-ID", fmt.Sprintf("conversation-%03d", order[i])}
		}
		rs := rtParallel(t, g, key, len(order), 20, convHeader)
		home := map[int]string{}
		for i, r := range rs {
			conv := order[i]
			if h, ok := home[conv]; ok && h != r.upstream {
				t.Errorf("conversation %d answered by %s and by %s", conv, h, r.upstream)
			}
			home[conv] = r.upstream
		}
		perUp := map[string]int{}
		for _, u := range home {
			perUp[u]++
		}
		t.Logf("conversation_hash: %d conversations x %d over %d workers: homes %v", convs, reps, workersSeen(rs), perUp)
		for _, u := range []string{"a", "b", "c"} {
			if pct(perUp[u], convs) < 20 {
				t.Errorf("upstream %s is home to %d of %d conversations, want about a third", u, perUp[u], convs)
			}
		}

		// Remove one upstream: only its conversations move, and they stay together.
		g.cli(t, "upstreams", "remove", "c")
		// The removal reaches both workers within a second: poll until new connections
		// (either worker) no longer reach c.
		deadline := time.Now().Add(5 * time.Second)
		for {
			probe := rtParallel(t, g, key, 30, 10, func(int) (string, []string) { return "rr", nil })
			if byUpstream(probe)["c"] == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the removed upstream still gets traffic 5s later: %v", byUpstream(probe))
			}
			time.Sleep(100 * time.Millisecond)
		}
		rs = rtParallel(t, g, key, len(order), 20, convHeader)
		after := map[int]string{}
		moved := 0
		for i, r := range rs {
			conv := order[i]
			if h, ok := after[conv]; ok && h != r.upstream {
				t.Errorf("after the removal conversation %d answered by %s and by %s", conv, h, r.upstream)
			}
			after[conv] = r.upstream
		}
		for conv, before := range home {
			now := after[conv]
			switch {
			case now == "c":
				t.Errorf("conversation %d still answered by the removed upstream", conv)
			case before != "c" && now != before:
				t.Errorf("conversation %d moved from %s to %s though its home was not removed", conv, before, now)
			case before == "c":
				moved++
			}
		}
		t.Logf("conversation_hash: removing 1 of 3 upstreams moved %d of %d conversations (%.0f%%)", moved, convs, pct(moved, convs))
		if moved != perUp["c"] {
			t.Errorf("%d conversations moved, want exactly the %d that lived on c", moved, perUp["c"])
		}
	})
}

// ---- faults ----

// TestRoutingFaults drives the attempt chain with mockllm's faults: fallbacks after
// persistent 503s, a cut stream, hangs, 429 with Retry-After, a circuit that opens
// and closes, and active health checks taking an upstream out and back in.
func TestRoutingFaults(t *testing.T) {
	a, b, c := startMock(t, "--record", "5000"), startMock(t, "--record", "5000"), startMock(t, "--record", "5000")
	g := newGateway(t, map[string]string{
		"LLM_PROXY_UPSTREAM_TIMEOUT": "2s",
		"LLM_PROXY_REQUEST_TIMEOUT":  "3s",
		// The subtests fail on purpose in quick succession; a roomy retry budget keeps
		// one subtest's retries from starving the next one's within the 10 s window.
		"LLM_PROXY_RETRY_BUDGET_MIN":      "100",
		"LLM_PROXY_HEALTH_CHECK_INTERVAL": "1",
		"LLM_PROXY_HEALTH_CHECK_TIMEOUT":  "1",
	})
	add := func(name, base, models string) {
		g.cli(t, "upstreams", "add", "--name", name, "--base-url", base, "--models", models)
	}
	// Persistent 503 on four deployments of "primary"; "backup" is its fallback.
	for i, m := range []*mockServer{a, b, c, a} {
		add(fmt.Sprintf("f%d", i+1), startFront(t, m, "status=503").baseURL(), "primary")
	}
	add("fb", c.baseURL(), "backup,warm")
	g.cli(t, "routes", "add", "--model", "primary", "--fallbacks", "backup")
	// Streams cut after 3 content chunks.
	add("cut-1", startFront(t, a, "cut=3,chunks=10").baseURL(), "cutter")
	add("cut-2", startFront(t, b, "cut=3,chunks=10").baseURL(), "cutter")
	// Upstreams that never answer.
	add("hang-1", startFront(t, a, "hang").baseURL(), "slowpoke")
	add("hang-2", startFront(t, b, "hang").baseURL(), "slowpoke")
	// 429 with Retry-After: 2 on one of two deployments.
	add("rl-a", a.baseURL(), "rl")
	add("rl-b", startFront(t, b, "status=429,retry_after=2").baseURL(), "rl")
	// A deployment whose failures open its circuit.
	cb := startFront(t, b, "")
	add("cb-a", a.baseURL(), "cb")
	add("cb-b", cb.baseURL(), "cb")
	add("cb-c", c.baseURL(), "cb")
	g.cli(t, "routes", "add", "--model", "cb", "--strategy", "round_robin")
	// An upstream whose health probe fails.
	hb := startFront(t, b, "")
	add("hl-a", a.baseURL(), "hl")
	add("hl-b", hb.baseURL(), "hl")
	add("hl-c", c.baseURL(), "hl")
	g.cli(t, "routes", "add", "--model", "hl", "--strategy", "round_robin")
	_, key := g.createKey(t, "faults")
	g.start(t)
	hc := freshClient(requestTimeout)

	t.Run("persistent_503_three_attempts_then_fallback", func(t *testing.T) {
		r, err := rtChat(hc, g, key, "primary", false)
		if err != nil {
			t.Fatal(err)
		}
		if r.status != http.StatusOK || r.upstream != "fb" || r.attempts != "4" {
			t.Fatalf("answer = %d from %q after %q attempts, want 200 from the fallback fb after 4 (%s)", r.status, r.upstream, r.attempts, r.body)
		}
		tried := 0
		for _, m := range []*mockServer{a, b, c} {
			for _, q := range m.modelRequests(t, "primary") {
				tried++
				if q.Status != http.StatusServiceUnavailable {
					t.Errorf("a primary attempt got %d, want the injected 503", q.Status)
				}
			}
		}
		if tried != 3 {
			t.Errorf("the failing model was tried %d times, want at most 3 (then the fallback)", tried)
		}
		attempts, count := g.attemptsRow(t, r.requestID)
		var statuses []string
		for _, at := range attempts {
			statuses = append(statuses, fmt.Sprintf("%v:%v", at["upstream"], at["status"]))
		}
		t.Logf("request_logs.attempts: %v", statuses)
		if count != 4 || len(attempts) != 4 {
			t.Fatalf("attempt_count %d with %d attempts recorded, want 4", count, len(attempts))
		}
		for i, at := range attempts {
			wantStatus := 503.0
			if i == 3 {
				wantStatus = 200
			}
			if at["status"] != wantStatus {
				t.Errorf("attempt %d = %v, want status %v", i+1, at, wantStatus)
			}
		}
		if attempts[3]["upstream"] != "fb" || attempts[3]["model"] != "backup" {
			t.Errorf("last attempt = %v, want fb serving backup", attempts[3])
		}
	})

	t.Run("stream_cut_error_event_no_retry", func(t *testing.T) {
		r, err := rtChat(hc, g, key, "cutter", true)
		if err != nil {
			t.Fatal(err)
		}
		if r.status != http.StatusOK || r.attempts != "1" {
			t.Errorf("stream status %d after %q attempts, want 200 after 1", r.status, r.attempts)
		}
		var contents, errEvents int
		events := strings.Split(strings.TrimSpace(r.body), "\n\n")
		for _, ev := range events {
			data := strings.TrimPrefix(ev, "data: ")
			switch {
			case strings.Contains(data, `"error"`):
				errEvents++
				if !strings.Contains(data, "stream_broken") {
					t.Errorf("error event %s, want code stream_broken", data)
				}
			case strings.Contains(data, `"content":"`) && !strings.Contains(data, `"content":""`):
				contents++
			}
		}
		if contents != 3 || errEvents != 1 || events[len(events)-1] != "data: [DONE]" {
			t.Errorf("stream had %d content chunks, %d error events, last %q; want 3, 1 and [DONE]:\n%s",
				contents, errEvents, events[len(events)-1], r.body)
		}
		if strings.Contains(r.body, `"finish_reason":"stop"`) {
			t.Error("a cut stream claims finish_reason stop")
		}
		if n := len(a.modelRequests(t, "cutter")) + len(b.modelRequests(t, "cutter")); n != 1 {
			t.Errorf("the upstreams received %d requests for the cut stream, want exactly 1 (no retry after the first byte)", n)
		}
		if row := g.waitLogRow(t, r.requestID); row.ErrorClass != "stream_broken" {
			t.Errorf("request_logs error_class = %q, want stream_broken", row.ErrorClass)
		}
	})

	t.Run("hang_504_within_the_request_timeout", func(t *testing.T) {
		warm(t, g, key, "warm", 40)
		r, err := rtChat(hc, g, key, "slowpoke", false)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("hang: %d after %s, %s attempts", r.status, r.took.Round(time.Millisecond), r.attempts)
		if r.status != http.StatusGatewayTimeout || !strings.Contains(r.body, "upstream_timeout") {
			t.Errorf("answer %d %s, want 504 upstream_timeout", r.status, r.body)
		}
		// UPSTREAM_TIMEOUT 2s ends the first attempt; REQUEST_TIMEOUT 3s bounds the chain.
		if r.took < 2900*time.Millisecond || r.took > 4*time.Second {
			t.Errorf("504 after %s, want about the 3s request timeout", r.took)
		}
		// The 504 says what was tried, like every other answer of the chain.
		if r.attempts != "2" || (r.upstream != "hang-1" && r.upstream != "hang-2") {
			t.Errorf("X-LLM-Proxy-Attempts = %q, X-LLM-Proxy-Upstream = %q; want 2 and the last deployment tried", r.attempts, r.upstream)
		}
		for _, m := range []*mockServer{a, b} {
			q, ok := m.waitRequest(t, 2*time.Second, func(q mockRequest) bool { return q.Model == "slowpoke" && q.ClientClosed })
			if !ok {
				t.Errorf("mock %s: no hanging request closed by the gateway", m.addr)
			} else if q.ClosedAfterMS > 3500 {
				t.Errorf("mock %s: the gateway held the hanging request %.0fms", m.addr, q.ClosedAfterMS)
			}
		}
	})

	t.Run("429_retry_after_honoured", func(t *testing.T) {
		warm(t, g, key, "warm", 40)
		start := time.Now()
		var rs []rtResult
		for time.Since(start) < 5*time.Second {
			r, err := rtChat(hc, g, key, "rl", false)
			if err != nil {
				t.Fatal(err)
			}
			if r.status != http.StatusOK || r.upstream != "rl-a" {
				t.Fatalf("answer %d from %q, want 200 from rl-a (the 429 retried on the other deployment): %s", r.status, r.upstream, r.body)
			}
			rs = append(rs, r)
			time.Sleep(10 * time.Millisecond)
		}
		limited := b.modelRequests(t, "rl")
		t.Logf("429: %d requests in 5s; the rate-limited deployment got %d", len(rs), len(limited))
		// Each worker may send one request per Retry-After (2s): at most 3 each in 5s.
		if len(limited) > 6 || len(limited) < 1 {
			t.Errorf("the rate-limited deployment got %d requests, want 1..6 (one per worker per 2s)", len(limited))
		}
		for i := 2; i < len(limited); i++ {
			if gap := limited[i].Time.Sub(limited[i-2].Time); gap < 1900*time.Millisecond {
				t.Errorf("3 requests to the rate-limited deployment within %s (at %v); with 2 workers each must wait Retry-After: 2",
					gap, sortedTimes(limited))
			}
		}
	})

	t.Run("circuit_opens_and_recovers", func(t *testing.T) {
		warm(t, g, key, "warm", 60)
		cb.setPost("status=503")
		// Fail until both workers' circuits are open: 5 consecutive 5xx each.
		var sent int
		for sent = 0; sent < 300 && len(b.modelRequests(t, "cb")) < 10; sent++ {
			if r, err := rtChat(hc, g, key, "cb", false); err != nil || r.status != http.StatusOK {
				t.Fatalf("a request failed while the circuit opened: %v %+v", err, r)
			}
		}
		failed := b.modelRequests(t, "cb")
		if len(failed) != 10 {
			t.Fatalf("the failing deployment got %d requests in %d, want 10 (5 per worker)", len(failed), sent)
		}
		// Open: no traffic for the cool-down even though it would now answer.
		cb.setPost("")
		opened := failed[4].Time // no circuit can open before the 5th failure
		for time.Since(opened) < 4*time.Second {
			if r, err := rtChat(hc, g, key, "cb", false); err != nil || r.status != http.StatusOK || r.upstream == "cb-b" {
				t.Fatalf("while open: %v %+v", err, r)
			}
		}
		if n := len(b.modelRequests(t, "cb")); n != 10 {
			t.Fatalf("the open circuit let %d requests through", n-10)
		}
		// Half-open after 5s: one probe request, then normal traffic.
		deadline := time.Now().Add(6 * time.Second)
		for len(b.modelRequests(t, "cb")) == 10 && time.Now().Before(deadline) {
			if r, err := rtChat(hc, g, key, "cb", false); err != nil || r.status != http.StatusOK {
				t.Fatalf("while half-open: %v %+v", err, r)
			}
			time.Sleep(20 * time.Millisecond)
		}
		all := b.modelRequests(t, "cb")
		if len(all) == 10 {
			t.Fatal("the circuit did not let a probe through within 10s of opening")
		}
		pause := all[10].Time.Sub(failed[len(failed)-1].Time)
		t.Logf("circuit: opened after 5 failures per worker; first request after %s without traffic", pause.Round(time.Millisecond))
		if gap := all[10].Time.Sub(opened); gap < 4900*time.Millisecond {
			t.Errorf("the deployment got a request %s after the circuit opened, want the 5s cool-down", gap)
		}
		// Each worker has its own circuit and they opened at different failures, so
		// the second worker may still be cooling down: send until both have probed
		// (6 s at most), then check the deployment is back to its share.
		until := time.Now().Add(6 * time.Second)
		for time.Now().Before(until) {
			rtParallel(t, g, key, 8, 4, func(int) (string, []string) { return "cb", nil })
			time.Sleep(100 * time.Millisecond)
		}
		rs := rtParallel(t, g, key, 60, 4, func(int) (string, []string) { return "cb", nil })
		if got := byUpstream(rs)["cb-b"]; got < 10 {
			t.Errorf("after recovery the deployment got %d of 60 requests, want about a third (%v)", got, byUpstream(rs))
		}
	})

	t.Run("health_check_takes_upstream_out_and_back", func(t *testing.T) {
		conn := g.openDB(t)
		rs := rtParallel(t, g, key, 30, 3, func(int) (string, []string) { return "hl", nil })
		if byUpstream(rs)["hl-b"] == 0 {
			t.Fatalf("hl-b got no traffic before its probe failed: %v", byUpstream(rs))
		}
		hb.setGet("status=503")
		failedAt := time.Now()
		deadline := failedAt.Add(6 * time.Second)
		for {
			healthy, failures, errText, ok := g.upstreamHealth(t, conn, "hl-b")
			if ok && !healthy {
				t.Logf("hl-b marked unhealthy %s after its probe started failing (%d failures: %s)",
					time.Since(failedAt).Round(time.Millisecond), failures, errText)
				if failures < 2 || !strings.Contains(errText, "503") {
					t.Errorf("verdict failures=%d error=%q, want 2+ and the 503", failures, errText)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("hl-b not marked unhealthy within 6s of its probe failing")
			}
			time.Sleep(50 * time.Millisecond)
		}
		// Every worker has the verdict within a second.
		time.Sleep(time.Second)
		rs = rtParallel(t, g, key, 60, 6, func(int) (string, []string) { return "hl", nil })
		if n := byUpstream(rs)["hl-b"]; n != 0 {
			t.Errorf("an unhealthy upstream got %d of 60 requests (%d workers answered)", n, workersSeen(rs))
		}
		hb.setGet("")
		back := time.Now()
		for {
			r, err := rtChat(hc, g, key, "hl", false)
			if err != nil || r.status != http.StatusOK {
				t.Fatalf("%v %+v", err, r)
			}
			if r.upstream == "hl-b" {
				t.Logf("hl-b back in rotation %s after its probe recovered", time.Since(back).Round(time.Millisecond))
				break
			}
			if time.Since(back) > 5*time.Second {
				t.Fatal("hl-b not back in rotation within 5s of its probe recovering")
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// sortedTimes is a debugging aid for failure messages.
func sortedTimes(rs []mockRequest) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Time.Format("15:04:05.000")
	}
	sort.Strings(out)
	return out
}
