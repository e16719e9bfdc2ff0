package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/oklog/run"

	"github.com/llm-proxy/llm-proxy/cache"
	"github.com/llm-proxy/llm-proxy/coordinator"
	"github.com/llm-proxy/llm-proxy/routing/embed"
	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/store/secret"
	"github.com/llm-proxy/llm-proxy/store/shm"
	"github.com/llm-proxy/llm-proxy/store/spool"
	"github.com/llm-proxy/llm-proxy/supervisor"
	"github.com/llm-proxy/llm-proxy/worker"
	"github.com/llm-proxy/llm-proxy/worker/admin"
	"github.com/llm-proxy/llm-proxy/worker/limits"
	"github.com/llm-proxy/llm-proxy/worker/metrics"
)

// spoolFileBytes is the size at which a worker seals its spool file and starts the next, so
// the primary can delete ingested data while the worker keeps running.
const spoolFileBytes = 16 << 20

// parentPollInterval is how often a worker checks that its supervisor is still alive.
const parentPollInterval = 500 * time.Millisecond

// errParentGone ends a worker whose supervisor died: nobody would restart, drain or
// re-emit the logs of an orphan, and it would keep the port busy for the next supervisor.
var errParentGone = errors.New("supervisor is gone")

// runWorker is the role of a process the supervisor started: serve the slot's socket until
// SIGTERM (or the supervisor's death), then drain.
// atLeastTwoProcs raises GOMAXPROCS to 2 when the worker may use a single CPU
// (pinned with taskset, a one-CPU container) and the operator did not choose.
// With one P, the Go scheduler runs a busy goroutine, such as the primary's
// spool ingest, for up to its 10 ms time slice before a request goroutine gets
// the CPU; with two, the kernel interleaves the threads far more finely.
// Measured with the worker pinned to one CPU: p99 at 1 connection 16-20 ms ->
// 2.1 ms (nginx: 2.4 ms), and 64 connections +5% req/s with half the p99.
// It reports whether it raised GOMAXPROCS.
func atLeastTwoProcs(getenv func(string) string) bool {
	if getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) < 2 {
		runtime.GOMAXPROCS(2)
		return true
	}
	return false
}

