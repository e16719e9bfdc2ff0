package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// WorkerRow is one live worker process, as its heartbeat last wrote it.
type WorkerRow struct {
	ID        string // "<slot>-<pid>-<start unix nanos>"
	Slot, PID int
	StartedAt time.Time // second precision
	BeatAt    time.Time // second precision, the writer's wall clock
	Role      string    // "primary" or "worker"
	Version   string
	Stats     string // small JSON snapshot; "" is stored as "{}"
}

// Lease is the single leader row. Holder is "" when the lease is free.
type Lease struct {
	Holder   string
	PID      int
	Epoch    int64 // bumped by every takeover; primary-only writes are fenced on it
	RenewSeq int64 // bumped by every renewal; observers time its changes on their own clock
	// Since and RenewedAt are the holder's wall clock, for display only: no decision reads
	// them, so a wall-clock step never causes a failover.
	Since, RenewedAt time.Time
}

// IsBusy reports whether err is SQLite's SQLITE_BUSY (any extended code): the lock was
// still held when busy_timeout ran out. Callers retry or skip a beat; it is never an ERROR.
func IsBusy(err error) bool {
	return sqlite.ErrCode(err).ToPrimary() == sqlite.ResultBusy
}

// IsTransient reports whether err means "try again later" rather than a fault: BUSY or
// LOCKED from SQLite, or a statement interrupted because its deadline passed while waiting
// for the lock. Such errors are logged below ERROR.
func IsTransient(err error) bool {
	switch sqlite.ErrCode(err).ToPrimary() {
	case sqlite.ResultBusy, sqlite.ResultLocked, sqlite.ResultInterrupt:
		return true
	}
	return errors.Is(err, context.DeadlineExceeded)
}

// retryBudget bounds writeRetry when ctx has no deadline.
const retryBudget = 15 * time.Second

// writeRetry is write, retried with jittered back-off while SQLite reports BUSY, until ctx
// ends. busy_timeout already waits inside SQLite; the retry covers the cases where SQLite
// returns BUSY without calling the busy handler (WAL recovery, a checkpoint racing a
// writer) and the jitter stops a herd of workers that timed out together from colliding
// again together.
func (s *Store) writeRetry(ctx context.Context, fn func(conn *sqlite.Conn) error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, retryBudget)
		defer cancel()
	}
	backoff := 5 * time.Millisecond
	for {
		err := s.write(ctx, fn)
		if !IsBusy(err) {
			return err
		}
		d := backoff/2 + rand.N(backoff)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(d):
		}
		backoff = min(backoff*2, 200*time.Millisecond)
	}
}

// Heartbeat inserts or refreshes w's row.
func (s *Store) Heartbeat(ctx context.Context, w WorkerRow) error {
	stats := w.Stats
	if stats == "" {
		stats = "{}"
	}
	role := w.Role
	if role == "" {
		role = "worker"
	}
	err := s.writeRetry(ctx, func(conn *sqlite.Conn) error {
		// A row says primary only while its worker holds the lease: a primary frozen past
		// the failover timeout beats once more as "primary" when it wakes, before its lease
		// loop notices the takeover, and status must not show two primaries then.
		return sqlitex.Execute(conn, `INSERT INTO workers (id, slot, pid, started_at, beat_at, role, version, stats)
			VALUES (:id, :slot, :pid, :started, :beat,
				CASE WHEN :role = 'primary' AND NOT EXISTS (SELECT 1 FROM leader WHERE id = 1 AND holder = :id)
					THEN 'worker' ELSE :role END,
				:version, :stats)
			ON CONFLICT(id) DO UPDATE SET beat_at = excluded.beat_at, role = excluded.role,
				version = excluded.version, stats = excluded.stats`,
			&sqlitex.ExecOptions{Named: map[string]any{
				":id": w.ID, ":slot": w.Slot, ":pid": w.PID, ":started": w.StartedAt.Unix(),
				":beat": w.BeatAt.Unix(), ":role": role, ":version": w.Version, ":stats": stats,
			}})
	})
	if err != nil {
		return fmt.Errorf("store: heartbeat: %w", err)
	}
	return nil
}

// RemoveWorker deletes the row of id (a clean exit).
func (s *Store) RemoveWorker(ctx context.Context, id string) error {
	err := s.writeRetry(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, "DELETE FROM workers WHERE id = :id",
			&sqlitex.ExecOptions{Named: map[string]any{":id": id}})
	})
	if err != nil {
		return fmt.Errorf("store: remove worker: %w", err)
	}
	return nil
}

