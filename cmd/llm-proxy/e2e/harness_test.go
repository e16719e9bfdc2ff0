package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// Bounds of the harness. They are generous: they only decide how long a broken
// build takes to fail, never how long a passing run takes.
const (
	startTimeout   = 30 * time.Second // a process prints its listening line / answers health
	cliTimeout     = 30 * time.Second // one llm-proxy subcommand
	stopTimeout    = 15 * time.Second // SIGTERM to exit, then SIGKILL
	orphanTimeout  = 10 * time.Second // a worker exits after its supervisor is gone
	recordTimeout  = 15 * time.Second // a request's row reaches request_logs
	requestTimeout = 20 * time.Second // one client request
)

// testSecret is LLM_PROXY_SECRET_KEY for every gateway; the CLI needs the same one
// to seal upstream keys the workers can open.
const testSecret = "e2e-test-secret-key-0123456789abcdef"

// nato is the vocabulary of the mock's replies: long enough that a stream can be
// split into 50 chunks (mockllm sends at most one chunk per word).
var nato = strings.Fields("alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike " +
	"november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu")

// reply returns a deterministic answer of n words for mockllm's --reply.
func reply(n int) string {
	words := make([]string, n)
	for i := range words {
		words[i] = nato[i%len(nato)]
	}
	return strings.Join(words, " ") + "."
}

// cleanEnv is the test process's environment without the variables that would
// change what the processes under test do (an OPENAI_API_KEY creates an upstream,
// any LLM_PROXY_ or MOCKLLM_ variable overrides the harness).
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "LLM_PROXY_") || strings.HasPrefix(name, "MOCKLLM_") ||
			strings.HasPrefix(name, "OPENAI_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		t.Fatalf("close probe listener: %v", err)
	}
	return port
}

// tail returns the last n lines of the file at path, for failure reports.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// lineWatcher is a process's stdout: it keeps everything and reports the rest of
// the first line that starts with prefix.
type lineWatcher struct {
	prefix string
	found  chan string

	mu   sync.Mutex
	buf  bytes.Buffer
	seen bool
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	start := w.buf.Len()
	w.buf.Write(p)
	if w.seen {
		return len(p), nil
	}
	// Only complete lines count; a line split across writes is seen once whole.
	text := w.buf.String()
	if i := strings.LastIndexByte(text[:start], '\n'); i >= 0 {
		text = text[i+1:]
	}
	for {
		line, rest, ok := strings.Cut(text, "\n")
		if !ok {
			break
		}
		if v, found := strings.CutPrefix(line, w.prefix); found {
			w.seen = true
			w.found <- strings.TrimSpace(v)
			break
		}
		text = rest
	}
	return len(p), nil
}

// ---- mockllm ----

// mockServer is a running mockllm process.
type mockServer struct {
	addr string
}

// mockRequest is one entry of mockllm's GET /debug/requests.
type mockRequest struct {
	Seq           uint64            `json:"seq"`
	Time          time.Time         `json:"time"`
	Path          string            `json:"path"`
	Headers       map[string]string `json:"headers"`
	Body          string            `json:"body"`
	Model         string            `json:"model"`
	Fault         string            `json:"fault"`
	Stream        bool              `json:"stream"`
	InFlight      bool              `json:"in_flight"`
	Status        int               `json:"status"`
	Completed     bool              `json:"completed"`
	ClientClosed  bool              `json:"client_closed"`
	ClosedAfterMS float64           `json:"closed_after_ms"`
}

// closedAt is when mockllm saw the client (the gateway) close the request.
func (r mockRequest) closedAt() time.Time {
	return r.Time.Add(time.Duration(r.ClosedAfterMS * float64(time.Millisecond)))
}

