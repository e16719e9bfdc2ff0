package main

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/llm-proxy/llm-proxy/coordinator"
	"github.com/llm-proxy/llm-proxy/store/shm"
)

// Giving the primary's spool ingest its share of a single CPU while it is behind.
//
// On one CPU every worker runs with two Ps (atLeastTwoProcs) for the sake of tail
// latency, and then the ingest goroutine competes as one OS thread against the
// threads serving requests, in its own process and in the other workers: at
// cache-hit rates (60k+ requests/s on one core) it got ~16% of the CPU and the
// request log fell behind by ~25k rows/s, with two workers by ~50k. With one P per
// worker the kernel splits the CPU between the workers and, inside the primary, the
// Go scheduler runs ingest in whole time slices: it keeps up (measured: 58k hits/s
// with rows tracking requests). So while an ingest pass runs long the primary marks
// the log as behind in shared memory, every worker on one CPU drops to one P, and
// they return to two once a pass is short again. At ordinary load, pass-through peaks
// included, passes end well within the threshold and nothing changes (a 0.5 s
// threshold caught those peaks too and doubled their p99 at 64 connections).

// ingestBehindSlot is the shared-memory slot whose counter 0 holds the unix-nano time
// until which the request log counts as behind (0: not behind). A deadline rather
// than a flag, so a primary that dies while behind cannot leave the workers on one P.
const ingestBehindSlot = "ingest_behind"

// catchUp watches the primary's ingest task and keeps the shared deadline fresh while
// a pass runs long.
type catchUp struct {
	logger hclog.Logger
	slot   *shm.Slot
	// behindAfter: a pass still running after this long means ingest is behind;
	// caughtUpBelow: a pass shorter than this means it has caught up. hold is how far
	// ahead the deadline is set, refreshed every hold/3 while behind.
	behindAfter, caughtUpBelow, hold time.Duration

	mu   sync.Mutex
	stop chan struct{} // closes the refresher; nil when not behind
	// leadership is the context of the task's current term: when it ends (the lease is
	// lost) the mark is cleared even between passes.
	leadership context.Context
}

func newCatchUp(slot *shm.Slot, logger hclog.Logger) *catchUp {
	return &catchUp{logger: logger, slot: slot, behindAfter: 1500 * time.Millisecond,
		caughtUpBelow: 250 * time.Millisecond, hold: 3 * time.Second}
}

func (c *catchUp) set(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case on && c.stop == nil:
		stop := make(chan struct{})
		c.stop = stop
		c.slot.Store(0, time.Now().Add(c.hold).UnixNano())
		go func() {
			t := time.NewTicker(c.hold / 3)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					// Under the lock: a refresh racing with set(false) must not
					// write a deadline after the clear.
					c.mu.Lock()
					if c.stop == stop {
						c.slot.Store(0, time.Now().Add(c.hold).UnixNano())
					}
					c.mu.Unlock()
				}
			}
		}()
		c.logger.Debug("request log ingest is behind: workers on one CPU use one P until it catches up")
	case !on && c.stop != nil:
		close(c.stop)
		c.stop = nil
		c.slot.Store(0, 0)
		c.logger.Debug("request log ingest caught up")
	}
}

// wrap returns t with its runs watched: a long one marks the log behind, a short one
// clears the mark.
func (c *catchUp) wrap(t coordinator.Task) coordinator.Task {
	run := t.Run
	t.Run = func(ctx context.Context, epoch int64) error {
		c.mu.Lock()
		if c.leadership != ctx {
			c.leadership = ctx
			context.AfterFunc(ctx, func() { c.set(false) })
		}
		c.mu.Unlock()
		start := time.Now()
		timer := time.AfterFunc(c.behindAfter, func() { c.set(true) })
		err := run(ctx, epoch)
		timer.Stop()
		if time.Since(start) < c.caughtUpBelow || ctx.Err() != nil {
			c.set(false)
		}
		return err
	}
	return t
}

// followIngest runs in every worker on one CPU until ctx ends: one P while the shared
// mark says the request log is behind, two otherwise.
func followIngest(ctx context.Context, slot *shm.Slot, every time.Duration, setProcs func(int) int) {
	one := false
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		behind := slot.Load(0) > time.Now().UnixNano()
		switch {
		case behind && !one:
			setProcs(1)
			one = true
		case !behind && one:
			setProcs(2)
			one = false
		}
		select {
		case <-ctx.Done():
			if one {
				setProcs(2)
			}
			return
		case <-t.C:
		}
	}
}
