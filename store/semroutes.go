package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// Cache modes accepted by the per-route and per-key overrides ("" clears an override).
var cacheModes = map[string]bool{"": true, "off": true, "exact": true, "semantic": true}

// RouteCache is a route's cache override.
type RouteCache struct {
	Model string
	// Mode is off, exact or semantic; "" defers to the global LLM_PROXY_CACHE_MODE.
	Mode string
	// TTL is the lifetime of the route's cached answers; 0 uses LLM_PROXY_CACHE_TTL.
	TTL time.Duration
}

// SetRouteCache sets the cache override of model's route, creating the route (with the
// default strategy and no fallbacks) if it does not exist.
func (s *Store) SetRouteCache(ctx context.Context, rc RouteCache) error {
	if rc.Model == "" {
		return errors.New("store: set route cache: model is required")
	}
	if !cacheModes[rc.Mode] {
		return fmt.Errorf("store: set route cache %q: invalid mode %q", rc.Model, rc.Mode)
	}
	if rc.TTL < 0 {
		return fmt.Errorf("store: set route cache %q: negative ttl", rc.Model)
	}
	var mode, ttl any
	if rc.Mode != "" {
		mode = rc.Mode
	}
	if secs := int64(rc.TTL / time.Second); secs > 0 {
		ttl = secs
	}
	now := time.Now().Unix()
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, `INSERT INTO routes(model, strategy, fallbacks, created_at, updated_at, cache_mode, cache_ttl_seconds)
VALUES (:model, NULL, '', :now, :now, :mode, :ttl)
ON CONFLICT(model) DO UPDATE SET cache_mode = excluded.cache_mode, cache_ttl_seconds = excluded.cache_ttl_seconds,
    updated_at = excluded.updated_at`,
			&sqlitex.ExecOptions{Named: map[string]any{":model": rc.Model, ":now": now, ":mode": mode, ":ttl": ttl}})
	})
	if err != nil {
		return fmt.Errorf("store: set route cache %q: %w", rc.Model, err)
	}
	return nil
}

// RouteCaches returns the routes that override the cache mode or TTL, by model.
func (s *Store) RouteCaches(ctx context.Context) (map[string]RouteCache, error) {
	out := make(map[string]RouteCache)
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, `SELECT model, coalesce(cache_mode, ''), coalesce(cache_ttl_seconds, 0) FROM routes
WHERE cache_mode IS NOT NULL OR cache_ttl_seconds IS NOT NULL`,
			&sqlitex.ExecOptions{ResultFunc: func(stmt *sqlite.Stmt) error {
				rc := RouteCache{Model: stmt.ColumnText(0), Mode: stmt.ColumnText(1),
					TTL: time.Duration(stmt.ColumnInt64(2)) * time.Second}
				out[rc.Model] = rc
				return nil
			}})
	})
	if err != nil {
		return nil, fmt.Errorf("store: list route cache overrides: %w", err)
	}
	return out, nil
}

// SetAPIKeyCacheMode sets key id's cache override ("" clears it); ErrNotFound when there
// is no such key.
func (s *Store) SetAPIKeyCacheMode(ctx context.Context, id int64, mode string) error {
	if !cacheModes[mode] {
		return fmt.Errorf("store: set cache mode of api key %d: invalid mode %q", id, mode)
	}
	var m any
	if mode != "" {
		m = mode
	}
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		return execOne(conn, `UPDATE api_keys SET cache_mode = :mode WHERE id = :id`,
			&sqlitex.ExecOptions{Named: map[string]any{":id": id, ":mode": m}})
	})
	if err != nil {
		return fmt.Errorf("store: set cache mode of api key %d: %w", id, err)
	}
	return nil
}

// APIKeyCacheModes returns the keys that override the cache mode, by key id.
func (s *Store) APIKeyCacheModes(ctx context.Context) (map[int64]string, error) {
	out := make(map[int64]string)
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, `SELECT id, cache_mode FROM api_keys WHERE cache_mode IS NOT NULL`,
			&sqlitex.ExecOptions{ResultFunc: func(stmt *sqlite.Stmt) error {
				out[stmt.ColumnInt64(0)] = stmt.ColumnText(1)
				return nil
			}})
	})
	if err != nil {
		return nil, fmt.Errorf("store: list api key cache modes: %w", err)
	}
	return out, nil
}

// SemanticRoute is a public model whose requests go to the target whose example
// utterances they resemble most (see routing.SemanticRouter), else to Default.
type SemanticRoute struct {
	Model   string
	Default string
	// TopK is how many of a target's closest utterances are averaged; 0 stores 3.
	TopK      int
	Targets   []SemanticTarget
	CreatedAt time.Time
	UpdatedAt time.Time
}

// SemanticTarget is one destination of a semantic route.
type SemanticTarget struct {
	Name       string
	Model      string
	Threshold  float64
	Utterances []string
}

// DefaultSemanticTopK is the number of closest utterances averaged per target.
const DefaultSemanticTopK = 3

