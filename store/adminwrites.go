package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// UpdateUpstream replaces upstream id's fields and deployments with u's in one
// transaction (u.ID and u.CreatedAt are ignored). Every field of each deployment is
// written, priority and max concurrency included: a caller editing only the upstream
// passes the deployments ListUpstreams returned, and they come back unchanged. The stored provider key is kept when
// keepKey is true (the admin never sees it, so an edit that does not retype it keeps it);
// otherwise u.APIKey replaces it ("" removes it). ErrNotFound, ErrExists (name taken).
func (s *Store) UpdateUpstream(ctx context.Context, id int64, u Upstream, keepKey bool) error {
	if u.Name == "" || u.BaseURL == "" {
		return errors.New("store: update upstream: name and base URL are required")
	}
	if u.Weight < 0 {
		return fmt.Errorf("store: update upstream %q: negative weight %d", u.Name, u.Weight)
	}
	if u.Provider == "" {
		u.Provider = "openai"
	}
	deps := make([]Deployment, len(u.Deployments))
	for i, d := range u.Deployments {
		switch {
		case d.PublicModel == "":
			return fmt.Errorf("store: update upstream %q: deployment %d has no public model", u.Name, i)
		case d.Weight < 0:
			return fmt.Errorf("store: update upstream %q: deployment %q has negative weight", u.Name, d.PublicModel)
		case d.MaxConcurrent < 0:
			return fmt.Errorf("store: update upstream %q: deployment %q has negative max concurrent", u.Name, d.PublicModel)
		case d.PublicModel == AnyModel && d.UpstreamModel != "":
			return fmt.Errorf("store: update upstream %q: a %q deployment takes no upstream model", u.Name, AnyModel)
		case d.PublicModel != AnyModel && d.UpstreamModel == "":
			d.UpstreamModel = d.PublicModel
		}
		deps[i] = d
	}
	var sealed any
	if !keepKey && u.APIKey != "" {
		if s.box == nil {
			return fmt.Errorf("store: update upstream %q: no secret key loaded to seal its API key", u.Name)
		}
		b, err := s.box.Seal([]byte(u.APIKey))
		if err != nil {
			return fmt.Errorf("store: update upstream %q: %w", u.Name, err)
		}
		sealed = b
	}
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		q := `UPDATE upstreams SET name = :name, provider = :provider, base_url = :base_url, weight = :weight, enabled = :enabled`
		args := map[string]any{":id": id, ":name": u.Name, ":provider": u.Provider, ":base_url": u.BaseURL,
			":weight": u.Weight, ":enabled": u.Enabled}
		if !keepKey {
			q += ", api_key_enc = :key"
			args[":key"] = sealed
		}
		if err := sqlitex.Execute(conn, q+" WHERE id = :id", &sqlitex.ExecOptions{Named: args}); err != nil {
			return err
		}
		if conn.Changes() == 0 {
			return ErrNotFound
		}
		if err := sqlitex.Execute(conn, "DELETE FROM deployments WHERE upstream_id = :id", &sqlitex.ExecOptions{
			Named: map[string]any{":id": id},
		}); err != nil {
			return err
		}
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
	if errors.Is(err, ErrNotFound) {
		return err
	}
	if isUniqueViolation(err) {
		return fmt.Errorf("store: update upstream %q: %w", u.Name, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("store: update upstream %q: %w", u.Name, err)
	}
	return nil
}

// SetUpstreamEnabled turns upstream id on or off; ErrNotFound when there is none.
func (s *Store) SetUpstreamEnabled(ctx context.Context, id int64, enabled bool) error {
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		return execOne(conn, "UPDATE upstreams SET enabled = :on WHERE id = :id", &sqlitex.ExecOptions{
			Named: map[string]any{":id": id, ":on": enabled},
		})
	})
	if errors.Is(err, ErrNotFound) {
		return err
	}
	if err != nil {
		return fmt.Errorf("store: set upstream %d enabled: %w", id, err)
	}
	return nil
}

// RemoveUpstreamByID deletes upstream id and its deployments; ErrNotFound when there is none.
func (s *Store) RemoveUpstreamByID(ctx context.Context, id int64) error {
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		return execOne(conn, "DELETE FROM upstreams WHERE id = :id", &sqlitex.ExecOptions{
			Named: map[string]any{":id": id},
		})
	})
	if errors.Is(err, ErrNotFound) {
		return err
	}
	if err != nil {
		return fmt.Errorf("store: remove upstream %d: %w", id, err)
	}
	return nil
}

// ApplySettings stores set and deletes del (back to their defaults) in one transaction, so
// an admin's save is all or nothing. Unchanged values do not bump the settings generation.
func (s *Store) ApplySettings(ctx context.Context, set map[string]string, del []string) error {
	now := time.Now().Unix()
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		for k, v := range set {
			if k == "" {
				return errors.New("setting key is empty")
			}
			if err := sqlitex.Execute(conn, `INSERT INTO settings(key, value, updated_at) VALUES (:key, :value, :now)
ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
WHERE value <> excluded.value`, &sqlitex.ExecOptions{
				Named: map[string]any{":key": k, ":value": v, ":now": now},
			}); err != nil {
				return err
			}
		}
		for _, k := range del {
			if err := sqlitex.Execute(conn, "DELETE FROM settings WHERE key = :key", &sqlitex.ExecOptions{
				Named: map[string]any{":key": k},
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: apply settings: %w", err)
	}
	return nil
}
