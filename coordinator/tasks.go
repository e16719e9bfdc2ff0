package coordinator

import (
	"context"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/llm-proxy/llm-proxy/store"
)

// Built-in task parameters.
const (
	ingestInterval     = time.Second
	ingestBatch        = 256 // rows per transaction: about a millisecond of the primary's CPU
	retentionInterval  = time.Hour
	retentionBatch     = 1000
	checkpointInterval = 5 * time.Minute
)

// IngestTask moves every worker's spool records into request_logs each second, fenced on
// the lease epoch so a deposed primary inserts nothing.
//
// report, if not nil, gets every pass's result with the primary's epoch (the
// metrics gauges for the spool backlog and the epoch are fed from it).
func IngestTask(st *store.Store, spoolDir string, logger hclog.Logger, report func(res store.IngestResult, epoch int64)) Task {
	logger = logger.Named("ingest")
	return Task{Name: "ingest", Interval: ingestInterval, Run: func(ctx context.Context, epoch int64) error {
		res, err := st.IngestSpools(ctx, spoolDir, epoch, ingestBatch)
		if report != nil {
			report(res, epoch)
		}
		if res.Rows > 0 || res.Deleted > 0 {
			logger.Debug("ingested spools", "rows", res.Rows, "files", res.Files, "deleted", res.Deleted)
		}
		return err
	}}
}

// RetentionTask deletes request logs older than days, hourly, in fenced batches so the
// write lock is never held for long. days <= 0 keeps logs forever (the task does nothing).
func RetentionTask(st *store.Store, days int, logger hclog.Logger) Task {
	logger = logger.Named("retention")
	return Task{Name: "retention", Interval: retentionInterval, Run: func(ctx context.Context, epoch int64) error {
		if days <= 0 {
			return nil
		}
		// Wall clock on purpose: retention is about calendar age, not elapsed time.
		cutoff := time.Now().Add(-time.Duration(days) * 24 * time.Hour).UnixMilli()
		n, err := st.DeleteOldRequestLogs(ctx, epoch, cutoff, retentionBatch)
		if n > 0 {
			logger.Info("deleted old request logs", "rows", n, "days", days)
		}
		return err
	}}
}

// CheckpointTask truncates the WAL every 5 minutes so steady ingest does not grow it
// without bound. It is not fenced: a checkpoint changes no rows.
func CheckpointTask(st *store.Store, logger hclog.Logger) Task {
	logger = logger.Named("checkpoint")
	return Task{Name: "checkpoint", Interval: checkpointInterval, Run: func(ctx context.Context, _ int64) error {
		start := time.Now()
		err := st.CheckpointWAL(ctx)
		if err == nil {
			logger.Trace("wal checkpoint done", "took", time.Since(start))
		}
		return err
	}}
}
