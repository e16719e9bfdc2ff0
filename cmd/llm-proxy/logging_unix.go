//go:build unix

package main

import (
	"os"
	"syscall"
)

// reopenSignals make the supervisor reopen its log files by name (for logrotate).
var reopenSignals = []os.Signal{syscall.SIGUSR1}
