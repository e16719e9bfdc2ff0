package store

import (
	"errors"
	"testing"
	"time"
)

func TestSessionsLifecycle(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	if _, err := s.EnsureFirstAdmin(ctx, "admin", "h"); err != nil {
		t.Fatal(err)
	}
	admin, _ := s.UserByName(ctx, "admin")
	now := time.Now()
	a, b := [32]byte{1}, [32]byte{2}
	for _, h := range [][32]byte{a, b} {
		if err := s.CreateSession(ctx, Session{TokenHash: h, UserID: admin.ID, CSRFToken: "csrf", ExpiresAt: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	sess, u, err := s.SessionUser(ctx, a, now)
	if err != nil || u.ID != admin.ID || sess.CSRFToken != "csrf" {
		t.Fatalf("SessionUser = %+v, %+v, %v", sess, u, err)
	}
	if _, _, err := s.SessionUser(ctx, a, now.Add(time.Hour)); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired session: err = %v, want ErrNotFound", err)
	}
	// A password change ends every other session.
	hash := "new"
	if _, err := s.UpdateUser(ctx, admin.ID, UserUpdate{PasswordHash: &hash}, a[:]); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.SessionUser(ctx, a, now); err != nil {
		t.Errorf("the session that changed the password was ended: %v", err)
	}
	if _, _, err := s.SessionUser(ctx, b, now); !errors.Is(err, ErrNotFound) {
		t.Errorf("other session survived a password change: %v", err)
	}
	if err := s.DeleteSession(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.SessionUser(ctx, a, now); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted session: %v", err)
	}
}
