//go:build unix

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
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
	if cmd.Err != nil {
		return nil, fmt.Errorf("supervisor: start worker %d: %w", slot, cmd.Err)
	}
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	env = append(env[:len(env):len(env)],
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
	devNull, err4 := os.Open(os.DevNull)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		closeFiles(opened)
		if devNull != nil {
			devNull.Close()
		}
		return nil, fmt.Errorf("supervisor: worker %d pipes: %w", slot, err)
	}
	setProcAttr(cmd)

	process, err := forkExec(cmd, env, s.files[slot], []*os.File{devNull, outW, errW}, livW)
	// The child has its copies; ours must go so the pipes reach EOF when the
	// child exits.
	closeFiles([]*os.File{livW, outW, errW, devNull})
	if err != nil {
		closeFiles([]*os.File{livR, outR, errR})
		return nil, fmt.Errorf("supervisor: start worker %d: %w", slot, err)
	}

	p := &proc{
		slot:     slot,
		pid:      process.Pid,
		started:  time.Now(),
		process:  process,
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
		state, waitErr := process.Wait()
		if waitErr == nil && !state.Success() {
			waitErr = &exec.ExitError{ProcessState: state}
		}
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

		p.waitErr, p.state = waitErr, state
		s.mu.Lock()
		delete(s.procs, p)
		s.mu.Unlock()
		if p.expected.Load() {
			// Stopped by the supervisor; unexpected exits are logged by the
			// slot loop together with the back-off.
			args := append([]any{"slot", slot, "pid", p.pid}, p.exitArgs()...)
			if waitErr != nil {
				s.log.Warn("worker exited with an error after SIGTERM", args...)
			} else {
				s.log.Info("worker exited", args...)
			}
		}
		if s.opts.OnExit != nil {
			s.opts.OnExit(slot, p.pid, waitErr)
		}
		close(p.exited)
	}()
	return p, nil
}

// forkExec starts cmd with env, stdio as fds 0-2, the listening socket as
// fd 3 and the liveness pipe as fd 4.
//
// It does not use exec.Cmd.Start: that takes descriptors with os.File.Fd,
// which switches them to blocking mode. For the socket that mode lives in the
// open file description shared with the workers already serving on it, whose
// accept would then block in the kernel where closing the listener cannot
// interrupt it: a rolled-out worker would never finish draining. The
// socket's descriptor is taken through SyscallConn, which leaves the mode
// alone.
func forkExec(cmd *exec.Cmd, env []string, socket *os.File, stdio []*os.File, liveness *os.File) (*os.Process, error) {
	rc, err := socket.SyscallConn()
	if err != nil {
		return nil, err
	}
	var pid int
	var forkErr error
	err = rc.Control(func(sock uintptr) {
		files := make([]uintptr, 0, 5)
		for _, f := range stdio {
			files = append(files, f.Fd())
		}
		files = append(files, sock, liveness.Fd())
		args := cmd.Args
		if len(args) == 0 {
			args = []string{cmd.Path}
		}
		pid, forkErr = syscall.ForkExec(cmd.Path, args, &syscall.ProcAttr{
			Dir:   cmd.Dir,
			Env:   dedupEnv(env),
			Files: files,
			Sys:   cmd.SysProcAttr,
		})
	})
	if err = errors.Join(err, forkErr); err != nil {
		return nil, err
	}
	// The child is ours and not reaped, so its pid cannot have been reused.
	return os.FindProcess(pid)
}

// dedupEnv keeps the last value of each key, as exec.Cmd does: Go programs
// read the first one, and the supervisor's own variables come last.
func dedupEnv(env []string) []string {
	seen := make(map[string]bool, len(env))
	out := make([]string, 0, len(env))
	for i := len(env) - 1; i >= 0; i-- {
		k, _, _ := strings.Cut(env[i], "=")
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, env[i])
	}
	slices.Reverse(out)
	return out
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
