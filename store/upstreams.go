package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// AnyModel as a Deployment's PublicModel serves every model name, forwarded unchanged.
const AnyModel = "*"

// Deployment is one public model served by an upstream.
type Deployment struct {
	PublicModel   string // model name clients ask for; AnyModel passes any name through
	UpstreamModel string // name sent upstream; "" means the same as PublicModel (always "" for AnyModel)
	Weight        int    // share among deployments of the same public model; 0 takes no traffic
	Priority      int    // tier: lower tiers are tried first (default 0)
	MaxConcurrent int    // most requests in flight on this deployment across all workers; 0: unlimited
}

// Upstream is a provider endpoint.
type Upstream struct {
	ID          int64
	Name        string
	Provider    string // "" means "openai"
	BaseURL     string
	APIKey      string // plaintext in memory only; sealed with the box in the database; "" for none
	Weight      int    // 0 takes no traffic
	Enabled     bool
	CreatedAt   time.Time // zero on add means now
	Deployments []Deployment
}

// AddUpstream stores u and its deployments in one transaction and returns its id. It
// returns ErrExists when an upstream with the same name exists.
func (s *Store) AddUpstream(ctx context.Context, u Upstream) (int64, error) {
	if u.Name == "" || u.BaseURL == "" {
		return 0, errors.New("store: add upstream: name and base URL are required")
	}
	if u.Weight < 0 {
		return 0, fmt.Errorf("store: add upstream %q: negative weight %d", u.Name, u.Weight)
	}
	if u.Provider == "" {
		u.Provider = "openai"
	}
	if u.CreatedAt.IsZero() {
		u.CreatedAt = time.Now()
	}
	deps := make([]Deployment, len(u.Deployments))
	for i, d := range u.Deployments {
		switch {
		case d.PublicModel == "":
			return 0, fmt.Errorf("store: add upstream %q: deployment %d has no public model", u.Name, i)
		case d.Weight < 0:
			return 0, fmt.Errorf("store: add upstream %q: deployment %q has negative weight", u.Name, d.PublicModel)
		case d.MaxConcurrent < 0:
			return 0, fmt.Errorf("store: add upstream %q: deployment %q has negative max concurrent", u.Name, d.PublicModel)
		case d.PublicModel == AnyModel && d.UpstreamModel != "":
			return 0, fmt.Errorf("store: add upstream %q: a %q deployment forwards names unchanged and takes no upstream model", u.Name, AnyModel)
		case d.PublicModel != AnyModel && d.UpstreamModel == "":
			d.UpstreamModel = d.PublicModel
		}
		deps[i] = d
	}
	var sealed any // NULL when the upstream needs no key
	if u.APIKey != "" {
		if s.box == nil {
			return 0, fmt.Errorf("store: add upstream %q: no secret key loaded to seal its API key", u.Name)
		}
		b, err := s.box.Seal([]byte(u.APIKey))
		if err != nil {
			return 0, fmt.Errorf("store: add upstream %q: %w", u.Name, err)
		}
		sealed = b
	}
	var id int64
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		err := sqlitex.Execute(conn, `INSERT INTO upstreams(name, provider, base_url, api_key_enc, weight, enabled, created_at)
VALUES (:name, :provider, :base_url, :key, :weight, :enabled, :created)`, &sqlitex.ExecOptions{
			Named: map[string]any{
				":name": u.Name, ":provider": u.Provider, ":base_url": u.BaseURL, ":key": sealed,
				":weight": u.Weight, ":enabled": u.Enabled, ":created": u.CreatedAt.Unix(),
			},
		})
		if err != nil {
			return err
		}
		id = conn.LastInsertRowID()
		for _, d := range deps {
			err := sqlitex.Execute(conn, `INSERT INTO deployments(upstream_id, public_model, upstream_model, weight, priority, max_concurrent)
VALUES (:up, :public, :model, :weight, :priority, :maxc)`, &sqlitex.ExecOptions{
				Named: map[string]any{":up": id, ":public": d.PublicModel, ":model": d.UpstreamModel, ":weight": d.Weight,
					":priority": d.Priority, ":maxc": d.MaxConcurrent},
			})
			if isUniqueViolation(err) {
				return fmt.Errorf("deployment %q listed twice", d.PublicModel)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if isUniqueViolation(err) {
		return 0, fmt.Errorf("store: add upstream %q: %w", u.Name, ErrExists)
	}
	if err != nil {
		return 0, fmt.Errorf("store: add upstream %q: %w", u.Name, err)
	}
	return id, nil
}

// ListUpstreams returns every upstream with its deployments and decrypted API key,
// ordered by id. Both tables are read in one transaction so the pair is consistent.
func (s *Store) ListUpstreams(ctx context.Context) ([]Upstream, error) {
	var ups []Upstream
	var sealed [][]byte
	err := s.read(ctx, func(conn *sqlite.Conn) (err error) {
		defer sqlitex.Transaction(conn)(&err)
		byID := make(map[int64]int)
		err = sqlitex.Execute(conn, `SELECT id, name, provider, base_url, api_key_enc, weight, enabled, created_at
FROM upstreams ORDER BY id`, &sqlitex.ExecOptions{
			ResultFunc: func(stmt *sqlite.Stmt) error {
				var enc []byte
				if !stmt.ColumnIsNull(4) {
					enc = make([]byte, stmt.ColumnLen(4))
					stmt.ColumnBytes(4, enc)
				}
				byID[stmt.ColumnInt64(0)] = len(ups)
				ups = append(ups, Upstream{
					ID:        stmt.ColumnInt64(0),
					Name:      stmt.ColumnText(1),
					Provider:  stmt.ColumnText(2),
					BaseURL:   stmt.ColumnText(3),
					Weight:    stmt.ColumnInt(5),
					Enabled:   stmt.ColumnBool(6),
					CreatedAt: time.Unix(stmt.ColumnInt64(7), 0),
				})
				sealed = append(sealed, enc)
				return nil
			},
		})
		if err != nil {
			return err
		}
		return sqlitex.Execute(conn, `SELECT upstream_id, public_model, upstream_model, weight, priority, max_concurrent
FROM deployments ORDER BY upstream_id, id`, &sqlitex.ExecOptions{
			ResultFunc: func(stmt *sqlite.Stmt) error {
				i, ok := byID[stmt.ColumnInt64(0)]
				if !ok {
					return nil // unreachable with foreign keys on
				}
				ups[i].Deployments = append(ups[i].Deployments, Deployment{
					PublicModel:   stmt.ColumnText(1),
					UpstreamModel: stmt.ColumnText(2),
					Weight:        stmt.ColumnInt(3),
					Priority:      stmt.ColumnInt(4),
					MaxConcurrent: stmt.ColumnInt(5),
				})
				return nil
			},
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: list upstreams: %w", err)
	}
	// Decrypt outside the connection: it needs no database and frees the connection sooner.
	for i, enc := range sealed {
		if enc == nil {
			continue
		}
		if s.box == nil {
			return nil, fmt.Errorf("store: list upstreams: upstream %q has a sealed API key but no secret key is loaded", ups[i].Name)
		}
		plain, err := s.box.Open(enc)
		if err != nil {
			return nil, fmt.Errorf("store: list upstreams: upstream %q: %w", ups[i].Name, err)
		}
		ups[i].APIKey = string(plain)
	}
	return ups, nil
}

// RemoveUpstream deletes the named upstream and, by cascade, its deployments. It returns
// ErrNotFound when no upstream has that name.
func (s *Store) RemoveUpstream(ctx context.Context, name string) error {
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		return execOne(conn, "DELETE FROM upstreams WHERE name = :name", &sqlitex.ExecOptions{
			Named: map[string]any{":name": name},
		})
	})
	if err != nil {
		return fmt.Errorf("store: remove upstream %q: %w", name, err)
	}
	return nil
}

// CountUpstreams returns the number of upstreams, enabled or not.
func (s *Store) CountUpstreams(ctx context.Context) (int, error) {
	var n int
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, "SELECT count(*) FROM upstreams", &sqlitex.ExecOptions{
			ResultFunc: func(stmt *sqlite.Stmt) error { n = stmt.ColumnInt(0); return nil },
		})
	})
	if err != nil {
		return 0, fmt.Errorf("store: count upstreams: %w", err)
	}
	return n, nil
}
