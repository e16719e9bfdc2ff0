package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// Queries the web admin needs beyond the CLI's: key limits next to the owned-key
// listing, one-transaction key edits with limits, and the cache broken down per model.

const keyLimitCols = `coalesce(rpm, 0), coalesce(tpm, 0), coalesce(max_parallel, 0),
    coalesce(budget_micro_usd, 0), coalesce(budget_tokens, 0), coalesce(budget_period, '')`

func scanKeyLimits(stmt *sqlite.Stmt, first int) KeyLimits {
	return KeyLimits{
		RPM: stmt.ColumnInt64(first), TPM: stmt.ColumnInt64(first + 1), MaxParallel: stmt.ColumnInt64(first + 2),
		BudgetMicroUSD: stmt.ColumnInt64(first + 3), BudgetTokens: stmt.ColumnInt64(first + 4), BudgetPeriod: stmt.ColumnText(first + 5),
	}
}

// APIKeyLimits returns the limits of the keys of userID (every key when userID is 0), by
// key id, the same selection as OwnedKeys.
func (s *Store) APIKeyLimits(ctx context.Context, userID int64) (map[int64]KeyLimits, error) {
	out := map[int64]KeyLimits{}
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, `SELECT id, `+keyLimitCols+` FROM api_keys WHERE (:user = 0 OR user_id = :user)`,
			&sqlitex.ExecOptions{
				Named:      map[string]any{":user": userID},
				ResultFunc: func(stmt *sqlite.Stmt) error { out[stmt.ColumnInt64(0)] = scanKeyLimits(stmt, 1); return nil },
			})
	})
	if err != nil {
		return nil, fmt.Errorf("store: read api key limits: %w", err)
	}
	return out, nil
}

func readKeyLimits(conn *sqlite.Conn, id int64) (KeyLimits, error) {
	var l KeyLimits
	err := sqlitex.Execute(conn, `SELECT `+keyLimitCols+` FROM api_keys WHERE id = :id`, &sqlitex.ExecOptions{
		Named:      map[string]any{":id": id},
		ResultFunc: func(stmt *sqlite.Stmt) error { l = scanKeyLimits(stmt, 0); return nil },
	})
	return l, err
}

// OwnedKeyWithLimits is OwnedKey with Limits filled in.
func (s *Store) OwnedKeyWithLimits(ctx context.Context, id int64) (OwnedKey, error) {
	var (
		k     OwnedKey
		found bool
	)
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		if err := readOwnedKey(conn, id, &k, &found); err != nil || !found {
			return err
		}
		var err error
		k.Limits, err = readKeyLimits(conn, id)
		return err
	})
	if err != nil {
		return OwnedKey{}, fmt.Errorf("store: read api key %d: %w", id, err)
	}
	if !found {
		return OwnedKey{}, ErrNotFound
	}
	return k, nil
}

// UpdateAPIKeyWithLimits is UpdateAPIKey that also replaces the key's limits when limits
// is not nil, all in one transaction, so an admin's save of the key form is applied
// entirely or not at all. The returned key has Limits filled in.
func (s *Store) UpdateAPIKeyWithLimits(ctx context.Context, id int64, upd KeyUpdate, limits *KeyLimits, now time.Time) (OwnedKey, error) {
	if upd.Name != nil && strings.TrimSpace(*upd.Name) == "" {
		return OwnedKey{}, errors.New("store: update api key: name is empty")
	}
	if upd.Models != nil {
		if err := checkModels(*upd.Models); err != nil {
			return OwnedKey{}, fmt.Errorf("store: update api key: %w", err)
		}
	}
	var out OwnedKey
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		var (
			cur   OwnedKey
			found bool
		)
		if err := readOwnedKey(conn, id, &cur, &found); err != nil {
			return err
		}
		if !found {
			return ErrNotFound
		}
		sets := []string{}
		args := map[string]any{":id": id}
		if upd.Name != nil {
			sets = append(sets, "name = :name")
			args[":name"] = *upd.Name
		}
		if upd.Models != nil {
			sets = append(sets, "models = :models")
			args[":models"] = strings.Join(*upd.Models, ",")
		}
		if upd.ExpiresAt != nil {
			sets = append(sets, "expires_at = :expires")
			args[":expires"] = nullUnix(*upd.ExpiresAt)
		}
		if upd.Enabled != nil {
			switch {
			case *upd.Enabled && !cur.RevokedAt.IsZero() && !cur.Disabled:
				return ErrKeyRevoked
			case *upd.Enabled && cur.Disabled:
				sets = append(sets, "revoked_at = NULL", "disabled = 0")
			case !*upd.Enabled && cur.RevokedAt.IsZero():
				sets = append(sets, "revoked_at = :now", "disabled = 1")
				args[":now"] = now.Unix()
			}
		}
		if limits != nil {
			var period any
			if limits.BudgetPeriod != "" {
				period = limits.BudgetPeriod
			}
			sets = append(sets, "rpm = :rpm", "tpm = :tpm", "max_parallel = :par", "budget_micro_usd = :bmu",
				"budget_tokens = :btok", "budget_period = :period")
			args[":rpm"], args[":tpm"], args[":par"] = nullPositive(limits.RPM), nullPositive(limits.TPM), nullPositive(limits.MaxParallel)
			args[":bmu"], args[":btok"], args[":period"] = nullPositive(limits.BudgetMicroUSD), nullPositive(limits.BudgetTokens), period
		}
		if len(sets) > 0 {
			if err := sqlitex.Execute(conn, "UPDATE api_keys SET "+strings.Join(sets, ", ")+" WHERE id = :id",
				&sqlitex.ExecOptions{Named: args}); err != nil {
				return err
			}
		}
		if err := readOwnedKey(conn, id, &out, &found); err != nil {
			return err
		}
		var err error
		out.Limits, err = readKeyLimits(conn, id)
		return err
	})
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrKeyRevoked) {
		return OwnedKey{}, err
	}
	if err != nil {
		return OwnedKey{}, fmt.Errorf("store: update api key %d: %w", id, err)
	}
	return out, nil
}

// CacheModelStats is the L2 cache of one model.
type CacheModelStats struct {
	Model   string
	Entries int64
	Bytes   int64 // charged size, as in CacheStats
	Hits    int64
	Expired int64 // past expiry, not yet evicted
}

// CacheStatsByModel breaks the L2 cache down per model, largest first. It scans the
// table (one pass over the model index), so it is for display, not per request.
func (s *Store) CacheStatsByModel(ctx context.Context, now time.Time) ([]CacheModelStats, error) {
	var out []CacheModelStats
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, `SELECT model, count(*), coalesce(sum(size), 0), coalesce(sum(hits), 0),
    coalesce(sum(expires_at <= :now), 0)
FROM cache_entries GROUP BY model ORDER BY 3 DESC, model`, &sqlitex.ExecOptions{
			Named: map[string]any{":now": now.Unix()},
			ResultFunc: func(stmt *sqlite.Stmt) error {
				out = append(out, CacheModelStats{Model: stmt.ColumnText(0), Entries: stmt.ColumnInt64(1), Bytes: stmt.ColumnInt64(2),
					Hits: stmt.ColumnInt64(3), Expired: stmt.ColumnInt64(4)})
				return nil
			},
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: cache stats by model: %w", err)
	}
	return out, nil
}
