package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// Key states reported by APIKey.State.
const (
	KeyActive  = "active"
	KeyRevoked = "revoked"
	KeyExpired = "expired"
)

// APIKey is a client key. Only its SHA-256 and a display prefix are stored, never the key.
type APIKey struct {
	ID        int64
	Name      string
	Hash      [32]byte // SHA-256 of the full key
	Prefix    string   // shown in listings so an operator can tell keys apart
	Models    []string // allow-list of public model names; empty allows every model
	CreatedAt time.Time
	ExpiresAt time.Time // zero: never expires
	RevokedAt time.Time // zero: not revoked
	UserID    int64     // owner; 0: none (created by the CLI)
	Limits    KeyLimits
	// UserLimits are the owner's limits, shared by all the owner's keys (read by
	// ListAPIKeys so the workers' key snapshot carries them); zero without an owner.
	UserLimits KeyLimits
}

// State reports "revoked", "expired" or "active" at now. Revocation wins over expiry
// because it is the operator's explicit decision.
func (k *APIKey) State(now time.Time) string {
	switch {
	case !k.RevokedAt.IsZero():
		return KeyRevoked
	case !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt):
		return KeyExpired
	}
	return KeyActive
}

// KeyLimits are a key's own limits; 0 means none (the global default applies).
type KeyLimits struct {
	RPM            int64  // requests in any 60 s
	TPM            int64  // tokens in any 60 s
	MaxParallel    int64  // requests in flight at once
	BudgetMicroUSD int64  // spend per BudgetPeriod, micro-USD
	BudgetTokens   int64  // tokens per BudgetPeriod
	BudgetPeriod   string // day, month or total; "" with no budget
}

func nullPositive(v int64) any {
	if v <= 0 {
		return nil
	}
	return v
}

// SetAPIKeyLimits replaces key id's limits; ErrNotFound when there is no such key.
func (s *Store) SetAPIKeyLimits(ctx context.Context, id int64, l KeyLimits) error {
	var period any
	if l.BudgetPeriod != "" {
		period = l.BudgetPeriod
	}
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		return execOne(conn, `UPDATE api_keys SET rpm = :rpm, tpm = :tpm, max_parallel = :par,
budget_micro_usd = :bmu, budget_tokens = :btok, budget_period = :period WHERE id = :id`, &sqlitex.ExecOptions{
			Named: map[string]any{":id": id, ":rpm": nullPositive(l.RPM), ":tpm": nullPositive(l.TPM),
				":par": nullPositive(l.MaxParallel), ":bmu": nullPositive(l.BudgetMicroUSD),
				":btok": nullPositive(l.BudgetTokens), ":period": period},
		})
	})
	if err != nil {
		return fmt.Errorf("store: set limits of api key %d: %w", id, err)
	}
	return nil
}

// CreateAPIKey stores k (ID is ignored; a zero CreatedAt means now) and returns its id.
// It returns ErrExists when a key with the same hash is already stored.
func (s *Store) CreateAPIKey(ctx context.Context, k APIKey) (int64, error) {
	if k.Name == "" {
		return 0, fmt.Errorf("store: create api key: name is empty")
	}
	if k.CreatedAt.IsZero() {
		k.CreatedAt = time.Now()
	}
	for _, m := range k.Models {
		if m == "" || strings.Contains(m, ",") {
			return 0, fmt.Errorf("store: create api key: invalid model name %q", m)
		}
	}
	var id int64
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		var period any
		if k.Limits.BudgetPeriod != "" {
			period = k.Limits.BudgetPeriod
		}
		var user any
		if k.UserID > 0 {
			user = k.UserID
		}
		err := sqlitex.Execute(conn, `INSERT INTO api_keys(name, hash, prefix, models, created_at, expires_at, revoked_at,
    user_id, rpm, tpm, max_parallel, budget_micro_usd, budget_tokens, budget_period)
VALUES (:name, :hash, :prefix, :models, :created, :expires, :revoked,
    :user, :rpm, :tpm, :par, :bmu, :btok, :period)`, &sqlitex.ExecOptions{
			Named: map[string]any{
				":name":    k.Name,
				":hash":    k.Hash[:],
				":prefix":  k.Prefix,
				":models":  strings.Join(k.Models, ","),
				":created": k.CreatedAt.Unix(),
				":expires": nullUnix(k.ExpiresAt),
				":revoked": nullUnix(k.RevokedAt),
				":user":    user,
				":rpm":     nullPositive(k.Limits.RPM),
				":tpm":     nullPositive(k.Limits.TPM),
				":par":     nullPositive(k.Limits.MaxParallel),
				":bmu":     nullPositive(k.Limits.BudgetMicroUSD),
				":btok":    nullPositive(k.Limits.BudgetTokens),
				":period":  period,
			},
		})
		if err != nil {
			return err
		}
		id = conn.LastInsertRowID()
		return nil
	})
	if isUniqueViolation(err) {
		return 0, fmt.Errorf("store: create api key %q: %w", k.Name, ErrExists)
	}
	if err != nil {
		return 0, fmt.Errorf("store: create api key: %w", err)
	}
	return id, nil
}

