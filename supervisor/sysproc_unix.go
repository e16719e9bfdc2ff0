//go:build unix && !linux

package supervisor

import (
	"os/exec"
	"syscall"
)

// setProcAttr puts the worker in its own process group, so a Ctrl-C on the
// terminal reaches only the supervisor, which then drains the workers with
// SIGTERM itself. There is no parent-death signal here; workers rely on
// WatchParent.
func setProcAttr(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
}
