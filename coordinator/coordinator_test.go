package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"

	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/store/spool"
)

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var testCfg = Config{HeartbeatInterval: 10 * time.Second, FailoverTimeout: 30 * time.Second, LogRetentionDays: 30}

// openStore opens (and migrates) the database at path, one store per simulated process.
func openStore(t *testing.T, path string, logger hclog.Logger) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := store.Open(ctx, store.Config{Path: path, MaxOpenConns: 8, MaxIdleConns: 2}, nil, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return st
}

// harness holds one database and the coordinators running on it.
type harness struct {
	t    *testing.T
	path string
	logs *syncBuffer
	log  hclog.Logger
	st   *store.Store // for assertions
}

func newHarness(t *testing.T) *harness {
	logs := &syncBuffer{}
	h := &harness{t: t, path: filepath.Join(t.TempDir(), "coord.db"), logs: logs,
		log: hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug})}
	h.st = openStore(t, h.path, h.log)
	t.Cleanup(func() {
		if strings.Contains(logs.String(), "[ERROR]") {
			t.Errorf("an ERROR was logged:\n%s", logs.String())
		}
	})
	return h
}

// start runs a coordinator for slot with its own store and the given clock; it stops at
// test cleanup. The returned stop func ends it early and waits.
func (h *harness) start(slot int, clock Clock, tasks ...Task) (*Coordinator, func()) {
	st := openStore(h.t, h.path, h.log)
	pid := 100000 + slot // fake pids: no real process is signalled
	c := New(testCfg, st, Identity{ID: NewID(slot, pid, time.Unix(0, int64(slot))), Slot: slot, PID: pid, Version: "test"}, clock, h.log)
	for _, tk := range tasks {
		c.AddTask(tk)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				h.t.Errorf("Run returned %v", err)
			}
		})
	}
	h.t.Cleanup(stop)
	return c, stop
}

