package coordinator

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"

	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/store/spool"
)

// startWith is harness.start with its own Config, for tests that need other timings.
func (h *harness) startWith(cfg Config, slot int, clock Clock, tasks ...Task) *Coordinator {
	st := openStore(h.t, h.path, h.log)
	pid := 100000 + slot
	c := New(cfg, st, Identity{ID: NewID(slot, pid, time.Unix(0, int64(slot))), Slot: slot, PID: pid, Version: "test"}, clock, h.log)
	for _, tk := range tasks {
		c.AddTask(tk)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	h.t.Cleanup(func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				h.t.Errorf("Run returned %v", err)
			}
		})
	})
	return c
}

// writeSpool appends n records with ids prefix-0.. to a new spool file in dir, written as
// by worker process pid 1 (always alive, so the file is never treated as abandoned).
func writeSpool(t *testing.T, dir string, slot int, prefix string, n int) {
	t.Helper()
	w, err := spool.Create(dir, NewID(slot, 1, time.Now()), 0)
	if err != nil {
		t.Fatal(err)
	}
	var buf []byte
	for i := 0; i < n; i++ {
		r := spool.Record{RequestID: fmt.Sprint(prefix, "-", i), TsMs: time.Now().UnixMilli(), Endpoint: "chat", Status: 200}
		buf = spool.AppendRecord(buf[:0], &r)
		if err := w.Append(buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func countLogs(t *testing.T, st *store.Store) int64 {
	t.Helper()
	n, err := st.CountRequestLogs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestWokenPrimaryDutyWritesAreRefused: a primary frozen (its clock stopped) while another
// worker takes the lease wakes up with its real ingest duty still scheduled. That duty's
// write is refused by the epoch fence: the refusal is counted and logged with the task
// name, request_logs is unchanged although the spool holds records to ingest, and the
// woken process steps down without touching the new primary's lease.
func TestWokenPrimaryDutyWritesAreRefused(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	dir := t.TempDir()
	writeSpool(t, dir, 5, "before", 5)

	// The production ingest duty, on a half-poll interval so that waking A fires the
	// duty's timer before A's lease loop polls (which would stop the duty first).
	ingest := IngestTask(openStore(t, h.path, h.log), dir, h.log, nil)
	ingest.Interval = PollInterval / 2

	clkA, clkB := NewFakeClock(time.Unix(1_700_000_000, 0)), NewFakeClock(time.Unix(1_700_000_000, 0))
	a, _ := h.start(0, clkA, ingest)
	eventually(t, 2*time.Second, "A primary", a.IsPrimary)
	eventually(t, 3*time.Second, "A ingests the first 5 records", func() bool { return countLogs(t, h.st) == 5 })
	epochA := a.Epoch()

	// B runs no duties, so nothing but A could ingest what is written from now on.
	b, _ := h.start(1, clkB)
	waitIters(t, []*Coordinator{b}, []int64{0})
	for sec := 0; sec < 30; sec++ {
		advance(t, clkB, time.Second, b)
	}
	if !b.IsPrimary() || b.Epoch() != epochA+1 {
		t.Fatalf("B after 30s: primary=%v epoch=%d, want true %d", b.IsPrimary(), b.Epoch(), epochA+1)
	}
	writeSpool(t, dir, 6, "frozen", 10)
	if got := a.FencedRefusals(); got != 0 {
		t.Fatalf("refusals before A woke: got %d, want 0", got)
	}

	// A wakes: only its duty timer is due.
	advance(t, clkA, PollInterval/2, a)

	if got := a.FencedRefusals(); got < 1 {
		t.Errorf("fenced refusals after A woke: got %d, want >= 1", got)
	}
	if got := countLogs(t, h.st); got != 5 {
		t.Errorf("request_logs after the woken primary's ingest: got %d rows, want 5 (unchanged)", got)
	}
	if a.IsPrimary() || a.Epoch() != 0 {
		t.Errorf("A after its refused write: primary=%v epoch=%d, want false 0", a.IsPrimary(), a.Epoch())
	}
	l, err := h.st.Lease(ctx)
	if err != nil || l.Holder != b.id.ID || l.Epoch != epochA+1 {
		t.Errorf("lease after A woke: got %+v, %v; want B's at epoch %d", l, err, epochA+1)
	}
	logs := h.logs.String()
	var refusal string
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "duty write refused") {
			refusal = line
			break
		}
	}
	for _, want := range []string{"[WARN]", "task=ingest", fmt.Sprint("epoch=", epochA)} {
		if !strings.Contains(refusal, want) {
			t.Errorf("refusal log line %q lacks %q", refusal, want)
		}
	}

	// The records were there to be written: the current epoch ingests them.
	res, err := h.st.IngestSpools(ctx, dir, b.Epoch(), 256)
	if err != nil || res.Rows != 10 {
		t.Errorf("ingest at the current epoch: got %d rows, %v; want 10", res.Rows, err)
	}
}

// holdWriteLock takes SQLite's write lock on path from a connection of its own (as another
// process in a long write transaction would) until the returned func is called.
func holdWriteLock(t *testing.T, path string) (release func()) {
	t.Helper()
	conn, err := sqlite.OpenConn(path, sqlite.OpenReadWrite)
	if err != nil {
		t.Fatal(err)
	}
	if err := sqlitex.ExecuteTransient(conn, "BEGIN IMMEDIATE", nil); err != nil {
		conn.Close()
		t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			if err := sqlitex.ExecuteTransient(conn, "ROLLBACK", nil); err != nil {
				t.Errorf("rollback: %v", err)
			}
			conn.Close()
		})
	}
	t.Cleanup(release)
	return release
}

