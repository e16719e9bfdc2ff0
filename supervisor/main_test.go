//go:build unix

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Test processes are the test binary itself; envMode picks what it does.
const (
	envMode = "SUPTEST_MODE"
	envMark = "SUPTEST_MARK" // file the watchparent helpers write to

	modeServe        = ""             // tiny HTTP worker
	modeCrash        = "crash"        // panics at start
	modeLog          = "log"          // serves, and logs one line per level
	modeExit0        = "exit0"        // serves, then exits 0 on its own
	modeIntermediate = "intermediate" // starts a watchparent child and exits
	modeWatchParent  = "watchparent"  // runs WatchParent, marks when it fires
)

func TestMain(m *testing.M) {
	switch mode := os.Getenv(envMode); {
	case mode == modeIntermediate:
		os.Exit(intermediateMain())
	case mode == modeWatchParent:
		os.Exit(watchParentMain())
	case IsWorker():
		os.Exit(workerMain(mode))
	}
	os.Exit(m.Run())
}

// workerMain is the test worker: it answers every request with its pid,
// /slow?ms=N after N milliseconds, and on SIGTERM drains and exits 0.
func workerMain(mode string) int {
	if mode == modeCrash {
		panic("boom: crash at start")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	l, err := Listener()
	if err != nil {
		fmt.Fprintln(os.Stderr, "listener:", err)
		return 1
	}
	pid := strconv.Itoa(os.Getpid())
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, pid)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		// Not r.Context(): a drain must let this finish, not cancel it.
		time.Sleep(time.Duration(ms) * time.Millisecond)
		fmt.Fprint(w, pid)
	})
	// open counts connections from accept to close. The drain below waits
	// for it instead of using http.Server.Shutdown, which drops a request
	// read from an accepted connection after Shutdown began (the connection
	// is closed unanswered); a roll under load would fail that request.
	var open sync.WaitGroup
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second,
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				open.Add(1)
			case http.StateClosed, http.StateHijacked:
				open.Done()
			}
		}}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	go Ready(ctx)
	go WatchParent(ctx, 100*time.Millisecond, stop)

	if mode == modeLog {
		lg := hclog.New(&hclog.LoggerOptions{Name: "child", Output: os.Stderr, JSONFormat: true, Level: hclog.Trace})
		lg.Trace("trace line", "n", 1)
		lg.Debug("debug line", "n", 2)
		lg.Info("info line", "n", 3, "big", int64(1)<<60)
		lg.Warn("warn line", "n", 4)
		lg.Error("error line", "n", 5, "error", errors.New("it broke"))
		fmt.Fprintln(os.Stdout, "plain stdout line")
		fmt.Fprintln(os.Stderr, "plain stderr line")
	}

	if mode == modeExit0 {
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
			stop()
		}
	}
	<-ctx.Done()
	// Answer what was accepted with Connection: close, accept nothing more.
	srv.SetKeepAlivesEnabled(false)
	l.Close()
	// Serve returns after its last Accept, so every accepted connection is
	// counted in open by now.
	<-served
	drained := make(chan struct{})
	go func() {
		open.Wait()
		close(drained)
	}()
	select {
	case <-drained:
		return 0
	case <-time.After(10 * time.Second):
		fmt.Fprintln(os.Stderr, "drain timed out")
		return 1
	}
}

// intermediateMain starts a watchparent child, waits until it watches, prints
// the child's pid and exits, orphaning the child.
func intermediateMain() int {
	mark := os.Getenv(envMark)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envMode+"="+modeWatchParent)
	if os.Getenv("SUPTEST_AS_WORKER") != "" {
		// The worker path: the parent's pid comes from the environment.
		cmd.Env = append(cmd.Env, EnvRole+"="+roleWorker, EnvSlot+"=0",
			envSupervisorPID+"="+strconv.Itoa(os.Getpid()))
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(mark + ".watching"); err == nil {
			fmt.Println(cmd.Process.Pid)
			return 0
		}
	}
	cmd.Process.Kill()
	return 1
}

// watchParentMain writes "gone" to the mark file when WatchParent fires.
func watchParentMain() int {
	mark := os.Getenv(envMark)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fired := false
	go func() {
		// Let WatchParent take its first look before announcing.
		time.Sleep(50 * time.Millisecond)
		os.WriteFile(mark+".watching", nil, 0o600)
	}()
	WatchParent(ctx, 20*time.Millisecond, func() {
		fired = true
		os.WriteFile(mark, []byte("gone"), 0o600)
	})
	if !fired {
		return 1
	}
	return 0
}
