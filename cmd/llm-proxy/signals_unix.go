//go:build unix

package main

import (
	"os"
	"syscall"
)

// rollSignals make the supervisor roll its workers: SIGHUP after re-reading the
// settings, SIGUSR2 onto the binary now on disk.
var rollSignals = []os.Signal{syscall.SIGHUP, syscall.SIGUSR2}
