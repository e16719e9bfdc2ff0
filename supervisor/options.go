package supervisor

import "os/exec"

// Options are the parts of a Supervisor that are not environment configuration.
type Options struct {
	// Addr is the host:port to listen on. Port 0 picks a free port, which all
	// slots then share.
	Addr string
	// Command builds the command for a new worker of slot. nil re-executes
	// the binary at os.Executable()'s path with the supervisor's arguments;
	// because the path is resolved again at every start, a binary replaced on
	// disk is what Roll starts (SIGUSR2 upgrade). Tests pass the test binary.
	//
	// Only Path, Args, Env, Dir and SysProcAttr are used. The supervisor
	// adds the worker's variables to Env (or to its own environment when Env
	// is nil), sets Setpgid (and Pdeathsig on Linux) in SysProcAttr, and
	// supplies stdin (/dev/null), stdout, stderr and fds 3 and 4 itself. It
	// starts the process with syscall.ForkExec, not Cmd.Start (see forkExec),
	// so Stdin, Stdout, Stderr, ExtraFiles, Cancel and WaitDelay are ignored.
	Command func(slot int) *exec.Cmd
	// OnExit, when set, is called after a worker process has exited and been
	// reaped, before the supervisor decides whether to restart it. It runs on
	// the supervisor's goroutine for that process and must not block; cmd uses
	// it to release the primary lease of a dead worker at once.
	OnExit func(slot, pid int, err error)
}
