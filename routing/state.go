package routing

import (
	"sync"
	"sync/atomic"
	"time"
)

// Counter is an int64 that every worker process may share (see store/shm); the
// Book falls back to a process-local one when it has no shared source.
type Counter interface {
	Add(delta int64) int64
	Load() int64
}

// CounterSource hands out named counters. Implementations backed by shared memory
// make round_robin a strict rotation and least_connections a count across all
// workers, not per worker. Counter must return the same counter for the same name.
type CounterSource interface {
	Counter(name string) Counter
}

type localCounter struct{ v atomic.Int64 }

func (c *localCounter) Add(d int64) int64 { return c.v.Add(d) }
func (c *localCounter) Load() int64       { return c.v.Load() }

// Book holds the live routing state that outlives table snapshots: upstream health
// from active checks, deployment circuits and cool-downs from passive checks,
// conversation stickiness, and the (possibly shared) counters. One per worker.
type Book struct {
	counters CounterSource
	start    time.Time
	// now returns monotonic nanoseconds; tests replace it.
	now func() int64

	mu     sync.Mutex
	ups    map[int64]*UpstreamState
	deps   map[string]*DeploymentState
	sticky map[string]*stickyMap
	local  map[string]Counter
}

// NewBook returns an empty book; counters may be nil for process-local counting.
func NewBook(counters CounterSource) *Book {
	b := &Book{
		counters: counters,
		start:    time.Now(),
		ups:      make(map[int64]*UpstreamState),
		deps:     make(map[string]*DeploymentState),
		sticky:   make(map[string]*stickyMap),
		local:    make(map[string]Counter),
	}
	b.now = func() int64 { return int64(time.Since(b.start)) }
	return b
}

// Now is the book's monotonic clock in nanoseconds: wall-clock steps do not move it.
func (b *Book) Now() int64 { return b.now() }

// SetClock replaces the clock (tests).
func (b *Book) SetClock(now func() int64) { b.now = now }

// SetHealthy records an active health check result for an upstream.
func (b *Book) SetHealthy(upstreamID int64, healthy bool) {
	b.upstream(upstreamID, "").healthy.Store(healthy)
}

func (b *Book) upstream(id int64, _ string) *UpstreamState {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.ups[id]
	if !ok {
		s = &UpstreamState{}
		s.healthy.Store(true)
		b.ups[id] = s
	}
	return s
}

func (b *Book) deployment(public, upstream, model string) *DeploymentState {
	key := public + "\x00" + upstream + "\x00" + model
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.deps[key]
	if !ok {
		s = &DeploymentState{inflight: b.counterLocked("inflight:" + upstream + "/" + model)}
		b.deps[key] = s
	}
	return s
}

func (b *Book) counter(name string) Counter {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.counterLocked(name)
}

func (b *Book) counterLocked(name string) Counter {
	if b.counters != nil {
		return b.counters.Counter(name)
	}
	c, ok := b.local[name]
	if !ok {
		c = &localCounter{}
		b.local[name] = c
	}
	return c
}

func (b *Book) stickyFor(model string) *stickyMap {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.sticky[model]
	if !ok {
		s = &stickyMap{m: make(map[uint64]uint64)}
		b.sticky[model] = s
	}
	return s
}

// UpstreamState is an upstream's live state.
type UpstreamState struct {
	healthy atomic.Bool
}

// Circuit breaker parameters. A deployment's circuit opens after
// circuitFailures consecutive failures, or when at least circuitMinRequests
// requests in the current window failed at circuitErrorRatio or more; it stays
// open for a cool-down that doubles with each re-opening (capped), then lets one
// real request through (half-open) whose outcome closes or re-opens it.
const (
	circuitFailures    = 5
	circuitMinRequests = 20
	circuitErrorRatio  = 0.5
	circuitWindow      = 10 * time.Second
	circuitBaseOpen    = 5 * time.Second
	circuitMaxOpen     = 5 * time.Minute
)

// DeploymentState is a deployment's live state in this worker.
type DeploymentState struct {
	inflight Counter
	// coolUntil (monotonic ns) holds new requests back after a 429 with Retry-After.
	coolUntil atomic.Int64
	// openUntil is 0 while the circuit is closed; once it passes, the circuit is
	// half-open and probing marks the one request let through.
	openUntil atomic.Int64
	probing   atomic.Bool

	mu          sync.Mutex
	failures    int
	opens       int
	windowStart int64
	windowReqs  int
	windowErrs  int
}

// CoolDown holds new requests back from the deployment until now+d.
func (s *DeploymentState) CoolDown(now int64, d time.Duration) {
	until := now + int64(d)
	for {
		cur := s.coolUntil.Load()
		if cur >= until || s.coolUntil.CompareAndSwap(cur, until) {
			return
		}
	}
}

// CircuitOpen reports whether the circuit is open or half-open at now.
func (s *DeploymentState) CircuitOpen(now int64) bool { return s.circuitOpen(now) }

func (s *DeploymentState) circuitOpen(int64) bool { return s.openUntil.Load() != 0 }

// mayAdmit reports whether the circuit lets a request through (without taking
// the half-open probe slot).
func (s *DeploymentState) mayAdmit(now int64) bool {
	until := s.openUntil.Load()
	if until == 0 {
		return true
	}
	return now >= until && !s.probing.Load()
}

// admit takes the half-open probe slot when the circuit is half-open.
func (s *DeploymentState) admit(now int64) bool {
	until := s.openUntil.Load()
	if until == 0 {
		return true
	}
	return now >= until && s.probing.CompareAndSwap(false, true)
}

// Report feeds one attempt's outcome to the circuit breaker. failed is true for
// connection errors, timeouts and 5xx answers (not for the client's own errors).
func (s *DeploymentState) Report(now int64, failed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now-s.windowStart > int64(circuitWindow) {
		s.windowStart, s.windowReqs, s.windowErrs = now, 0, 0
	}
	s.windowReqs++
	halfOpen := s.openUntil.Load() != 0
	if !failed {
		s.failures = 0
		if halfOpen {
			s.openUntil.Store(0)
			s.opens = 0
			s.probing.Store(false)
		}
		return
	}
	s.failures++
	s.windowErrs++
	switch {
	case halfOpen:
		s.opens++
		s.openUntil.Store(now + int64(openFor(s.opens)))
		s.probing.Store(false)
	case s.failures >= circuitFailures ||
		(s.windowReqs >= circuitMinRequests && float64(s.windowErrs) >= circuitErrorRatio*float64(s.windowReqs)):
		s.opens = 1
		s.openUntil.Store(now + int64(openFor(1)))
	}
}

func openFor(opens int) time.Duration {
	d := circuitBaseOpen
	for i := 1; i < opens && d < circuitMaxOpen; i++ {
		d *= 2
	}
	return min(d, circuitMaxOpen)
}

// stickyMap remembers conversations that moved off their home deployment.
type stickyMap struct {
	mu sync.Mutex
	m  map[uint64]uint64
}

// stickyMax bounds the memory of moved conversations; past it the map starts over
// (conversations then return to their home, as after a restart).
const stickyMax = 100_000

func (s *stickyMap) get(key uint64) (uint64, bool) {
	s.mu.Lock()
	id, ok := s.m[key]
	s.mu.Unlock()
	return id, ok
}

func (s *stickyMap) put(key, id uint64) {
	s.mu.Lock()
	if len(s.m) >= stickyMax {
		clear(s.m)
	}
	s.m[key] = id
	s.mu.Unlock()
}
