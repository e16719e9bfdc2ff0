package main

import (
	"context"
	"runtime"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/llm-proxy/llm-proxy/coordinator"
)

// catchUp gives the primary's spool ingest its share of a single CPU while it is behind.
//
// On one CPU the worker runs with two Ps (atLeastTwoProcs) for the sake of tail
// latency, and then the ingest goroutine competes as one OS thread against the thread
// serving requests: at cache-hit rates (60k+ requests/s on one core) it got ~16% of
// the CPU and the request log fell behind by ~25k rows/s. With one P the Go
// scheduler runs ingest in whole time slices and it keeps up (measured: 60.8k hits/s,
// caught up 0.6 s after a 30 s run). So while an ingest pass runs long the worker
// drops to one P, and it returns to two once a pass is short again. At ordinary load,
// pass-through peaks included, passes end well within the threshold and nothing
// changes (a 0.5 s threshold doubled the chat p99 at 64 connections).
type catchUp struct {
	logger hclog.Logger
	// behindAfter: a pass still running after this long means ingest is behind;
	// caughtUpBelow: a pass shorter than this means it has caught up.
	behindAfter, caughtUpBelow time.Duration
	setProcs                   func(int) int // runtime.GOMAXPROCS, replaced in tests

	mu    sync.Mutex
	saved int // the GOMAXPROCS to return to; 0 when not catching up
	// leadership is the context of the task's current term: when it ends (the
	// lease is lost) the worker gets its Ps back even between passes.
	leadership context.Context
}

func newCatchUp(logger hclog.Logger) *catchUp {
	// A pass at an ordinary peak (a second of records at the pass-through rate) takes
	// well under a second even with two Ps; one still running after 1.5 s means the
	// backlog grows faster than ingest drains it. One P costs tail latency, so it is
	// kept for that case.
	return &catchUp{logger: logger, behindAfter: 1500 * time.Millisecond, caughtUpBelow: 250 * time.Millisecond,
		setProcs: runtime.GOMAXPROCS}
}

func (c *catchUp) set(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case on && c.saved == 0:
		c.saved = c.setProcs(1)
		c.logger.Debug("request log ingest is behind: one P until it catches up")
	case !on && c.saved != 0:
		c.setProcs(c.saved)
		c.saved = 0
		c.logger.Debug("request log ingest caught up")
	}
}

// wrap returns t with its runs watched: long ones switch to one P, short ones back.
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
