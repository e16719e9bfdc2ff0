//go:build !unix

package main

import "os"

// rollSignals is empty where SIGHUP/SIGUSR2 do not exist; the supervisor itself
// runs only on unix (supervisor.New refuses elsewhere), the CLI works everywhere.
var rollSignals []os.Signal

// signalNames are the log names of rollSignals.
var signalNames = map[os.Signal]string{}
