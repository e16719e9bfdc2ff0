package main

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/llm-proxy/llm-proxy/coordinator"
)

// fakeProcs stands in for runtime.GOMAXPROCS.
type fakeProcs struct {
	mu    sync.Mutex
	procs int
	calls []int
}

func (f *fakeProcs) set(n int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	prev := f.procs
	f.procs = n
	f.calls = append(f.calls, n)
	return prev
}

func (f *fakeProcs) get() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.procs
}

// A long ingest pass drops the worker to one P while it runs and keeps it there
// until a pass is short again; short passes never touch GOMAXPROCS.
func TestCatchUpWhileIngestIsBehind(t *testing.T) {
	fp := &fakeProcs{procs: 2}
	c := newCatchUp(hclog.NewNullLogger())
	c.behindAfter, c.caughtUpBelow, c.setProcs = 30*time.Millisecond, 20*time.Millisecond, fp.set

	var during int
	pass := time.Duration(0)
	task := c.wrap(coordinator.Task{Name: "ingest", Run: func(ctx context.Context, epoch int64) error {
		if pass > 0 {
			time.Sleep(pass)
			during = fp.get()
		}
		return nil
	}})
	run := func(d time.Duration) {
		t.Helper()
		pass = d
		if err := task.Run(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
	}

	run(0)
	if len(fp.calls) != 0 {
		t.Fatalf("a short pass changed GOMAXPROCS: %v", fp.calls)
	}
	run(120 * time.Millisecond)
	if during != 1 || fp.get() != 1 {
		t.Fatalf("long pass: GOMAXPROCS %d during, %d after; want 1 and 1", during, fp.get())
	}
	run(120 * time.Millisecond) // still behind: no second switch
	if len(fp.calls) != 1 {
		t.Fatalf("calls = %v, want one switch to 1", fp.calls)
	}
	run(0)
	if fp.get() != 2 || len(fp.calls) != 2 || fp.calls[1] != 2 {
		t.Fatalf("after a short pass GOMAXPROCS = %d (calls %v), want back to 2", fp.get(), fp.calls)
	}

	// Losing the lease between passes (the term's ctx ends) also gives the P back.
	ctx, cancel := context.WithCancel(context.Background())
	pass = 120 * time.Millisecond
	if err := task.Run(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if fp.get() != 1 {
		t.Fatalf("long pass in the new term: GOMAXPROCS = %d, want 1", fp.get())
	}
	cancel()
	deadline := time.Now().Add(time.Second)
	for fp.get() != 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if fp.get() != 2 {
		t.Fatalf("after the lease ended GOMAXPROCS = %d, want 2", fp.get())
	}
}
