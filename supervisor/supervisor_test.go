//go:build unix

package supervisor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// logBuf collects a JSON hclog logger's output for assertions.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// entries parses every line logged so far.
func (l *logBuf) entries(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	data := slices.Clone(l.b.Bytes())
	l.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("supervisor logged a line that is not JSON: %q", sc.Text())
		}
		out = append(out, m)
	}
	return out
}

// find returns the entries whose message starts with msg.
func (l *logBuf) find(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, e := range l.entries(t) {
		if m, _ := e["@message"].(string); strings.HasPrefix(m, msg) {
			out = append(out, e)
		}
	}
	return out
}

// harness runs one Supervisor on 127.0.0.1 for a test.
type harness struct {
	t      *testing.T
	sup    *Supervisor
	logs   *logBuf
	cancel context.CancelFunc
	runErr chan error
	// spawns counts workers started per slot.
	spawns []atomic.Int32

	mu    sync.Mutex
	exits map[int]exitRec // by pid
}

type exitRec struct {
	slot int
	err  error
	at   time.Time
}

// modeFunc picks the behaviour of the gen-th worker (0 = first) of slot.
type modeFunc func(slot, gen int) string

func start(t *testing.T, cfg Config, mode modeFunc, tweaks ...func(*Supervisor)) *harness {
	t.Helper()
	if mode == nil {
		mode = func(int, int) string { return modeServe }
	}
	h := &harness{t: t, logs: &logBuf{}, runErr: make(chan error, 1),
		spawns: make([]atomic.Int32, cfg.Workers), exits: map[int]exitRec{}}
	logger := hclog.New(&hclog.LoggerOptions{Name: "sup", Output: h.logs, JSONFormat: true, Level: hclog.Trace})
	sup, err := New(cfg, Options{
		Addr: "127.0.0.1:0",
		Command: func(slot int) *exec.Cmd {
			gen := int(h.spawns[slot].Add(1)) - 1
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			// The race detector sleeps 1s at exit by default; drains would
			// look slow.
			cmd.Env = append(os.Environ(), envMode+"="+mode(slot, gen), "GORACE=atexit_sleep_ms=0")
			return cmd
		},
		OnExit: func(slot, pid int, err error) {
			h.mu.Lock()
			h.exits[pid] = exitRec{slot: slot, err: err, at: time.Now()}
			h.mu.Unlock()
		},
	}, logger)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	for _, f := range tweaks {
		f(sup)
	}
	h.sup = sup
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.runErr <- sup.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.runErr:
		case <-time.After(20 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return h
}

// stop cancels Run and returns its result.
func (h *harness) stop() error {
	h.t.Helper()
	h.cancel()
	select {
	case err := <-h.runErr:
		h.runErr <- err // for Cleanup
		return err
	case <-time.After(20 * time.Second):
		h.t.Fatal("Run did not return after cancel")
		return nil
	}
}

func (h *harness) waitReady() {
	h.t.Helper()
	select {
	case <-h.sup.Ready():
	case <-time.After(10 * time.Second):
		h.t.Fatalf("workers not ready in 10s; workers %+v", h.sup.Workers())
	}
}

func (h *harness) exit(pid int) (exitRec, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.exits[pid]
	return e, ok
}

func (h *harness) url(path string) string {
	h.t.Helper()
	var addr string
	waitFor(h.t, 5*time.Second, "listening", func() bool {
		if a := h.sup.Addr(); a != nil {
			addr = a.String()
			return true
		}
		return false
	})
	return "http://" + addr + path
}

// client opens a new connection per request, so requests spread over the
// slots' sockets the way independent clients do.
var client = &http.Client{
	Transport: &http.Transport{DisableKeepAlives: true},
	Timeout:   5 * time.Second,
}

// get returns the pid that answered.
func get(url string) (int, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	return strconv.Atoi(string(body))
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func pids(ws []WorkerInfo) []int {
	out := make([]int, 0, len(ws))
	for _, w := range ws {
		out = append(out, w.PID)
	}
	slices.Sort(out)
	return out
}

func alive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

func testConfig(workers int) Config {
	return Config{Workers: workers, ShutdownTimeout: 3 * time.Second, WatchdogTimeout: 2 * time.Second, CrashBudget: 5}
}

// result is one request of a load run.
type result struct {
	start, end time.Time
	pid        int
	err        error
}

// load runs conc clients against url until stop is closed (at most 2000
// requests each) and returns every result.
func load(url string, conc int, stop <-chan struct{}) <-chan []result {
	out := make(chan []result, 1)
	go func() {
		var mu sync.Mutex
		var all []result
		var wg sync.WaitGroup
		for range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 2000 {
					select {
					case <-stop:
						return
					default:
					}
					r := result{start: time.Now()}
					r.pid, r.err = get(url)
					r.end = time.Now()
					mu.Lock()
					all = append(all, r)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		out <- all
	}()
	return out
}

func TestWorkersShareOnePort(t *testing.T) {
	goroutines := runtime.NumGoroutine()
	h := start(t, testConfig(2), nil)
	h.waitReady()
	want := pids(h.sup.Workers())
	if len(want) != 2 || want[0] == 0 || want[0] == want[1] {
		t.Fatalf("Workers() pids = %v, want two distinct live pids", want)
	}
	seen := map[int]int{}
	url := h.url("/")
	for i := 0; i < 400 && len(seen) < 2; i++ {
		pid, err := get(url)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		seen[pid]++
	}
	got := make([]int, 0, len(seen))
	for pid := range seen {
		got = append(got, pid)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("pids answering on %s = %v, want %v", url, got, want)
	}
	if err := h.stop(); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
	for _, pid := range want {
		if alive(pid) {
			t.Errorf("worker %d still running after Run returned", pid)
		}
	}
	// Client connections end asynchronously; everything else ended in Run.
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutines {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines after Run returned, %d before:\n%s", n, goroutines, buf[:runtime.Stack(buf, true)])
	}
}

func TestKilledWorkerIsReplacedWithoutRefusedConnections(t *testing.T) {
	const conc = 8
	h := start(t, testConfig(2), nil)
	h.waitReady()
	victim := h.sup.Workers()[0].PID
	url := h.url("/slow?ms=20")

	stop := make(chan struct{})
	results := load(url, conc, stop)
	time.Sleep(300 * time.Millisecond)
	killAt := time.Now()
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var replaced WorkerInfo
	waitFor(t, 2*time.Second, "a ready replacement of slot 0", func() bool {
		replaced = h.sup.Workers()[0]
		return replaced.PID != 0 && replaced.PID != victim && replaced.Ready
	})
	replacedIn := time.Since(killAt)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	all := <-results

	ex, ok := h.exit(victim)
	if !ok {
		t.Fatalf("OnExit not called for killed worker %d", victim)
	}
	var failed []result
	served := map[int]int{}
	for _, r := range all {
		if r.err != nil {
			failed = append(failed, r)
			continue
		}
		served[r.pid]++
	}
	// Only requests in flight on the killed worker may fail: at most conc,
	// all started before the worker was reaped, none refused.
	if len(failed) > conc {
		t.Errorf("%d of %d requests failed, want at most %d (in flight on the killed worker)", len(failed), len(all), conc)
	}
	for _, r := range failed {
		if !r.start.Before(ex.at) {
			t.Errorf("request started %s after the killed worker was reaped failed: %v", r.start.Sub(ex.at), r.err)
		}
		if errors.Is(r.err, syscall.ECONNREFUSED) || strings.Contains(r.err.Error(), "refused") {
			t.Errorf("connection refused: %v", r.err)
		}
	}
	if served[replaced.PID] == 0 {
		t.Errorf("replacement %d served no request; served by pid: %v", replaced.PID, served)
	}
	if got := h.sup.Workers()[0].Restarts; got != 1 {
		t.Errorf("slot 0 restarts = %d, want 1", got)
	}
	var logged bool
	for _, e := range h.logs.find(t, "worker exited unexpectedly") {
		if e["@level"] == "error" && e["pid"] == float64(victim) && e["signal"] == "killed" && e["restart_in"] != nil {
			logged = true
		}
	}
	if !logged {
		t.Errorf("no ERROR line with pid %d and signal killed; logs: %v", victim, h.logs.find(t, "worker exited"))
	}
	t.Logf("replaced in %s; %d requests, %d failed (in flight on the killed worker)", replacedIn, len(all), len(failed))
}

func TestShutdownDrainsInFlightRequest(t *testing.T) {
	h := start(t, testConfig(1), nil)
	h.waitReady()
	pid := h.sup.Workers()[0].PID
	url := h.url("/slow?ms=1000")
	type res struct {
		pid int
		err error
		at  time.Time
	}
	done := make(chan res, 1)
	go func() {
		p, err := get(url)
		done <- res{p, err, time.Now()}
	}()
	time.Sleep(300 * time.Millisecond) // the request is in the worker now
	if err := h.stop(); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
	returned := time.Now()
	r := <-done
	if r.err != nil || r.pid != pid {
		t.Fatalf("in-flight request = (%d, %v), want (%d, nil)", r.pid, r.err, pid)
	}
	if returned.Before(r.at.Add(-50 * time.Millisecond)) {
		t.Errorf("Run returned %s before the in-flight request completed", r.at.Sub(returned))
	}
	if ex, ok := h.exit(pid); !ok || ex.err != nil {
		t.Errorf("worker exit = (%v, called %v), want clean exit reported to OnExit", ex.err, ok)
	}
	if alive(pid) {
		t.Errorf("worker %d still running after Run returned", pid)
	}
}

func TestShutdownKillsWorkerThatDoesNotDrain(t *testing.T) {
	cfg := testConfig(1)
	cfg.ShutdownTimeout = 0 // killed killGrace after SIGTERM
	cfg.WatchdogTimeout = 0
	const grace = 500 * time.Millisecond
	h := start(t, cfg, nil, func(s *Supervisor) { s.killGrace = grace })
	h.waitReady()
	pid := h.sup.Workers()[0].PID
	// A stopped process cannot handle SIGTERM.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	err := h.stop()
	if err == nil || !strings.Contains(err.Error(), "killed after the drain timeout") {
		t.Fatalf("Run = %v, want an unclean-shutdown error", err)
	}
	if took := time.Since(began); took < grace || took > grace+2*time.Second {
		t.Errorf("shutdown took %s, want about %s", took, grace)
	}
	if alive(pid) {
		t.Errorf("worker %d still running after Run returned", pid)
	}
}

func TestCrashLoopBacksOffWhileOtherSlotServes(t *testing.T) {
	cfg := testConfig(2)
	cfg.CrashBudget = 2
	h := start(t, cfg, func(slot, _ int) string {
		if slot == 1 {
			return modeCrash
		}
		return modeServe
	})
	waitFor(t, 5*time.Second, `"crash loop" at ERROR`, func() bool {
		return len(h.logs.find(t, "crash loop")) > 0
	})
	loop := h.logs.find(t, "crash loop")[0]
	if loop["@level"] != "error" || loop["slot"] != float64(1) || loop["restart_in"] != maxBackoff.String() {
		t.Errorf("crash loop line = %v, want error for slot 1 with restart_in %s", loop, maxBackoff)
	}
	// Held at the maximum back-off: no further start within the next second.
	starts := h.spawns[1].Load()
	if starts != int32(cfg.CrashBudget+1) {
		t.Errorf("slot 1 started %d times before the crash loop, want %d", starts, cfg.CrashBudget+1)
	}
	time.Sleep(time.Second)
	if got := h.spawns[1].Load(); got != starts {
		t.Errorf("slot 1 restarted during the maximum back-off: %d starts, want %d", got, starts)
	}
	// Back-off doubled between crashes.
	var backoffs []string
	for _, e := range h.logs.find(t, "worker exited unexpectedly") {
		if e["slot"] == float64(1) {
			if e["status"] != float64(2) || e["@level"] != "error" {
				t.Errorf("crash line = %v, want ERROR with status 2", e)
			}
			backoffs = append(backoffs, e["restart_in"].(string))
		}
	}
	if want := []string{"100ms", "200ms", "10s"}; !slices.Equal(backoffs, want) {
		t.Errorf("restart_in of slot 1 crashes = %v, want %v", backoffs, want)
	}
	// The crash trace reached the error log through the worker's logger.
	var trace bool
	for _, e := range h.logs.find(t, "panic: boom: crash at start") {
		trace = trace || (e["@level"] == "error" && e["@module"] == "sup.worker-1")
	}
	if !trace {
		t.Error("panic line of the crashing worker not re-emitted at ERROR by sup.worker-1")
	}
	// Slot 0 serves every connection, including ones the kernel would have
	// queued on slot 1's socket.
	want := h.sup.Workers()[0].PID
	url := h.url("/")
	for i := range 30 {
		if pid, err := get(url); err != nil || pid != want {
			t.Fatalf("request %d = (%d, %v), want (%d, nil)", i, pid, err, want)
		}
	}
	if err := h.stop(); err != nil {
		t.Errorf("Run after cancel = %v, want nil (the crashing slot has no worker to drain)", err)
	}
}

func TestWatchdogKillsFrozenWorker(t *testing.T) {
	cfg := testConfig(1)
	cfg.WatchdogTimeout = 400 * time.Millisecond
	h := start(t, cfg, nil)
	h.waitReady()
	// Healthy workers keep pinging: no kill over several timeouts.
	time.Sleep(3 * cfg.WatchdogTimeout)
	frozen := h.sup.Workers()[0].PID
	if n := len(h.logs.find(t, "worker unresponsive")); n != 0 {
		t.Fatalf("watchdog killed a healthy worker (%d lines)", n)
	}
	if err := syscall.Kill(frozen, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozeAt := time.Now()
	var w WorkerInfo
	waitFor(t, 3*time.Second, "a ready replacement of the frozen worker", func() bool {
		w = h.sup.Workers()[0]
		return w.PID != frozen && w.PID != 0 && w.Ready
	})
	lines := h.logs.find(t, "worker unresponsive")
	if len(lines) != 1 || lines[0]["@level"] != "error" || lines[0]["pid"] != float64(frozen) {
		t.Fatalf("watchdog lines = %v, want one ERROR for pid %d", lines, frozen)
	}
	ex, ok := h.exit(frozen)
	if !ok || ex.err == nil || !strings.Contains(ex.err.Error(), "killed") {
		t.Errorf("frozen worker exit = %v (reported %v), want killed", ex.err, ok)
	}
	// The last ping came up to one ping interval before the freeze.
	if took := ex.at.Sub(frozeAt); took < cfg.WatchdogTimeout-cfg.pingInterval() || took > cfg.WatchdogTimeout+time.Second {
		t.Errorf("frozen worker killed %s after the freeze, want about %s", took, cfg.WatchdogTimeout)
	}
	if pid, err := get(h.url("/")); err != nil || pid != w.PID {
		t.Errorf("request after replacement = (%d, %v), want (%d, nil)", pid, err, w.PID)
	}
	if w.Restarts != 1 {
		t.Errorf("restarts = %d, want 1", w.Restarts)
	}
}

func TestRollReplacesEveryWorkerWithoutFailedRequests(t *testing.T) {
	h := start(t, testConfig(2), nil)
	h.waitReady()
	old := pids(h.sup.Workers())
	url := h.url("/slow?ms=10")

	stop := make(chan struct{})
	results := load(url, 4, stop)
	time.Sleep(200 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := h.sup.Roll(ctx); err != nil {
		t.Fatalf("Roll: %v", err)
	}
	rolledAt := time.Now()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	all := <-results

	now := pids(h.sup.Workers())
	for _, p := range now {
		if p == 0 || slices.Contains(old, p) {
			t.Fatalf("pids after Roll = %v, want all new (before: %v)", now, old)
		}
	}
	var failed int
	for _, r := range all {
		if r.err != nil {
			failed++
			t.Errorf("request failed during roll: %v", r.err)
		} else if r.start.After(rolledAt.Add(200*time.Millisecond)) && slices.Contains(old, r.pid) {
			t.Errorf("old worker %d answered a request started after Roll returned", r.pid)
		}
	}
	if len(all) < 20 {
		t.Errorf("only %d requests ran during the roll", len(all))
	}
	waitFor(t, 5*time.Second, "old workers to exit", func() bool {
		for _, p := range old {
			if _, ok := h.exit(p); !ok {
				return false
			}
		}
		return true
	})
	for _, p := range old {
		if ex, _ := h.exit(p); ex.err != nil {
			t.Errorf("rolled-out worker %d exit = %v, want clean drain", p, ex.err)
		}
	}
	for _, w := range h.sup.Workers() {
		if w.Restarts != 0 {
			t.Errorf("slot %d restarts = %d after a roll, want 0", w.Slot, w.Restarts)
		}
	}
	if n := len(h.logs.find(t, "worker exited unexpectedly")); n != 0 {
		t.Errorf("%d unexpected-exit lines after a roll, want 0", n)
	}
	t.Logf("%d requests, %d failed", len(all), failed)
	if err := h.stop(); err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
}

func TestRollKeepsOldWorkerWhenNewOneFails(t *testing.T) {
	h := start(t, testConfig(1), func(_, gen int) string {
		if gen > 0 {
			return modeCrash // a broken new binary
		}
		return modeServe
	})
	h.waitReady()
	old := h.sup.Workers()[0].PID
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := h.sup.Roll(ctx)
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Fatalf("Roll = %v, want an error about the new worker", err)
	}
	if pid, err := get(h.url("/")); err != nil || pid != old {
		t.Errorf("request after failed roll = (%d, %v), want old worker (%d, nil)", pid, err, old)
	}
	if got := h.sup.Workers()[0]; got.PID != old || got.Restarts != 0 {
		t.Errorf("slot 0 after failed roll = %+v, want pid %d and no restarts", got, old)
	}
	// Starting the failed worker must not have broken the old one's socket
	// (a blocking accept would keep it from draining).
	if err := h.stop(); err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
}

func TestCleanExitIsRestarted(t *testing.T) {
	h := start(t, testConfig(1), func(_, gen int) string {
		if gen == 0 {
			return modeExit0
		}
		return modeServe
	})
	h.waitReady()
	var w WorkerInfo
	waitFor(t, 3*time.Second, "a replacement of the worker that exited 0", func() bool {
		w = h.sup.Workers()[0]
		return w.Restarts == 1 && w.PID != 0 && w.Ready
	})
	var logged bool
	for _, e := range h.logs.find(t, "worker exited unexpectedly") {
		logged = logged || (e["@level"] == "error" && e["status"] == float64(0) && e["restart_in"] == "100ms")
	}
	if !logged {
		t.Errorf("no ERROR line for the clean unexpected exit; logs %v", h.logs.find(t, "worker exited"))
	}
	if pid, err := get(h.url("/")); err != nil || pid != w.PID {
		t.Errorf("request = (%d, %v), want (%d, nil)", pid, err, w.PID)
	}
}

func TestWorkerLogsReemittedAtTheirLevel(t *testing.T) {
	h := start(t, testConfig(1), func(int, int) string { return modeLog })
	h.waitReady()
	pid := float64(h.sup.Workers()[0].PID)
	waitFor(t, 5*time.Second, "the worker's log lines", func() bool {
		return len(h.logs.find(t, "plain stderr line")) > 0 && len(h.logs.find(t, "plain stdout line")) > 0
	})
	tests := []struct {
		msg   string
		level string
		args  map[string]any
	}{
		{"trace line", "trace", map[string]any{"n": float64(1), "module": "child"}},
		{"debug line", "debug", map[string]any{"n": float64(2)}},
		{"info line", "info", map[string]any{"n": float64(3), "big": float64(1 << 60)}},
		{"warn line", "warn", map[string]any{"n": float64(4)}},
		{"error line", "error", map[string]any{"n": float64(5), "error": "it broke"}},
		{"plain stdout line", "info", nil},
		{"plain stderr line", "info", nil},
	}
	for _, tt := range tests {
		t.Run(tt.msg, func(t *testing.T) {
			got := h.logs.find(t, tt.msg)
			if len(got) != 1 {
				t.Fatalf("%d lines %q, want 1", len(got), tt.msg)
			}
			e := got[0]
			if e["@level"] != tt.level || e["@module"] != "sup.worker-0" || e["pid"] != pid {
				t.Errorf("got level %v module %v pid %v, want %s sup.worker-0 %v", e["@level"], e["@module"], e["pid"], tt.level, pid)
			}
			for k, want := range tt.args {
				if e[k] != want {
					t.Errorf("arg %s = %v, want %v", k, e[k], want)
				}
			}
			if _, ok := e["@timestamp"]; !ok {
				t.Error("no timestamp")
			}
		})
	}
}

func TestWatchParentFiresWhenParentDies(t *testing.T) {
	for _, asWorker := range []bool{false, true} {
		t.Run(fmt.Sprintf("worker=%v", asWorker), func(t *testing.T) {
			mark := filepath.Join(t.TempDir(), "mark")
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), envMode+"="+modeIntermediate, envMark+"="+mark, "GORACE=atexit_sleep_ms=0")
			if asWorker {
				cmd.Env = append(cmd.Env, "SUPTEST_AS_WORKER=1")
			}
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("intermediate: %v", err)
			}
			child, err := strconv.Atoi(strings.TrimSpace(string(out)))
			if err != nil {
				t.Fatalf("intermediate printed %q", out)
			}
			t.Cleanup(func() { syscall.Kill(child, syscall.SIGKILL) })
			var got []byte
			waitFor(t, 3*time.Second, "WatchParent to fire in the orphan", func() bool {
				got, _ = os.ReadFile(mark)
				return len(got) > 0
			})
			if string(got) != "gone" {
				t.Errorf("mark = %q, want gone", got)
			}
		})
	}
}

func TestWatchParentQuietWhileParentLives(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var calls atomic.Int32
	WatchParent(ctx, 10*time.Millisecond, func() { calls.Add(1) })
	if ctx.Err() == nil {
		t.Fatal("WatchParent returned before ctx ended")
	}
	if got := calls.Load(); got != 0 {
		t.Errorf("gone called %d times, want 0", got)
	}
}

func TestRunAndRollMisuse(t *testing.T) {
	sup, err := New(testConfig(1), Options{Addr: "127.0.0.1:0", Command: func(int) *exec.Cmd {
		return exec.Command(filepath.Join(t.TempDir(), "missing-binary"))
	}}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := sup.Roll(context.Background()); !errors.Is(err, errNotRunning) {
		t.Errorf("Roll before Run = %v, want %v", err, errNotRunning)
	}
	if err := sup.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "start worker 0") {
		t.Errorf("Run with a missing binary = %v, want a start error", err)
	}
	if err := sup.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("second Run = %v, want an error", err)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Workers: 1, ShutdownTimeout: 30 * time.Second, WatchdogTimeout: 10 * time.Second, CrashBudget: 5}
	tests := []struct {
		name string
		edit func(*Config)
		want string // substring of the error; "" = valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"watchdog off", func(c *Config) { c.WatchdogTimeout = 0 }, ""},
		{"no workers", func(c *Config) { c.Workers = 0 }, "WORKERS"},
		{"negative shutdown", func(c *Config) { c.ShutdownTimeout = -time.Second }, "SHUTDOWN_TIMEOUT"},
		{"tiny watchdog", func(c *Config) { c.WatchdogTimeout = time.Millisecond }, "WATCHDOG_TIMEOUT"},
		{"negative budget", func(c *Config) { c.CrashBudget = -1 }, "CRASH_BUDGET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate() = %v, want error mentioning %s", err, tt.want)
			}
		})
	}
}
