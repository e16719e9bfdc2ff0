package store

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// CacheEntry is one row of the L2 response cache. Key is opaque to the store (the cache
// package hashes the normalised request into it).
type CacheEntry struct {
	Key              []byte
	Namespace        string
	Model            string
	Body             []byte
	PromptTokens     int
	CompletionTokens int
	CreatedAt        time.Time // second precision
	ExpiresAt        time.Time // second precision
	Hits             int64
	LastHitAt        time.Time
}

// cacheRowOverhead is charged per row on top of the body, so a flood of tiny entries still
// counts against the L2 budget (key, columns and index entries take roughly this much).
const cacheRowOverhead = 128

// CacheGet returns the entry of key if it exists and has not expired at now. A miss is
// (CacheEntry{}, false, nil). It does not count the hit: reads stay read-only so an L2
// hit never waits for the write lock; callers report hits in batches with CacheTouch.
func (s *Store) CacheGet(ctx context.Context, key []byte, now time.Time) (CacheEntry, bool, error) {
	var (
		e     CacheEntry
		found bool
	)
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		stmt := conn.Prep(`SELECT namespace, model, body, prompt_tokens, completion_tokens, created_at,
			expires_at, hits, last_hit_at FROM cache_entries WHERE key = :key AND expires_at > :now`)
		defer stmt.Reset()
		stmt.SetBytes(":key", key)
		stmt.SetInt64(":now", now.Unix())
		row, err := stmt.Step()
		if err != nil || !row {
			return err
		}
		found = true
		e = CacheEntry{
			Key: append([]byte(nil), key...), Namespace: stmt.ColumnText(0), Model: stmt.ColumnText(1),
			Body:         columnBytes(stmt, 2),
			PromptTokens: stmt.ColumnInt(3), CompletionTokens: stmt.ColumnInt(4),
			CreatedAt: time.Unix(stmt.ColumnInt64(5), 0), ExpiresAt: time.Unix(stmt.ColumnInt64(6), 0),
			Hits: stmt.ColumnInt64(7), LastHitAt: time.Unix(stmt.ColumnInt64(8), 0),
		}
		return nil
	})
	if err != nil {
		return CacheEntry{}, false, fmt.Errorf("store: cache get: %w", err)
	}
	return e, found, nil
}

func columnBytes(stmt *sqlite.Stmt, col int) []byte {
	b := make([]byte, stmt.ColumnLen(col))
	stmt.ColumnBytes(col, b)
	return b
}

// CachePut inserts or replaces the entry of e.Key. Hits are reset and last_hit_at starts at
// created_at. It is an upsert rather than INSERT OR REPLACE: a replace would delete the row
// first and cascade to its semantic vectors.
func (s *Store) CachePut(ctx context.Context, e CacheEntry) error {
	if len(e.Key) == 0 {
		return errors.New("store: cache put: empty key")
	}
	err := s.writeRetry(ctx, func(conn *sqlite.Conn) error {
		stmt := conn.Prep(`INSERT INTO cache_entries (key, namespace, model, body, prompt_tokens,
				completion_tokens, created_at, expires_at, size, hits, last_hit_at)
			VALUES (:key, :ns, :model, :body, :pt, :ct, :created, :expires, :size, 0, :created)
			ON CONFLICT(key) DO UPDATE SET namespace = excluded.namespace, model = excluded.model,
				body = excluded.body, prompt_tokens = excluded.prompt_tokens,
				completion_tokens = excluded.completion_tokens, created_at = excluded.created_at,
				expires_at = excluded.expires_at, size = excluded.size, hits = 0,
				last_hit_at = excluded.last_hit_at`)
		stmt.SetBytes(":key", e.Key)
		stmt.SetText(":ns", e.Namespace)
		stmt.SetText(":model", e.Model)
		stmt.SetBytes(":body", e.Body)
		stmt.SetInt64(":pt", int64(e.PromptTokens))
		stmt.SetInt64(":ct", int64(e.CompletionTokens))
		stmt.SetInt64(":created", e.CreatedAt.Unix())
		stmt.SetInt64(":expires", e.ExpiresAt.Unix())
		stmt.SetInt64(":size", int64(len(e.Body)+len(e.Key)+cacheRowOverhead))
		_, err := stmt.Step()
		stmt.Reset()
		return err
	})
	if err != nil {
		return fmt.Errorf("store: cache put: %w", err)
	}
	return nil
}