// ListAPIKeys returns every key, revoked and expired ones included, ordered by id.
func (s *Store) ListAPIKeys(ctx context.Context) ([]APIKey, error) {
	var keys []APIKey
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		// The owner's limits come with the key (one join, no query per user) because
		// workers enforce both from the same snapshot.
		return sqlitex.Execute(conn, `SELECT k.id, k.name, k.hash, k.prefix, k.models, k.created_at, k.expires_at, k.revoked_at,
    coalesce(k.user_id, 0), coalesce(k.rpm, 0), coalesce(k.tpm, 0), coalesce(k.max_parallel, 0),
    coalesce(k.budget_micro_usd, 0), coalesce(k.budget_tokens, 0), coalesce(k.budget_period, ''),
    coalesce(u.rpm, 0), coalesce(u.tpm, 0), coalesce(u.max_parallel, 0),
    coalesce(u.budget_micro_usd, 0), coalesce(u.budget_tokens, 0), coalesce(u.budget_period, '')
FROM api_keys k LEFT JOIN users u ON u.id = k.user_id ORDER BY k.id`, &sqlitex.ExecOptions{
			ResultFunc: func(stmt *sqlite.Stmt) error {
				k := APIKey{
					ID:        stmt.ColumnInt64(0),
					Name:      stmt.ColumnText(1),
					Prefix:    stmt.ColumnText(3),
					CreatedAt: time.Unix(stmt.ColumnInt64(5), 0),
					ExpiresAt: columnUnix(stmt, 6),
					RevokedAt: columnUnix(stmt, 7),
					UserID:    stmt.ColumnInt64(8),
					Limits: KeyLimits{
						RPM:            stmt.ColumnInt64(9),
						TPM:            stmt.ColumnInt64(10),
						MaxParallel:    stmt.ColumnInt64(11),
						BudgetMicroUSD: stmt.ColumnInt64(12),
						BudgetTokens:   stmt.ColumnInt64(13),
						BudgetPeriod:   stmt.ColumnText(14),
					},
					UserLimits: scanKeyLimits(stmt, 15),
				}
				if n := stmt.ColumnLen(2); n != len(k.Hash) {
					return fmt.Errorf("api key %d: hash is %d bytes, want %d", k.ID, n, len(k.Hash))
				}
				stmt.ColumnBytes(2, k.Hash[:])
				if m := stmt.ColumnText(4); m != "" {
					k.Models = strings.Split(m, ",")
				}
				keys = append(keys, k)
				return nil
			},
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: list api keys: %w", err)
	}
	return keys, nil
}

// RevokeAPIKey marks key id revoked at at. Revoking an already revoked key keeps the
// first revocation time. It returns ErrNotFound when no key has that id.
func (s *Store) RevokeAPIKey(ctx context.Context, id int64, at time.Time) error {
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		found := false
		err := sqlitex.Execute(conn, "SELECT 1 FROM api_keys WHERE id = :id", &sqlitex.ExecOptions{
			Named:      map[string]any{":id": id},
			ResultFunc: func(*sqlite.Stmt) error { found = true; return nil },
		})
		if err != nil {
			return err
		}
		if !found {
			return ErrNotFound
		}
		// Only an active key is updated, so a repeated revoke does not bump the change
		// counter and make every worker rebuild its snapshot for nothing.
		return sqlitex.Execute(conn, "UPDATE api_keys SET revoked_at = :at WHERE id = :id AND revoked_at IS NULL", &sqlitex.ExecOptions{
			Named: map[string]any{":id": id, ":at": at.Unix()},
		})
	})
	if err != nil {
		return fmt.Errorf("store: revoke api key %d: %w", id, err)
	}
	return nil
}

// nullUnix maps the zero time to SQL NULL.
func nullUnix(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.Unix()
}

// columnUnix maps SQL NULL to the zero time.
func columnUnix(stmt *sqlite.Stmt, col int) time.Time {
	if stmt.ColumnIsNull(col) {
		return time.Time{}
	}
	return time.Unix(stmt.ColumnInt64(col), 0)
}

func isUniqueViolation(err error) bool {
	code := sqlite.ErrCode(err)
	return code == sqlite.ResultConstraintUnique || code == sqlite.ResultConstraintPrimaryKey
}
