//go:build unix

package main

import (
	"os"
	"syscall"
)

// rollSignals make the supervisor roll its workers: SIGHUP after re-reading the
// settings, SIGUSR2 onto the binary now on disk.
var rollSignals = []os.Signal{syscall.SIGHUP, syscall.SIGUSR2}

// signalNames are the log names of rollSignals (os.Signal.String says "hangup").
var signalNames = map[os.Signal]string{syscall.SIGHUP: "SIGHUP", syscall.SIGUSR2: "SIGUSR2"}
