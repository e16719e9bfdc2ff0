package store

import (
	"errors"
	"testing"
	"time"
)

func TestUsersCRUDAndLastAdmin(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)

	created, err := s.EnsureFirstAdmin(ctx, "admin", "hash-1")
	if err != nil || !created {
		t.Fatalf("EnsureFirstAdmin = %t, %v; want created", created, err)
	}
	if created, err := s.EnsureFirstAdmin(ctx, "other", "hash-2"); err != nil || created {
		t.Fatalf("second EnsureFirstAdmin = %t, %v; want nothing created", created, err)
	}
	admin, err := s.UserByName(ctx, "ADMIN")
	if err != nil {
		t.Fatalf("UserByName is case-insensitive: %v", err)
	}
	if admin.Role != RoleAdmin || !admin.MustChangePassword || admin.PasswordHash != "hash-1" {
		t.Errorf("first admin = %+v", admin)
	}
	if _, err := s.CreateUser(ctx, User{Username: "Admin", PasswordHash: "x", Role: RoleUser}); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate username: err = %v, want ErrExists", err)
	}
	if _, err := s.CreateUser(ctx, User{Username: "bob", PasswordHash: "x", Role: "root"}); err == nil {
		t.Error("invalid role accepted")
	}
	bobID, err := s.CreateUser(ctx, User{Username: "bob", PasswordHash: "x", Role: RoleUser})
	if err != nil {
		t.Fatal(err)
	}

	// The only admin cannot be demoted, disabled or deleted; nothing is half-written.
	user := RoleUser
	yes := true
	for name, upd := range map[string]UserUpdate{"demote": {Role: &user}, "disable": {Disabled: &yes}} {
		if _, err := s.UpdateUser(ctx, admin.ID, upd, nil); !errors.Is(err, ErrLastAdmin) {
			t.Errorf("%s last admin: err = %v, want ErrLastAdmin", name, err)
		}
	}
	if err := s.DeleteUser(ctx, admin.ID); !errors.Is(err, ErrLastAdmin) {
		t.Errorf("delete last admin: err = %v, want ErrLastAdmin", err)
	}
	if got, _ := s.User(ctx, admin.ID); got.Role != RoleAdmin || got.Disabled {
		t.Errorf("refused change was written: %+v", got)
	}

	// A second admin makes the first removable.
	adminRole := RoleAdmin
	if _, err := s.UpdateUser(ctx, bobID, UserUpdate{Role: &adminRole}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteUser(ctx, admin.ID); err != nil {
		t.Fatalf("delete with another admin left: %v", err)
	}
	if _, err := s.User(ctx, admin.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted user still readable: %v", err)
	}
	if err := s.DeleteUser(ctx, 999); !errors.Is(err, ErrNotFound) {
		t.Errorf("delete missing: %v", err)
	}
	users, err := s.ListUsers(ctx)
	if err != nil || len(users) != 1 || users[0].Username != "bob" {
		t.Errorf("ListUsers = %+v, %v", users, err)
	}
}

func TestDeleteUserRevokesTheirKeys(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	if _, err := s.EnsureFirstAdmin(ctx, "admin", "h"); err != nil {
		t.Fatal(err)
	}
	uid, err := s.CreateUser(ctx, User{Username: "carol", PasswordHash: "h", Role: RoleUser})
	if err != nil {
		t.Fatal(err)
	}
	kid, err := s.CreateOwnedAPIKey(ctx, APIKey{Name: "k", Hash: [32]byte{1}, Prefix: "sk-1"}, uid)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteUser(ctx, uid); err != nil {
		t.Fatal(err)
	}
	k, err := s.OwnedKey(ctx, kid)
	if err != nil {
		t.Fatal(err)
	}
	if k.RevokedAt.IsZero() || k.UserID != 0 {
		t.Errorf("key of a deleted user = %+v, want revoked and without owner", k)
	}
}

func TestLoginThrottle(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	now := time.Unix(1_800_000_000, 0)
	scopes := []string{"ip:1.2.3.4", "user:alice"}
	const limit, window = 3, 10 * time.Minute
	for i := 0; i < limit; i++ {
		ok, _, err := s.LoginAllowed(ctx, scopes, limit, window, now)
		if err != nil || !ok {
			t.Fatalf("attempt %d refused: %v", i, err)
		}
		if err := s.RecordLoginFailure(ctx, scopes[1:], window, now); err != nil {
			t.Fatal(err)
		}
	}
	ok, wait, err := s.LoginAllowed(ctx, scopes, limit, window, now.Add(time.Minute))
	if err != nil || ok || wait != 9*time.Minute {
		t.Errorf("after %d failures: allowed %t, wait %s, %v; want refused for 9m", limit, ok, wait, err)
	}
	// Another user from another address is not affected.
	if ok, _, _ := s.LoginAllowed(ctx, []string{"ip:5.6.7.8", "user:bob"}, limit, window, now); !ok {
		t.Error("an unrelated user was throttled")
	}
	// The window ends.
	if ok, _, _ := s.LoginAllowed(ctx, scopes, limit, window, now.Add(window)); !ok {
		t.Error("still throttled after the window")
	}
	if err := s.ClearLoginFailures(ctx, scopes); err != nil {
		t.Fatal(err)
	}
	if ok, _, _ := s.LoginAllowed(ctx, scopes, limit, window, now.Add(time.Minute)); !ok {
		t.Error("still throttled after clearing")
	}
}