// CacheTouch counts hits on keys (a key may repeat) at now, for the eviction order and the
// stats. Callers batch hits from both tiers and flush them every few seconds.
func (s *Store) CacheTouch(ctx context.Context, hits map[string]int64, now time.Time) error {
	if len(hits) == 0 {
		return nil
	}
	err := s.writeRetry(ctx, func(conn *sqlite.Conn) error {
		stmt := conn.Prep("UPDATE cache_entries SET hits = hits + :n, last_hit_at = max(last_hit_at, :now) WHERE key = :key")
		for k, n := range hits {
			stmt.SetBytes(":key", []byte(k))
			stmt.SetInt64(":n", n)
			stmt.SetInt64(":now", now.Unix())
			if _, err := stmt.Step(); err != nil {
				stmt.Reset()
				return err
			}
			if err := stmt.Reset(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: cache touch: %w", err)
	}
	return nil
}

// CacheDelete deletes the entry of key (and its semantic vectors); false if there was none.
// It does not bump the generation: other workers' L1 copies expire with their TTL. Use
// CachePurge when every worker must forget the entry now.
func (s *Store) CacheDelete(ctx context.Context, key []byte) (bool, error) {
	var deleted bool
	err := s.writeRetry(ctx, func(conn *sqlite.Conn) error {
		err := sqlitex.Execute(conn, "DELETE FROM cache_entries WHERE key = :key",
			&sqlitex.ExecOptions{Named: map[string]any{":key": key}})
		deleted = conn.Changes() == 1
		return err
	})
	if err != nil {
		return false, fmt.Errorf("store: cache delete: %w", err)
	}
	return deleted, nil
}

// CacheFilter selects the entries CachePurge deletes. Set fields are combined with AND;
// All must be set to delete everything, so an empty filter from a bad CLI parse deletes
// nothing.
type CacheFilter struct {
	KeyPrefix string // hex prefix of the key, any case, e.g. "3fa9"
	Namespace string
	Model     string
	All       bool
}

// CachePurge deletes the entries matching f and bumps the cache generation in the same
// transaction, so every worker clears its in-memory tiers on its next poll. It returns the
// number of entries deleted (the generation is bumped even when that is 0: the L1 copies of
// a worker may outlive the L2 rows).
func (s *Store) CachePurge(ctx context.Context, f CacheFilter) (int, error) {
	var where []string
	named := map[string]any{}
	if f.KeyPrefix != "" {
		p := strings.ToUpper(f.KeyPrefix)
		if _, err := hex.DecodeString(p + strings.Repeat("0", len(p)%2)); err != nil {
			return 0, fmt.Errorf("store: cache purge: key prefix %q is not hex", f.KeyPrefix)
		}
		where = append(where, "substr(hex(key), 1, :plen) = :prefix")
		named[":plen"], named[":prefix"] = len(p), p
	}
	if f.Namespace != "" {
		where = append(where, "namespace = :ns")
		named[":ns"] = f.Namespace
	}
	if f.Model != "" {
		where = append(where, "model = :model")
		named[":model"] = f.Model
	}
	if len(where) == 0 && !f.All {
		return 0, errors.New("store: cache purge: empty filter (set All to purge everything)")
	}
	q := "DELETE FROM cache_entries"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	var n int
	err := s.writeRetry(ctx, func(conn *sqlite.Conn) error {
		if err := sqlitex.Execute(conn, q, &sqlitex.ExecOptions{Named: named}); err != nil {
			return err
		}
		n = conn.Changes()
		return sqlitex.Execute(conn, "UPDATE change_counters SET gen = gen + 1 WHERE name = 'cache'", nil)
	})
	if err != nil {
		return 0, fmt.Errorf("store: cache purge: %w", err)
	}
	return n, nil
}

// CacheGeneration reads the cache generation; workers poll it and clear their in-memory
// tiers when it changes.
func (s *Store) CacheGeneration(ctx context.Context) (int64, error) {
	var gen int64
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, "SELECT gen FROM change_counters WHERE name = 'cache'", &sqlitex.ExecOptions{
			ResultFunc: func(st *sqlite.Stmt) error { gen = st.ColumnInt64(0); return nil },
		})
	})
	if err != nil {
		return 0, fmt.Errorf("store: cache generation: %w", err)
	}
	return gen, nil
}

