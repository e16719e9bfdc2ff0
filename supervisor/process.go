//go:build unix

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// pipeGrace is how long the supervisor waits, after a worker has exited, for
// its output pipes to reach EOF. Anything the worker spawned may hold them
// open; that must not stall the exit handling.
const pipeGrace = time.Second

// proc is one worker process.
type proc struct {
	slot    int
	pid     int
	started time.Time
	process *os.Process

	// lastPing is Supervisor.since() at the last byte on the liveness pipe.
	lastPing atomic.Int64
	ready    atomic.Bool
	readyCh  chan struct{} // closed at the ready byte
	draining chan struct{} // closed at EOF on the liveness pipe

	// expected is set before the supervisor stops the process itself
	// (rolled out, shutdown): its exit then needs no restart.
	expected atomic.Bool
	// watchdogKilled marks a kill by the watchdog, for the exit log line.
	watchdogKilled atomic.Bool

	exited chan struct{} // closed after reap, output drained and OnExit
	// Set before exited is closed.
	waitErr error
	state   *os.ProcessState
}

func (p *proc) signal(sig os.Signal) {
	// ErrProcessDone is the only expected error: the process exited first.
	_ = p.process.Signal(sig)
}

func (p *proc) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// exitArgs describes how the process ended, for log lines.
func (p *proc) exitArgs() []any {
	if p.state == nil {
		return []any{"error", p.waitErr}
	}
	if ws, ok := p.state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return []any{"signal", ws.Signal().String()}
	}
	return []any{"status", p.state.ExitCode()}
}

// exitError is nil for a clean exit (status 0) and says how it ended otherwise.
func (p *proc) exitError() error {
	if p.waitErr == nil {
		return nil
	}
	return fmt.Errorf("worker %d (pid %d): %w", p.slot, p.pid, p.waitErr)
}

// spawn starts a worker for slot and the goroutines that serve it.
func (s *Supervisor) spawn(slot int) (*proc, error) {
	if s.files[slot] == nil {
		f, _, err := listenOne(context.Background(), s.joinAddr)
		if err != nil {
			return nil, fmt.Errorf("supervisor: reopen socket of slot %d: %w", slot, err)
		}
		s.files[slot] = f
	}
	cmd := s.command(slot)
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	cmd.Env = append(env[:len(env):len(env)],
		EnvRole+"="+roleWorker,
		EnvSlot+"="+strconv.Itoa(slot),
		envSupervisorPID+"="+strconv.Itoa(os.Getpid()),
		envPingInterval+"="+s.cfg.pingInterval().String(),
	)

	var opened []*os.File
	closeFiles := func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err == nil {
			opened = append(opened, r, w)
		}
		return r, w, err
	}
	livR, livW, err1 := pipe()
	outR, outW, err2 := pipe()
	errR, errW, err3 := pipe()
	if err := errors.Join(err1, err2, err3); err != nil {
		closeFiles(opened)
		return nil, fmt.Errorf("supervisor: worker %d pipes: %w", slot, err)
	}
	cmd.Stdin = nil
	cmd.Stdout = outW
	cmd.Stderr = errW
	cmd.ExtraFiles = []*os.File{s.files[slot], livW}
	setProcAttr(cmd)

	err := cmd.Start()
	// The child has its copies of the write ends; ours must go so the
	// pipes reach EOF when the child exits.
	closeFiles([]*os.File{livW, outW, errW})
	if err != nil {
		closeFiles([]*os.File{livR, outR, errR})
		return nil, fmt.Errorf("supervisor: start worker %d: %w", slot, err)
	}

	p := &proc{
		slot:     slot,
		pid:      cmd.Process.Pid,
		started:  time.Now(),
		process:  cmd.Process,
		readyCh:  make(chan struct{}),
		draining: make(chan struct{}),
		exited:   make(chan struct{}),
	}
	p.lastPing.Store(s.since())
	s.mu.Lock()
	s.procs[p] = struct{}{}
	s.mu.Unlock()
	s.log.Debug("worker started", "slot", slot, "pid", p.pid, "path", cmd.Path)

	wlog := s.log.Named(fmt.Sprintf("worker-%d", slot))
	var readers sync.WaitGroup
	readers.Add(3)
	s.wg.Add(1)
	go func() {
		defer readers.Done()
		(&lineEmitter{log: wlog, pid: p.pid}).forward(outR)
	}()
	go func() {
		defer readers.Done()
		(&lineEmitter{log: wlog, pid: p.pid}).forward(errR)
	}()
	go func() {
		defer readers.Done()
		s.readLiveness(p, livR)
	}()
	go func() {
		defer s.wg.Done()
		waitErr := cmd.Wait()
		drained := make(chan struct{})
		go func() {
			readers.Wait()
			close(drained)
		}()
		t := time.NewTimer(pipeGrace)
		select {
		case <-drained:
		case <-t.C:
			// Closing our read ends unblocks the readers.
			closeFiles([]*os.File{livR, outR, errR})
			<-drained
		}
		t.Stop()
		closeFiles([]*os.File{livR, outR, errR})

		p.waitErr, p.state = waitErr, cmd.ProcessState
		s.mu.Lock()
		delete(s.procs, p)
		s.mu.Unlock()
		if p.expected.Load() {
			s.log.Info("worker exited", append([]any{"slot", slot, "pid", p.pid}, p.exitArgs()...)...)
		}
		if s.opts.OnExit != nil {
			s.opts.OnExit(slot, p.pid, waitErr)
		}
		close(p.exited)
	}()
	return p, nil
}

// readLiveness stamps every byte from the worker's liveness pipe and marks
// the worker ready at the ready byte.
func (s *Supervisor) readLiveness(p *proc, r io.Reader) {
	defer close(p.draining)
	buf := make([]byte, 64)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			p.lastPing.Store(s.since())
			if !p.ready.Load() {
				for _, b := range buf[:n] {
					if b == byteReady {
						p.ready.Store(true)
						close(p.readyCh)
						break
					}
				}
			}
		}
		if err != nil {
			return
		}
	}
}
