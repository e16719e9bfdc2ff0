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

// User roles.
const (
	RoleAdmin = "admin" // everything
	RoleUser  = "user"  // only their own keys, usage and logs
)

// ErrLastAdmin is returned when a change would leave no enabled admin.
var ErrLastAdmin = errors.New("store: the last enabled admin cannot be removed, demoted or disabled")

// User is an admin-console account. PasswordHash is an argon2id PHC string; the store
// never sees a plaintext password.
type User struct {
	ID                 int64
	Username           string
	PasswordHash       string
	Role               string
	MustChangePassword bool
	Disabled           bool
	CreatedAt          time.Time
	UpdatedAt          time.Time
	// Models is the user's model allow-list (every key of the user is also bound by it);
	// empty allows every model.
	Models []string
	// Limits apply to all the user's keys together, on top of each key's own; 0 fields
	// mean no limit (the global defaults apply to keys, never to users).
	Limits KeyLimits
}

// UserUpdate changes the non-nil fields of a user.
type UserUpdate struct {
	Username           *string
	Role               *string
	Disabled           *bool
	PasswordHash       *string // also ends every session of the user
	MustChangePassword *bool
	Models             *[]string  // replaces the allow-list; empty allows every model
	Limits             *KeyLimits // replaces every limit; see SetUserLimits
}

// The limit columns are NULL when unset, which ColumnInt64 and ColumnText read as 0 and
// "" (no coalesce, so callers can prefix every name with a table alias).
const userColumns = "id, username, password_hash, role, must_change_password, disabled, created_at, updated_at, models, " +
	"rpm, tpm, max_parallel, budget_micro_usd, budget_tokens, budget_period"

func scanUser(stmt *sqlite.Stmt) User {
	return User{
		ID:                 stmt.ColumnInt64(0),
		Username:           stmt.ColumnText(1),
		PasswordHash:       stmt.ColumnText(2),
		Role:               stmt.ColumnText(3),
		MustChangePassword: stmt.ColumnBool(4),
		Disabled:           stmt.ColumnBool(5),
		CreatedAt:          time.Unix(stmt.ColumnInt64(6), 0),
		UpdatedAt:          time.Unix(stmt.ColumnInt64(7), 0),
		Models:             splitModels(stmt.ColumnText(8)),
		Limits:             scanKeyLimits(stmt, 9),
	}
}

func validRole(r string) bool { return r == RoleAdmin || r == RoleUser }

// CreateUser stores u (ID ignored) and returns its id; ErrExists when the username is
// taken (usernames compare case-insensitively).
func (s *Store) CreateUser(ctx context.Context, u User) (int64, error) {
	if strings.TrimSpace(u.Username) == "" || u.PasswordHash == "" {
		return 0, errors.New("store: create user: username and password hash are required")
	}
	if !validRole(u.Role) {
		return 0, fmt.Errorf("store: create user: invalid role %q", u.Role)
	}
	now := time.Now().Unix()
	var id int64
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		err := sqlitex.Execute(conn, `INSERT INTO users(username, password_hash, role, must_change_password, disabled, created_at, updated_at)
VALUES (:name, :hash, :role, :must, :disabled, :now, :now)`, &sqlitex.ExecOptions{Named: map[string]any{
			":name": u.Username, ":hash": u.PasswordHash, ":role": u.Role,
			":must": u.MustChangePassword, ":disabled": u.Disabled, ":now": now,
		}})
		id = conn.LastInsertRowID()
		return err
	})
	if isUniqueViolation(err) {
		return 0, fmt.Errorf("store: create user %q: %w", u.Username, ErrExists)
	}
	if err != nil {
		return 0, fmt.Errorf("store: create user: %w", err)
	}
	return id, nil
}

// EnsureFirstAdmin creates an admin with the given hash (and must_change_password set)
// when the users table is empty, in one transaction so two supervisors starting together
// create one. It reports whether it created the user.
func (s *Store) EnsureFirstAdmin(ctx context.Context, username, passwordHash string) (bool, error) {
	created := false
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		n := 0
		if err := sqlitex.Execute(conn, "SELECT count(*) FROM users", &sqlitex.ExecOptions{
			ResultFunc: func(stmt *sqlite.Stmt) error { n = stmt.ColumnInt(0); return nil },
		}); err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		now := time.Now().Unix()
		created = true
		return sqlitex.Execute(conn, `INSERT INTO users(username, password_hash, role, must_change_password, created_at, updated_at)
VALUES (:name, :hash, 'admin', 1, :now, :now)`, &sqlitex.ExecOptions{Named: map[string]any{
			":name": username, ":hash": passwordHash, ":now": now,
		}})
	})
	if err != nil {
		return false, fmt.Errorf("store: ensure first admin: %w", err)
	}
	return created, nil
}

