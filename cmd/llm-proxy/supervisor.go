package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/oklog/run"

	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/store/secret"
	"github.com/llm-proxy/llm-proxy/store/shm"
	"github.com/llm-proxy/llm-proxy/supervisor"
	"github.com/llm-proxy/llm-proxy/worker/admin"
)

// openAIBaseURL is where the quick-start upstream points.
const openAIBaseURL = "https://api.openai.com/v1"

// Bounds of the supervisor's own database work.
const (
	startupTimeout     = 30 * time.Second // open, migrate, bootstrap
	releaseTimeout     = 2 * time.Second  // OnExit's lease release; the slot's restart waits on it
	deadWorkersTimeout = 5 * time.Second  // start-up cleanup of a crashed tree's rows; workers start after it
	finalIngestTime    = 30 * time.Second // the last ingest after every worker is gone
	finalIngestBatch   = 1000
	finalIngestPasses  = 100 // a pass ingests every file; more than one only when files keep appearing
)

// runSupervisor is the role with no arguments: prepare the database, start the workers and
// keep them running until SIGTERM/SIGINT.
func runSupervisor(stderr io.Writer) error {
	cfg, err := loadConfig(os.LookupEnv, nil)
	if err != nil {
		return err
	}
	// Register before anything slow happens: a SIGTERM during migrations must drain, not kill.
	stopSig := make(chan os.Signal, 1)
	signal.Notify(stopSig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(stopSig)
	rollSig := make(chan os.Signal, 1)
	signal.Notify(rollSig, rollSignals...)
	defer signal.Stop(rollSig)

	logger, closeLogs, err := newRootLogger(cfg.LogLevel, cfg.LogDir, stderr)
	if err != nil {
		return err
	}
	defer closeLogs()

	ctx, cancel := context.WithTimeout(context.Background(), startupTimeout)
	st, cfg, err := prepare(ctx, cfg, os.Getenv("OPENAI_API_KEY"), logger)
	cancel()
	if err != nil {
		return err
	}
	defer st.Close()
	// Start-up hashed the admin password (argon2id works in tens of MiB); hand that
	// memory back now so the long-lived supervisor stays small.
	debug.FreeOSMemory()
	// The config again with the settings table applied may set another level.
	logger.SetLevel(levelOf(cfg.LogLevel))

	// The supervisor maps the shared counters too, only to reap: a dead worker's
	// in-flight counts and reservations are dropped as soon as it is reaped.
	region, err := shm.Open(cfg.ShmConfig.Path, cfg.ShmConfig.Size)
	if err != nil {
		return err
	}
	defer region.Close()
	removeDeadWorkers(st, region, logger)

	sup, err := supervisor.New(cfg.SupervisorConfig, supervisor.Options{
		Addr: cfg.Addr(),
		// Command nil: the supervisor re-executes os.Executable()'s path at every start,
		// so after SIGUSR2 the workers run the binary now on disk, not /proc/self/exe.
		OnExit: func(slot, pid int, _ error) {
			// A dead primary cannot renew; releasing its lease now fails over in about a
			// second instead of FAILOVER_TIMEOUT.
			ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
			defer cancel()
			released, err := st.ReleasePID(ctx, pid)
			switch {
			case err != nil:
				logger.Warn("could not release the lease of an exited worker", "slot", slot, "pid", pid, "error", err)
			case released:
				logger.Info("released the primary lease of an exited worker", "slot", slot, "pid", pid)
			}
			if n := region.Reap(); n > 0 {
				logger.Debug("reaped shared counters of exited workers", "processes", n)
			}
		},
	}, logger.Named("supervisor"))
	if err != nil {
		return err
	}

	var g run.Group
	{
		// Termination: SIGTERM/SIGINT ends this actor, which interrupts the supervisor
		// below; it drains the workers before Run returns, so the group waits for them.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			select {
			case sig := <-stopSig:
				logger.Info("received signal, draining workers", "signal", sig.String(),
					"shutdown_timeout", cfg.SupervisorConfig.ShutdownTimeout)
				return nil
			case <-ctx.Done():
				return nil
			}
		}, func(error) {
			cancel()
		})
	}
	{
		// Supervisor: owns the sockets and the workers. Its interrupt only cancels ctx;
		// Run then SIGTERMs every worker and returns once they have drained (or were
		// killed ShutdownTimeout+5s later), which is what the group waits for.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			return sup.Run(ctx)
		}, func(error) {
			cancel()
		})
	}
	{
		// Reload and upgrade: SIGHUP re-reads the settings table and rolls the workers one
		// slot at a time (new workers read the settings themselves); SIGUSR2 rolls too, and
		// since every start re-executes the path on disk, that is the binary upgrade. A
		// change to the settings table (the web admin, the CLI) is a SIGHUP the operator
		// does not have to send: the settings counter is polled. A roll in progress is
		// abandoned when the group stops: Run drains every worker anyway.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			watch := newSettingsWatch(ctx, st, logger)
			tick := time.NewTicker(settingsPoll)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil
				case sig := <-rollSig:
					watch.changed(ctx) // this roll applies whatever changed until now
					handleRoll(ctx, rollCauseOf(sig), cfg, st, sup, logger)
				case <-tick.C:
					if watch.changed(ctx) {
						handleRoll(ctx, causeSettings, cfg, st, sup, logger)
					}
				}
			}
		}, func(error) {
			cancel()
		})
	}
	{
		// Announce: one INFO line once every slot has a ready worker, then wait.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			select {
			case <-sup.Ready():
				logger.Info("llm-proxy listening", "addr", addrString(sup), "workers", cfg.SupervisorConfig.Workers,
					"version", version)
			case <-ctx.Done():
				return nil
			}
			<-ctx.Done()
			return nil
		}, func(error) {
			cancel()
		})
	}
	runErr := g.Run()

	// Every worker is gone, so nothing appends to a spool any more: ingest what is left,
	// unfenced (epoch 0), so no record of a served request waits for the next start.
	ingestCtx, cancelIngest := context.WithTimeout(context.Background(), finalIngestTime)
	defer cancelIngest()
	rows, err := drainSpools(ingestCtx, st, cfg.SpoolDir)
	if err != nil {
		logger.Error("final spool ingest failed; the next primary ingests the rest", "error", err, "rows", rows)
	} else {
		logger.Info("final spool ingest done", "rows", rows)
	}
	if runErr != nil {
		return runErr
	}
	logger.Info("llm-proxy stopped")
	return nil
}

