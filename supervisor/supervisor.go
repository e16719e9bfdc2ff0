//go:build unix

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

var (
	errNotRunning = errors.New("supervisor: not running")
	errStopping   = errors.New("supervisor: shutting down")
)

// Supervisor starts and keeps Config.Workers worker processes serving on one
// port. Create it with New; Run it once.
type Supervisor struct {
	cfg     Config
	opts    Options
	log     hclog.Logger
	command func(slot int) *exec.Cmd
	// base is the monotonic origin of liveness stamps.
	base time.Time
	// killGrace is the constant killGrace, except in tests that need a
	// shutdown kill without waiting 5s.
	killGrace time.Duration

	running atomic.Bool
	addr    atomic.Value // net.Addr, set once the sockets are open
	// files are the slots' listening sockets. Run sets them before any
	// spawn; after the first workers, only the slot's own loop touches its
	// entry (it closes it while the slot is in a crash loop).
	files    []*os.File
	joinAddr string // host:port a new socket of the group binds to
	ready    chan struct{}
	stopping chan struct{} // closed when Run starts shutting down
	rollMu   sync.Mutex    // one Roll at a time
	rollChs  []chan rollReq

	// wg counts the goroutines serving processes (output readers, waiters,
	// drain timers), so Run returns only after all of them ended.
	wg sync.WaitGroup

	mu     sync.Mutex
	slots  []slotInfo
	procs  map[*proc]struct{} // every process not yet reaped
	readyN int
}

// slotInfo is what Workers reports; guarded by Supervisor.mu.
type slotInfo struct {
	cur       *proc
	restarts  int
	everReady bool
}

type rollReq struct {
	reply chan error // buffered: the slot never blocks on a gone Roll
}

// New checks cfg and prepares a Supervisor; nothing starts before Run.
func New(cfg Config, opts Options, logger hclog.Logger) (*Supervisor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	command := opts.Command
	if command == nil {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("supervisor: find own executable: %w", err)
		}
		args := os.Args[1:]
		command = func(int) *exec.Cmd {
			// The path, not /proc/self/exe: after a binary upgrade the path
			// names the new file, /proc/self/exe the old one.
			return exec.Command(exe, args...)
		}
	}
	s := &Supervisor{
		cfg:       cfg,
		opts:      opts,
		log:       logger,
		command:   command,
		base:      time.Now(),
		killGrace: killGrace,
		ready:     make(chan struct{}),
		stopping:  make(chan struct{}),
		rollChs:   make([]chan rollReq, cfg.Workers),
		slots:     make([]slotInfo, cfg.Workers),
		procs:     make(map[*proc]struct{}),
	}
	for i := range s.rollChs {
		s.rollChs[i] = make(chan rollReq)
	}
	return s, nil
}

// since is the monotonic time since New, for liveness stamps.
func (s *Supervisor) since() int64 { return int64(time.Since(s.base)) }

// Addr is the address all slots listen on; nil until Run has opened the
// sockets (which is before Ready is closed).
func (s *Supervisor) Addr() net.Addr {
	a, _ := s.addr.Load().(net.Addr)
	return a
}

// Ready is closed once every slot has had a ready worker.
func (s *Supervisor) Ready() <-chan struct{} { return s.ready }

// Workers reports the current worker of every slot.
func (s *Supervisor) Workers() []WorkerInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]WorkerInfo, len(s.slots))
	for i, si := range s.slots {
		out[i] = WorkerInfo{Slot: i, Restarts: si.restarts}
		if p := si.cur; p != nil {
			out[i].PID, out[i].Started, out[i].Ready = p.pid, p.started, p.ready.Load()
		}
	}
	return out
}

