package main

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/llm-proxy/llm-proxy/coordinator"
	"github.com/llm-proxy/llm-proxy/store/shm"
)

func behindSlot(t *testing.T) *shm.Slot {
	t.Helper()
	r, err := shm.Open(filepath.Join(t.TempDir(), "test.shm"), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	s, err := r.Slot(ingestBehindSlot)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func behind(s *shm.Slot) bool { return s.Load(0) > time.Now().UnixNano() }

// A long ingest pass marks the request log behind while it runs and until a pass is
// short again; short passes never mark it; the mark is a deadline kept fresh while
// behind; losing the lease clears it.
func TestCatchUpMarksIngestBehind(t *testing.T) {
	slot := behindSlot(t)
	c := newCatchUp(slot, hclog.NewNullLogger())
	c.behindAfter, c.caughtUpBelow, c.hold = 30*time.Millisecond, 20*time.Millisecond, 300*time.Millisecond

	var during bool
	pass := time.Duration(0)
	task := c.wrap(coordinator.Task{Name: "ingest", Run: func(ctx context.Context, epoch int64) error {
		if pass > 0 {
			time.Sleep(pass)
			during = behind(slot)
		}
		return nil
	}})
	run := func(ctx context.Context, d time.Duration) {
		t.Helper()
		pass = d
		if err := task.Run(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	bg := context.Background()

	run(bg, 0)
	if slot.Load(0) != 0 {
		t.Fatal("a short pass marked the log behind")
	}
	run(bg, 120*time.Millisecond)
	if !during || !behind(slot) {
		t.Fatalf("long pass: behind during %v, after %v; want both", during, behind(slot))
	}
	time.Sleep(700 * time.Millisecond) // longer than hold: the refresher keeps it
	if !behind(slot) {
		t.Fatal("the mark expired while ingest was still behind")
	}
	run(bg, 0)
	if slot.Load(0) != 0 {
		t.Fatal("a short pass did not clear the mark")
	}

	ctx, cancel := context.WithCancel(bg)
	run(ctx, 120*time.Millisecond)
	if !behind(slot) {
		t.Fatal("long pass in the new term did not mark the log behind")
	}
	cancel()
	deadline := time.Now().Add(time.Second)
	for slot.Load(0) != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if slot.Load(0) != 0 {
		t.Fatal("the mark outlived the lease")
	}
}

// fakeProcs stands in for runtime.GOMAXPROCS.
type fakeProcs struct {
	mu    sync.Mutex
	procs int
}

func (f *fakeProcs) set(n int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	prev := f.procs
	f.procs = n
	return prev
}

func (f *fakeProcs) get() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.procs
}

// Every worker on one CPU follows the mark: one P while it is in the future, two when
// it is cleared or has expired (a primary that died while behind), two on exit.
func TestFollowIngest(t *testing.T) {
	slot := behindSlot(t)
	fp := &fakeProcs{procs: 2}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		followIngest(ctx, slot, 5*time.Millisecond, fp.set)
		close(done)
	}()
	waitProcs := func(want int, why string) {
		t.Helper()
		deadline := time.Now().Add(time.Second)
		for fp.get() != want && time.Now().Before(deadline) {
			time.Sleep(2 * time.Millisecond)
		}
		if got := fp.get(); got != want {
			t.Fatalf("%s: GOMAXPROCS = %d, want %d", why, got, want)
		}
	}
	slot.Store(0, time.Now().Add(time.Hour).UnixNano())
	waitProcs(1, "marked behind")
	slot.Store(0, 0)
	waitProcs(2, "mark cleared")
	slot.Store(0, time.Now().Add(300*time.Millisecond).UnixNano())
	waitProcs(1, "marked behind again")
	waitProcs(2, "mark expired")
	slot.Store(0, time.Now().Add(time.Hour).UnixNano())
	waitProcs(1, "marked behind a third time")
	cancel()
	<-done
	if fp.get() != 2 {
		t.Fatalf("after exit GOMAXPROCS = %d, want 2", fp.get())
	}
}