// prepare opens and migrates the database, loads the secret key, re-reads the config with
// the settings table applied, and creates the quick-start upstream. The caller closes st.
func prepare(ctx context.Context, cfg *Config, openAIKey string, logger hclog.Logger) (*store.Store, *Config, error) {
	box, source, err := secret.Load(cfg.SecretKey, filepath.Dir(cfg.StoreConfig.Path))
	if err != nil {
		return nil, nil, err
	}
	switch source {
	case secret.SourceCreated:
		logger.Info("generated a new secret key", "file", filepath.Join(filepath.Dir(cfg.StoreConfig.Path), secret.FileName))
	case secret.SourceFile:
		logger.Debug("loaded the secret key file", "file", filepath.Join(filepath.Dir(cfg.StoreConfig.Path), secret.FileName))
	}
	st, err := store.Open(ctx, cfg.StoreConfig, box, logger)
	if err != nil {
		return nil, nil, err
	}
	n, err := st.Migrate(ctx)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	logger.Info("database ready", "path", cfg.StoreConfig.Path, "migrations_applied", n)
	cfg, err = reloadConfig(ctx, st)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	if _, err := ensureOpenAIUpstream(ctx, st, openAIKey, logger); err != nil {
		st.Close()
		return nil, nil, err
	}
	if err := ensureFirstAdmin(ctx, st, cfg, logger); err != nil {
		st.Close()
		return nil, nil, err
	}
	return st, cfg, nil
}

