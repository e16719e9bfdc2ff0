package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// Session is an admin-console login. The token itself is only in the browser's cookie;
// the store keeps its SHA-256.
type Session struct {
	TokenHash [32]byte
	UserID    int64
	CSRFToken string
	CreatedAt time.Time
	ExpiresAt time.Time
	IP        string
	UserAgent string
}

// CreateSession stores sess.
func (s *Store) CreateSession(ctx context.Context, sess Session) error {
	if sess.UserID == 0 || sess.CSRFToken == "" || sess.ExpiresAt.IsZero() {
		return errors.New("store: create session: user, CSRF token and expiry are required")
	}
	if sess.CreatedAt.IsZero() {
		sess.CreatedAt = time.Now()
	}
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		if err := sqlitex.Execute(conn, `INSERT INTO sessions(token_hash, user_id, csrf_token, created_at, expires_at, ip, user_agent)
VALUES (:hash, :user, :csrf, :created, :expires, :ip, :ua)`, &sqlitex.ExecOptions{Named: map[string]any{
			":hash": sess.TokenHash[:], ":user": sess.UserID, ":csrf": sess.CSRFToken,
			":created": sess.CreatedAt.Unix(), ":expires": sess.ExpiresAt.Unix(), ":ip": sess.IP, ":ua": sess.UserAgent,
		}}); err != nil {
			return err
		}
		// Expired rows are dead weight; a login is rare enough to sweep them here.
		return sqlitex.Execute(conn, "DELETE FROM sessions WHERE expires_at <= :now", &sqlitex.ExecOptions{
			Named: map[string]any{":now": sess.CreatedAt.Unix()},
		})
	})
	if err != nil {
		return fmt.Errorf("store: create session: %w", err)
	}
	return nil
}

// SessionUser returns the live session with tokenHash and its user, or ErrNotFound when
// there is none, it expired at now, or its user is disabled.
func (s *Store) SessionUser(ctx context.Context, tokenHash [32]byte, now time.Time) (Session, User, error) {
	var (
		sess  Session
		u     User
		found bool
	)
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, `SELECT s.user_id, s.csrf_token, s.created_at, s.expires_at, s.ip, s.user_agent,
  u.id, u.username, u.password_hash, u.role, u.must_change_password, u.disabled, u.created_at, u.updated_at
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.token_hash = :hash AND s.expires_at > :now AND u.disabled = 0`, &sqlitex.ExecOptions{
			Named: map[string]any{":hash": tokenHash[:], ":now": now.Unix()},
			ResultFunc: func(stmt *sqlite.Stmt) error {
				found = true
				sess = Session{
					TokenHash: tokenHash,
					UserID:    stmt.ColumnInt64(0),
					CSRFToken: stmt.ColumnText(1),
					CreatedAt: time.Unix(stmt.ColumnInt64(2), 0),
					ExpiresAt: time.Unix(stmt.ColumnInt64(3), 0),
					IP:        stmt.ColumnText(4),
					UserAgent: stmt.ColumnText(5),
				}
				u = User{
					ID: stmt.ColumnInt64(6), Username: stmt.ColumnText(7), PasswordHash: stmt.ColumnText(8),
					Role: stmt.ColumnText(9), MustChangePassword: stmt.ColumnBool(10), Disabled: stmt.ColumnBool(11),
					CreatedAt: time.Unix(stmt.ColumnInt64(12), 0), UpdatedAt: time.Unix(stmt.ColumnInt64(13), 0),
				}
				return nil
			},
		})
	})
	if err != nil {
		return Session{}, User{}, fmt.Errorf("store: read session: %w", err)
	}
	if !found {
		return Session{}, User{}, ErrNotFound
	}
	return sess, u, nil
}

// DeleteSession ends one session; ending a session that does not exist is not an error.
func (s *Store) DeleteSession(ctx context.Context, tokenHash [32]byte) error {
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, "DELETE FROM sessions WHERE token_hash = :hash", &sqlitex.ExecOptions{
			Named: map[string]any{":hash": tokenHash[:]},
		})
	})
	if err != nil {
		return fmt.Errorf("store: delete session: %w", err)
	}
	return nil
}

// DeleteUserSessions ends every session of userID.
func (s *Store) DeleteUserSessions(ctx context.Context, userID int64) error {
	err := s.write(ctx, func(conn *sqlite.Conn) error { return deleteSessionsExcept(conn, userID, nil) })
	if err != nil {
		return fmt.Errorf("store: delete sessions of user %d: %w", userID, err)
	}
	return nil
}

func deleteSessionsExcept(conn *sqlite.Conn, userID int64, keep []byte) error {
	if keep == nil {
		keep = []byte{}
	}
	return sqlitex.Execute(conn, "DELETE FROM sessions WHERE user_id = :user AND token_hash <> :keep", &sqlitex.ExecOptions{
		Named: map[string]any{":user": userID, ":keep": keep},
	})
}