// waitIters waits until every c has finished more than n[i] lease-loop iterations.
func waitIters(t *testing.T, cs []*Coordinator, n []int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for i, c := range cs {
		for c.iter.Load() <= n[i] {
			if time.Now().After(deadline) {
				t.Fatalf("coordinator %d stuck at iteration %d", i, c.iter.Load())
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// advance moves clk by d and waits until each coordinator on it has run one poll.
func advance(t *testing.T, clk *FakeClock, d time.Duration, cs ...*Coordinator) {
	t.Helper()
	n := make([]int64, len(cs))
	for i, c := range cs {
		n[i] = c.iter.Load()
	}
	clk.Advance(d)
	waitIters(t, cs, n)
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// blockingTask counts how many of its runs are active: Run blocks until revoked.
func blockingTask(active *atomic.Int32) Task {
	return Task{Name: "block", Interval: time.Hour, Run: func(ctx context.Context, _ int64) error {
		active.Add(1)
		defer active.Add(-1)
		<-ctx.Done()
		return nil
	}}
}

func TestElectionStorm(t *testing.T) {
	h := newHarness(t)
	const n = 16
	cs := make([]*Coordinator, n)
	stops := make([]func(), n)
	begin := time.Now()
	for i := range cs {
		cs[i], stops[i] = h.start(i, SystemClock())
	}
	primaries := func() (ids []string) {
		for _, c := range cs {
			if c.IsPrimary() {
				ids = append(ids, c.id.ID)
			}
		}
		return ids
	}
	eventually(t, 2*time.Second, "one primary", func() bool { return len(primaries()) == 1 })
	if took := time.Since(begin); took > 2*time.Second {
		t.Errorf("election took %s from the first start, want under 2s", took)
	}
	// It stays exactly one across the next polls, and the lease row names it.
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if got := primaries(); len(got) != 1 {
			t.Fatalf("primaries: got %v, want exactly one", got)
		}
	}
	l, err := h.st.Lease(context.Background())
	if err != nil || l.Holder != primaries()[0] || l.Epoch != 1 {
		t.Errorf("lease: got %+v, %v; want holder %s at epoch 1", l, err, primaries()[0])
	}
	if ws, err := h.st.Workers(context.Background()); err != nil || len(ws) != n {
		t.Errorf("worker rows: got %d, %v; want %d", len(ws), err, n)
	}
	// A clean stop removes every row and frees the lease.
	for _, stop := range stops {
		stop()
	}
	if ws, _ := h.st.Workers(context.Background()); len(ws) != 0 {
		t.Errorf("worker rows after stop: got %d, want 0", len(ws))
	}
	if l, _ := h.st.Lease(context.Background()); l.Holder != "" {
		t.Errorf("lease after stop: got holder %q, want free", l.Holder)
	}
}

func TestFailoverOnlyAfterTimeoutAndFencing(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	clkA, clkB := NewFakeClock(time.Unix(1_700_000_000, 0)), NewFakeClock(time.Unix(1_700_000_000, 0))
	var activeA, activeB atomic.Int32
	a, _ := h.start(0, clkA, blockingTask(&activeA))
	eventually(t, 2*time.Second, "A primary", a.IsPrimary)
	eventually(t, time.Second, "A's task started", func() bool { return activeA.Load() == 1 })
	epochA := a.Epoch()

	b, _ := h.start(1, clkB, blockingTask(&activeB))
	waitIters(t, []*Coordinator{b}, []int64{0})
	// A is frozen from now on: its clock never moves, so it never renews.
	for sec := 1; sec < 30; sec++ {
		advance(t, clkB, time.Second, b)
		if b.IsPrimary() {
			t.Fatalf("B took over after %ds, before the 30s failover timeout", sec)
		}
	}
	advance(t, clkB, time.Second, b)
	if !b.IsPrimary() || b.Epoch() != epochA+1 {
		t.Fatalf("after 30s: B primary=%v epoch=%d, want true and %d", b.IsPrimary(), b.Epoch(), epochA+1)
	}
	eventually(t, time.Second, "B's task started", func() bool { return activeB.Load() == 1 })

	// The old primary's fenced writes change nothing.
	ran := false
	err := h.st.FencedExec(ctx, epochA, func(conn *sqlite.Conn) error {
		ran = true
		return sqlitex.Execute(conn, "INSERT INTO settings(key, value, updated_at) VALUES ('stale', 'x', 0)", nil)
	})
	if !errors.Is(err, store.ErrFenced) || ran {
		t.Errorf("stale FencedExec: got %v (fn ran: %v), want ErrFenced without running fn", err, ran)
	}
	// A wakes, fails to renew and steps down; its task has stopped by then.
	advance(t, clkA, time.Second, a)
	if a.IsPrimary() || activeA.Load() != 0 {
		t.Errorf("A after waking: primary=%v active tasks=%d, want false and 0", a.IsPrimary(), activeA.Load())
	}
	if !b.IsPrimary() {
		t.Error("B lost the lease when A woke")
	}
}

func TestPrimaryStepsDownWhenRenewalLate(t *testing.T) {
	h := newHarness(t)
	clk := NewFakeClock(time.Unix(1_700_000_000, 0))
	var active atomic.Int32
	a, _ := h.start(0, clk, blockingTask(&active))
	eventually(t, 2*time.Second, "A primary", a.IsPrimary)
	// 19 s without a poll (just under 2/3 of 30 s): still primary after renewing.
	advance(t, clk, 19*time.Second, a)
	if !a.IsPrimary() || a.Epoch() != 1 {
		t.Fatalf("after 19s: primary=%v epoch=%d, want true 1", a.IsPrimary(), a.Epoch())
	}
	// 20 s without renewing (a freeze): duties stop before any database call.
	advance(t, clk, 20*time.Second, a)
	if a.IsPrimary() || active.Load() != 0 {
		t.Fatalf("after a 20s gap: primary=%v active=%d, want false 0", a.IsPrimary(), active.Load())
	}
	if l, _ := h.st.Lease(context.Background()); l.Holder != "" {
		t.Errorf("lease after step-down: holder %q, want released", l.Holder)
	}
	// The released lease is taken again at the next poll, under a new epoch.
	advance(t, clk, time.Second, a)
	if !a.IsPrimary() || a.Epoch() != 2 {
		t.Errorf("next poll: primary=%v epoch=%d, want true 2", a.IsPrimary(), a.Epoch())
	}
	if !strings.Contains(h.logs.String(), "lease not renewed in time") {
		t.Error("the step-down was not logged")
	}
}

func TestWallClockStepCausesNoFailover(t *testing.T) {
	h := newHarness(t)
	clkA, clkB := NewFakeClock(time.Unix(1_700_000_000, 0)), NewFakeClock(time.Unix(1_700_000_000, 0))
	a, _ := h.start(0, clkA)
	eventually(t, 2*time.Second, "A primary", a.IsPrimary)
	b, _ := h.start(1, clkB)
	waitIters(t, []*Coordinator{b}, []int64{0})
	for _, step := range []struct{ a, b time.Duration }{{10 * time.Minute, -10 * time.Minute}, {-20 * time.Minute, 20 * time.Minute}} {
		clkA.StepWall(step.a)
		clkB.StepWall(step.b)
		for sec := 0; sec < 40; sec++ {
			advance(t, clkA, time.Second, a)
			advance(t, clkB, time.Second, b)
			if b.IsPrimary() || !a.IsPrimary() || a.Epoch() != 1 {
				t.Fatalf("wall step %v/%v, %ds later: A primary=%v epoch=%d, B primary=%v; want no failover",
					step.a, step.b, sec, a.IsPrimary(), a.Epoch(), b.IsPrimary())
			}
		}
	}
}

func TestReleasePIDFailsOverAtOnce(t *testing.T) {
	h := newHarness(t)
	clkA := NewFakeClock(time.Now())
	a, _ := h.start(0, clkA) // frozen: its clock never moves, like a process that died
	eventually(t, 2*time.Second, "A primary", a.IsPrimary)
	b, _ := h.start(1, SystemClock())
	waitIters(t, []*Coordinator{b}, []int64{0})
	freed, err := h.st.ReleasePID(context.Background(), a.id.PID)
	if err != nil || !freed {
		t.Fatalf("ReleasePID: %v %v", freed, err)
	}
	took := eventually(t, 2*time.Second, "B takes the freed lease", b.IsPrimary)
	t.Logf("takeover after ReleasePID: %s", took)
	if ws, _ := h.st.Workers(context.Background()); len(ws) != 1 || ws[0].ID != b.id.ID {
		t.Errorf("worker rows: got %+v, want only B's", ws)
	}
}

func TestShutdownHandsOver(t *testing.T) {
	h := newHarness(t)
	var started atomic.Int32
	task := Task{Name: "count", Interval: time.Hour, Run: func(ctx context.Context, _ int64) error { started.Add(1); return nil }}
	a, stopA := h.start(0, SystemClock(), task)
	eventually(t, 2*time.Second, "A primary", a.IsPrimary)
	b, _ := h.start(1, SystemClock(), task)
	waitIters(t, []*Coordinator{b}, []int64{0})
	stopA()
	eventually(t, 2*time.Second, "B primary after A stopped", b.IsPrimary)
	eventually(t, time.Second, "both terms ran the task", func() bool { return started.Load() == 2 })
	if a.IsPrimary() {
		t.Error("A still primary after Run returned")
	}
}

func TestIngestTaskFillsRequestLogs(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	w, err := spool.Create(dir, NewID(3, 1, time.Now()), 0) // pid 1 is always alive
	if err != nil {
		t.Fatal(err)
	}
	var buf []byte
	for i := 0; i < 100; i++ {
		r := spool.Record{RequestID: fmt.Sprint("it-", i), TsMs: time.Now().UnixMilli(), Endpoint: "chat", Status: 200}
		buf = spool.AppendRecord(buf[:0], &r)
		if err := w.Append(buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	st := openStore(t, h.path, h.log)
	a, _ := h.start(0, SystemClock(), IngestTask(st, dir, h.log, nil), RetentionTask(st, 30, h.log), CheckpointTask(st, h.log))
	eventually(t, 2*time.Second, "A primary", a.IsPrimary)
	eventually(t, 3*time.Second, "100 rows ingested", func() bool {
		n, err := h.st.CountRequestLogs(context.Background())
		return err == nil && n == 100
	})
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", testCfg, true},
		{"zero heartbeat", Config{HeartbeatInterval: 0, FailoverTimeout: 30 * time.Second}, false},
		{"failover too short", Config{HeartbeatInterval: time.Second, FailoverTimeout: 2 * time.Second}, false},
		{"negative retention", Config{HeartbeatInterval: time.Second, FailoverTimeout: 30 * time.Second, LogRetentionDays: -1}, false},
		{"retention off", Config{HeartbeatInterval: time.Second, FailoverTimeout: 3 * time.Second}, true},
	}
	for _, tt := range tests {
		if got := tt.cfg.Validate() == nil; got != tt.ok {
			t.Errorf("%s: valid=%v, want %v", tt.name, got, tt.ok)
		}
	}
}

func TestNewID(t *testing.T) {
	if got, want := NewID(2, 4321, time.Unix(5, 6)), "2-4321-5000000006"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestFencedTaskStepsDown(t *testing.T) {
	h := newHarness(t)
	clk := NewFakeClock(time.Unix(1_700_000_000, 0))
	var runs, active atomic.Int32
	fencedOnSecondRun := Task{Name: "fenced", Interval: 500 * time.Millisecond, Run: func(ctx context.Context, epoch int64) error {
		if runs.Add(1) == 2 {
			return fmt.Errorf("ingest: %w", store.ErrFenced)
		}
		return nil
	}}
	a, _ := h.start(0, clk, fencedOnSecondRun, blockingTask(&active))
	eventually(t, 2*time.Second, "A primary", a.IsPrimary)
	eventually(t, time.Second, "tasks started", func() bool { return runs.Load() == 1 && active.Load() == 1 })
	// Only the task's timer is due: the step-down comes from its ErrFenced alone.
	advance(t, clk, 500*time.Millisecond, a)
	if a.IsPrimary() || active.Load() != 0 {
		t.Errorf("after ErrFenced: primary=%v active=%d, want false 0", a.IsPrimary(), active.Load())
	}
	if !strings.Contains(h.logs.String(), "stepping down") {
		t.Error("the fenced step-down was not logged")
	}
}
