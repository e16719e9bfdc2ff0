// Package store is the SQLite-backed state shared by the supervisor, the workers and the
// CLI: client keys, upstreams, settings, request logs and coordination rows. Every process
// opens the same database file; cross-process consistency comes from SQLite's locking
// (WAL mode, BEGIN IMMEDIATE for writes) rather than from any in-process cache.
package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"

	"github.com/llm-proxy/llm-proxy/store/secret"
)

// ErrNotFound is returned when the row an operation targets does not exist.
var ErrNotFound = errors.New("store: not found")

// ErrExists is returned when an insert would duplicate a unique name.
var ErrExists = errors.New("store: already exists")

// defaultTimeout bounds any store call whose ctx carries no deadline, so a wedged lock
// never hangs a request or a CLI command forever.
const defaultTimeout = 5 * time.Second

// Config is the database part of the process configuration.
type Config struct {
	Path         string `envconfig:"DATABASE_PATH" default:"data/llm-proxy.db" desc:"SQLite database file"`
	MaxOpenConns int    `envconfig:"DATABASE_MAX_OPEN_CONNS" default:"50" desc:"most connections one process opens"`
	MaxIdleConns int    `envconfig:"DATABASE_MAX_IDLE_CONNS" default:"10" desc:"idle connections kept open per process"`
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.Path == "":
		return errors.New("store: DATABASE_PATH is empty")
	case c.MaxOpenConns < 1:
		return fmt.Errorf("store: DATABASE_MAX_OPEN_CONNS must be at least 1, got %d", c.MaxOpenConns)
	case c.MaxIdleConns < 0:
		return fmt.Errorf("store: DATABASE_MAX_IDLE_CONNS must not be negative, got %d", c.MaxIdleConns)
	case c.MaxIdleConns > c.MaxOpenConns:
		return fmt.Errorf("store: DATABASE_MAX_IDLE_CONNS (%d) exceeds DATABASE_MAX_OPEN_CONNS (%d)", c.MaxIdleConns, c.MaxOpenConns)
	}
	return nil
}

// Store is safe for concurrent use by many goroutines.
type Store struct {
	path   string
	pool   *pool
	box    *secret.Box
	logger hclog.Logger
}

// Open creates the parent directory, opens the pool and sets pragmas. It does not migrate.
// box seals/opens provider keys; it may be nil for callers that never touch upstream keys,
// in which case any call that needs it returns an error.
func Open(ctx context.Context, cfg Config, box *secret.Box, logger hclog.Logger) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o700); err != nil {
		return nil, fmt.Errorf("store: create data directory: %w", err)
	}
	// Create the file ourselves so it starts at 0600: it holds key hashes and sealed provider
	// keys, and SQLite gives the -wal/-shm files the same mode as the main file.
	f, err := os.OpenFile(cfg.Path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: create database file: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("store: create database file: %w", err)
	}
	s := &Store{
		path:   cfg.Path,
		pool:   newPool(cfg.Path, cfg.MaxOpenConns, cfg.MaxIdleConns),
		box:    box,
		logger: logger.Named("store"),
	}
	// Take one connection now so a bad path or a corrupt file fails at startup, not on the
	// first request. It goes back to the idle list, so an idle store holds exactly one.
	if err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.ExecuteTransient(conn, "SELECT count(*) FROM sqlite_schema", nil)
	}); err != nil {
		s.pool.close()
		return nil, fmt.Errorf("store: open %s: %w", cfg.Path, err)
	}
	return s, nil
}

// Close closes every connection. Callers must not use the Store afterwards.
func (s *Store) Close() error {
	if err := s.pool.close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// Path returns the database file path.
func (s *Store) Path() string { return s.path }

// withDeadline applies defaultTimeout when ctx has none.
func withDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, defaultTimeout)
}

// read takes a connection with a deadline (ctx must carry one, or a default of 5 s is applied) and runs fn.
func (s *Store) read(ctx context.Context, fn func(conn *sqlite.Conn) error) error {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	conn, err := s.pool.take(ctx)
	if err != nil {
		return err
	}
	defer s.pool.put(conn)
	return fn(conn)
}

// write runs fn inside sqlitex.ImmediateTransaction on a pooled connection; fn's error rolls back.
// IMMEDIATE takes the write lock up front, so two processes never both read inside a
// transaction and then deadlock upgrading to write.
func (s *Store) write(ctx context.Context, fn func(conn *sqlite.Conn) error) error {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	conn, err := s.pool.take(ctx)
	if err != nil {
		return err
	}
	defer s.pool.put(conn)
	return runImmediate(conn, fn)
}

func runImmediate(conn *sqlite.Conn, fn func(conn *sqlite.Conn) error) (err error) {
	end, err := sqlitex.ImmediateTransaction(conn)
	if err != nil {
		return fmt.Errorf("begin immediate: %w", err)
	}
	defer end(&err)
	return fn(conn)
}

// execOne runs a statement that must change a row: ErrNotFound when it changed none.
func execOne(conn *sqlite.Conn, query string, opts *sqlitex.ExecOptions) error {
	if err := sqlitex.Execute(conn, query, opts); err != nil {
		return err
	}
	if conn.Changes() == 0 {
		return ErrNotFound
	}
	return nil
}
