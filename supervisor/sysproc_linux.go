package supervisor

import (
	"os/exec"
	"syscall"
)

// setProcAttr puts the worker in its own process group, so a Ctrl-C on the
// terminal reaches only the supervisor, which then drains the workers with
// SIGTERM itself instead of every process racing to handle SIGINT.
// Pdeathsig makes the kernel send SIGTERM to a worker whose supervisor died,
// even a SIGKILLed one; WatchParent covers the rest. (Pdeathsig fires when the
// forking OS thread exits; Go keeps its threads unless a goroutine that locked
// one exits, which this package never does.)
func setProcAttr(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGTERM
}