// removeDeadWorkers clears what a previous process tree left behind when it died as a
// whole (kill -9 of the group, the OOM killer, a container losing power): nobody was left
// to call ReleasePID, so its workers rows and lease stay. Without this, status shows the
// dead pids, the new workers wait the full failover timeout for the lease, and ingest
// never deletes the dead writers' spool files. Only provably dead processes are touched
// (store.RemoveDeadWorkers), so the workers of a second supervisor on the same database
// survive. It runs before any worker starts; a failure only delays failover, so it is
// logged and start-up goes on.
func removeDeadWorkers(st *store.Store, region *shm.Region, logger hclog.Logger) {
	// Dead processes' in-flight counts and reservations would otherwise hold limits
	// until the first worker exit.
	if n := region.Reap(); n > 0 {
		logger.Info("reaped shared counters of processes from a previous run", "processes", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadWorkersTimeout)
	defer cancel()
	dead, err := st.RemoveDeadWorkers(ctx)
	if err != nil {
		logger.Warn("could not clean up workers of a previous run; failover waits for the lease timeout", "error", err)
		return
	}
	for _, w := range dead.Removed {
		logger.Info("removed the worker row of a process that no longer exists",
			"worker_id", w.ID, "slot", w.Slot, "pid", w.PID, "reason", w.Reason)
	}
	if w := dead.Released; w.ID != "" {
		logger.Info("released the primary lease of a process that no longer exists",
			"worker_id", w.ID, "pid", w.PID, "reason", w.Reason)
	}
}

// ensureFirstAdmin creates the first admin from LLM_PROXY_DEFAULT_ADMIN_USERNAME/PASSWORD
// when there is no user, and warns while that account still has the default password
// (the admin then refuses everything but changing it).
func ensureFirstAdmin(ctx context.Context, st *store.Store, cfg *Config, logger hclog.Logger) error {
	created, err := admin.EnsureFirstAdmin(ctx, st, cfg.DefaultAdminUsername, cfg.DefaultAdminPassword)
	if err != nil {
		return err
	}
	if created {
		logger.Info("created the first admin account", "username", cfg.DefaultAdminUsername)
	}
	def, err := admin.DefaultPasswordInUse(ctx, st, cfg.DefaultAdminUsername, cfg.DefaultAdminPassword)
	if err != nil {
		return err
	}
	if def {
		logger.Warn("the admin account still has its default password; sign in to the web admin and change it",
			"username", cfg.DefaultAdminUsername, "url", "http://"+cfg.Addr()+"/login")
	}
	return nil
}

// reloadConfig reads the settings table and resolves the configuration again.
func reloadConfig(ctx context.Context, st *store.Store) (*Config, error) {
	settings, err := st.Settings(ctx)
	if err != nil {
		return nil, err
	}
	return loadConfig(os.LookupEnv, settings)
}

// ensureOpenAIUpstream creates the "openai" upstream (every model passed through) when
// OPENAI_API_KEY is set and no upstream exists yet, so the quick start is one command. It
// reports whether it created one; an operator's upstreams are never touched.
func ensureOpenAIUpstream(ctx context.Context, st *store.Store, apiKey string, logger hclog.Logger) (bool, error) {
	if apiKey == "" {
		return false, nil
	}
	n, err := st.CountUpstreams(ctx)
	if err != nil {
		return false, err
	}
	if n > 0 {
		logger.Debug("OPENAI_API_KEY is set but upstreams exist; not adding one", "upstreams", n)
		return false, nil
	}
	_, err = st.AddUpstream(ctx, store.Upstream{
		Name:        "openai",
		Provider:    "openai",
		BaseURL:     openAIBaseURL,
		APIKey:      apiKey,
		Weight:      1,
		Enabled:     true,
		Deployments: []store.Deployment{{PublicModel: store.AnyModel, Weight: 1}},
	})
	if errors.Is(err, store.ErrExists) {
		// A second supervisor starting at the same moment won the race.
		return false, nil
	}
	if err != nil {
		return false, err
	}
	logger.Info("created upstream from OPENAI_API_KEY", "name", "openai", "base_url", openAIBaseURL, "key", maskKey(apiKey))
	return true, nil
}

// settingsPoll is how often the supervisor looks for a change to the settings table.
const settingsPoll = 2 * time.Second

// settingsWatch notices changes to the settings table by its change counter
// (store.Generations), whichever process made them.
type settingsWatch struct {
	st     *store.Store
	logger hclog.Logger
	gen    int64
	known  bool // gen has been read
}

func newSettingsWatch(ctx context.Context, st *store.Store, logger hclog.Logger) *settingsWatch {
	w := &settingsWatch{st: st, logger: logger}
	w.changed(ctx)
	return w
}

// changed reports whether the counter moved since the last call. A failed read
// reports no change (the next poll tries again).
func (w *settingsWatch) changed(ctx context.Context) bool {
	rctx, cancel := context.WithTimeout(ctx, settingsPoll)
	g, err := w.st.Generations(rctx)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			w.logger.Warn("could not read the settings counter", "error", err)
		}
		return false
	}
	moved := w.known && g.Settings != w.gen
	w.gen, w.known = g.Settings, true
	return moved
}