// TestPrimaryStepsDownWhenRenewalsFail: the primary keeps polling on time but every
// renewal fails, because another connection holds the write lock. Its duties keep running
// while less than 2/3 of the failover timeout has passed since the last successful
// renewal, and stop at the first poll at 2/3, before any other worker could take the lease
// (at the full timeout). Once the lock is gone it takes the lease again under a new epoch.
func TestPrimaryStepsDownWhenRenewalsFail(t *testing.T) {
	tests := []struct {
		name     string
		failover time.Duration
		steps    []time.Duration // polls with failing renewals, all before 2/3 of failover
		last     time.Duration   // the step reaching exactly 2/3 of failover
	}{
		{"4.5s, every second", 4500 * time.Millisecond, []time.Duration{time.Second, time.Second}, time.Second},
		{"30s, sparse polls", 30 * time.Second, []time.Duration{10 * time.Second, 9 * time.Second}, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			// No heartbeats after the first: each would wait on the lock too.
			cfg := Config{HeartbeatInterval: 24 * time.Hour, FailoverTimeout: tt.failover}
			clk := NewFakeClock(time.Unix(1_700_000_000, 0))
			var active atomic.Int32
			a := h.startWith(cfg, 0, clk, blockingTask(&active))
			eventually(t, 2*time.Second, "A primary", a.IsPrimary)
			eventually(t, time.Second, "A's duty started", func() bool { return active.Load() == 1 })
			// One more poll: the beat showing the role is written and a renewal succeeds,
			// at 1s on A's clock. From here on every write waits for the lock.
			advance(t, clk, time.Second, a)
			lastOK := clk.Monotonic()
			release := holdWriteLock(t, h.path)

			limit := tt.failover * 2 / 3
			for _, d := range tt.steps {
				advance(t, clk, d, a)
				since := clk.Monotonic() - lastOK
				if since >= limit {
					t.Fatalf("bad table: step reaches %s, not before %s", since, limit)
				}
				if !a.IsPrimary() || active.Load() != 1 {
					t.Fatalf("%s after the last renewal (limit %s): primary=%v active duties=%d, want true 1",
						since, limit, a.IsPrimary(), active.Load())
				}
			}
			if got := strings.Count(h.logs.String(), "lease renewal failed"); got != len(tt.steps) {
				t.Errorf("failed renewals logged: got %d, want %d (one per poll)", got, len(tt.steps))
			}
			advance(t, clk, tt.last, a)
			if since := clk.Monotonic() - lastOK; since != limit {
				t.Fatalf("bad table: last step reaches %s, want %s", since, limit)
			}
			if a.IsPrimary() || active.Load() != 0 {
				t.Fatalf("at %s without a renewal: primary=%v active duties=%d, want false 0", limit, a.IsPrimary(), active.Load())
			}
			if !strings.Contains(h.logs.String(), "lease not renewed in time") {
				t.Error("the step-down was not logged")
			}

			// The lock goes away: the next polls free the stale lease and take it anew.
			release()
			for i := 0; i < 3 && !a.IsPrimary(); i++ {
				advance(t, clk, time.Second, a)
			}
			if !a.IsPrimary() || a.Epoch() != 2 {
				t.Errorf("after the lock was released: primary=%v epoch=%d, want true 2", a.IsPrimary(), a.Epoch())
			}
		})
	}
}