// User returns the user with id, or ErrNotFound.
func (s *Store) User(ctx context.Context, id int64) (User, error) {
	return s.userWhere(ctx, "id = :v", id)
}

// UserByName returns the user named username (case-insensitive), or ErrNotFound.
func (s *Store) UserByName(ctx context.Context, username string) (User, error) {
	return s.userWhere(ctx, "username = :v", username)
}

func (s *Store) userWhere(ctx context.Context, where string, v any) (User, error) {
	var u User
	found := false
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, "SELECT "+userColumns+" FROM users WHERE "+where, &sqlitex.ExecOptions{
			Named:      map[string]any{":v": v},
			ResultFunc: func(stmt *sqlite.Stmt) error { u = scanUser(stmt); found = true; return nil },
		})
	})
	if err != nil {
		return User{}, fmt.Errorf("store: read user: %w", err)
	}
	if !found {
		return User{}, ErrNotFound
	}
	return u, nil
}

// ListUsers returns every user ordered by id.
func (s *Store) ListUsers(ctx context.Context) ([]User, error) {
	var out []User
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, "SELECT "+userColumns+" FROM users ORDER BY id", &sqlitex.ExecOptions{
			ResultFunc: func(stmt *sqlite.Stmt) error { out = append(out, scanUser(stmt)); return nil },
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: list users: %w", err)
	}
	return out, nil
}

// UpdateUser applies upd to user id in one transaction. It refuses (ErrLastAdmin) a change
// that would leave no enabled admin. A new password hash, or disabling, ends every session
// of the user except keepSession (the token hash of the session that made the change, or nil).
func (s *Store) UpdateUser(ctx context.Context, id int64, upd UserUpdate, keepSession []byte) (User, error) {
	if upd.Role != nil && !validRole(*upd.Role) {
		return User{}, fmt.Errorf("store: update user: invalid role %q", *upd.Role)
	}
	if upd.Username != nil && strings.TrimSpace(*upd.Username) == "" {
		return User{}, errors.New("store: update user: username is empty")
	}
	var models string
	if upd.Models != nil {
		var err error
		if models, err = joinModels(*upd.Models); err != nil {
			return User{}, fmt.Errorf("store: update user: %w", err)
		}
	}
	if upd.Limits != nil {
		if err := checkLimits(*upd.Limits); err != nil {
			return User{}, fmt.Errorf("store: update user: %w", err)
		}
	}
	var out User
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		sets := []string{"updated_at = :now"}
		args := map[string]any{":id": id, ":now": time.Now().Unix()}
		if upd.Username != nil {
			sets = append(sets, "username = :name")
			args[":name"] = *upd.Username
		}
		if upd.Role != nil {
			sets = append(sets, "role = :role")
			args[":role"] = *upd.Role
		}
		if upd.Disabled != nil {
			sets = append(sets, "disabled = :disabled")
			args[":disabled"] = *upd.Disabled
		}
		if upd.PasswordHash != nil {
			sets = append(sets, "password_hash = :hash")
			args[":hash"] = *upd.PasswordHash
		}
		if upd.MustChangePassword != nil {
			sets = append(sets, "must_change_password = :must")
			args[":must"] = *upd.MustChangePassword
		}
		if upd.Models != nil {
			sets = append(sets, "models = :models")
			args[":models"] = models
		}
		if upd.Limits != nil {
			sets = append(sets, userLimitSets)
			addLimitArgs(args, *upd.Limits)
		}
		if err := sqlitex.Execute(conn, "UPDATE users SET "+strings.Join(sets, ", ")+" WHERE id = :id",
			&sqlitex.ExecOptions{Named: args}); err != nil {
			return err
		}
		if conn.Changes() == 0 {
			return ErrNotFound
		}
		// Only a role or disabled change can remove an admin; checking on other edits would
		// refuse, say, a user's limits in a database that has no admin yet (CLI-only use).
		if upd.Role != nil || upd.Disabled != nil {
			if err := checkAdminLeft(conn); err != nil {
				return err
			}
		}
		if upd.PasswordHash != nil || (upd.Disabled != nil && *upd.Disabled) {
			if err := deleteSessionsExcept(conn, id, keepSession); err != nil {
				return err
			}
		}
		return sqlitex.Execute(conn, "SELECT "+userColumns+" FROM users WHERE id = :id", &sqlitex.ExecOptions{
			Named:      map[string]any{":id": id},
			ResultFunc: func(stmt *sqlite.Stmt) error { out = scanUser(stmt); return nil },
		})
	})
	if isUniqueViolation(err) {
		return User{}, fmt.Errorf("store: update user %d: %w", id, ErrExists)
	}
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrLastAdmin) {
		return User{}, err
	}
	if err != nil {
		return User{}, fmt.Errorf("store: update user %d: %w", id, err)
	}
	return out, nil
}