// CacheEvict is a primary-only duty: it deletes expired entries, then the least recently
// hit ones until the charged size is at most maxBytes, at most batch rows per fenced
// transaction so request-path writers never wait long for the lock. It returns how many
// entries it deleted; ErrFenced if epoch is no longer the lease's.
func (s *Store) CacheEvict(ctx context.Context, epoch int64, now time.Time, maxBytes int64, batch int) (int, error) {
	if batch < 1 {
		batch = 1
	}
	total := 0
	for {
		var n int
		err := s.FencedExec(ctx, epoch, func(conn *sqlite.Conn) error {
			err := sqlitex.Execute(conn, `DELETE FROM cache_entries WHERE key IN
				(SELECT key FROM cache_entries WHERE expires_at <= :now ORDER BY expires_at LIMIT :batch)`,
				&sqlitex.ExecOptions{Named: map[string]any{":now": now.Unix(), ":batch": batch}})
			n = conn.Changes()
			return err
		})
		if err != nil {
			return total, err
		}
		total += n
		if n < batch {
			break
		}
		if err := ctx.Err(); err != nil {
			return total, fmt.Errorf("store: cache evict: %w", err)
		}
	}
	for {
		var n int
		err := s.FencedExec(ctx, epoch, func(conn *sqlite.Conn) error {
			var over int64
			err := sqlitex.Execute(conn, "SELECT bytes FROM cache_totals WHERE id = 1", &sqlitex.ExecOptions{
				ResultFunc: func(st *sqlite.Stmt) error { over = st.ColumnInt64(0) - maxBytes; return nil },
			})
			if err != nil || over <= 0 {
				return err
			}
			// Pick the coldest rows until they cover the excess, at most batch of them.
			var keys [][]byte
			err = sqlitex.Execute(conn, "SELECT key, size FROM cache_entries ORDER BY last_hit_at, created_at LIMIT :batch",
				&sqlitex.ExecOptions{
					Named: map[string]any{":batch": batch},
					ResultFunc: func(st *sqlite.Stmt) error {
						if over <= 0 {
							return nil
						}
						keys = append(keys, columnBytes(st, 0))
						over -= st.ColumnInt64(1)
						return nil
					},
				})
			if err != nil {
				return err
			}
			del := conn.Prep("DELETE FROM cache_entries WHERE key = :key")
			for _, k := range keys {
				del.SetBytes(":key", k)
				if _, err := del.Step(); err != nil {
					del.Reset()
					return err
				}
				if err := del.Reset(); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		if err != nil {
			return total, err
		}
		total += n
		if n == 0 {
			return total, nil
		}
		if err := ctx.Err(); err != nil {
			return total, fmt.Errorf("store: cache evict: %w", err)
		}
	}
}

// CacheStats is a snapshot of the L2 cache for the admin and /metrics.
type CacheStats struct {
	Entries         int64
	Bytes           int64 // charged size: bodies, keys and a per-row overhead
	Hits            int64 // hits reported with CacheTouch on the entries still present
	Expired         int64 // entries past their expiry that eviction has not deleted yet
	SemanticEntries int64
	Generation      int64
}

// CacheStats reads the totals; Hits and Expired scan the table, so call it for display,
// not per request.
func (s *Store) CacheStats(ctx context.Context, now time.Time) (CacheStats, error) {
	var st CacheStats
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, `SELECT t.entries, t.bytes,
				(SELECT coalesce(sum(hits), 0) FROM cache_entries),
				(SELECT count(*) FROM cache_entries WHERE expires_at <= :now),
				(SELECT count(*) FROM semantic_entries),
				(SELECT gen FROM change_counters WHERE name = 'cache')
			FROM cache_totals t WHERE t.id = 1`, &sqlitex.ExecOptions{
			Named: map[string]any{":now": now.Unix()},
			ResultFunc: func(r *sqlite.Stmt) error {
				st = CacheStats{Entries: r.ColumnInt64(0), Bytes: r.ColumnInt64(1), Hits: r.ColumnInt64(2),
					Expired: r.ColumnInt64(3), SemanticEntries: r.ColumnInt64(4), Generation: r.ColumnInt64(5)}
				return nil
			},
		})
	})
	if err != nil {
		return CacheStats{}, fmt.Errorf("store: cache stats: %w", err)
	}
	return st, nil
}

