package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

func TestLeaseLifecycle(t *testing.T) {
	s, _ := openMigratedStore(t, "")
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0)

	l, err := s.Lease(ctx)
	if err != nil || l.Holder != "" || l.Epoch != 0 {
		t.Fatalf("fresh lease: got %+v, %v; want free at epoch 0", l, err)
	}
	steps := []struct {
		name      string
		do        func() (bool, error)
		wantOK    bool
		wantHold  string
		wantEpoch int64
		wantSeq   int64
	}{
		{"A takes the free lease", func() (bool, error) { _, ok, err := s.TryAcquire(ctx, "A", 10, -1, now); return ok, err }, true, "A", 1, 1},
		{"B cannot take a renewed lease", func() (bool, error) { _, ok, err := s.TryAcquire(ctx, "B", 20, 0, now); return ok, err }, false, "A", 1, 1},
		{"A renews", func() (bool, error) { return s.Renew(ctx, "A", 1, now.Add(time.Second)) }, true, "A", 1, 2},
		{"A with a wrong epoch cannot renew", func() (bool, error) { return s.Renew(ctx, "A", 7, now) }, false, "A", 1, 2},
		{"B takes over the seq it saw expire", func() (bool, error) { _, ok, err := s.TryAcquire(ctx, "B", 20, 2, now); return ok, err }, true, "B", 2, 3},
		{"A's renewal fails: lost", func() (bool, error) { return s.Renew(ctx, "A", 1, now) }, false, "B", 2, 3},
		{"A's release changes nothing", func() (bool, error) { return true, s.Release(ctx, "A", 1) }, true, "B", 2, 3},
		{"B releases", func() (bool, error) { return true, s.Release(ctx, "B", 2) }, true, "", 2, 3},
		{"C takes the free lease whatever seq it saw", func() (bool, error) { _, ok, err := s.TryAcquire(ctx, "C", 30, 99, now); return ok, err }, true, "C", 3, 4},
	}
	for _, st := range steps {
		ok, err := st.do()
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		l, err := s.Lease(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ok != st.wantOK || l.Holder != st.wantHold || l.Epoch != st.wantEpoch || l.RenewSeq != st.wantSeq {
			t.Errorf("%s: got ok=%v %+v; want ok=%v holder=%q epoch=%d seq=%d",
				st.name, ok, l, st.wantOK, st.wantHold, st.wantEpoch, st.wantSeq)
		}
	}
	if l, _ := s.Lease(ctx); l.PID != 30 || !l.Since.Equal(now) {
		t.Errorf("lease details: got pid %d since %v, want 30 and %v", l.PID, l.Since, now)
	}
}

