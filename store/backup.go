package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// Backup writes a consistent copy of the database to path while the gateway keeps
// serving. It runs VACUUM INTO on one pooled connection: that reads the whole
// database inside a single read transaction, so the copy is one point in time,
// and in WAL mode writers are not blocked meanwhile. The copy is compact, has no
// -wal file, and opens with any SQLite.
//
// The copy is written to a temporary file next to path with mode 0600 (it holds
// key hashes and sealed provider keys), synced, then renamed, so path only ever
// names a complete backup. path must not exist. The secret key that opens the
// provider keys is not in the database: back up LLM_PROXY_SECRET_KEY or
// secret.key separately.
//
// ctx bounds the whole copy (a default of 5 s applies when it has no deadline;
// large databases need a longer one).
func (s *Store) Backup(ctx context.Context, path string) (err error) {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("store: backup: %s already exists", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("store: backup: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("store: backup: %w", err)
	}
	tmpPath := tmp.Name()
	// VACUUM INTO accepts an existing file only if it is empty; creating it here
	// fixes its mode at 0600 (CreateTemp's default) whatever the umask says.
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("store: backup: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmpPath)
		}
	}()
	err = s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, "VACUUM INTO ?", &sqlitex.ExecOptions{Args: []any{tmpPath}})
	})
	if err != nil {
		return fmt.Errorf("store: backup: vacuum into %s: %w", tmpPath, err)
	}
	if err := syncFile(tmpPath); err != nil {
		return fmt.Errorf("store: backup: %w", err)
	}
	if err := os.Rename(tmpPath, path); err != nil {
		return fmt.Errorf("store: backup: %w", err)
	}
	// The rename is durable once the directory is synced; some systems cannot
	// sync a directory, and the data itself is already on disk.
	_ = syncFile(filepath.Dir(path))
	return nil
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	serr := f.Sync()
	cerr := f.Close()
	if serr != nil {
		return serr
	}
	return cerr
}