// rollCause says why the workers roll, and whether the settings are read again first.
type rollCause struct {
	name   string // for the log: SIGHUP, SIGUSR2, "settings changed"
	reload bool
}

var causeSettings = rollCause{name: "settings changed", reload: true}

func rollCauseOf(sig os.Signal) rollCause {
	name, ok := signalNames[sig]
	if !ok {
		name = sig.String()
	}
	return rollCause{name: name, reload: sig == syscall.SIGHUP}
}

// handleRoll serves one SIGHUP, SIGUSR2 or settings change.
func handleRoll(ctx context.Context, cause rollCause, cfg *Config, st *store.Store, sup *supervisor.Supervisor, logger hclog.Logger) {
	label := cause.name
	if cause.reload {
		rctx, cancel := context.WithTimeout(ctx, startupTimeout)
		next, err := reloadConfig(rctx, st)
		cancel()
		if err != nil {
			// New workers would fail on the same value and crash-loop; keep the old ones.
			logger.Error(label+": settings are invalid; workers not restarted", "error", oneLine(err.Error()))
			return
		}
		if next.Addr() != cfg.Addr() || next.SupervisorConfig != cfg.SupervisorConfig || next.LogDir != cfg.LogDir {
			logger.Warn(label + ": listen address, worker count, supervisor timings and LOG_DIR change only at a full restart")
		}
		logger.SetLevel(levelOf(next.LogLevel))
		logger.Info(label + ": settings reloaded, rolling workers")
	} else {
		logger.Info(label + ": starting workers from the binary on disk")
	}
	start := time.Now()
	if err := sup.Roll(ctx); err != nil {
		if ctx.Err() == nil {
			logger.Error("rolling restart failed; the remaining old workers keep serving", "cause", label, "error", err)
		}
		return
	}
	logger.Info("rolling restart done", "cause", label, "took", time.Since(start).Round(time.Millisecond))
}

// drainSpools ingests every spool file until a pass finds nothing more.
func drainSpools(ctx context.Context, st *store.Store, dir string) (int, error) {
	total := 0
	for i := 0; i < finalIngestPasses; i++ {
		res, err := st.IngestSpools(ctx, dir, 0, finalIngestBatch)
		total += res.Rows
		if err != nil {
			return total, err
		}
		if res.Rows == 0 {
			return total, nil
		}
	}
	return total, fmt.Errorf("spools still growing after %d passes", finalIngestPasses)
}

func addrString(sup *supervisor.Supervisor) string {
	if a := sup.Addr(); a != nil {
		return a.String()
	}
	return ""
}
