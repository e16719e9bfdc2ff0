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

// AdminToken is an admin API token ("lpa-..."): Bearer auth on the admin API for
// automation, acting as its user. Only its SHA-256 and a display prefix are stored.
type AdminToken struct {
	ID         int64
	UserID     int64
	Name       string
	Hash       [32]byte
	Prefix     string
	CreatedAt  time.Time
	ExpiresAt  time.Time // zero: never
	LastUsedAt time.Time // zero: never used
}

const adminTokenColumns = "id, user_id, name, hash, prefix, created_at, expires_at, last_used_at"

func scanAdminToken(stmt *sqlite.Stmt) AdminToken {
	t := AdminToken{
		ID: stmt.ColumnInt64(0), UserID: stmt.ColumnInt64(1), Name: stmt.ColumnText(2),
		Prefix: stmt.ColumnText(4), CreatedAt: time.Unix(stmt.ColumnInt64(5), 0),
		ExpiresAt: columnUnix(stmt, 6), LastUsedAt: columnUnix(stmt, 7),
	}
	stmt.ColumnBytes(3, t.Hash[:])
	return t
}

// CreateAdminToken stores t (ID ignored) and returns its id.
func (s *Store) CreateAdminToken(ctx context.Context, t AdminToken) (int64, error) {
	if t.Name == "" || t.UserID == 0 {
		return 0, errors.New("store: create admin token: name and user are required")
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = time.Now()
	}
	var id int64
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		err := sqlitex.Execute(conn, `INSERT INTO admin_tokens(user_id, name, hash, prefix, created_at, expires_at)
VALUES (:user, :name, :hash, :prefix, :created, :expires)`, &sqlitex.ExecOptions{Named: map[string]any{
			":user": t.UserID, ":name": t.Name, ":hash": t.Hash[:], ":prefix": t.Prefix,
			":created": t.CreatedAt.Unix(), ":expires": nullUnix(t.ExpiresAt),
		}})
		id = conn.LastInsertRowID()
		return err
	})
	if isUniqueViolation(err) {
		return 0, fmt.Errorf("store: create admin token: %w", ErrExists)
	}
	if err != nil {
		return 0, fmt.Errorf("store: create admin token: %w", err)
	}
	return id, nil
}

// ListAdminTokens returns the tokens of userID (every token when userID is 0), by id.
func (s *Store) ListAdminTokens(ctx context.Context, userID int64) ([]AdminToken, error) {
	var out []AdminToken
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, "SELECT "+adminTokenColumns+" FROM admin_tokens WHERE (:user = 0 OR user_id = :user) ORDER BY id",
			&sqlitex.ExecOptions{
				Named:      map[string]any{":user": userID},
				ResultFunc: func(stmt *sqlite.Stmt) error { out = append(out, scanAdminToken(stmt)); return nil },
			})
	})
	if err != nil {
		return nil, fmt.Errorf("store: list admin tokens: %w", err)
	}
	return out, nil
}

// DeleteAdminToken removes token id; ErrNotFound when there is none.
func (s *Store) DeleteAdminToken(ctx context.Context, id int64) error {
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		return execOne(conn, "DELETE FROM admin_tokens WHERE id = :id", &sqlitex.ExecOptions{
			Named: map[string]any{":id": id},
		})
	})
	if errors.Is(err, ErrNotFound) {
		return err
	}
	if err != nil {
		return fmt.Errorf("store: delete admin token %d: %w", id, err)
	}
	return nil
}

