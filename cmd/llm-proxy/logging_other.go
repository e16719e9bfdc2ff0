//go:build !unix

package main

import "os"

// reopenSignals is empty where SIGUSR1 does not exist; rotate by restarting there.
var reopenSignals []os.Signal