func runWorker(stderr io.Writer) error {
	// Register first: SIGTERM during start-up must end in a clean exit, not a kill.
	stopSig := make(chan os.Signal, 1)
	signal.Notify(stopSig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(stopSig)
	// The supervisor's SIGHUP/SIGUSR2 are for the supervisor; a worker must not die of one
	// that reaches the whole process group.
	signal.Ignore(rollSignals...)
	oneCPU := atLeastTwoProcs(os.Getenv)

	start := time.Now()
	pid := os.Getpid()
	slot := supervisor.Slot()

	cfg, err := loadConfig(os.LookupEnv, nil)
	if err != nil {
		return err
	}
	logger := newWorkerLogger(cfg.LogLevel, slot, stderr)

	ctx, cancel := context.WithTimeout(context.Background(), startupTimeout)
	defer cancel()
	box, _, err := secret.Load(cfg.SecretKey, filepath.Dir(cfg.StoreConfig.Path))
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, cfg.StoreConfig, box, logger)
	if err != nil {
		return err
	}
	defer st.Close()
	// The supervisor migrated already; the worker only applies the settings table.
	if cfg, err = reloadConfig(ctx, st); err != nil {
		return err
	}
	logger.SetLevel(levelOf(cfg.LogLevel))

	id := coordinator.NewID(slot, pid, start)
	logger = logger.With("worker_id", id)
	// Shared memory: cross-worker counters for balancing, rate limits and budgets.
	region, err := shm.Open(cfg.ShmConfig.Path, cfg.ShmConfig.Size)
	if err != nil {
		return err
	}
	defer region.Close()
	met, err := metrics.New(region, logger.Named("metrics"))
	if err != nil {
		return err
	}
	limiter := limits.New(region, time.Now, logger.Named("limits"))
	// Seed before serving: spend settled by earlier processes lives in the ledger;
	// seeding after requests started would count their spend twice.
	if rows, err := st.SpendIn(ctx, limits.PeriodKey(limits.PeriodDay, time.Now()), limits.PeriodKey(limits.PeriodMonth, time.Now()), "total"); err != nil {
		return err
	} else if _, err := limiter.SeedFrom(rows); err != nil {
		return err
	}
	sp, err := spool.Create(cfg.SpoolDir, id, spoolFileBytes)
	if err != nil {
		return err
	}

	coord := coordinator.New(cfg.CoordinatorConfig, st, coordinator.Identity{
		ID: id, Slot: slot, PID: pid, Version: version,
	}, coordinator.SystemClock(), logger)
	ingest := coordinator.IngestTask(st, cfg.SpoolDir, logger, func(res store.IngestResult, epoch int64) {
		met.SetSpoolBacklog(res.Backlog)
		met.SetPrimaryEpoch(epoch)
	})
	if oneCPU {
		behind, err := region.Slot(ingestBehindSlot)
		if err != nil {
			return fmt.Errorf("worker: %w", err)
		}
		ingest = newCatchUp(behind, logger.Named("ingest")).wrap(ingest)
		followCtx, stopFollow := context.WithCancel(context.Background())
		defer stopFollow()
		go followIngest(followCtx, behind, 250*time.Millisecond, runtime.GOMAXPROCS)
	}
	coord.AddTask(ingest)
	// Request bodies (LOG_BODIES) have a spool directory of their own; the task runs even
	// with logging off so files left from before it was turned off still arrive.
	bodyDir := filepath.Join(cfg.SpoolDir, "bodies")
	coord.AddTask(coordinator.Task{Name: "body-ingest", Interval: time.Second, Run: func(ctx context.Context, epoch int64) error {
		_, err := st.IngestBodySpools(ctx, bodyDir, epoch, 64)
		return err
	}})
	var bodySpool *spool.Writer
	if cfg.WorkerConfig.LogBodies {
		if bodySpool, err = spool.Create(bodyDir, id, spoolFileBytes); err != nil {
			sp.Close()
			return err
		}
		defer bodySpool.Close()
	}
	coord.AddTask(coordinator.RetentionTask(st, cfg.CoordinatorConfig.LogRetentionDays, logger))
	coord.AddTask(coordinator.CheckpointTask(st, logger))
	// Rows of workers that died without the supervisor seeing it (it died too, or
	// another supervisor shares the database) would otherwise linger in status and
	// keep their spools from being deleted. Only provably dead pids are touched.
	coord.AddTask(coordinator.Task{Name: "prune-dead-workers", Interval: 30 * time.Second, Run: func(ctx context.Context, _ int64) error {
		res, err := st.RemoveDeadWorkers(ctx)
		for _, d := range res.Removed {
			logger.Info("removed the row of a dead worker", "worker_id", d.ID, "pid", d.PID, "reason", d.Reason)
		}
		return err
	}})
	coord.AddTask(admin.RollupTask(st, logger))
	coord.AddTask(worker.NewHealthChecker(st, cfg.RoutingConfig, logger).Task())

	adm, err := admin.New(admin.Deps{
		Store:      st,
		Logger:     logger,
		Settings:   adminSettings{st: st, lookup: os.LookupEnv},
		SessionTTL: time.Duration(cfg.SessionExpireHours) * time.Hour,
		Version:    version,
		// The same address policy the worker's upstream client enforces at dial time.
		AllowPrivateUpstreams: cfg.WorkerConfig.AllowPrivate,
	})
	if err != nil {
		sp.Close()
		return err
	}

	// The cache is built whatever the global mode: a route or a key can switch it
	// on while LLM_PROXY_CACHE_MODE is off. Unused, it costs no resident memory
	// (freecache's ring is untouched zero pages) and two map lookups a request.
	answers, err := cache.New(cfg.CacheConfig, st, embed.Lexical{}, logger.Named("cache"), nil)
	if err != nil {
		sp.Close()
		return err
	}
	if _, err := answers.LoadSemantic(ctx); err != nil {
		logger.Warn("semantic cache not loaded", "error", err)
	}
	coord.AddTask(coordinator.Task{Name: "cache-evict", Interval: 30 * time.Second, Run: func(ctx context.Context, epoch int64) error {
		_, err := answers.Evict(ctx, epoch)
		return err
	}})

	w, err := worker.New(ctx, cfg.WorkerConfig, worker.Deps{
		Cache:         answers,
		Admin:         adm,
		Store:         st,
		Spool:         sp,
		Logger:        logger,
		Slot:          slot,
		WorkerID:      id,
		Version:       version,
		Routing:       cfg.RoutingConfig,
		Counters:      worker.SharedCounters(region),
		Metrics:       met,
		MetricsConfig: cfg.MetricsConfig,
		Limiter:       limiter,
		BodySpool:     bodySpool,
	})
	if err != nil {
		sp.Close()
		return err
	}
	coord.SetStats(w.Stats)
	// The admin's upstreams page shows this worker's circuits, and its semantic
	// route tester embeds prompts the way this worker does.
	adm.SetRuntime(w)
	ln, err := supervisor.Listener()
	if err != nil {
		sp.Close()
		return err
	}
	cancel()

	drained := true
	var g run.Group
	{
		// HTTP server. Interrupted first (actors are interrupted in the order they were
		// added, each interrupt returning before the next starts), and its interrupt blocks
		// until in-flight requests and streams finish or SHUTDOWN_TIMEOUT passes. Meanwhile
		// the snapshot refresher and the coordinator below keep running: a key revoked
		// during the drain is still refused, and this worker keeps heart-beating (and, if
		// primary, ingesting) until it has served its last request.
		g.Add(func() error {
			return w.Serve(ln)
		}, func(error) {
			ctx, cancel := context.WithTimeout(context.Background(), cfg.WorkerConfig.ShutdownTimeout)
			defer cancel()
			if err := w.Shutdown(ctx); err != nil {
				drained = false
				logger.Warn("drain did not finish in time", "shutdown_timeout", cfg.WorkerConfig.ShutdownTimeout, "error", err)
			}
		})
	}
	{
		// Liveness: tells the supervisor this worker serves (the socket is already
		// listening, so connections queue until Serve accepts them), then pings the
		// watchdog. Interrupted after the drain: the pings go on while requests finish, so
		// a long drain is never mistaken for a frozen worker.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			supervisor.Ready(ctx)
			return nil
		}, func(error) {
			cancel()
		})
	}
	{
		// Key and routing snapshots: refreshed from the change counters until the server
		// has drained (see the HTTP server's comment).
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			return w.Run(ctx)
		}, func(error) {
			cancel()
		})
	}
	{
		// Cache upkeep: purges from other processes (generation), hit counts, expired
		// vectors. Stopped after the drain like the snapshots.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			return answers.Run(ctx)
		}, func(error) {
			cancel()
		})
	}
	{
		// Spend ledger: every second the settled spend goes to SQLite so it survives a
		// lost shared-memory file; stopped after the drain so the last requests count.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			return limiter.RunFlusher(ctx, st, time.Second)
		}, func(error) {
			cancel()
		})
	}
	{
		// Coordinator: heartbeats, the primary lease and primary-only tasks. Stopped after
		// the drain, so a draining primary keeps ingesting and its lease is released (or
		// expires) only when it no longer serves.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			return coord.Run(ctx)
		}, func(error) {
			cancel()
		})
	}
	if addr := cfg.WorkerConfig.PprofAddr; addr != "" {
		// Profiling (off by default): net/http/pprof on its own loopback listener, one
		// port per slot, so a profile is of one known worker. Never on the API port.
		srv, err := pprofServer(addr, slot)
		if err != nil {
			sp.Close()
			return err
		}
		g.Add(func() error {
			logger.Info("pprof listening", "addr", srv.Addr)
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("pprof: %w", err)
			}
			return nil
		}, func(error) {
			_ = srv.Close()
		})
	}
	{
		// Termination: SIGTERM/SIGINT from the supervisor (or an operator) starts the drain.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			select {
			case sig := <-stopSig:
				logger.Info("received signal, draining", "signal", sig.String())
				return nil
			case <-ctx.Done():
				return nil
			}
		}, func(error) {
			cancel()
		})
	}
	{
		// Orphan check: a worker whose supervisor died drains and exits as on SIGTERM.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			gone := false
			supervisor.WatchParent(ctx, parentPollInterval, func() { gone = true })
			if gone {
				logger.Warn("supervisor is gone, draining")
				return errParentGone
			}
			return nil
		}, func(error) {
			cancel()
		})
	}
	runErr := g.Run()

	// Every handler has returned, so nothing appends to the spool any more; closing seals
	// it for the primary. After a drain that timed out a handler may still be running:
	// leave the file open (the process exit closes it), since an append to a closed spool
	// would lose that record, and the ingest treats a dead writer's file as finished.
	if drained {
		if err := sp.Close(); err != nil {
			logger.Warn("close spool", "error", err)
		}
	}
	if runErr != nil && !errors.Is(runErr, errParentGone) {
		return fmt.Errorf("worker: %w", runErr)
	}
	logger.Info("worker stopped")
	return nil
}