func TestHeartbeatAndReleasePID(t *testing.T) {
	s, _ := openMigratedStore(t, "")
	ctx := context.Background()
	t0 := time.Unix(1_700_000_000, 0)
	rows := []WorkerRow{
		{ID: "0-111-1", Slot: 0, PID: 111, StartedAt: t0, BeatAt: t0, Version: "v1"},
		{ID: "1-222-1", Slot: 1, PID: 222, StartedAt: t0, BeatAt: t0, Version: "v1", Stats: `{"requests":5}`},
	}
	for _, r := range rows {
		if err := s.Heartbeat(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// A second beat updates in place; it may say primary since 0-111-1 holds the lease.
	if _, ok, err := s.TryAcquire(ctx, "0-111-1", 111, 0, t0); err != nil || !ok {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	rows[0].BeatAt, rows[0].Role, rows[0].Stats = t0.Add(10*time.Second), "primary", `{"requests":9}`
	if err := s.Heartbeat(ctx, rows[0]); err != nil {
		t.Fatal(err)
	}
	got, err := s.Workers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []WorkerRow{
		{ID: "0-111-1", Slot: 0, PID: 111, StartedAt: t0, BeatAt: t0.Add(10 * time.Second), Role: "primary", Version: "v1", Stats: `{"requests":9}`},
		{ID: "1-222-1", Slot: 1, PID: 222, StartedAt: t0, BeatAt: t0, Role: "worker", Version: "v1", Stats: `{"requests":5}`},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("workers:\n got %+v\nwant %+v", got, want)
	}

	for _, tc := range []struct {
		pid       int
		wantFreed bool
		wantRows  int
	}{{222, false, 1}, {111, true, 0}, {111, false, 0}} {
		freed, err := s.ReleasePID(ctx, tc.pid)
		if err != nil {
			t.Fatal(err)
		}
		ws, _ := s.Workers(ctx)
		if freed != tc.wantFreed || len(ws) != tc.wantRows {
			t.Errorf("ReleasePID(%d): got freed=%v rows=%d, want %v %d", tc.pid, freed, len(ws), tc.wantFreed, tc.wantRows)
		}
	}
	if l, _ := s.Lease(ctx); l.Holder != "" || l.PID != 0 {
		t.Errorf("lease after ReleasePID: got %+v, want free", l)
	}
	if err := s.RemoveWorker(ctx, "nope"); err != nil {
		t.Errorf("RemoveWorker of a missing row: %v", err)
	}
}

func TestFencedExec(t *testing.T) {
	s, _ := openMigratedStore(t, "")
	ctx := context.Background()
	l, _, err := s.TryAcquire(ctx, "A", 1, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	insert := func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, "INSERT INTO settings(key, value, updated_at) VALUES ('fenced', 'x', 0)", nil)
	}
	for _, tc := range []struct {
		epoch   int64
		wantErr error
		rows    int64
	}{{0, ErrFenced, 0}, {l.Epoch + 1, ErrFenced, 0}, {l.Epoch, nil, 1}} {
		err := s.FencedExec(ctx, tc.epoch, insert)
		if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
			t.Errorf("epoch %d: got %v, want %v", tc.epoch, err, tc.wantErr)
		}
		if n := queryInt(t, s, "SELECT count(*) FROM settings WHERE key = 'fenced'"); n != tc.rows {
			t.Errorf("epoch %d: rows got %d, want %d", tc.epoch, n, tc.rows)
		}
	}
}

func TestDeleteOldRequestLogs(t *testing.T) {
	s, _ := openMigratedStore(t, "")
	ctx := context.Background()
	l, _, err := s.TryAcquire(ctx, "A", 1, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	err = s.write(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, `WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i+1 FROM n WHERE i < 2509)
			INSERT INTO request_logs (request_id, ts_ms, worker, endpoint, model, upstream, upstream_model, status, stream,
				latency_us, ttfb_us, prompt_tokens, completion_tokens, error_class)
			SELECT 'r' || i, CASE WHEN i < 2500 THEN 1000 + i ELSE 10000 END, 0, 'chat', 'm', 'u', 'um', 200, 0, 0, 0, 0, 0, '' FROM n`, nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.DeleteOldRequestLogs(ctx, l.Epoch+1, 5000, 1000); !errors.Is(err, ErrFenced) || n != 0 {
		t.Errorf("stale epoch: got %d, %v; want 0, ErrFenced", n, err)
	}
	n, err := s.DeleteOldRequestLogs(ctx, l.Epoch, 5000, 1000)
	if err != nil || n != 2500 {
		t.Errorf("got %d, %v; want 2500 deleted", n, err)
	}
	if left := queryInt(t, s, "SELECT count(*) FROM request_logs"); left != 10 {
		t.Errorf("rows left: got %d, want 10", left)
	}
}

func TestCheckpointWALTruncates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cp.db")
	s, _ := openMigratedStore(t, path)
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		if err := s.Heartbeat(ctx, WorkerRow{ID: fmt.Sprint("w", i), BeatAt: time.Now(), StartedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	if st, err := os.Stat(path + "-wal"); err != nil || st.Size() == 0 {
		t.Fatalf("expected a non-empty WAL before the checkpoint: %v", err)
	}
	if err := s.CheckpointWAL(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path + "-wal"); err != nil || st.Size() != 0 {
		t.Errorf("WAL after TRUNCATE checkpoint: %v, size %d; want 0", err, st.Size())
	}
}

// TestLeaseWritesUnderContention: 16 stores (one per simulated process, each with its own
// pool) beat, take and renew on one file at once; no call may fail with SQLITE_BUSY.
func TestLeaseWritesUnderContention(t *testing.T) {
	path := filepath.Join(t.TempDir(), "storm.db")
	openMigratedStore(t, path)
	const procs, rounds = 16, 30
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, procs*rounds*3)
	for p := 0; p < procs; p++ {
		s, _ := openMigratedStore(t, path)
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			id := fmt.Sprintf("%d-%d-1", p, 1000+p)
			var epoch int64
			for r := 0; r < rounds; r++ {
				if err := s.Heartbeat(ctx, WorkerRow{ID: id, Slot: p, PID: 1000 + p, StartedAt: time.Now(), BeatAt: time.Now()}); err != nil {
					errs <- err
				}
				l, err := s.Lease(ctx)
				if err != nil {
					errs <- err
					continue
				}
				if epoch == 0 {
					nl, ok, err := s.TryAcquire(ctx, id, 1000+p, l.RenewSeq, time.Now())
					if err != nil {
						errs <- err
					} else if ok {
						epoch = nl.Epoch
					}
				} else if ok, err := s.Renew(ctx, id, epoch, time.Now()); err != nil {
					errs <- err
				} else if !ok {
					epoch = 0
				}
			}
		}(p)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("busy=%v: %v", IsBusy(err), err)
	}
}

func TestIsTransient(t *testing.T) {
	path := filepath.Join(t.TempDir(), "busy.db")
	s, _ := openMigratedStore(t, path)
	other, _ := openMigratedStore(t, path)
	ctx := context.Background()
	// Hold the write lock in one store; a short-deadline write in the other must fail
	// with an error IsTransient recognises (never a fault worth an ERROR line).
	locked, release := make(chan struct{}), make(chan struct{})
	go s.write(ctx, func(conn *sqlite.Conn) error { close(locked); <-release; return nil })
	<-locked
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err := other.Heartbeat(short, WorkerRow{ID: "x", BeatAt: time.Now(), StartedAt: time.Now()})
	cancel()
	close(release)
	if err == nil || !IsTransient(err) {
		t.Errorf("write under a held lock: got %v (transient=%v), want a transient error", err, IsTransient(err))
	}
	if IsTransient(errors.New("disk on fire")) || IsTransient(nil) {
		t.Error("IsTransient: true for a plain error or nil")
	}
}
