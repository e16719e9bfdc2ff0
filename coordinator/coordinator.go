// Package coordinator runs in every worker: it writes the worker's heartbeat row, takes
// part in electing one primary through the single-row lease in SQLite, and runs the
// primary-only duties (tasks) while, and only while, this worker holds the lease.
//
// The shape follows Nomad's leader.go: the lease loop plays monitorLeadership, establish
// starts every task under a stop signal (establishLeadership), and revoke cancels them and
// waits (revokeLeadership). Safety does not rest on timing: every primary-only write is
// fenced on the lease epoch (store.FencedExec), so a primary that wakes from a freeze after
// losing the lease commits nothing, gets store.ErrFenced and steps down.
package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/llm-proxy/llm-proxy/store"
)

// PollInterval is how often the lease loop runs: a non-primary reads the lease (and takes
// it when free or expired), the primary renews it. One second is what makes a lease freed
// by the supervisor (ReleasePID) taken within 2 s; renewing on every poll costs one tiny
// write per second and gives the primary ~20 attempts before the 2/3-timeout step-down.
const PollInterval = time.Second

// opTimeout bounds each heartbeat, lease read and takeover attempt, so a database locked
// for long (a frozen process holding a write transaction) delays the loop by at most this
// much per call instead of the store's retry budget, and the primary's step-down check
// still runs on time.
const opTimeout = 2 * time.Second

// stepDownReleaseTimeout bounds the best-effort Release when stepping down, so a locked
// database cannot keep the loop from polling again.
const stepDownReleaseTimeout = time.Second

// Config is the coordination part of the process configuration.
type Config struct {
	HeartbeatInterval time.Duration `envconfig:"HEARTBEAT_INTERVAL" default:"10s" desc:"how often each worker refreshes its row in the workers table"`
	FailoverTimeout   time.Duration `envconfig:"FAILOVER_TIMEOUT" default:"30s" desc:"a lease not renewed for this long (on the observer's monotonic clock) is taken over; the primary stops its duties after 2/3 of it without a renewal"`
	LogRetentionDays  int           `envconfig:"LOG_RETENTION_DAYS" default:"30" desc:"request logs older than this many days are deleted by the primary; 0 keeps them forever"`
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.HeartbeatInterval < 100*time.Millisecond:
		return fmt.Errorf("coordinator: HEARTBEAT_INTERVAL must be at least 100ms, got %s", c.HeartbeatInterval)
	case c.FailoverTimeout < 3*PollInterval:
		return fmt.Errorf("coordinator: FAILOVER_TIMEOUT must be at least %s, got %s", 3*PollInterval, c.FailoverTimeout)
	case c.LogRetentionDays < 0:
		return fmt.Errorf("coordinator: LOG_RETENTION_DAYS must not be negative, got %d", c.LogRetentionDays)
	}
	return nil
}

// Identity names this worker process.
type Identity struct {
	ID      string // NewID(slot, pid, start)
	Slot    int
	PID     int
	Version string
}

// NewID returns the worker id "<slot>-<pid>-<start unix nanos>": unique per process even
// when a pid is reused, and parseable by the spool ingest to find the writer's pid.
func NewID(slot, pid int, start time.Time) string {
	return strconv.Itoa(slot) + "-" + strconv.Itoa(pid) + "-" + strconv.FormatInt(start.UnixNano(), 10)
}

// Task is one primary-only duty. Run is called at once when the lease is gained and then
// every Interval until it is lost; ctx ends when leadership is revoked. Run must do its
// writes fenced on epoch; returning an error wrapping store.ErrFenced makes the
// coordinator step down.
type Task struct {
	Name     string
	Interval time.Duration
	Run      func(ctx context.Context, epoch int64) error
}

// Coordinator is one worker's heartbeat and lease participant. Create with New, add tasks,
// then call Run once.
type Coordinator struct {
	cfg    Config
	st     *store.Store
	id     Identity
	clock  Clock
	logger hclog.Logger
	start  time.Time

	tasks   []Task
	primary atomic.Bool
	epoch   atomic.Int64
	stats   atomic.Pointer[func() string]
	fenced  chan struct{} // a task hit ErrFenced
	refused atomic.Int64  // duty writes refused by the epoch fence, see FencedRefusals
	iter    atomic.Int64  // lease-loop iterations, for tests to synchronise with a FakeClock
}

