package store

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"

	"github.com/llm-proxy/llm-proxy/migrations"
)

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at INTEGER NOT NULL
)`

type migration struct {
	version int64
	name    string // file name, e.g. 0001_init.sql
}

// Migrate applies every migrations.FS file not yet in schema_migrations(version, name,
// applied_at), each in its own BEGIN IMMEDIATE transaction that re-checks the table first,
// so two processes starting at the same moment apply each file exactly once. It returns
// the number applied by this call.
func (s *Store) Migrate(ctx context.Context) (int, error) {
	return s.migrate(ctx, migrations.FS)
}

func (s *Store) migrate(ctx context.Context, fsys fs.FS) (int, error) {
	list, err := listMigrations(fsys)
	if err != nil {
		return 0, err
	}
	applied := 0
	for _, m := range list {
		var did bool
		err := s.write(ctx, func(conn *sqlite.Conn) error {
			var err error
			did, err = applyMigration(conn, fsys, m)
			return err
		})
		if err != nil {
			return applied, fmt.Errorf("store: migrate %s: %w", m.name, err)
		}
		if did {
			applied++
			s.logger.Info("applied migration", "version", m.version, "name", m.name)
		}
	}
	return applied, nil
}

// applyMigration runs inside the write lock, so the check and the apply cannot interleave
// with another process doing the same.
func applyMigration(conn *sqlite.Conn, fsys fs.FS, m migration) (bool, error) {
	if err := sqlitex.ExecuteTransient(conn, createMigrationsTable, nil); err != nil {
		return false, fmt.Errorf("create schema_migrations: %w", err)
	}
	done := false
	err := sqlitex.Execute(conn, "SELECT 1 FROM schema_migrations WHERE version = :v", &sqlitex.ExecOptions{
		Named:      map[string]any{":v": m.version},
		ResultFunc: func(*sqlite.Stmt) error { done = true; return nil },
	})
	if err != nil || done {
		return false, err
	}
	script, err := fs.ReadFile(fsys, m.name)
	if err != nil {
		return false, err
	}
	if err := sqlitex.ExecuteScript(conn, string(script), nil); err != nil {
		return false, err
	}
	err = sqlitex.Execute(conn, "INSERT INTO schema_migrations(version, name, applied_at) VALUES (:v, :n, :t)", &sqlitex.ExecOptions{
		Named: map[string]any{":v": m.version, ":n": m.name, ":t": time.Now().Unix()},
	})
	return err == nil, err
}

// listMigrations returns the .sql files of fsys ordered by their numeric prefix, rejecting
// malformed names and duplicate versions, which would otherwise apply in an undefined order.
func listMigrations(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, fmt.Errorf("store: list migrations: %w", err)
	}
	list := make([]migration, 0, len(names))
	seen := make(map[int64]string, len(names))
	for _, name := range names {
		prefix, _, ok := strings.Cut(path.Base(name), "_")
		v, err := strconv.ParseInt(prefix, 10, 64)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("store: migration %q: name must be NNNN_description.sql", name)
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("store: migrations %q and %q share version %d", other, name, v)
		}
		seen[v] = name
		list = append(list, migration{version: v, name: name})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].version < list[j].version })
	return list, nil
}
