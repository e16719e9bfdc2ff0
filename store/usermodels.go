package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"zombiezen.com/go/sqlite"
)

// UserModels returns the model allow-list of every user that has one (users.models),
// keyed by user id. Users absent from the map may use every model.
func (s *Store) UserModels(ctx context.Context) (map[int64][]string, error) {
	out := map[int64][]string{}
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		stmt := conn.Prep("SELECT id, models FROM users WHERE models != ''")
		defer stmt.Reset()
		for {
			row, err := stmt.Step()
			if err != nil || !row {
				return err
			}
			if ms := splitModels(stmt.ColumnText(1)); len(ms) > 0 {
				out[stmt.ColumnInt64(0)] = ms
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("store: user models: %w", err)
	}
	return out, nil
}

// SetUserModels replaces a user's model allow-list; an empty list allows every model.
// Every worker reloads its keys (trigger users_models_au).
func (s *Store) SetUserModels(ctx context.Context, userID int64, models []string) error {
	list, err := joinModels(models)
	if err != nil {
		return fmt.Errorf("store: set user models: %w", err)
	}
	var changed int
	err = s.write(ctx, func(conn *sqlite.Conn) error {
		stmt := conn.Prep("UPDATE users SET models = :models, updated_at = :now WHERE id = :id")
		defer stmt.Reset()
		stmt.SetText(":models", list)
		stmt.SetInt64(":now", time.Now().Unix())
		stmt.SetInt64(":id", userID)
		if _, err := stmt.Step(); err != nil {
			return err
		}
		changed = conn.Changes()
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: set user models: %w", err)
	}
	if changed == 0 {
		return fmt.Errorf("store: set user models: user %d: %w", userID, ErrNotFound)
	}
	return nil
}

func splitModels(s string) []string {
	var out []string
	for _, m := range strings.Split(s, ",") {
		if m = strings.TrimSpace(m); m != "" {
			out = append(out, m)
		}
	}
	return out
}
