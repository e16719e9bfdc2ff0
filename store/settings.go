package store

import (
	"context"
	"fmt"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// Settings returns every stored setting. Keys are the environment variable names they
// stand in for; the environment still wins over them (see cmd/llm-proxy).
func (s *Store) Settings(ctx context.Context) (map[string]string, error) {
	m := make(map[string]string)
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, "SELECT key, value FROM settings", &sqlitex.ExecOptions{
			ResultFunc: func(stmt *sqlite.Stmt) error {
				m[stmt.ColumnText(0)] = stmt.ColumnText(1)
				return nil
			},
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: read settings: %w", err)
	}
	return m, nil
}

// SetSetting stores value under key. Writing the value already stored changes nothing,
// so it does not bump the settings generation and make every worker reload.
func (s *Store) SetSetting(ctx context.Context, key, value string) error {
	if key == "" {
		return fmt.Errorf("store: set setting: key is empty")
	}
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, `INSERT INTO settings(key, value, updated_at) VALUES (:key, :value, :now)
ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
WHERE value <> excluded.value`, &sqlitex.ExecOptions{
			Named: map[string]any{":key": key, ":value": value, ":now": time.Now().Unix()},
		})
	})
	if err != nil {
		return fmt.Errorf("store: set setting %s: %w", key, err)
	}
	return nil
}

// DeleteSetting removes key, so its default applies again. Deleting a missing key is not
// an error: the outcome the caller wants already holds.
func (s *Store) DeleteSetting(ctx context.Context, key string) error {
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, "DELETE FROM settings WHERE key = :key", &sqlitex.ExecOptions{
			Named: map[string]any{":key": key},
		})
	})
	if err != nil {
		return fmt.Errorf("store: delete setting %s: %w", key, err)
	}
	return nil
}
