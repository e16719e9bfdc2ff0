package worker

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"github.com/llm-proxy/llm-proxy/worker/upstream"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/llm-proxy/llm-proxy/cache"
	"github.com/llm-proxy/llm-proxy/routing"
	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/store/secret"
	"github.com/llm-proxy/llm-proxy/store/shm"
	"github.com/llm-proxy/llm-proxy/store/spool"
	"github.com/llm-proxy/llm-proxy/worker/limits"
)

// Keys every harness creates.
const (
	keyAll     = "sk-test-all-models-0123456789abcdef"     // no allow-list
	keyLimited = "sk-test-limited-0123456789abcdef"        // allow-list: gpt-4o, not-served
	keyExpired = "sk-test-expired-0123456789abcdef"        // expired an hour ago
	keyRevoked = "sk-test-revoked-at-start-0123456789abcd" // revoked before the worker starts
)

// testConfig fills Config with values that keep tests fast: short timeouts where a
// test waits for them, generous ones elsewhere.
func testConfig() Config {
	return Config{
		MaxBodyBytes: 1 << 20, MaxHeaderBytes: 16 << 10,
		Config: upstream.Config{
			ResponseHeaderTimeout: 5 * time.Second,
			ConnectTimeout:        2 * time.Second,
		},
		FirstByteTimeout:   5 * time.Second,
		StreamIdleTimeout:  5 * time.Second,
		RequestTimeout:     10 * time.Second,
		RetryBudgetPercent: 20,
		RetryBudgetMin:     3,
		ReadTimeout:        5 * time.Second,
		IdleTimeout:        10 * time.Second,
		ShutdownTimeout:    5 * time.Second,
	}
}

// upstreamBehavior says how the fake upstream answers.
type upstreamBehavior struct {
	// kind: "json" (default), "stream", "status", "hang", "cut" (stream chunks then
	// end the body cleanly without [DONE]) or "abort" (chunks then drop the connection).
	kind   string
	chunks int
	delay  time.Duration
	status int
	header http.Header // extra response headers
	body   string      // response body for "json" (default: a chat completion) and "status"
	// noUsage: the upstream reports no usage, like many self-hosted servers (a
	// JSON answer without "usage"; streams ignore stream_options.include_usage).
	noUsage bool
}

// upstreamRequest is what the fake upstream received.
type upstreamRequest struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
}

// fakeUpstream is an OpenAI-compatible server on 127.0.0.1 that records requests
// and answers as told.
type fakeUpstream struct {
	srv *httptest.Server

	mu       sync.Mutex
	behavior upstreamBehavior
	reqs     []upstreamRequest

	received  chan struct{}  // one value per request, once its body is read
	cancelled chan time.Time // when a hanging or streaming handler saw its request end
	quit      chan struct{}
}

const fakeCompletion = `{"id":"chatcmpl-test","object":"chat.completion","created":1700000000,"model":"real-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}`

const fakeCompletionNoUsage = `{"id":"chatcmpl-test","object":"chat.completion","created":1700000000,"model":"real-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"},"finish_reason":"stop"}]}`

func newFakeUpstream(t *testing.T) *fakeUpstream {
	t.Helper()
	f := &fakeUpstream{
		received:  make(chan struct{}, 256),
		cancelled: make(chan time.Time, 16),
		quit:      make(chan struct{}),
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(func() {
		close(f.quit)
		f.srv.CloseClientConnections()
		f.srv.Close()
	})
	return f
}

// URL is the base URL an upstream row uses ("/v1" like OpenAI's).
func (f *fakeUpstream) URL() string { return f.srv.URL + "/v1" }

func (f *fakeUpstream) set(b upstreamBehavior) {
	f.mu.Lock()
	f.behavior = b
	f.mu.Unlock()
}

func (f *fakeUpstream) requests() []upstreamRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]upstreamRequest(nil), f.reqs...)
}

