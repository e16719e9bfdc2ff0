package e2e

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response body: %v", err)
	}
	return b
}

// testRevoke: a key revoked with the CLI while the gateway runs is refused by every
// worker within a second.
func testRevoke(t *testing.T, g *gateway, key string, id int64) {
	ctx := ctxTimeout(t, time.Minute)
	pinned := g.pinWorkers(t)
	for pid, hc := range pinned {
		if _, err := g.sdk(key, hc).Models.List(ctx); err != nil {
			t.Fatalf("worker %d refuses the key before it was revoked: %v", pid, err)
		}
	}

	g.cli(t, "keys", "revoke", strconv.FormatInt(id, 10))
	revokedAt := time.Now()
	refusedAfter := map[int]time.Duration{}
	for len(refusedAfter) < len(pinned) && time.Since(revokedAt) < 5*time.Second {
		for pid, hc := range pinned {
			if _, done := refusedAfter[pid]; done {
				continue
			}
			_, err := g.sdk(key, hc).Models.List(ctx)
			if err == nil {
				continue
			}
			took := time.Since(revokedAt)
			ae := apiError(t, err, http.StatusUnauthorized)
			if !strings.Contains(ae.Message, "revoked") {
				t.Errorf("worker %d: message %q does not say the key was revoked", pid, ae.Message)
			}
			refusedAfter[pid] = took
		}
		time.Sleep(10 * time.Millisecond)
	}
	for pid := range pinned {
		took, ok := refusedAfter[pid]
		switch {
		case !ok:
			t.Errorf("worker %d still accepts the key 5s after it was revoked", pid)
		case took > time.Second:
			t.Errorf("worker %d refused the revoked key only after %s, want within 1s", pid, took)
		default:
			t.Logf("worker %d refuses the revoked key %s after the CLI returned", pid, took.Round(time.Millisecond))
		}
		// The pinned connection must really have stayed on that worker.
		if h, err := g.health(ctx, pinned[pid]); err != nil || h.PID != pid {
			t.Errorf("pinned connection of worker %d now reaches pid %d (%v)", pid, h.PID, err)
		}
	}

	// From new connections, whichever worker takes them: always refused.
	c := g.sdk(key, freshClient(requestTimeout))
	for i := 0; i < 20; i++ {
		_, err := c.Chat.Completions.New(ctx, chatParams("mock-1", "after revocation"))
		if ae := apiError(t, err, http.StatusUnauthorized); !strings.Contains(ae.Message, "revoked") {
			t.Fatalf("request %d: message %q does not say the key was revoked", i, ae.Message)
		}
	}
}

// testDisconnect: a client that goes away makes the gateway close its upstream
// request within a second, mid-stream and before the first byte.
func testDisconnect(t *testing.T, g *gateway, mock *mockServer, key string) {
	t.Run("mid_stream", func(t *testing.T) {
		prompt := marker(t)
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		// 50 chunks 100 ms apart: about 5 s if nobody hangs up.
		s := g.sdk(key, nil).Chat.Completions.NewStreaming(ctx, chatParams("mock-1@chunks=50,delay=100ms", prompt))
		n := 0
		for n < 2 && s.Next() {
			n++
		}
		if n < 2 {
			t.Fatalf("stream ended after %d chunks: %v", n, s.Err())
		}
		cancel()
		_ = s.Close()
		closedAt := time.Now()
		checkUpstreamClosed(t, mock, prompt, closedAt)
	})

	t.Run("before_first_byte", func(t *testing.T) {
		prompt := marker(t)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := g.sdk(key, nil).Chat.Completions.New(ctx, chatParams("mock-1@hang", prompt))
		closedAt := time.Now()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("request to a hanging upstream: err = %v, want the client's deadline", err)
		}
		checkUpstreamClosed(t, mock, prompt, closedAt)
	})
}

// checkUpstreamClosed waits for mockllm's record of the request containing prompt
// and checks that its connection was closed within a second of closedAt.
func checkUpstreamClosed(t *testing.T, mock *mockServer, prompt string, closedAt time.Time) {
	t.Helper()
	r, ok := mock.waitRequest(t, 3*time.Second, func(r mockRequest) bool {
		return strings.Contains(r.Body, prompt) && !r.InFlight
	})
	if !ok {
		t.Fatalf("the upstream request is still open 3s after the client closed its connection")
	}
	if !r.ClientClosed {
		t.Fatalf("mockllm finished the request (status %d, completed %t) instead of seeing it closed", r.Status, r.Completed)
	}
	lag := r.closedAt().Sub(closedAt)
	if lag > time.Second {
		t.Errorf("the gateway closed the upstream request %s after the client left, want within 1s", lag)
	}
	t.Logf("upstream request closed %s after the client", lag.Round(time.Millisecond))
}