// Workers lists every worker row, by slot then id.
func (s *Store) Workers(ctx context.Context) ([]WorkerRow, error) {
	var out []WorkerRow
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		var err error
		out, err = readWorkers(conn)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: list workers: %w", err)
	}
	return out, nil
}

func readLease(conn *sqlite.Conn) (Lease, error) {
	stmt := conn.Prep("SELECT holder, pid, epoch, renew_seq, since, renewed_at FROM leader WHERE id = 1")
	defer stmt.Reset()
	row, err := stmt.Step()
	if err != nil {
		return Lease{}, err
	}
	if !row {
		return Lease{}, errors.New("leader row missing (database not migrated?)")
	}
	return Lease{
		Holder: stmt.ColumnText(0), PID: stmt.ColumnInt(1), Epoch: stmt.ColumnInt64(2),
		RenewSeq: stmt.ColumnInt64(3), Since: time.Unix(stmt.ColumnInt64(4), 0),
		RenewedAt: time.Unix(stmt.ColumnInt64(5), 0),
	}, nil
}

// Lease reads the lease row.
func (s *Store) Lease(ctx context.Context) (Lease, error) {
	var l Lease
	err := s.read(ctx, func(conn *sqlite.Conn) (err error) {
		l, err = readLease(conn)
		return err
	})
	if err != nil {
		return Lease{}, fmt.Errorf("store: read lease: %w", err)
	}
	return l, nil
}

// TryAcquire takes the lease for me if it is free (holder ”) or if its renew_seq still
// equals seenSeq, which the caller last observed and then saw unchanged for the failover
// timeout on its own monotonic clock. The conditional update makes two observers that saw
// the same seq race safely: only the first changes the row. Taking bumps epoch (fencing the
// previous holder) and renew_seq (restarting every observer's timer).
func (s *Store) TryAcquire(ctx context.Context, me string, pid int, seenSeq int64, now time.Time) (Lease, bool, error) {
	var (
		l   Lease
		won bool
	)
	err := s.writeRetry(ctx, func(conn *sqlite.Conn) error {
		err := sqlitex.Execute(conn, `UPDATE leader SET holder = :me, pid = :pid, epoch = epoch + 1,
				renew_seq = renew_seq + 1, since = :now, renewed_at = :now
			WHERE id = 1 AND (holder = '' OR renew_seq = :seen)`,
			&sqlitex.ExecOptions{Named: map[string]any{":me": me, ":pid": pid, ":now": now.Unix(), ":seen": seenSeq}})
		if err != nil {
			return err
		}
		won = conn.Changes() == 1
		if won {
			// The rows follow the lease at once, in the same transaction: the deposed
			// holder's row (frozen, or not yet told) stops saying primary, and ours says it
			// before our next heartbeat.
			err = sqlitex.Execute(conn, `UPDATE workers SET role = CASE WHEN id = :me THEN 'primary' ELSE 'worker' END
				WHERE id = :me OR role = 'primary'`, &sqlitex.ExecOptions{Named: map[string]any{":me": me}})
			if err != nil {
				return err
			}
		}
		l, err = readLease(conn)
		return err
	})
	if err != nil {
		return Lease{}, false, fmt.Errorf("store: acquire lease: %w", err)
	}
	return l, won, nil
}

// Renew bumps renew_seq if me still holds the lease at epoch; false means it was lost.
func (s *Store) Renew(ctx context.Context, me string, epoch int64, now time.Time) (bool, error) {
	var ok bool
	err := s.writeRetry(ctx, func(conn *sqlite.Conn) error {
		err := sqlitex.Execute(conn, `UPDATE leader SET renew_seq = renew_seq + 1, renewed_at = :now
			WHERE id = 1 AND holder = :me AND epoch = :epoch`,
			&sqlitex.ExecOptions{Named: map[string]any{":me": me, ":epoch": epoch, ":now": now.Unix()}})
		ok = err == nil && conn.Changes() == 1
		return err
	})
	if err != nil {
		return false, fmt.Errorf("store: renew lease: %w", err)
	}
	return ok, nil
}

// Release frees the lease if me still holds it at epoch, so a successor need not wait for
// the failover timeout.
func (s *Store) Release(ctx context.Context, me string, epoch int64) error {
	err := s.writeRetry(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, `UPDATE leader SET holder = '', pid = 0
			WHERE id = 1 AND holder = :me AND epoch = :epoch`,
			&sqlitex.ExecOptions{Named: map[string]any{":me": me, ":epoch": epoch}})
	})
	if err != nil {
		return fmt.Errorf("store: release lease: %w", err)
	}
	return nil
}