// startMock starts mockllm on a free port of 127.0.0.1; the test's cleanup kills it.
func startMock(t *testing.T, args ...string) *mockServer {
	t.Helper()
	_, bin := binaries(t)
	errPath := filepath.Join(t.TempDir(), "mockllm.stderr")
	errFile, err := os.Create(errPath)
	if err != nil {
		t.Fatalf("create mockllm log: %v", err)
	}
	out := &lineWatcher{prefix: "mockllm listening on ", found: make(chan string, 1)}
	cmd := exec.Command(bin, append([]string{"--addr", "127.0.0.1:0"}, args...)...)
	cmd.Env = cleanEnv()
	cmd.Stdout = out
	cmd.Stderr = errFile
	// The kernel kills it if this test process dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		errFile.Close()
		t.Fatalf("start mockllm: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		errFile.Close()
		if t.Failed() {
			t.Logf("mockllm stderr (tail):\n%s", tail(errPath, 20))
		}
	})
	select {
	case addr := <-out.found:
		return &mockServer{addr: addr}
	case <-exited:
		t.Fatalf("mockllm exited before listening:\n%s", tail(errPath, 20))
	case <-time.After(startTimeout):
		t.Fatalf("mockllm did not print its listening line within %s", startTimeout)
	}
	return nil
}

func (m *mockServer) baseURL() string { return "http://" + m.addr + "/v1" }

