// Package supervisor runs llm-proxy as one supervisor process and N worker
// processes that share one listening port.
//
// The supervisor owns the listening sockets (one SO_REUSEPORT socket per worker
// slot) and hands each worker its slot's socket as fd 3 and the write end of a
// liveness pipe as fd 4. Because the supervisor keeps its copy of every socket,
// connections queued on a dead worker's socket wait for its replacement instead
// of being reset. Workers log hclog JSON to stderr; the supervisor re-emits each
// line through its own logger at the line's level.
//
// The worker side of the contract is IsWorker, Slot, Listener, Ready and
// WatchParent.
package supervisor

import (
	"errors"
	"fmt"
	"time"
)

// Environment variables that mark a worker process. The supervisor sets them
// on every child; everything else in the child's environment is inherited.
const (
	// EnvRole is "worker" in worker processes.
	EnvRole = "LLM_PROXY_ROLE"
	// EnvSlot is the worker's slot, 0..Workers-1.
	EnvSlot = "LLM_PROXY_WORKER_SLOT"

	// envSupervisorPID is the supervisor's pid, so WatchParent notices a
	// supervisor that died before the worker got to call it.
	envSupervisorPID = "LLM_PROXY_SUPERVISOR_PID"
	// envPingInterval tells Ready how often to ping; derived from the
	// watchdog timeout so that a short timeout never kills a healthy worker.
	envPingInterval = "LLM_PROXY_PING_INTERVAL"

	roleWorker = "worker"
)

// Timing of restarts and liveness. Fixed, not configuration: they describe
// how the supervisor behaves, not the deployment.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 10 * time.Second
	// healthyRun is how long a worker must run for its slot's back-off to
	// start again from minBackoff.
	healthyRun = 30 * time.Second
	// crashWindow is the window CrashBudget counts restarts in.
	crashWindow = time.Minute
	// startTimeout bounds the time from exec to the worker's ready byte.
	startTimeout = 30 * time.Second
	// maxPingInterval is the ping interval when the watchdog is slow or off.
	maxPingInterval = time.Second
	// killGrace is added to ShutdownTimeout before a draining worker is
	// killed: the worker's own drain deadline is ShutdownTimeout, so this is
	// the time it has to flush and exit after that.
	killGrace = 5 * time.Second
)

// Config is the supervisor's part of the environment configuration.
type Config struct {
	// Workers is the number of worker processes (default 1).
	Workers int `envconfig:"WORKERS" default:"1" desc:"worker processes"`
	// ShutdownTimeout is how long a worker may drain in-flight requests and
	// streams after SIGTERM (default 30s); the supervisor kills it 5s later.
	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"30s" desc:"how long a worker may finish in-flight requests and streams after SIGTERM; it is killed 5s after that"`
	// WatchdogTimeout is how long a ready worker may go without a liveness
	// ping before it is killed and restarted (default 10s; 0 disables).
	WatchdogTimeout time.Duration `envconfig:"WATCHDOG_TIMEOUT" default:"10s" desc:"kill a worker that sends no liveness ping for this long; 0 turns the watchdog off"`
	// CrashBudget is how many restarts of one slot per minute are tolerated
	// before the supervisor logs "crash loop" at ERROR and holds the slot at
	// the maximum back-off (default 5).
	CrashBudget int `envconfig:"CRASH_BUDGET" default:"5" desc:"restarts of one slot per minute before the supervisor logs at ERROR and holds the slot at maximum back-off"`
}

// Validate reports every invalid field at once.
func (c Config) Validate() error {
	var errs []error
	if c.Workers < 1 {
		errs = append(errs, fmt.Errorf("supervisor: WORKERS must be at least 1, got %d", c.Workers))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("supervisor: SHUTDOWN_TIMEOUT must not be negative, got %s", c.ShutdownTimeout))
	}
	// A worker pings at most every WatchdogTimeout/4 but never faster than
	// every 10ms, so shorter timeouts would kill healthy workers.
	if c.WatchdogTimeout != 0 && c.WatchdogTimeout < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("supervisor: WATCHDOG_TIMEOUT must be 0 (off) or at least 100ms, got %s", c.WatchdogTimeout))
	}
	if c.CrashBudget < 0 {
		errs = append(errs, fmt.Errorf("supervisor: CRASH_BUDGET must not be negative, got %d", c.CrashBudget))
	}
	return errors.Join(errs...)
}

// pingInterval is how often workers ping for this configuration: four pings
// per watchdog period, so one late ping never trips the watchdog.
func (c Config) pingInterval() time.Duration {
	if c.WatchdogTimeout <= 0 {
		return maxPingInterval
	}
	return min(max(c.WatchdogTimeout/4, 10*time.Millisecond), maxPingInterval)
}

// WorkerInfo describes the current worker of one slot.
type WorkerInfo struct {
	Slot int
	// PID is 0 while the slot waits out a restart back-off.
	PID int
	// Started is when the current process was started (zero if PID is 0).
	Started time.Time
	// Ready is true once the process has signalled that it serves.
	Ready bool
	// Restarts counts restarts of this slot after unexpected exits, watchdog
	// kills included; rolling restarts are not counted.
	Restarts int
}