// ReleasePID is called by the supervisor when it sees process pid exit: it frees the lease
// if pid held it (true) and removes pid's worker rows, so failover after a crash takes
// about one lease poll instead of the failover timeout.
func (s *Store) ReleasePID(ctx context.Context, pid int) (bool, error) {
	var freed bool
	err := s.writeRetry(ctx, func(conn *sqlite.Conn) error {
		args := &sqlitex.ExecOptions{Named: map[string]any{":pid": pid}}
		if err := sqlitex.Execute(conn, "UPDATE leader SET holder = '', pid = 0 WHERE id = 1 AND holder <> '' AND pid = :pid", args); err != nil {
			return err
		}
		freed = conn.Changes() == 1
		return sqlitex.Execute(conn, "DELETE FROM workers WHERE pid = :pid", args)
	})
	if err != nil {
		return false, fmt.Errorf("store: release lease of pid %d: %w", pid, err)
	}
	return freed, nil
}

// FencedExec runs fn in an immediate transaction only if leader.epoch = epoch, else
// returns ErrFenced with nothing committed. Every primary-only write goes through it, so
// a primary that was frozen past the failover timeout changes nothing when it wakes.
func (s *Store) FencedExec(ctx context.Context, epoch int64, fn func(conn *sqlite.Conn) error) error {
	if epoch <= 0 {
		return ErrFenced // no lease was ever held at epoch 0
	}
	err := s.writeRetry(ctx, func(conn *sqlite.Conn) error {
		if err := checkEpoch(conn, epoch); err != nil {
			return err
		}
		return fn(conn)
	})
	if errors.Is(err, ErrFenced) {
		return ErrFenced
	}
	if err != nil {
		return fmt.Errorf("store: fenced write: %w", err)
	}
	return nil
}

// DeleteOldRequestLogs deletes request_logs rows with ts_ms < cutoffMs, at most batch per
// fenced transaction so the write lock is never held long, and returns how many it deleted.
func (s *Store) DeleteOldRequestLogs(ctx context.Context, epoch int64, cutoffMs int64, batch int) (int, error) {
	return s.deleteOldRequestLogs(ctx, epoch, cutoffMs, batch, nil)
}

// deleteOldRequestLogs is DeleteOldRequestLogs; onBatch, if not nil, gets the row count of
// each committed transaction, so a test can see the batches from outside.
func (s *Store) deleteOldRequestLogs(ctx context.Context, epoch int64, cutoffMs int64, batch int, onBatch func(n int)) (int, error) {
	if batch < 1 {
		batch = 1
	}
	total := 0
	for {
		var n int
		err := s.FencedExec(ctx, epoch, func(conn *sqlite.Conn) error {
			err := sqlitex.Execute(conn, `DELETE FROM request_logs WHERE id IN
				(SELECT id FROM request_logs WHERE ts_ms < :cutoff ORDER BY ts_ms LIMIT :batch)`,
				&sqlitex.ExecOptions{Named: map[string]any{":cutoff": cutoffMs, ":batch": batch}})
			n = conn.Changes()
			return err
		})
		if err != nil {
			return total, err
		}
		total += n
		if onBatch != nil {
			onBatch(n)
		}
		if n < batch {
			return total, nil
		}
		if err := ctx.Err(); err != nil {
			return total, fmt.Errorf("store: delete old request logs: %w", err)
		}
	}
}

// CheckpointWAL copies the WAL into the database and truncates it, so the -wal file does
// not grow without bound under steady ingest. If readers keep TRUNCATE from finishing it
// falls back to PASSIVE, which copies what it can without waiting.
func (s *Store) CheckpointWAL(ctx context.Context) error {
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		busy := false
		err := sqlitex.ExecuteTransient(conn, "PRAGMA wal_checkpoint(TRUNCATE)", &sqlitex.ExecOptions{
			ResultFunc: func(st *sqlite.Stmt) error { busy = st.ColumnInt(0) != 0; return nil },
		})
		if err != nil && !IsBusy(err) {
			return err
		}
		if err == nil && !busy {
			return nil
		}
		return sqlitex.ExecuteTransient(conn, "PRAGMA wal_checkpoint(PASSIVE)", nil)
	})
	if err != nil {
		return fmt.Errorf("store: checkpoint wal: %w", err)
	}
	return nil
}