// sdk is an OpenAI client talking to mockllm directly, the reference for what the
// gateway must pass through unchanged.
func (m *mockServer) sdk() *openai.Client {
	c := openai.NewClient(option.WithBaseURL(m.baseURL()), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	return &c
}

// requests returns what mockllm has received so far.
func (m *mockServer) requests(ctx context.Context) ([]mockRequest, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m.addr+"/debug/requests", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /debug/requests: status %d", resp.StatusCode)
	}
	var out struct {
		Requests []mockRequest `json:"requests"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("decode /debug/requests: %w", err)
	}
	return out.Requests, nil
}

// waitRequest polls mockllm until a received request satisfies match, or within
// passes; ok is false when none did.
func (m *mockServer) waitRequest(t *testing.T, within time.Duration, match func(mockRequest) bool) (mockRequest, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		reqs, err := m.requests(ctx)
		if err == nil {
			for _, r := range reqs {
				if match(r) {
					return r, true
				}
			}
		}
		select {
		case <-ctx.Done():
			if err != nil {
				t.Logf("last /debug/requests error: %v", err)
			}
			return mockRequest{}, false
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ---- gateway ----

// gateway is one llm-proxy supervisor with its data directory.
type gateway struct {
	dir     string
	dbPath  string
	logDir  string
	errPath string // the supervisor's stderr
	env     []string
	port    int
	workers int

	cmd     *exec.Cmd
	exited  chan struct{}
	exitErr error // valid once exited is closed

	// client is a keep-alive HTTP client for requests that do not care which worker
	// answers.
	client *http.Client

	mu   sync.Mutex
	pids map[int]int // pid → slot of every worker seen in a health answer
}

// newGateway prepares a data directory and runs `llm-proxy migrate` on it; env adds
// or overrides LLM_PROXY_ variables. Configure upstreams and keys with cli, then start.
func newGateway(t *testing.T, env map[string]string) *gateway {
	t.Helper()
	binaries(t)
	dir := t.TempDir()
	g := &gateway{
		dir:     dir,
		dbPath:  filepath.Join(dir, "data", "llm-proxy.db"),
		logDir:  filepath.Join(dir, "logs"),
		errPath: filepath.Join(dir, "supervisor.stderr"),
		port:    freePort(t),
		workers: 2,
		pids:    map[int]int{},
	}
	vars := map[string]string{
		"LLM_PROXY_HOST":             "127.0.0.1",
		"LLM_PROXY_PORT":             strconv.Itoa(g.port),
		"LLM_PROXY_WORKERS":          strconv.Itoa(g.workers),
		"LLM_PROXY_DATABASE_PATH":    g.dbPath,
		"LLM_PROXY_LOG_DIR":          g.logDir,
		"LLM_PROXY_SECRET_KEY":       testSecret,
		"LLM_PROXY_SHUTDOWN_TIMEOUT": "20s",
	}
	for k, v := range env {
		vars[k] = v
	}
	var extra []string
	for k, v := range vars {
		extra = append(extra, k+"="+v)
	}
	g.env = cleanEnv(extra...)
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	g.client = &http.Client{Transport: tr}
	t.Cleanup(tr.CloseIdleConnections)
	g.cli(t, "migrate")
	return g
}

// cli runs `llm-proxy args...` against the gateway's database and returns its stdout.
func (g *gateway) cli(t *testing.T, args ...string) string {
	t.Helper()
	proxy, _ := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, proxy, args...)
	cmd.Env = g.env
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("llm-proxy %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// createKey runs `llm-proxy keys create --name name flags...` and returns the key's id
// and the key, which the CLI prints alone on its last line.
func (g *gateway) createKey(t *testing.T, name string, flags ...string) (int64, string) {
	t.Helper()
	out := g.cli(t, append([]string{"keys", "create", "--name", name}, flags...)...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	key := strings.TrimSpace(lines[len(lines)-1])
	if !strings.HasPrefix(key, "sk-") || strings.ContainsAny(key, " \t") {
		t.Fatalf("keys create: last line %q is not a key; output:\n%s", key, out)
	}
	// The id is read back from `keys list --json`, the documented machine interface.
	var keys []struct {
		ID     int64  `json:"id"`
		Name   string `json:"name"`
		Prefix string `json:"prefix"`
	}
	list := g.cli(t, "keys", "list", "--json")
	if err := json.Unmarshal([]byte(list), &keys); err != nil {
		t.Fatalf("keys list --json: %v\n%s", err, list)
	}
	var id int64
	for _, k := range keys {
		if k.Name == name && strings.HasPrefix(key, strings.TrimRight(k.Prefix, "…")) {
			id = k.ID
		}
	}
	if id == 0 {
		t.Fatalf("keys list --json has no key named %q with the new key's prefix:\n%s", name, list)
	}
	return id, key
}

// start runs the supervisor and waits until every worker answers /api/health. The
// test's cleanup stops it (SIGTERM, SIGKILL after stopTimeout) and fails the test if
// a worker outlives it.
func (g *gateway) start(t *testing.T) {
	t.Helper()
	g.launch(t)
	g.waitWorkers(t, nil, startTimeout)
}

// launch runs the supervisor without waiting for its workers; the test's cleanup stops it.
func (g *gateway) launch(t *testing.T) {
	t.Helper()
	proxy, _ := binaries(t)
	g.launchBinary(t, proxy)
}

// launchBinary is launch with the supervisor started from bin (the upgrade test runs a
// build of its own).
func (g *gateway) launchBinary(t *testing.T, bin string) {
	t.Helper()
	errFile, err := os.Create(g.errPath)
	if err != nil {
		t.Fatalf("create supervisor log: %v", err)
	}
	cmd := exec.Command(bin)
	cmd.Env = g.env
	cmd.Stdout = errFile
	cmd.Stderr = errFile
	// If this test process dies, the kernel kills the supervisor, and its workers
	// follow it (they watch their parent).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		errFile.Close()
		t.Fatalf("start %s: %v", bin, err)
	}
	g.cmd = cmd
	g.exited = make(chan struct{})
	go func() {
		g.exitErr = cmd.Wait()
		close(g.exited)
	}()
	t.Cleanup(func() {
		g.stop(t)
		errFile.Close()
		if t.Failed() {
			t.Logf("llm-proxy output (tail):\n%s", tail(g.errPath, 60))
		}
	})
}

// stop ends the supervisor if it still runs, then checks that no worker outlived it.
func (g *gateway) stop(t *testing.T) {
	t.Helper()
	select {
	case <-g.exited:
	default:
		_ = g.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-g.exited:
		case <-time.After(stopTimeout):
			t.Errorf("llm-proxy did not exit within %s of SIGTERM; killing it", stopTimeout)
			_ = g.cmd.Process.Kill()
			<-g.exited
		}
	}
	g.mu.Lock()
	pids := make([]int, 0, len(g.pids))
	for pid := range g.pids {
		pids = append(pids, pid)
	}
	g.mu.Unlock()
	deadline := time.Now().Add(orphanTimeout)
	for _, pid := range pids {
		for isWorker(pid, g.cmd.Path) {
			if time.Now().After(deadline) {
				t.Errorf("worker pid %d still runs %s after its supervisor exited; killing it", pid, orphanTimeout)
				_ = syscall.Kill(pid, syscall.SIGKILL)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// isWorker reports whether pid is a live (not zombie) process running bin, so a
// recycled pid is never mistaken for one of ours.
func isWorker(pid int, bin string) bool {
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	argv0, _, _ := strings.Cut(string(cmdline), "\x00")
	if argv0 != bin {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// Field 3 follows the parenthesised command name.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
		return false
	}
	return true
}

// hasExited reports whether the supervisor has exited, and its exit error.
func (g *gateway) hasExited() (bool, error) {
	select {
	case <-g.exited:
		return true, g.exitErr
	default:
		return false, nil
	}
}

func (g *gateway) addr() string    { return "127.0.0.1:" + strconv.Itoa(g.port) }
func (g *gateway) baseURL() string { return "http://" + g.addr() + "/v1" }

// sdk is an OpenAI client for the gateway with key; hc nil uses g.client.
func (g *gateway) sdk(key string, hc *http.Client, opts ...option.RequestOption) *openai.Client {
	if hc == nil {
		hc = g.client
	}
	base := []option.RequestOption{
		option.WithBaseURL(g.baseURL()),
		option.WithAPIKey(key),
		option.WithMaxRetries(0),
		option.WithHTTPClient(hc),
	}
	c := openai.NewClient(append(base, opts...)...)
	return &c
}

// health is the JSON of GET /api/health.
type health struct {
	Status        string  `json:"status"`
	Version       string  `json:"version"`
	WorkerID      string  `json:"worker_id"`
	WorkerSlot    int     `json:"worker_slot"`
	PID           int     `json:"pid"`
	UptimeSeconds float64 `json:"uptime_seconds"`
}

// health asks /api/health through hc and remembers the answering worker.
func (g *gateway) health(ctx context.Context, hc *http.Client) (health, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+g.addr()+"/api/health", nil)
	if err != nil {
		return health{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return health{}, err
	}
	defer resp.Body.Close()
	var h health
	if resp.StatusCode != http.StatusOK {
		return h, fmt.Errorf("GET /api/health: status %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return h, fmt.Errorf("decode /api/health: %w", err)
	}
	if h.PID <= 0 {
		return h, fmt.Errorf("GET /api/health: no pid in %+v", h)
	}
	g.mu.Lock()
	g.pids[h.PID] = h.WorkerSlot
	g.mu.Unlock()
	return h, nil
}

// freshClient opens a new connection per request, so SO_REUSEPORT spreads them
// over the workers' sockets.
func freshClient(timeout time.Duration) *http.Client {
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: timeout}
}

// waitWorkers asks /api/health over new connections until g.workers distinct
// workers not in exclude answered, and returns them (pid → slot).
func (g *gateway) waitWorkers(t *testing.T, exclude map[int]bool, within time.Duration) map[int]int {
	t.Helper()
	hc := freshClient(5 * time.Second)
	deadline := time.Now().Add(within)
	seen := map[int]int{}
	var lastErr error
	for len(seen) < g.workers {
		if done, err := g.hasExited(); done {
			t.Fatalf("llm-proxy exited (%v) before %d workers answered:\n%s", err, g.workers, tail(g.errPath, 40))
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d workers answered /api/health within %s (last error: %v)", len(seen), g.workers, within, lastErr)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		h, err := g.health(ctx, hc)
		cancel()
		if err != nil {
			lastErr = err
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if !exclude[h.PID] {
			seen[h.PID] = h.WorkerSlot
		}
	}
	return seen
}

// pinWorkers returns one keep-alive client per worker, each holding a single
// connection to that worker, so a test can send requests to a worker of its choice.
func (g *gateway) pinWorkers(t *testing.T) map[int]*http.Client {
	t.Helper()
	out := map[int]*http.Client{}
	for attempt := 0; len(out) < g.workers; attempt++ {
		if attempt == 200 {
			t.Fatalf("could not open a connection to each of %d workers in 200 attempts (got %d)", g.workers, len(out))
		}
		tr := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute}
		hc := &http.Client{Transport: tr, Timeout: requestTimeout}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		h, err := g.health(ctx, hc)
		cancel()
		if err != nil {
			t.Fatalf("pin workers: %v", err)
		}
		if _, ok := out[h.PID]; ok {
			tr.CloseIdleConnections()
			continue
		}
		out[h.PID] = hc
		t.Cleanup(tr.CloseIdleConnections)
	}
	return out
}

// logRow is the part of a request_logs row the tests check.
type logRow struct {
	KeyID            int64
	Endpoint         string
	Model            string
	Upstream         string
	UpstreamModel    string
	Status           int
	Stream           bool
	PromptTokens     int
	CompletionTokens int
	ErrorClass       string
}

// logRow reads the request_logs row of requestID; ok is false when there is none yet.
func (g *gateway) logRow(requestID string) (row logRow, ok bool, err error) {
	conn, err := sqlite.OpenConn(g.dbPath, sqlite.OpenReadOnly)
	if err != nil {
		return row, false, fmt.Errorf("open %s: %w", g.dbPath, err)
	}
	defer conn.Close()
	if err := sqlitex.ExecuteTransient(conn, "PRAGMA busy_timeout = 5000;", nil); err != nil {
		return row, false, fmt.Errorf("busy_timeout: %w", err)
	}
	err = sqlitex.Execute(conn, `SELECT key_id, endpoint, model, upstream, upstream_model, status, stream,
			prompt_tokens, completion_tokens, error_class
		FROM request_logs WHERE request_id = :id`, &sqlitex.ExecOptions{
		Named: map[string]any{":id": requestID},
		ResultFunc: func(stmt *sqlite.Stmt) error {
			ok = true
			row = logRow{
				KeyID:            stmt.ColumnInt64(0),
				Endpoint:         stmt.ColumnText(1),
				Model:            stmt.ColumnText(2),
				Upstream:         stmt.ColumnText(3),
				UpstreamModel:    stmt.ColumnText(4),
				Status:           stmt.ColumnInt(5),
				Stream:           stmt.ColumnBool(6),
				PromptTokens:     stmt.ColumnInt(7),
				CompletionTokens: stmt.ColumnInt(8),
				ErrorClass:       stmt.ColumnText(9),
			}
			return nil
		},
	})
	if err != nil {
		return row, false, fmt.Errorf("query request_logs: %w", err)
	}
	return row, ok, nil
}

// waitLogRow polls request_logs until requestID's row is there.
func (g *gateway) waitLogRow(t *testing.T, requestID string) logRow {
	t.Helper()
	if requestID == "" {
		t.Fatal("no X-Request-Id to look up in request_logs")
	}
	deadline := time.Now().Add(recordTimeout)
	for {
		row, ok, err := g.logRow(requestID)
		if ok {
			return row
		}
		if time.Now().After(deadline) {
			t.Fatalf("request %s has no request_logs row after %s (last error: %v)", requestID, recordTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// apiError asserts that err is an *openai.Error with status want and an error body
// of OpenAI's shape, {"error":{"message":...,"type":...,"code":...}}, and returns it.
func apiError(t *testing.T, err error, want int) *openai.Error {
	t.Helper()
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("error = %v (%T), want an *openai.Error with status %d", err, err, want)
	}
	if apiErr.StatusCode != want {
		t.Errorf("status = %d, want %d (body %s)", apiErr.StatusCode, want, apiErr.RawJSON())
	}
	checkErrorShape(t, []byte(errorBody(t, apiErr)))
	return apiErr
}

// errorBody returns the HTTP body of an API error.
func errorBody(t *testing.T, ae *openai.Error) string {
	t.Helper()
	body, err := io.ReadAll(ae.Response.Body)
	if err != nil {
		t.Fatalf("read error body: %v", err)
	}
	ae.Response.Body = io.NopCloser(bytes.NewReader(body))
	return string(body)
}

// checkErrorShape checks body for OpenAI's error JSON.
func checkErrorShape(t *testing.T, body []byte) {
	t.Helper()
	var shape map[string]map[string]json.RawMessage
	if err := json.Unmarshal(body, &shape); err != nil || len(shape) != 1 || shape["error"] == nil {
		t.Errorf("error body %q is not {\"error\":{...}} (%v)", body, err)
		return
	}
	for _, k := range []string{"message", "type", "code"} {
		if _, ok := shape["error"][k]; !ok {
			t.Errorf("error body %s has no %q", body, k)
		}
	}
	var msg, typ string
	_ = json.Unmarshal(shape["error"]["message"], &msg)
	_ = json.Unmarshal(shape["error"]["type"], &typ)
	if msg == "" || typ == "" {
		t.Errorf("error body %s: message and type must be non-empty strings", body)
	}
}

// chatParams is a one-message chat request.
func chatParams(model, prompt string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:    openai.ChatModel(model),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
	}
}

// marker returns a string unique to this call, to find a request in mockllm's record.
func marker(t *testing.T) string {
	return fmt.Sprintf("%s#%d#%d", t.Name(), markerSeq.Add(1), time.Now().UnixNano())
}

var markerSeq atomic.Uint64