// SemanticEntry is one stored vector of the semantic tier; Key names its exact entry.
type SemanticEntry struct {
	Key       []byte
	Namespace string
	Scope     []byte
	Model     string
	Embedder  string
	Vector    []float32
	Text      string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// SemanticPut stores e; its exact entry (e.Key) must already exist, and deleting that entry
// deletes the vector. A second put of the same key and embedder replaces the first.
func (s *Store) SemanticPut(ctx context.Context, e SemanticEntry) error {
	vec := make([]byte, 4*len(e.Vector))
	for i, f := range e.Vector {
		binary.LittleEndian.PutUint32(vec[4*i:], math.Float32bits(f))
	}
	err := s.writeRetry(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, `INSERT INTO semantic_entries (key, namespace, scope_hash, model,
				embedder, dim, vector, text, created_at, expires_at)
			VALUES (:key, :ns, :scope, :model, :emb, :dim, :vec, :text, :created, :expires)
			ON CONFLICT(key, embedder) DO UPDATE SET namespace = excluded.namespace,
				scope_hash = excluded.scope_hash, model = excluded.model, dim = excluded.dim,
				vector = excluded.vector, text = excluded.text, created_at = excluded.created_at,
				expires_at = excluded.expires_at`,
			&sqlitex.ExecOptions{Named: map[string]any{
				":key": e.Key, ":ns": e.Namespace, ":scope": e.Scope, ":model": e.Model, ":emb": e.Embedder,
				":dim": len(e.Vector), ":vec": vec, ":text": e.Text, ":created": e.CreatedAt.Unix(),
				":expires": e.ExpiresAt.Unix(),
			}})
	})
	if err != nil {
		return fmt.Errorf("store: semantic put: %w", err)
	}
	return nil
}

// SemanticLoad calls fn for the unexpired vectors of embedder with dimension dim, newest
// first, at most limit of them (limit <= 0: all), so a worker starting with a bounded index
// keeps the freshest entries. fn must copy anything it keeps except e.Vector, which is
// freshly allocated per row. An error from fn stops the load and is returned.
func (s *Store) SemanticLoad(ctx context.Context, embedder string, dim int, now time.Time, limit int, fn func(e SemanticEntry) error) error {
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, `SELECT key, namespace, scope_hash, model, vector, text, created_at, expires_at
			FROM semantic_entries WHERE embedder = :emb AND dim = :dim AND expires_at > :now
			ORDER BY created_at DESC, id DESC LIMIT :limit`, &sqlitex.ExecOptions{
			Named: map[string]any{":emb": embedder, ":dim": dim, ":now": now.Unix(), ":limit": limit},
			ResultFunc: func(st *sqlite.Stmt) error {
				raw := columnBytes(st, 4)
				if len(raw) != 4*dim {
					return nil // a row written with another dim under the same id: skip it
				}
				vec := make([]float32, dim)
				for i := range vec {
					vec[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
				}
				return fn(SemanticEntry{
					Key: columnBytes(st, 0), Namespace: st.ColumnText(1), Scope: columnBytes(st, 2),
					Model: st.ColumnText(3), Embedder: embedder, Vector: vec, Text: st.ColumnText(5),
					CreatedAt: time.Unix(st.ColumnInt64(6), 0), ExpiresAt: time.Unix(st.ColumnInt64(7), 0),
				})
			},
		})
	})
	if err != nil {
		return fmt.Errorf("store: semantic load: %w", err)
	}
	return nil
}
