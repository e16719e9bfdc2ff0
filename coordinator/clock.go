package coordinator

import (
	"sync"
	"time"
)

// Clock is the coordinator's source of time, injected so a test can run a 30 s failover
// without sleeping 30 s.
//
// Now is the wall clock; it is only written into rows for display and is never compared,
// so it may step. Monotonic never steps: every timeout decision (failover, step-down,
// heartbeat spacing) is a difference of two Monotonic readings taken by the observer.
type Clock interface {
	Now() time.Time
	Monotonic() time.Duration // time since an arbitrary fixed origin
	After(d time.Duration) <-chan time.Time
}

// SystemClock is the real clock. Its Monotonic reading comes from the monotonic part of
// time.Now, which a wall-clock step (NTP, an operator) does not move.
func SystemClock() Clock { return systemClock{} }

var processStart = time.Now()

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) Monotonic() time.Duration               { return time.Since(processStart) }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// FakeClock is a Clock for tests: time moves only through Advance (both readings) and
// StepWall (wall only, as an NTP step would).
type FakeClock struct {
	mu       sync.Mutex
	wall     time.Time
	mono     time.Duration
	wallStep time.Duration
	waiters  []fakeWaiter
}

type fakeWaiter struct {
	at time.Duration
	ch chan time.Time
}

// NewFakeClock returns a clock whose wall time starts at start.
func NewFakeClock(start time.Time) *FakeClock { return &FakeClock{wall: start.Round(0)} }

// Now returns the fake wall time.
func (f *FakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.wall.Add(f.mono + f.wallStep)
}

// Monotonic returns how far Advance has moved the clock.
func (f *FakeClock) Monotonic() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mono
}

// After fires once Advance has moved the clock by d or more.
func (f *FakeClock) After(d time.Duration) <-chan time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- f.wall.Add(f.mono + f.wallStep)
		return ch
	}
	f.waiters = append(f.waiters, fakeWaiter{at: f.mono + d, ch: ch})
	return ch
}

// Advance moves both readings forward by d and fires the timers that are due.
func (f *FakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mono += d
	now := f.wall.Add(f.mono + f.wallStep)
	kept := f.waiters[:0]
	for _, w := range f.waiters {
		if w.at <= f.mono {
			w.ch <- now // buffered, never blocks
		} else {
			kept = append(kept, w)
		}
	}
	f.waiters = kept
}

// StepWall moves only the wall reading, by d (negative steps back).
func (f *FakeClock) StepWall(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wallStep += d
}