// PutSemanticRoute creates or replaces the semantic route of r.Model and all its targets.
func (s *Store) PutSemanticRoute(ctx context.Context, r SemanticRoute) error {
	if err := validateSemanticRoute(r); err != nil {
		return fmt.Errorf("store: put semantic route %q: %w", r.Model, err)
	}
	if r.TopK == 0 {
		r.TopK = DefaultSemanticTopK
	}
	now := time.Now().Unix()
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		if err := sqlitex.Execute(conn, `INSERT INTO semantic_routes(model, default_model, top_k, created_at, updated_at)
VALUES (:model, :def, :k, :now, :now)
ON CONFLICT(model) DO UPDATE SET default_model = excluded.default_model, top_k = excluded.top_k, updated_at = excluded.updated_at`,
			&sqlitex.ExecOptions{Named: map[string]any{":model": r.Model, ":def": r.Default, ":k": r.TopK, ":now": now}}); err != nil {
			return err
		}
		if err := sqlitex.Execute(conn, `DELETE FROM semantic_targets WHERE route_model = :model`,
			&sqlitex.ExecOptions{Named: map[string]any{":model": r.Model}}); err != nil {
			return err
		}
		for i, t := range r.Targets {
			utt, err := json.Marshal(t.Utterances)
			if err != nil {
				return err
			}
			if err := sqlitex.Execute(conn, `INSERT INTO semantic_targets(route_model, name, model, threshold, utterances, position)
VALUES (:route, :name, :model, :th, :utt, :pos)`, &sqlitex.ExecOptions{Named: map[string]any{
				":route": r.Model, ":name": t.Name, ":model": t.Model, ":th": t.Threshold, ":utt": string(utt), ":pos": i,
			}}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: put semantic route %q: %w", r.Model, err)
	}
	return nil
}

func validateSemanticRoute(r SemanticRoute) error {
	switch {
	case r.Model == "" || r.Default == "":
		return errors.New("model and default model are required")
	case r.Default == r.Model:
		return errors.New("the default model cannot be the route itself")
	case r.TopK < 0:
		return errors.New("top_k must be positive")
	case len(r.Targets) == 0:
		return errors.New("at least one target is required")
	}
	seen := map[string]bool{}
	for _, t := range r.Targets {
		switch {
		case t.Name == "" || t.Model == "":
			return errors.New("every target needs a name and a model")
		case t.Model == r.Model:
			return fmt.Errorf("target %q routes to the route itself", t.Name)
		case seen[t.Name]:
			return fmt.Errorf("target %q is listed twice", t.Name)
		case len(t.Utterances) == 0:
			return fmt.Errorf("target %q has no utterances", t.Name)
		case t.Threshold < -1 || t.Threshold > 1.01:
			return fmt.Errorf("target %q: threshold %v is outside [-1, 1.01]", t.Name, t.Threshold)
		}
		seen[t.Name] = true
	}
	return nil
}

// SemanticRoutes lists every semantic route with its targets (in the order given), by model.
func (s *Store) SemanticRoutes(ctx context.Context) ([]SemanticRoute, error) {
	var out []SemanticRoute
	idx := map[string]int{}
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		if err := sqlitex.Execute(conn, `SELECT model, default_model, top_k, created_at, updated_at FROM semantic_routes ORDER BY model`,
			&sqlitex.ExecOptions{ResultFunc: func(stmt *sqlite.Stmt) error {
				idx[stmt.ColumnText(0)] = len(out)
				out = append(out, SemanticRoute{Model: stmt.ColumnText(0), Default: stmt.ColumnText(1), TopK: stmt.ColumnInt(2),
					CreatedAt: time.Unix(stmt.ColumnInt64(3), 0), UpdatedAt: time.Unix(stmt.ColumnInt64(4), 0)})
				return nil
			}}); err != nil {
			return err
		}
		return sqlitex.Execute(conn, `SELECT route_model, name, model, threshold, utterances FROM semantic_targets ORDER BY route_model, position`,
			&sqlitex.ExecOptions{ResultFunc: func(stmt *sqlite.Stmt) error {
				i, ok := idx[stmt.ColumnText(0)]
				if !ok {
					return nil
				}
				t := SemanticTarget{Name: stmt.ColumnText(1), Model: stmt.ColumnText(2), Threshold: stmt.ColumnFloat(3)}
				if err := json.Unmarshal([]byte(stmt.ColumnText(4)), &t.Utterances); err != nil {
					return fmt.Errorf("target %q of %q: utterances: %w", t.Name, out[i].Model, err)
				}
				out[i].Targets = append(out[i].Targets, t)
				return nil
			}})
	})
	if err != nil {
		return nil, fmt.Errorf("store: list semantic routes: %w", err)
	}
	return out, nil
}

// SetSemanticThresholds updates the thresholds of the named targets of model's semantic
// route; ErrNotFound when the route or one of the targets does not exist.
func (s *Store) SetSemanticThresholds(ctx context.Context, model string, thresholds map[string]float64) error {
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		for name, th := range thresholds {
			if th < -1 || th > 1.01 {
				return fmt.Errorf("target %q: threshold %v is outside [-1, 1.01]", name, th)
			}
			if err := sqlitex.Execute(conn, `UPDATE semantic_targets SET threshold = :th WHERE route_model = :model AND name = :name`,
				&sqlitex.ExecOptions{Named: map[string]any{":th": th, ":model": model, ":name": name}}); err != nil {
				return err
			}
			if conn.Changes() == 0 {
				return ErrNotFound
			}
		}
		return sqlitex.Execute(conn, `UPDATE semantic_routes SET updated_at = :now WHERE model = :model`,
			&sqlitex.ExecOptions{Named: map[string]any{":now": time.Now().Unix(), ":model": model}})
	})
	if err != nil {
		return fmt.Errorf("store: set thresholds of semantic route %q: %w", model, err)
	}
	return nil
}

// DeleteSemanticRoute removes model's semantic route; ErrNotFound when there is none.
func (s *Store) DeleteSemanticRoute(ctx context.Context, model string) error {
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		return execOne(conn, `DELETE FROM semantic_routes WHERE model = :model`,
			&sqlitex.ExecOptions{Named: map[string]any{":model": model}})
	})
	if err != nil {
		return fmt.Errorf("store: delete semantic route %q: %w", model, err)
	}
	return nil
}