// Run opens one SO_REUSEPORT listening socket per slot, starts the workers,
// restarts the ones that exit, runs the watchdog, and returns once ctx is
// cancelled and every worker has drained: SIGTERM to all, up to
// ShutdownTimeout+5s of waiting, then SIGKILL for the rest. It returns nil
// after a clean drain (every worker exited 0 in time), and an error when the
// sockets cannot be opened, a first worker cannot be started, or the drain
// was not clean. Run may be called once.
func (s *Supervisor) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("supervisor: Run called twice")
	}
	files, addr, join, err := listenSlots(ctx, s.opts.Addr, s.cfg.Workers)
	if err != nil {
		close(s.stopping)
		return err
	}
	s.files, s.joinAddr = files, join
	defer func() {
		// Slot loops may have replaced sockets; close the current ones.
		for _, f := range s.files {
			if f != nil {
				f.Close()
			}
		}
	}()
	s.addr.Store(addr)
	s.log.Info("listening", "addr", addr.String(), "workers", s.cfg.Workers)

	// The first workers start here, not in the slot loops, so a binary that
	// cannot be executed fails Run instead of crash-looping quietly.
	first := make([]*proc, s.cfg.Workers)
	for i := range first {
		p, err := s.spawn(i)
		if err != nil {
			close(s.stopping)
			return errors.Join(err, s.shutdown())
		}
		s.mu.Lock()
		s.slots[i].cur = p
		s.mu.Unlock()
		first[i] = p
	}

	var loops sync.WaitGroup
	for i, p := range first {
		loops.Add(1)
		go func() {
			defer loops.Done()
			s.runSlot(ctx, i, p)
		}()
	}
	<-ctx.Done()
	close(s.stopping)
	loops.Wait()
	return s.shutdown()
}

// shutdown drains every process still running and waits for every goroutine.
func (s *Supervisor) shutdown() error {
	s.mu.Lock()
	procs := make([]*proc, 0, len(s.procs))
	for p := range s.procs {
		procs = append(procs, p)
	}
	s.mu.Unlock()

	if len(procs) > 0 {
		s.log.Info("stopping workers", "count", len(procs), "drain_timeout", s.cfg.ShutdownTimeout.String())
	}
	for _, p := range procs {
		p.expected.Store(true)
		p.signal(syscall.SIGTERM)
	}
	deadline := time.NewTimer(s.cfg.ShutdownTimeout + s.killGrace)
	defer deadline.Stop()
	var errs []error
	killed := make(map[*proc]bool)
	timedOut := false
	for _, p := range procs {
		if !timedOut {
			select {
			case <-p.exited:
				continue
			case <-deadline.C:
				timedOut = true
			}
		}
		if !p.hasExited() {
			s.log.Error("worker did not drain in time, killing it", "slot", p.slot, "pid", p.pid,
				"drain_timeout", (s.cfg.ShutdownTimeout + s.killGrace).String())
			errs = append(errs, fmt.Errorf("worker %d (pid %d) killed after the drain timeout", p.slot, p.pid))
			killed[p] = true
			p.signal(syscall.SIGKILL)
		}
	}
	for _, p := range procs {
		<-p.exited
		if err := p.exitError(); err != nil && !killed[p] {
			errs = append(errs, err)
		}
	}
	s.wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("supervisor: unclean shutdown: %w", errors.Join(errs...))
	}
	s.log.Info("all workers stopped")
	return nil
}

// Roll replaces the workers one slot at a time: it starts a new worker on the
// slot's socket, waits for its ready byte, then SIGTERMs the old one, which
// drains. Connections keep being accepted by one of the two throughout, so a
// roll fails no request. A slot waiting out a back-off gets its new worker at
// once. Roll returns when every slot is rolled, or the first error (the
// slot's old worker then keeps serving).
func (s *Supervisor) Roll(ctx context.Context) error {
	if !s.running.Load() {
		return errNotRunning
	}
	s.rollMu.Lock()
	defer s.rollMu.Unlock()
	start := time.Now()
	for slot, ch := range s.rollChs {
		req := rollReq{reply: make(chan error, 1)}
		select {
		case ch <- req:
		case <-ctx.Done():
			return fmt.Errorf("supervisor: roll slot %d: %w", slot, ctx.Err())
		case <-s.stopping:
			return errStopping
		}
		select {
		case err := <-req.reply:
			if err != nil {
				return err
			}
		case <-ctx.Done():
			return fmt.Errorf("supervisor: roll slot %d: %w", slot, ctx.Err())
		case <-s.stopping:
			return errStopping
		}
	}
	s.log.Info("rolled all workers", "workers", len(s.rollChs), "took", time.Since(start).Round(time.Millisecond).String())
	return nil
}