// AdminTokenUser returns the unexpired token with hash and its enabled user, or
// ErrNotFound. It records the use at most once a minute, so automation polling the API
// does not turn every read into a write.
func (s *Store) AdminTokenUser(ctx context.Context, hash [32]byte, now time.Time) (AdminToken, User, error) {
	var (
		t     AdminToken
		u     User
		found bool
	)
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, `SELECT t.id, t.user_id, t.name, t.hash, t.prefix, t.created_at, t.expires_at, t.last_used_at,
  `+prefixed("u.", userColumns)+`
FROM admin_tokens t JOIN users u ON u.id = t.user_id
WHERE t.hash = :hash AND (t.expires_at IS NULL OR t.expires_at > :now) AND u.disabled = 0`, &sqlitex.ExecOptions{
			Named: map[string]any{":hash": hash[:], ":now": now.Unix()},
			ResultFunc: func(stmt *sqlite.Stmt) error {
				found = true
				t = scanAdminToken(stmt)
				u = User{
					ID: stmt.ColumnInt64(8), Username: stmt.ColumnText(9), PasswordHash: stmt.ColumnText(10),
					Role: stmt.ColumnText(11), MustChangePassword: stmt.ColumnBool(12), Disabled: stmt.ColumnBool(13),
					CreatedAt: time.Unix(stmt.ColumnInt64(14), 0), UpdatedAt: time.Unix(stmt.ColumnInt64(15), 0),
				}
				return nil
			},
		})
	})
	if err != nil {
		return AdminToken{}, User{}, fmt.Errorf("store: read admin token: %w", err)
	}
	if !found {
		return AdminToken{}, User{}, ErrNotFound
	}
	if now.Sub(t.LastUsedAt) >= time.Minute {
		err := s.write(ctx, func(conn *sqlite.Conn) error {
			return sqlitex.Execute(conn, "UPDATE admin_tokens SET last_used_at = :now WHERE id = :id", &sqlitex.ExecOptions{
				Named: map[string]any{":now": now.Unix(), ":id": t.ID},
			})
		})
		if err != nil && !IsTransient(err) {
			return AdminToken{}, User{}, fmt.Errorf("store: record admin token use: %w", err)
		}
		t.LastUsedAt = now
	}
	return t, u, nil
}

func prefixed(p, cols string) string {
	parts := strings.Split(cols, ", ")
	for i := range parts {
		parts[i] = p + parts[i]
	}
	return strings.Join(parts, ", ")
}

// Client keys as the admin sees them: with owner and the reversible "disabled" state.

// OwnedKey is a client key with its owner (0: none, e.g. made by the CLI) and whether its
// revocation is a reversible disable.
type OwnedKey struct {
	APIKey
	UserID   int64
	Username string // "" when UserID is 0
	Disabled bool
}

// KeyUpdate changes the non-nil fields of a client key.
type KeyUpdate struct {
	Name      *string
	Models    *[]string  // empty allows every model
	ExpiresAt *time.Time // zero time: never
	Enabled   *bool      // false disables (reversibly); true re-enables a disabled key
}

// CreateOwnedAPIKey is CreateAPIKey with an owner (0: none), in one statement.
func (s *Store) CreateOwnedAPIKey(ctx context.Context, k APIKey, userID int64) (int64, error) {
	if strings.TrimSpace(k.Name) == "" {
		return 0, errors.New("store: create api key: name is empty")
	}
	if err := checkModels(k.Models); err != nil {
		return 0, fmt.Errorf("store: create api key: %w", err)
	}
	if k.CreatedAt.IsZero() {
		k.CreatedAt = time.Now()
	}
	var owner any
	if userID != 0 {
		owner = userID
	}
	var id int64
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		err := sqlitex.Execute(conn, `INSERT INTO api_keys(name, hash, prefix, models, created_at, expires_at, user_id)
VALUES (:name, :hash, :prefix, :models, :created, :expires, :user)`, &sqlitex.ExecOptions{Named: map[string]any{
			":name": k.Name, ":hash": k.Hash[:], ":prefix": k.Prefix, ":models": strings.Join(k.Models, ","),
			":created": k.CreatedAt.Unix(), ":expires": nullUnix(k.ExpiresAt), ":user": owner,
		}})
		id = conn.LastInsertRowID()
		return err
	})
	if isUniqueViolation(err) {
		return 0, fmt.Errorf("store: create api key %q: %w", k.Name, ErrExists)
	}
	if err != nil {
		return 0, fmt.Errorf("store: create api key: %w", err)
	}
	return id, nil
}

func checkModels(models []string) error {
	for _, m := range models {
		if m == "" || strings.Contains(m, ",") {
			return fmt.Errorf("invalid model name %q", m)
		}
	}
	return nil
}