func (f *fakeUpstream) last(t *testing.T) upstreamRequest {
	t.Helper()
	reqs := f.requests()
	if len(reqs) == 0 {
		t.Fatal("the upstream received no request")
	}
	return reqs[len(reqs)-1]
}

func (f *fakeUpstream) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.reqs = append(f.reqs, upstreamRequest{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body})
	b := f.behavior
	f.mu.Unlock()
	f.received <- struct{}{}

	for k, vs := range b.header {
		w.Header()[k] = vs
	}
	switch b.kind {
	case "", "json":
		w.Header().Set("Content-Type", "application/json")
		if b.body == "" {
			b.body = fakeCompletion
			if b.noUsage {
				b.body = fakeCompletionNoUsage
			}
		}
		io.WriteString(w, b.body)
	case "status":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(b.status)
		io.WriteString(w, b.body)
	case "hang":
		select {
		case <-r.Context().Done():
			f.cancelled <- time.Now()
		case <-f.quit:
		}
	case "stream", "cut", "abort":
		if !bytes.Contains(body, []byte(`"stream":true`)) {
			// Like OpenAI: a request that did not ask to stream gets one JSON answer.
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, fakeCompletion)
			return
		}
		f.stream(w, r, body, b)
	}
}

func (f *fakeUpstream) stream(w http.ResponseWriter, r *http.Request, body []byte, b upstreamBehavior) {
	var req struct {
		Stream        bool `json:"stream"`
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	_ = json.Unmarshal(body, &req)
	usage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage && !b.noUsage
	// OpenAI adds "usage":null to every chunk when usage is requested.
	usageField := ""
	if usage {
		usageField = `,"usage":null`
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	fl := w.(http.Flusher)
	fl.Flush()
	send := func(s string) bool {
		if _, err := io.WriteString(w, s); err != nil {
			return false
		}
		fl.Flush()
		return true
	}
	for i := range b.chunks {
		if i > 0 && b.delay > 0 {
			select {
			case <-time.After(b.delay):
			case <-r.Context().Done():
				f.cancelled <- time.Now()
				return
			case <-f.quit:
				return
			}
		}
		if !send(fmt.Sprintf("data: {\"id\":\"chatcmpl-s\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"real-model\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok%d \"},\"finish_reason\":null}]%s}\n\n", i, usageField)) {
			f.cancelled <- time.Now()
			return
		}
	}
	switch b.kind {
	case "cut":
		return
	case "abort":
		panic(http.ErrAbortHandler)
	}
	send(`data: {"id":"chatcmpl-s","object":"chat.completion.chunk","created":1,"model":"real-model","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]` + usageField + "}\n\n")
	if usage {
		send(fmt.Sprintf(`data: {"id":"chatcmpl-s","object":"chat.completion.chunk","created":1,"model":"real-model","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":%d,"total_tokens":%d}}`+"\n\n", b.chunks, 9+b.chunks))
	}
	send("data: [DONE]\n\n")
}

// waitCancelled waits for the fake upstream to notice a cancelled request.
func (f *fakeUpstream) waitCancelled(t *testing.T, timeout time.Duration) (time.Time, bool) {
	t.Helper()
	select {
	case at := <-f.cancelled:
		return at, true
	case <-time.After(timeout):
		return time.Time{}, false
	}
}

func (f *fakeUpstream) waitReceived(t *testing.T) {
	t.Helper()
	select {
	case <-f.received:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream received nothing within 5 s")
	}
}

// harness is one worker serving on 127.0.0.1 with a real SQLite store and spool.
type harness struct {
	w        *Worker
	st       *store.Store
	up       *fakeUpstream
	addr     string
	spoolDir string
	keyIDs   map[string]int64
	client   *http.Client

	shutdownOnce sync.Once
	shutdownErr  error
}

type harnessOptions struct {
	cfg func(*Config)
	// upstreams replaces the default upstream rows (one "fake" upstream).
	upstreams func(up *fakeUpstream) []store.Upstream
	// cache, when set, gives the worker an answer cache built on the harness store.
	cache func(st *store.Store) *cache.Cache
	// limits gives the worker a limiter on a shared-memory file in the test dir.
	limits bool
}

func defaultUpstreams(up *fakeUpstream) []store.Upstream {
	return []store.Upstream{{
		Name: "fake", BaseURL: up.URL(), APIKey: "upstream-key", Weight: 1, Enabled: true,
		Deployments: []store.Deployment{
			{PublicModel: "gpt-4o", UpstreamModel: "gpt-4o", Weight: 1},
			{PublicModel: "alias", UpstreamModel: "real-model", Weight: 1},
			{PublicModel: "text-embedding-3-small", UpstreamModel: "text-embedding-3-small", Weight: 1},
		},
	}}
}

func newHarness(t *testing.T, opts harnessOptions) *harness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dir := t.TempDir()
	box, _, err := secret.Load("some-test-secret-key-0123456789", dir)
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

	h := &harness{st: st, keyIDs: map[string]int64{}, spoolDir: filepath.Join(dir, "spool")}
	h.up = newFakeUpstream(t)
	ups := defaultUpstreams(h.up)
	if opts.upstreams != nil {
		ups = opts.upstreams(h.up)
	}
	for _, u := range ups {
		if _, err := st.AddUpstream(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	for _, k := range []store.APIKey{
		{Name: "all", Hash: sha256.Sum256([]byte(keyAll)), Prefix: keyAll[:10]},
		{Name: "limited", Hash: sha256.Sum256([]byte(keyLimited)), Prefix: keyLimited[:10], Models: []string{"gpt-4o", "not-served"}},
		{Name: "expired", Hash: sha256.Sum256([]byte(keyExpired)), Prefix: keyExpired[:10], CreatedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour)},
		{Name: "revoked", Hash: sha256.Sum256([]byte(keyRevoked)), Prefix: keyRevoked[:10], RevokedAt: now.Add(-time.Minute)},
	} {
		id, err := st.CreateAPIKey(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		h.keyIDs[k.Name] = id
	}

	sp, err := spool.Create(h.spoolDir, "w1", 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	if opts.cfg != nil {
		opts.cfg(&cfg)
	}
	var answers *cache.Cache
	if opts.cache != nil {
		answers = opts.cache(st)
	}
	var limiter *limits.Limiter
	var counters routing.CounterSource
	if opts.limits {
		region, err := shm.Open(filepath.Join(dir, "llm-proxy.shm"), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { region.Close() })
		limiter = limits.New(region, time.Now, hclog.NewNullLogger())
		counters = SharedCounters(region)
	}
	w, err := New(ctx, cfg, Deps{
		Limiter:  limiter,
		Counters: counters,
		Cache:    answers,
		Store:    st,
		Spool:    sp,
		Logger:   hclog.NewNullLogger(),
		Slot:     3,
		WorkerID: "w1",
		Version:  "test-version",
		Routing:  routing.Config{Strategy: routing.Weighted, HealthCheckInterval: 60, HealthCheckTimeout: 10},
	})
	if err != nil {
		t.Fatal(err)
	}
	h.w = w
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	runCtx, stopRun := context.WithCancel(context.Background())
	served, ran := make(chan error, 1), make(chan error, 1)
	go func() { served <- w.Serve(ln) }()
	go func() { ran <- w.Run(runCtx) }()
	tr := &http.Transport{DisableCompression: true, ResponseHeaderTimeout: 10 * time.Second}
	h.client = &http.Client{Transport: tr, Timeout: 15 * time.Second}

	t.Cleanup(func() {
		tr.CloseIdleConnections()
		if err := h.shutdown(5 * time.Second); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		stopRun()
		if err := <-ran; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := sp.Close(); err != nil {
			t.Errorf("spool close: %v", err)
		}
	})
	return h
}

// shutdown stops the worker once; later calls return the first call's result.
func (h *harness) shutdown(timeout time.Duration) error {
	h.shutdownOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		h.shutdownErr = h.w.Shutdown(ctx)
	})
	return h.shutdownErr
}

func (h *harness) url(path string) string { return "http://" + h.addr + path }

// do sends a request with an optional bearer key and returns the response with its
// body read.
func (h *harness) do(t *testing.T, method, path, key, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, h.url(path), rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, b
}

func (h *harness) chat(t *testing.T, key, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	return h.do(t, http.MethodPost, "/v1/chat/completions", key, body, hdr...)
}

// openAIError is OpenAI's error body.
type openAIError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// checkError asserts an OpenAI-shaped JSON error with status and code.
func checkError(t *testing.T, resp *http.Response, body []byte, status int, code string) openAIError {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status = %d, want %d (body %s)", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var raw map[string]map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("error body is not OpenAI's shape: %v: %s", err, body)
	}
	for _, field := range []string{"message", "type", "param", "code"} {
		if _, ok := raw["error"][field]; !ok {
			t.Errorf("error body lacks error.%s: %s", field, body)
		}
	}
	var e openAIError
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body: %v: %s", err, body)
	}
	if e.Error.Message == "" || e.Error.Type == "" {
		t.Errorf("error message/type empty: %s", body)
	}
	if code != "" {
		if got := e.Error.Code; got == nil || *got != code {
			t.Errorf("error.code is not %q (body %s)", code, body)
		}
	}
	return e
}