// New returns a coordinator; nothing runs until Run. A nil clock means SystemClock.
func New(cfg Config, st *store.Store, id Identity, clock Clock, logger hclog.Logger) *Coordinator {
	if clock == nil {
		clock = SystemClock()
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &Coordinator{
		cfg: cfg, st: st, id: id, clock: clock,
		logger: logger.Named("coordinator").With("worker_id", id.ID),
		start:  clock.Now(),
		fenced: make(chan struct{}, 1),
	}
}

// AddTask registers a primary-only duty. Call before Run.
func (c *Coordinator) AddTask(t Task) { c.tasks = append(c.tasks, t) }

// IsPrimary reports whether this worker currently runs the primary duties.
func (c *Coordinator) IsPrimary() bool { return c.primary.Load() }

// Epoch returns the lease epoch held while primary, 0 otherwise.
func (c *Coordinator) Epoch() int64 { return c.epoch.Load() }

// FencedRefusals counts the duty writes of this process that the epoch fence refused
// (a task returned store.ErrFenced): each one is a write a deposed primary tried and did
// not commit. It only grows.
func (c *Coordinator) FencedRefusals() int64 { return c.refused.Load() }

// SetStats sets the function whose JSON result is stored in each heartbeat row.
func (c *Coordinator) SetStats(fn func() string) { c.stats.Store(&fn) }

// leadership is one term as primary: the tasks' cancel and their WaitGroup.
type leadership struct {
	epoch  int64
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// loopState is what the lease loop remembers between polls.
type loopState struct {
	lead      *leadership
	lastRenew time.Duration // Monotonic at the start of the last successful renewal
	seenSeq   int64         // renew_seq last observed; -1: none yet
	seenAt    time.Duration // Monotonic when seenSeq was first observed
	lastBeat  time.Duration
	beatDue   bool
}

// Run beats and takes part in the lease until ctx ends; then it stops the tasks, releases
// the lease if held and removes its worker row. It returns nil on ctx end.
func (c *Coordinator) Run(ctx context.Context) error {
	if err := c.cfg.Validate(); err != nil {
		return err
	}
	s := &loopState{seenSeq: -1, beatDue: true}
	defer c.shutdown(ctx, s)
	for {
		if s.beatDue || c.clock.Monotonic()-s.lastBeat >= c.cfg.HeartbeatInterval {
			c.beat(ctx, s)
		}
		c.leaseStep(ctx, s)
		wait := c.clock.After(PollInterval)
		c.iter.Add(1)
		select {
		case <-ctx.Done():
			return nil
		case <-wait:
		case <-c.fenced:
			if s.lead != nil {
				c.logger.Warn("lease epoch changed under a running task; stepping down", "epoch", s.lead.epoch)
				c.revoke(s)
			}
		}
	}
}

func (c *Coordinator) beat(ctx context.Context, s *loopState) {
	role := "worker"
	if s.lead != nil {
		role = "primary"
	}
	stats := "{}"
	if fn := c.stats.Load(); fn != nil {
		stats = (*fn)()
	}
	hctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	err := c.st.Heartbeat(hctx, store.WorkerRow{
		ID: c.id.ID, Slot: c.id.Slot, PID: c.id.PID, StartedAt: c.start, BeatAt: c.clock.Now(),
		Role: role, Version: c.id.Version, Stats: stats,
	})
	if err != nil {
		if ctx.Err() == nil {
			c.logger.Warn("heartbeat failed; retrying next poll", "error", err)
		}
		return
	}
	s.lastBeat, s.beatDue = c.clock.Monotonic(), false
}

// leaseStep is one poll: renew as primary, or observe and maybe take the lease.
func (c *Coordinator) leaseStep(ctx context.Context, s *loopState) {
	stepDownAfter := c.cfg.FailoverTimeout * 2 / 3
	if s.lead != nil {
		begin := c.clock.Monotonic()
		since := begin - s.lastRenew
		if since >= stepDownAfter {
			// Checked before touching the database: a primary waking from a freeze stops
			// its duties first, whatever the lease says now.
			c.logger.Warn("lease not renewed in time; stopping primary duties", "since_renewal", since, "limit", stepDownAfter)
			c.stepDown(ctx, s)
			return
		}
		rctx, cancel := context.WithTimeout(ctx, min(stepDownAfter-since, opTimeout))
		ok, err := c.st.Renew(rctx, c.id.ID, s.lead.epoch, c.clock.Now())
		cancel()
		switch {
		case err != nil:
			if ctx.Err() == nil {
				c.logger.Warn("lease renewal failed; retrying", "error", err)
			}
		case !ok:
			c.logger.Info("lease lost to another worker; stopping primary duties", "epoch", s.lead.epoch)
			c.revoke(s)
		default:
			s.lastRenew = begin
		}
		return
	}

	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	l, err := c.st.Lease(octx)
	if err != nil {
		if ctx.Err() == nil {
			c.logger.Warn("reading the lease failed", "error", err)
		}
		return
	}
	now := c.clock.Monotonic()
	switch {
	case l.Holder == c.id.ID:
		// Ours but not running duties: a step-down whose Release failed. Free it so the
		// next poll (ours or anyone's) takes it with a new epoch.
		c.release(ctx, l.Epoch)
		return
	case l.Holder == "":
	case l.RenewSeq != s.seenSeq:
		s.seenSeq, s.seenAt = l.RenewSeq, now
		return
	case now-s.seenAt < c.cfg.FailoverTimeout:
		return
	default:
		c.logger.Warn("lease not renewed within the failover timeout; taking over",
			"holder", l.Holder, "holder_pid", l.PID, "epoch", l.Epoch)
	}
	nl, won, err := c.st.TryAcquire(octx, c.id.ID, c.id.PID, l.RenewSeq, c.clock.Now())
	if err != nil {
		if ctx.Err() == nil {
			c.logger.Warn("taking the lease failed", "error", err)
		}
		return
	}
	if !won {
		s.seenSeq, s.seenAt = nl.RenewSeq, now
		return
	}
	s.lastRenew = now
	c.establish(ctx, s, nl.Epoch)
}

// establish starts every task for the term at epoch (establishLeadership).
func (c *Coordinator) establish(ctx context.Context, s *loopState, epoch int64) {
	c.logger.Info("became primary", "epoch", epoch)
	tctx, cancel := context.WithCancel(ctx)
	lead := &leadership{epoch: epoch, cancel: cancel}
	for _, t := range c.tasks {
		lead.wg.Add(1)
		go func() {
			defer lead.wg.Done()
			c.runTask(tctx, t, epoch)
		}()
	}
	s.lead = lead
	c.epoch.Store(epoch)
	c.primary.Store(true)
	s.beatDue = true // show the new role at once
}

// revoke stops every task and waits for them (revokeLeadership).
func (c *Coordinator) revoke(s *loopState) {
	lead := s.lead
	if lead == nil {
		return
	}
	c.primary.Store(false)
	c.epoch.Store(0)
	lead.cancel()
	lead.wg.Wait()
	select { // a fenced signal from the finished term must not end the next one
	case <-c.fenced:
	default:
	}
	s.lead = nil
	s.seenSeq = -1
	s.beatDue = true
	c.logger.Info("primary duties stopped", "epoch", lead.epoch)
}

// stepDown revokes and frees the lease so a successor need not wait for the timeout.
func (c *Coordinator) stepDown(ctx context.Context, s *loopState) {
	epoch := s.lead.epoch
	c.revoke(s)
	c.release(ctx, epoch)
}

func (c *Coordinator) release(ctx context.Context, epoch int64) {
	rctx, cancel := context.WithTimeout(ctx, stepDownReleaseTimeout)
	defer cancel()
	if err := c.st.Release(rctx, c.id.ID, epoch); err != nil && ctx.Err() == nil {
		c.logger.Warn("releasing the lease failed; it expires after the failover timeout", "error", err)
	}
}

// shutdown runs when ctx ends: stop the tasks, hand the lease over at once and remove our
// row, with a fresh deadline since ctx is already done.
func (c *Coordinator) shutdown(ctx context.Context, s *loopState) {
	bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if s.lead != nil {
		epoch := s.lead.epoch
		c.revoke(s)
		if err := c.st.Release(bg, c.id.ID, epoch); err != nil {
			c.logger.Warn("releasing the lease at shutdown failed", "error", err)
		}
	}
	if err := c.st.RemoveWorker(bg, c.id.ID); err != nil {
		c.logger.Warn("removing the worker row at shutdown failed", "error", err)
	}
}

// runTask runs t now and then every t.Interval until ctx ends.
func (c *Coordinator) runTask(ctx context.Context, t Task, epoch int64) {
	logger := c.logger.Named(t.Name)
	for {
		err := t.Run(ctx, epoch)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, store.ErrFenced):
			// Logged per refusal, with the task, so an operator (or a test) can see that
			// a stale primary tried to write and the fence held.
			c.refused.Add(1)
			logger.Warn("duty write refused: the lease epoch moved on", "task", t.Name, "epoch", epoch)
			select {
			case c.fenced <- struct{}{}:
			default:
			}
			return
		case store.IsTransient(err):
			logger.Warn("task skipped a run: database busy", "error", err)
		case err != nil:
			logger.Error("task failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-c.clock.After(t.Interval):
		}
	}
}