// OwnedKeys returns the client keys of userID (every key when userID is 0), by id.
func (s *Store) OwnedKeys(ctx context.Context, userID int64) ([]OwnedKey, error) {
	var out []OwnedKey
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, `SELECT k.id, k.name, k.hash, k.prefix, k.models, k.created_at, k.expires_at, k.revoked_at,
  coalesce(k.user_id, 0), coalesce(u.username, ''), k.disabled
FROM api_keys k LEFT JOIN users u ON u.id = k.user_id
WHERE (:user = 0 OR k.user_id = :user) ORDER BY k.id`, &sqlitex.ExecOptions{
			Named:      map[string]any{":user": userID},
			ResultFunc: func(stmt *sqlite.Stmt) error { out = append(out, scanOwnedKey(stmt)); return nil },
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: list api keys: %w", err)
	}
	return out, nil
}

// OwnedKey returns client key id, or ErrNotFound.
func (s *Store) OwnedKey(ctx context.Context, id int64) (OwnedKey, error) {
	var (
		k     OwnedKey
		found bool
	)
	err := s.read(ctx, func(conn *sqlite.Conn) error { return readOwnedKey(conn, id, &k, &found) })
	if err != nil {
		return OwnedKey{}, fmt.Errorf("store: read api key %d: %w", id, err)
	}
	if !found {
		return OwnedKey{}, ErrNotFound
	}
	return k, nil
}

func readOwnedKey(conn *sqlite.Conn, id int64, k *OwnedKey, found *bool) error {
	return sqlitex.Execute(conn, `SELECT k.id, k.name, k.hash, k.prefix, k.models, k.created_at, k.expires_at, k.revoked_at,
  coalesce(k.user_id, 0), coalesce(u.username, ''), k.disabled
FROM api_keys k LEFT JOIN users u ON u.id = k.user_id WHERE k.id = :id`, &sqlitex.ExecOptions{
		Named:      map[string]any{":id": id},
		ResultFunc: func(stmt *sqlite.Stmt) error { *k = scanOwnedKey(stmt); *found = true; return nil },
	})
}

func scanOwnedKey(stmt *sqlite.Stmt) OwnedKey {
	k := OwnedKey{APIKey: APIKey{
		ID: stmt.ColumnInt64(0), Name: stmt.ColumnText(1), Prefix: stmt.ColumnText(3),
		CreatedAt: time.Unix(stmt.ColumnInt64(5), 0), ExpiresAt: columnUnix(stmt, 6), RevokedAt: columnUnix(stmt, 7),
	}}
	stmt.ColumnBytes(2, k.Hash[:])
	if m := stmt.ColumnText(4); m != "" {
		k.Models = strings.Split(m, ",")
	}
	k.UserID = stmt.ColumnInt64(8)
	k.Username = stmt.ColumnText(9)
	k.Disabled = stmt.ColumnBool(10)
	return k
}

// ErrKeyRevoked is returned when re-enabling a key that was revoked for good.
var ErrKeyRevoked = errors.New("store: the key is revoked; create a new one")

// UpdateAPIKey applies upd to key id at now in one transaction and returns the key.
// Disabling sets revoked_at (every worker refuses the key) and marks it disabled;
// enabling clears both, but only for a disabled key: a revoked one stays revoked.
func (s *Store) UpdateAPIKey(ctx context.Context, id int64, upd KeyUpdate, now time.Time) (OwnedKey, error) {
	return s.UpdateAPIKeyWithLimits(ctx, id, upd, nil, now)
}

// RevokeOwnedKey revokes key id for good at now (a disabled key becomes revoked).
func (s *Store) RevokeOwnedKey(ctx context.Context, id int64, now time.Time) error {
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		if err := sqlitex.Execute(conn, `UPDATE api_keys SET revoked_at = coalesce(revoked_at, :now), disabled = 0
WHERE id = :id AND (revoked_at IS NULL OR disabled = 1)`, &sqlitex.ExecOptions{
			Named: map[string]any{":id": id, ":now": now.Unix()},
		}); err != nil {
			return err
		}
		if conn.Changes() > 0 {
			return nil
		}
		n := 0
		if err := sqlitex.Execute(conn, "SELECT count(*) FROM api_keys WHERE id = :id", &sqlitex.ExecOptions{
			Named: map[string]any{":id": id}, ResultFunc: func(stmt *sqlite.Stmt) error { n = stmt.ColumnInt(0); return nil },
		}); err != nil {
			return err
		}
		if n == 0 {
			return ErrNotFound
		}
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return err
	}
	if err != nil {
		return fmt.Errorf("store: revoke api key %d: %w", id, err)
	}
	return nil
}
