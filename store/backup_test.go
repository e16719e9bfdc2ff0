package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// TestBackupUnderWriteLoad: a backup taken while writers keep committing is a
// sound database (integrity_check ok) holding one point in time: at least every
// row committed before it started, at most those committed before it ended.
func TestBackupUnderWriteLoad(t *testing.T) {
	cfg := testConfig(t)
	st := openTestStore(t, cfg, nil)
	ctx := testContext(t)

	var committed atomic.Int64
	write := func(i int64) {
		if err := st.SetSetting(ctx, fmt.Sprintf("load_%06d", i), strings.Repeat("x", 200)); err != nil {
			t.Errorf("write under backup: %v", err)
			return
		}
		committed.Add(1)
	}
	// Some data first, so the copy has pages to read while writers append.
	for i := range int64(500) {
		write(i)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var next atomic.Int64
	next.Store(500)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Bounded: at most 3000 rows per writer even if the backup were slow.
			for range 3000 {
				select {
				case <-stop:
					return
				default:
				}
				write(next.Add(1))
			}
		}()
	}
	for committed.Load() < 700 { // writers are running
		time.Sleep(time.Millisecond)
	}
	before := committed.Load()
	dst := filepath.Join(t.TempDir(), "backup.db")
	if err := st.Backup(ctx, dst); err != nil {
		t.Fatalf("Backup: %v", err)
	}
	after := committed.Load()
	close(stop)
	wg.Wait()

	fi, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("backup mode = %v, want 0600", fi.Mode().Perm())
	}
	if _, err := os.Stat(dst + "-wal"); err == nil {
		t.Errorf("backup left a -wal file; the copy must stand alone")
	}
	leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(dst), ".backup.db.tmp-*"))
	if len(leftovers) != 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}

	conn, err := sqlite.OpenConn(dst, sqlite.OpenReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var integrity string
	if err := sqlitex.ExecuteTransient(conn, "PRAGMA integrity_check", &sqlitex.ExecOptions{
		ResultFunc: func(stmt *sqlite.Stmt) error { integrity += stmt.ColumnText(0); return nil },
	}); err != nil {
		t.Fatal(err)
	}
	if integrity != "ok" {
		t.Errorf("integrity_check on the backup = %q, want ok", integrity)
	}
	rows, err := sqlitex.ResultInt64(conn.Prep("SELECT count(*) FROM settings WHERE key LIKE 'load_%'"))
	if err != nil {
		t.Fatal(err)
	}
	if rows < before || rows > after {
		t.Errorf("backup holds %d rows, want between %d (committed before) and %d (committed by the end)", rows, before, after)
	}
	var migrations int64
	if migrations, err = sqlitex.ResultInt64(conn.Prep("SELECT count(*) FROM schema_migrations")); err != nil || migrations == 0 {
		t.Errorf("backup has %d migrations recorded (%v); want the schema copied", migrations, err)
	}
	t.Logf("backup of %d rows taken while %d rows were committed by 3 writers", rows, after-before)
}

func TestBackupRefusesExistingPath(t *testing.T) {
	st := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	dst := filepath.Join(t.TempDir(), "exists.db")
	if err := os.WriteFile(dst, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := st.Backup(ctx, dst)
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("Backup onto an existing file: err = %v, want 'already exists'", err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "keep me" {
		t.Errorf("existing file was changed: %q", b)
	}
}

func TestBackupCancelled(t *testing.T) {
	st := openTestStore(t, testConfig(t), nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := t.TempDir()
	dst := filepath.Join(dir, "b.db")
	if err := st.Backup(ctx, dst); !errors.Is(err, context.Canceled) {
		t.Errorf("Backup with a cancelled context: err = %v, want context.Canceled", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a failed backup left files: %v", entries)
	}
}