// slotState is a slot loop's private restart bookkeeping.
type slotState struct {
	backoff time.Duration
	crashes []time.Time // restarts within crashWindow
}

// runSlot keeps one slot served until ctx ends: it restarts the slot's worker
// after unexpected exits, runs the watchdog on it, and performs roll requests.
// It owns cur and pending; processes left running at return are stopped by
// shutdown.
func (s *Supervisor) runSlot(ctx context.Context, slot int, cur *proc) {
	var (
		st           slotState
		curAnnounced bool // cur's ready byte has been handled
		pending      *proc
		pendingReply chan error
		restart      *time.Timer
		restartC     <-chan time.Time
		tickC        <-chan time.Time
	)
	if s.cfg.WatchdogTimeout > 0 {
		t := time.NewTicker(max(s.cfg.WatchdogTimeout/10, 10*time.Millisecond))
		defer t.Stop()
		tickC = t.C
	}
	schedule := func(d time.Duration) {
		if restart != nil {
			restart.Stop()
		}
		restart = time.NewTimer(d)
		restartC = restart.C
	}
	unschedule := func() {
		if restart != nil {
			restart.Stop()
		}
		restart, restartC = nil, nil
	}
	defer unschedule()
	setCur := func(p *proc) {
		cur, curAnnounced = p, false
		s.mu.Lock()
		s.slots[slot].cur = p
		s.mu.Unlock()
	}

	for {
		var curReady, curExited, pendReady, pendExited <-chan struct{}
		var rollC <-chan rollReq
		if cur != nil {
			curExited = cur.exited
			if !curAnnounced {
				curReady = cur.readyCh
			}
		}
		if pending != nil {
			pendReady, pendExited = pending.readyCh, pending.exited
		} else {
			rollC = s.rollChs[slot]
		}

		select {
		case <-ctx.Done():
			if pendingReply != nil {
				pendingReply <- errStopping
			}
			return

		case <-curReady:
			curAnnounced = true
			s.announce(cur)

		case <-curExited:
			d := s.crashed(cur, &st)
			setCur(nil)
			if d == maxBackoff && pending == nil && s.files[slot] != nil {
				s.releaseSocket(slot)
			}
			if pending == nil {
				schedule(d)
			} // else the roll's new worker takes the slot when ready

		case <-restartC:
			restartC = nil
			p, err := s.spawn(slot)
			if err != nil {
				st.backoff = min(max(2*st.backoff, minBackoff), maxBackoff)
				s.log.Error("cannot restart worker", "slot", slot, "error", err, "restart_in", st.backoff.String())
				schedule(st.backoff)
				continue
			}
			setCur(p)

		case req := <-rollC:
			// A slot waiting out a back-off gets the roll's worker instead;
			// its failure schedules the restart again.
			unschedule()
			p, err := s.spawn(slot)
			if err != nil {
				req.reply <- fmt.Errorf("supervisor: roll slot %d: %w", slot, err)
				if cur == nil {
					schedule(st.backoff)
				}
				continue
			}
			pending, pendingReply = p, req.reply

		case <-pendReady:
			next := pending
			if cur != nil {
				// Expected before the signal, so its exit is not a crash.
				cur.expected.Store(true)
				s.retire(cur)
			}
			unschedule()
			setCur(next)
			curAnnounced = true
			s.announce(next)
			pending = nil
			pendingReply <- nil
			pendingReply = nil

		case <-pendExited:
			pendingReply <- fmt.Errorf("supervisor: roll slot %d: new worker (pid %d) exited before it was ready: %w",
				slot, pending.pid, exitErrorOrStatus(pending))
			pending, pendingReply = nil, nil
			if cur == nil {
				schedule(st.backoff)
			}

		case <-tickC:
			s.watch(cur)
			s.watch(pending)
		}
	}
}

func exitErrorOrStatus(p *proc) error {
	if p.waitErr != nil {
		return p.waitErr
	}
	return errors.New("exit status 0")
}

