//go:build unix

package store

import (
	"errors"
	"syscall"
)

// processGone reports whether no process with pid exists (signal 0 probes without
// delivering anything).
func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}