// DeleteUser removes user id with their sessions and admin tokens; their client keys are
// revoked (kept for the logs, owner cleared by the foreign key). ErrLastAdmin when id is
// the last enabled admin.
func (s *Store) DeleteUser(ctx context.Context, id int64) error {
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		args := &sqlitex.ExecOptions{Named: map[string]any{":id": id, ":now": time.Now().Unix()}}
		if err := sqlitex.Execute(conn, "UPDATE api_keys SET revoked_at = :now, disabled = 0 WHERE user_id = :id AND revoked_at IS NULL", args); err != nil {
			return err
		}
		if err := sqlitex.Execute(conn, "DELETE FROM users WHERE id = :id", &sqlitex.ExecOptions{
			Named: map[string]any{":id": id},
		}); err != nil {
			return err
		}
		if conn.Changes() == 0 {
			return ErrNotFound
		}
		return checkAdminLeft(conn)
	})
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrLastAdmin) {
		return err
	}
	if err != nil {
		return fmt.Errorf("store: delete user %d: %w", id, err)
	}
	return nil
}

// checkAdminLeft fails the transaction when no enabled admin would remain.
func checkAdminLeft(conn *sqlite.Conn) error {
	n := 0
	if err := sqlitex.Execute(conn, "SELECT count(*) FROM users WHERE role = 'admin' AND disabled = 0", &sqlitex.ExecOptions{
		ResultFunc: func(stmt *sqlite.Stmt) error { n = stmt.ColumnInt(0); return nil },
	}); err != nil {
		return err
	}
	if n == 0 {
		return ErrLastAdmin
	}
	return nil
}

// Login throttling.

// LoginAllowed reports whether none of scopes has reached limit failures within the
// window ending at now; when one has, retryAfter is how long until its window ends.
func (s *Store) LoginAllowed(ctx context.Context, scopes []string, limit int, window time.Duration, now time.Time) (bool, time.Duration, error) {
	allowed, wait := true, time.Duration(0)
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		for _, sc := range scopes {
			err := sqlitex.Execute(conn, "SELECT failures, window_start FROM login_failures WHERE scope = :s", &sqlitex.ExecOptions{
				Named: map[string]any{":s": sc},
				ResultFunc: func(stmt *sqlite.Stmt) error {
					end := time.Unix(stmt.ColumnInt64(1), 0).Add(window)
					if stmt.ColumnInt(0) >= limit && now.Before(end) {
						allowed = false
						wait = max(wait, end.Sub(now))
					}
					return nil
				},
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return false, 0, fmt.Errorf("store: login throttle: %w", err)
	}
	return allowed, wait, nil
}

// RecordLoginFailure counts one failure against each scope, starting a new window where
// the old one ended.
func (s *Store) RecordLoginFailure(ctx context.Context, scopes []string, window time.Duration, now time.Time) error {
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		for _, sc := range scopes {
			err := sqlitex.Execute(conn, `INSERT INTO login_failures(scope, failures, window_start) VALUES (:s, 1, :now)
ON CONFLICT(scope) DO UPDATE SET
  failures = CASE WHEN window_start <= :expired THEN 1 ELSE failures + 1 END,
  window_start = CASE WHEN window_start <= :expired THEN :now ELSE window_start END`, &sqlitex.ExecOptions{
				Named: map[string]any{":s": sc, ":now": now.Unix(), ":expired": now.Add(-window).Unix()},
			})
			if err != nil {
				return err
			}
		}
		// Old windows are useless; dropping them here keeps the table small without a task.
		return sqlitex.Execute(conn, "DELETE FROM login_failures WHERE window_start <= :old", &sqlitex.ExecOptions{
			Named: map[string]any{":old": now.Add(-24 * time.Hour).Unix()},
		})
	})
	if err != nil {
		return fmt.Errorf("store: record login failure: %w", err)
	}
	return nil
}

// ClearLoginFailures forgets the failures of scopes (after a successful login).
func (s *Store) ClearLoginFailures(ctx context.Context, scopes []string) error {
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		for _, sc := range scopes {
			if err := sqlitex.Execute(conn, "DELETE FROM login_failures WHERE scope = :s", &sqlitex.ExecOptions{
				Named: map[string]any{":s": sc},
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: clear login failures: %w", err)
	}
	return nil
}
