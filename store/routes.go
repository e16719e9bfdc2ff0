package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// Route configures one public model beyond its deployments.
type Route struct {
	Model string
	// Strategy overrides the global balancing strategy; "" uses the global one.
	Strategy string
	// Fallbacks are public model names tried in order when every deployment of
	// Model has failed.
	Fallbacks []string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// PutRoute creates or replaces the route of r.Model.
func (s *Store) PutRoute(ctx context.Context, r Route) error {
	if r.Model == "" {
		return fmt.Errorf("store: put route: model is required")
	}
	for _, f := range r.Fallbacks {
		if f == r.Model || f == "" || strings.Contains(f, ",") {
			return fmt.Errorf("store: put route %q: invalid fallback %q", r.Model, f)
		}
	}
	now := time.Now().Unix()
	var strategy any
	if r.Strategy != "" {
		strategy = r.Strategy
	}
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, `INSERT INTO routes(model, strategy, fallbacks, created_at, updated_at)
VALUES (:model, :strategy, :fallbacks, :now, :now)
ON CONFLICT(model) DO UPDATE SET strategy = excluded.strategy, fallbacks = excluded.fallbacks, updated_at = excluded.updated_at`,
			&sqlitex.ExecOptions{Named: map[string]any{
				":model": r.Model, ":strategy": strategy, ":fallbacks": strings.Join(r.Fallbacks, ","), ":now": now,
			}})
	})
	if err != nil {
		return fmt.Errorf("store: put route %q: %w", r.Model, err)
	}
	return nil
}

// Routes lists every route, ordered by model.
func (s *Store) Routes(ctx context.Context) ([]Route, error) {
	var out []Route
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, `SELECT model, coalesce(strategy, ''), fallbacks, created_at, updated_at FROM routes ORDER BY model`,
			&sqlitex.ExecOptions{ResultFunc: func(stmt *sqlite.Stmt) error {
				r := Route{
					Model:     stmt.ColumnText(0),
					Strategy:  stmt.ColumnText(1),
					CreatedAt: time.Unix(stmt.ColumnInt64(3), 0),
					UpdatedAt: time.Unix(stmt.ColumnInt64(4), 0),
				}
				if f := stmt.ColumnText(2); f != "" {
					r.Fallbacks = strings.Split(f, ",")
				}
				out = append(out, r)
				return nil
			}})
	})
	if err != nil {
		return nil, fmt.Errorf("store: list routes: %w", err)
	}
	return out, nil
}

// DeleteRoute removes the route of model; ErrNotFound when there is none.
func (s *Store) DeleteRoute(ctx context.Context, model string) error {
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		return execOne(conn, `DELETE FROM routes WHERE model = :model`,
			&sqlitex.ExecOptions{Named: map[string]any{":model": model}})
	})
	if err != nil {
		return fmt.Errorf("store: delete route %q: %w", model, err)
	}
	return nil
}

// UpstreamHealth is the latest active health check of one upstream.
type UpstreamHealth struct {
	UpstreamID int64
	Healthy    bool
	CheckedAt  time.Time
	Latency    time.Duration
	Error      string
	// Failures counts consecutive failed probes.
	Failures int
}

// UpstreamHealths returns the latest check of every upstream that has been probed.
func (s *Store) UpstreamHealths(ctx context.Context) (map[int64]UpstreamHealth, error) {
	out := make(map[int64]UpstreamHealth)
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, `SELECT upstream_id, healthy, checked_at, latency_ms, error, failures FROM upstream_health`,
			&sqlitex.ExecOptions{ResultFunc: func(stmt *sqlite.Stmt) error {
				h := UpstreamHealth{
					UpstreamID: stmt.ColumnInt64(0),
					Healthy:    stmt.ColumnInt(1) != 0,
					CheckedAt:  time.UnixMilli(stmt.ColumnInt64(2)),
					Latency:    time.Duration(stmt.ColumnInt64(3)) * time.Millisecond,
					Error:      stmt.ColumnText(4),
					Failures:   stmt.ColumnInt(5),
				}
				out[h.UpstreamID] = h
				return nil
			}})
	})
	if err != nil {
		return nil, fmt.Errorf("store: read upstream health: %w", err)
	}
	return out, nil
}

// RecordHealth stores one probe result. It is a primary duty: fenced by epoch
// (ErrFenced when the caller no longer holds the lease).
func (s *Store) RecordHealth(ctx context.Context, epoch int64, h UpstreamHealth) error {
	err := s.FencedExec(ctx, epoch, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, `INSERT INTO upstream_health(upstream_id, healthy, checked_at, latency_ms, error, failures)
SELECT :id, :healthy, :at, :lat, :err, :failures WHERE EXISTS (SELECT 1 FROM upstreams WHERE id = :id)
ON CONFLICT(upstream_id) DO UPDATE SET healthy = excluded.healthy, checked_at = excluded.checked_at,
    latency_ms = excluded.latency_ms, error = excluded.error, failures = excluded.failures`,
			&sqlitex.ExecOptions{Named: map[string]any{
				":id": h.UpstreamID, ":healthy": h.Healthy, ":at": h.CheckedAt.UnixMilli(),
				":lat": h.Latency.Milliseconds(), ":err": h.Error, ":failures": h.Failures,
			}})
	})
	if err != nil {
		return fmt.Errorf("store: record health of upstream %d: %w", h.UpstreamID, err)
	}
	return nil
}