// releaseSocket closes the socket of a slot that is in a crash loop. With no
// worker for seconds, its queued connections would hang instead of failing
// over: once the socket is closed the kernel sends new connections to the
// other slots' sockets. The next worker of the slot gets a new socket.
func (s *Supervisor) releaseSocket(slot int) {
	s.files[slot].Close()
	s.files[slot] = nil
	s.log.Warn("closed the socket of a crash-looping slot; other slots take its connections", "slot", slot)
}

// announce logs a worker's first ready byte and closes Ready once every slot
// has had a ready worker.
func (s *Supervisor) announce(p *proc) {
	s.log.Info("worker ready", "slot", p.slot, "pid", p.pid, "startup", time.Since(p.started).Round(time.Millisecond).String())
	s.mu.Lock()
	defer s.mu.Unlock()
	if si := &s.slots[p.slot]; !si.everReady {
		si.everReady = true
		s.readyN++
		if s.readyN == len(s.slots) {
			close(s.ready)
		}
	}
}

// crashed logs an unexpected exit and returns the back-off before the
// restart: doubling from minBackoff to maxBackoff, back to minBackoff after a
// healthy run, and held at maxBackoff while the slot is over its crash budget.
func (s *Supervisor) crashed(p *proc, st *slotState) time.Duration {
	now := time.Now()
	ran := now.Sub(p.started)
	if st.backoff == 0 || ran >= healthyRun {
		st.backoff = minBackoff
	} else {
		st.backoff = min(2*st.backoff, maxBackoff)
	}
	kept := st.crashes[:0]
	for _, t := range st.crashes {
		if now.Sub(t) < crashWindow {
			kept = append(kept, t)
		}
	}
	st.crashes = append(kept, now)
	overBudget := len(st.crashes) > s.cfg.CrashBudget
	if overBudget {
		st.backoff = maxBackoff
	}

	args := []any{"slot", p.slot, "pid", p.pid}
	args = append(args, p.exitArgs()...)
	if p.watchdogKilled.Load() {
		args = append(args, "reason", "watchdog")
	}
	args = append(args, "ran", ran.Round(time.Millisecond).String(), "restart_in", st.backoff.String())
	s.log.Error("worker exited unexpectedly", args...)
	if overBudget {
		s.log.Error("crash loop: slot held at maximum back-off", "slot", p.slot,
			"restarts_last_minute", len(st.crashes), "crash_budget", s.cfg.CrashBudget, "restart_in", st.backoff.String())
	}
	s.mu.Lock()
	s.slots[p.slot].restarts++
	s.mu.Unlock()
	return st.backoff
}

// watch kills p when the watchdog says it is frozen: no ready byte within
// startTimeout of its start, or no ping for WatchdogTimeout once ready. A
// draining worker (liveness pipe closed) is left to its drain.
func (s *Supervisor) watch(p *proc) {
	if p == nil || p.watchdogKilled.Load() || p.hasExited() {
		return
	}
	select {
	case <-p.draining:
		return
	default:
	}
	if !p.ready.Load() {
		if waited := time.Since(p.started); waited > startTimeout {
			s.log.Error("worker did not become ready, killing it", "slot", p.slot, "pid", p.pid,
				"waited", waited.Round(time.Millisecond).String())
			p.watchdogKilled.Store(true)
			p.signal(syscall.SIGKILL)
		}
		return
	}
	silent := time.Duration(s.since() - p.lastPing.Load())
	if silent > s.cfg.WatchdogTimeout {
		s.log.Error("worker unresponsive, killing it", "slot", p.slot, "pid", p.pid,
			"silent_for", silent.Round(time.Millisecond).String(), "watchdog_timeout", s.cfg.WatchdogTimeout.String())
		p.watchdogKilled.Store(true)
		p.signal(syscall.SIGKILL)
	}
}

// retire drains a rolled-out worker: SIGTERM now, SIGKILL if it is still
// running ShutdownTimeout+5s later.
func (s *Supervisor) retire(p *proc) {
	p.signal(syscall.SIGTERM)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTimer(s.cfg.ShutdownTimeout + s.killGrace)
		defer t.Stop()
		select {
		case <-p.exited:
		case <-t.C:
			s.log.Error("rolled-out worker did not drain in time, killing it", "slot", p.slot, "pid", p.pid)
			p.signal(syscall.SIGKILL)
		}
	}()
}
