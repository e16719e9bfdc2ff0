package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// File descriptors a worker inherits (ExtraFiles[0] and ExtraFiles[1]).
const (
	listenerFD = 3
	livenessFD = 4
)

// Liveness bytes written to fd 4.
const (
	byteReady = 'R'
	bytePing  = 'P'
)

// IsWorker reports whether this process was started by a Supervisor.
func IsWorker() bool {
	return os.Getenv(EnvRole) == roleWorker
}

// Slot returns this worker's slot, or -1 when the process is not a worker.
func Slot() int {
	if !IsWorker() {
		return -1
	}
	n, err := strconv.Atoi(os.Getenv(EnvSlot))
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// Listener returns the slot's listening socket (fd 3); call it once. The
// supervisor keeps its own copy, so closing it stops this worker accepting
// without closing the socket for the worker's replacement.
func Listener() (net.Listener, error) {
	if !IsWorker() {
		return nil, errors.New("supervisor: listener: not a worker process")
	}
	f := os.NewFile(listenerFD, "listener")
	if f == nil {
		return nil, errors.New("supervisor: listener: fd 3 is not open")
	}
	// FileListener dups the descriptor, so ours is closed either way.
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("supervisor: listener: %w", err)
	}
	return l, nil
}

// Ready tells the supervisor that this worker serves (it writes the ready byte
// to the liveness pipe, fd 4; call it once) and then pings until ctx ends, so a frozen worker
// (stopped, or with its scheduler wedged) is noticed by the watchdog. Call it
// once the listener is obtained and the server is about to accept.
//
// Ready blocks until ctx ends (run it as its own goroutine or run.Group actor)
// and then closes the pipe, which the supervisor takes as "draining": the
// watchdog leaves a draining worker alone. Outside a worker it only waits.
func Ready(ctx context.Context) {
	if !IsWorker() {
		<-ctx.Done()
		return
	}
	f := os.NewFile(livenessFD, "liveness")
	if f == nil {
		<-ctx.Done()
		return
	}
	defer f.Close()
	if _, err := f.Write([]byte{byteReady}); err != nil {
		// The supervisor is gone; WatchParent ends this process.
		<-ctx.Done()
		return
	}
	interval := maxPingInterval
	if d, err := time.ParseDuration(os.Getenv(envPingInterval)); err == nil && d > 0 {
		interval = d
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	ping := []byte{bytePing}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := f.Write(ping); err != nil {
				<-ctx.Done()
				return
			}
		}
	}
}

// WatchParent polls the parent pid every interval and calls gone once when it
// changed, i.e. the supervisor died and this process was re-parented. It
// returns when ctx ends or after gone returned.
//
// In a worker the supervisor's pid comes from the environment, so a
// supervisor that died before WatchParent was called is noticed too.
func WatchParent(ctx context.Context, interval time.Duration, gone func()) {
	parent := os.Getppid()
	if IsWorker() {
		if pid, err := strconv.Atoi(os.Getenv(envSupervisorPID)); err == nil && pid > 0 {
			parent = pid
		}
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if os.Getppid() != parent {
			gone()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