// records reads every request record in the harness's spool directory.
func (h *harness) records(t *testing.T) []spool.Record {
	t.Helper()
	entries, err := os.ReadDir(h.spoolDir)
	if err != nil {
		t.Fatal(err)
	}
	var recs []spool.Record
	for _, e := range entries {
		if _, ok := spool.BaseName(e.Name()); !ok {
			continue
		}
		f, err := os.Open(filepath.Join(h.spoolDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if spool.Padding(sc.Bytes()) {
				break // the NUL padding after an active file's last line
			}
			r, err := spool.ParseRecord(sc.Bytes())
			if err != nil {
				t.Errorf("spool line %q: %v", sc.Text(), err)
				continue
			}
			recs = append(recs, r)
		}
		f.Close()
	}
	return recs
}

// waitRecord polls the spool until a record matches, for records written after
// the client already has its answer (client disconnects).
func (h *harness) waitRecord(t *testing.T, match func(spool.Record) bool) spool.Record {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		for _, r := range h.records(t) {
			if match(r) {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no matching request record within 3 s; have %+v", h.records(t))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *harness) recordByID(t *testing.T, id string) spool.Record {
	t.Helper()
	if id == "" {
		t.Fatal("empty request id")
	}
	return h.waitRecord(t, func(r spool.Record) bool { return r.RequestID == id })
}

// rawRequest opens a TCP connection and writes one HTTP/1.1 request by hand, for
// tests that must close the connection themselves.
func (h *harness) rawRequest(t *testing.T, path, key, body string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		path, h.addr, key, len(body), body)
	return conn
}

// sseEvent is one "data:" line and when the client read it.
type sseEvent struct {
	data string
	at   time.Time
}

// readSSE reads data lines until [DONE] or EOF.
func readSSE(t *testing.T, r io.Reader) []sseEvent {
	t.Helper()
	br := bufio.NewReader(r)
	var events []sseEvent
	for {
		line, err := br.ReadString('\n')
		if s, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "data:"); ok {
			s = strings.TrimSpace(s)
			events = append(events, sseEvent{data: s, at: time.Now()})
			if s == "[DONE]" {
				return events
			}
		}
		if err != nil {
			return events
		}
	}
}

// streamContent assembles the delta contents of chat chunks.
func streamContent(t *testing.T, events []sseEvent) string {
	t.Helper()
	var sb strings.Builder
	for _, e := range events {
		if e.data == "[DONE]" {
			continue
		}
		var chunk struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(e.data), &chunk); err != nil {
			t.Errorf("chunk is not JSON: %v: %s", err, e.data)
			continue
		}
		for _, c := range chunk.Choices {
			sb.WriteString(c.Delta.Content)
		}
	}
	return sb.String()
}