// testKillWorker: kill -9 of a worker under load. Its replacement serves within
// 2 s, no connection is refused, and the only failed requests are the ones whose
// connection was to the killed worker (at most one per connection). It returns the
// killed pid.
func testKillWorker(t *testing.T, g *gateway, key string) int {
	const (
		clients      = 8
		minWarmup    = 200         // successful requests before the kill, and
		warmupTime   = time.Second // load time before the kill
		afterKill    = 3 * time.Second
		maxPerClient = 20000
	)
	before := g.waitWorkers(t, nil, 10*time.Second)
	victim, victimSlot := 0, -1
	for pid, slot := range before {
		if slot > victimSlot {
			victim, victimSlot = pid, slot
		}
	}
	if !isWorker(victim, g.cmd.Path) {
		t.Fatalf("pid %d from /api/health is not a running llm-proxy worker", victim)
	}

	type failure struct {
		client   int
		onVictim bool // the request's connection was known to lead to the victim
		refused  bool
		err      error
	}
	var (
		mu       sync.Mutex
		failures []failure
		killed   atomic.Bool
		okBefore atomic.Int64
		okAfter  atomic.Int64
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One keep-alive connection per client, as an application's pool would
			// hold; a failed connection is replaced by a new one.
			tr := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr}
			c := g.sdk(key, hc)
			params := chatParams("mock-1", "load")
			// Every request first asks /api/health on the same connection, so each
			// connection's worker is known when a request on it fails.
			connPID := map[string]int{}
			var cur string // local address of the connection of the current request
			trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
				cur = info.Conn.LocalAddr().String()
			}}
			fail := func(err error) {
				mu.Lock()
				failures = append(failures, failure{client: i, onVictim: cur != "" && connPID[cur] == victim,
					refused: errors.Is(err, syscall.ECONNREFUSED), err: err})
				mu.Unlock()
			}
			for n := 0; n < maxPerClient; n++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(httptrace.WithClientTrace(context.Background(), trace), requestTimeout)
				cur = ""
				h, err := g.health(ctx, hc)
				if err != nil {
					cancel()
					fail(err)
					continue
				}
				connPID[cur] = h.PID
				cur = ""
				_, err = c.Chat.Completions.New(ctx, params)
				cancel()
				if err != nil {
					fail(err)
					continue
				}
				if killed.Load() {
					okAfter.Add(1)
				} else {
					okBefore.Add(1)
				}
			}
		}()
	}
	stopLoad := func() {
		close(stop)
		wg.Wait()
	}

	loadStart := time.Now()
	for deadline := loadStart.Add(10 * time.Second); okBefore.Load() < minWarmup || time.Since(loadStart) < warmupTime; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			stopLoad()
			t.Fatalf("only %d requests succeeded in 10s of load before the kill", okBefore.Load())
		}
	}
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		stopLoad()
		t.Fatalf("kill -9 %d: %v", victim, err)
	}
	killedAt := time.Now()
	killed.Store(true)

	// The replacement: a pid never seen before answering health in the victim's slot.
	hc := freshClient(5 * time.Second)
	var replacement int
	var replacedAfter time.Duration
	for time.Since(killedAt) < 10*time.Second {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		h, err := g.health(ctx, hc)
		cancel()
		if err == nil && h.PID != victim {
			if _, old := before[h.PID]; !old {
				replacement, replacedAfter = h.PID, time.Since(killedAt)
				if h.WorkerSlot != victimSlot {
					t.Errorf("new worker pid %d serves slot %d, want the killed worker's slot %d", h.PID, h.WorkerSlot, victimSlot)
				}
				break
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if rest := afterKill - time.Since(killedAt); rest > 0 {
		time.Sleep(rest) // the load keeps running meanwhile
	}
	stopLoad()

	onVictim := map[int]int{}
	var refused, unexplained int
	for _, f := range failures {
		switch {
		case f.refused:
			refused++
			t.Errorf("client %d: connection refused: %v", f.client, f.err)
		case f.onVictim:
			onVictim[f.client]++
		default:
			unexplained++
			t.Errorf("client %d: request failed on a connection not to the killed worker: %v", f.client, f.err)
		}
	}
	victimFailures := 0
	for client, n := range onVictim {
		victimFailures += n
		if n > 1 {
			t.Errorf("client %d had %d failures on connections to the killed worker; one connection can lose at most one in-flight request", client, n)
		}
	}
	t.Logf("kill -9 of worker pid %d (slot %d) under load of %d keep-alive clients: %d ok before, %d ok after; "+
		"%d failed on the killed worker's connections, %d refused, %d other failures; replacement pid %d served %s after the kill",
		victim, victimSlot, clients, okBefore.Load(), okAfter.Load(), victimFailures, refused, unexplained,
		replacement, replacedAfter.Round(time.Millisecond))
	switch {
	case replacement == 0:
		t.Errorf("no new worker answered /api/health within 10s of the kill")
	case replacedAfter > 2*time.Second:
		t.Errorf("the replacement worker served %s after the kill, want within 2s", replacedAfter)
	}
	if okAfter.Load() == 0 {
		t.Errorf("no request succeeded after the kill")
	}
	return victim
}

// hclogLine matches hclog's text format: "<time> [LEVEL]  <logger name>: <message>".
var hclogLine = regexp.MustCompile(`^\S+ \[(TRACE|DEBUG|INFO|WARN|ERROR)\]\s+(\S+): (.*)$`)

// workerLogger matches the logger names under which the supervisor re-emits a
// worker's lines ("llm-proxy.supervisor.worker-1").
var workerLogger = regexp.MustCompile(`(^|\.)worker-\d+$`)

// testLogFiles: logs/llm-proxy.log has every line, the workers' included, and
// logs/llm-proxy-error.log only the WARN and ERROR ones, among them a worker's
// warning about an unreachable upstream and the supervisor's report of the killed
// worker (victim, 0 if the kill subtest did not run).
func testLogFiles(t *testing.T, g *gateway, key string, victim int) {
	// A worker logs an unreachable upstream at WARN.
	_, err := g.sdk(key, nil).Chat.Completions.New(ctxTimeout(t, requestTimeout), chatParams("dead-1", marker(t)))
	apiError(t, err, http.StatusBadGateway)

	type summary struct {
		levels      map[string]int
		workerLines int    // lines re-emitted from a worker
		workerWarn  int    // of them at WARN or ERROR
		victimError string // an ERROR line naming the killed pid
	}
	scan := func(path string) (summary, error) {
		s := summary{levels: map[string]int{}}
		b, err := os.ReadFile(path)
		if err != nil {
			return s, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			m := hclogLine.FindStringSubmatch(line)
			if m == nil {
				continue // a continuation line of a multi-line value
			}
			level, name := m[1], m[2]
			s.levels[level]++
			if workerLogger.MatchString(name) {
				s.workerLines++
				if level == "WARN" || level == "ERROR" {
					s.workerWarn++
				}
			}
			if victim != 0 && level == "ERROR" && strings.Contains(line, "pid="+strconv.Itoa(victim)) {
				s.victimError = line
			}
		}
		return s, nil
	}
	allPath := filepath.Join(g.logDir, "llm-proxy.log")
	errPath := filepath.Join(g.logDir, "llm-proxy-error.log")

	// Lines travel worker → pipe → supervisor → file; give them a moment.
	var all, errs summary
	var errAll, errErrs error
	ok := func() bool {
		return errAll == nil && errErrs == nil && all.workerLines > 0 && all.levels["INFO"] > 0 &&
			errs.workerWarn > 0 && (victim == 0 || errs.victimError != "")
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		all, errAll = scan(allPath)
		errs, errErrs = scan(errPath)
		if ok() || time.Now().After(deadline) {
			break
		}
	}
	if errAll != nil || errErrs != nil {
		t.Fatalf("read log files: %v, %v", errAll, errErrs)
	}
	if all.levels["INFO"] == 0 {
		t.Errorf("llm-proxy.log has no INFO line; levels %v", all.levels)
	}
	if all.workerLines == 0 {
		t.Errorf("llm-proxy.log has no line from a worker")
	}
	for _, level := range []string{"TRACE", "DEBUG", "INFO"} {
		if n := errs.levels[level]; n > 0 {
			t.Errorf("llm-proxy-error.log has %d %s lines, want only WARN and ERROR", n, level)
		}
	}
	if errs.workerWarn == 0 {
		t.Errorf("llm-proxy-error.log has no WARN/ERROR line from a worker (the unreachable upstream should have logged one); levels %v", errs.levels)
	}
	if victim != 0 && errs.victimError == "" {
		t.Errorf("llm-proxy-error.log has no ERROR line about the killed worker pid %d", victim)
	}
	if victim != 0 && all.victimError == "" {
		t.Errorf("llm-proxy.log has no ERROR line about the killed worker pid %d", victim)
	}
}
