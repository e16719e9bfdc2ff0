package store

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestAdminTokens(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	if _, err := s.EnsureFirstAdmin(ctx, "admin", "h"); err != nil {
		t.Fatal(err)
	}
	admin, _ := s.UserByName(ctx, "admin")
	now := time.Now()
	live, expired := [32]byte{7}, [32]byte{8}
	id, err := s.CreateAdminToken(ctx, AdminToken{UserID: admin.ID, Name: "ci", Hash: live, Prefix: "lpa-ab"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateAdminToken(ctx, AdminToken{UserID: admin.ID, Name: "old", Hash: expired, Prefix: "lpa-cd", ExpiresAt: now.Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	tok, u, err := s.AdminTokenUser(ctx, live, now)
	if err != nil || tok.ID != id || u.ID != admin.ID || tok.LastUsedAt.IsZero() {
		t.Fatalf("AdminTokenUser = %+v, %+v, %v", tok, u, err)
	}
	if _, _, err := s.AdminTokenUser(ctx, expired, now); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired token: %v", err)
	}
	list, err := s.ListAdminTokens(ctx, admin.ID)
	if err != nil || len(list) != 2 {
		t.Fatalf("ListAdminTokens = %d, %v", len(list), err)
	}
	if err := s.DeleteAdminToken(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.AdminTokenUser(ctx, live, now); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted token still works: %v", err)
	}
}

func TestOwnedKeysUpdateDisableRevoke(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	uid, err := s.CreateUser(ctx, User{Username: "u", PasswordHash: "h", Role: RoleUser})
	if err != nil {
		t.Fatal(err)
	}
	mine, err := s.CreateOwnedAPIKey(ctx, APIKey{Name: "mine", Hash: [32]byte{1}, Prefix: "sk-a"}, uid)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateOwnedAPIKey(ctx, APIKey{Name: "cli", Hash: [32]byte{2}, Prefix: "sk-b"}, 0); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.OwnedKeys(ctx, uid); len(got) != 1 || got[0].Name != "mine" || got[0].Username != "u" {
		t.Errorf("OwnedKeys(user) = %+v", got)
	}
	if got, _ := s.OwnedKeys(ctx, 0); len(got) != 2 {
		t.Errorf("OwnedKeys(all) = %d keys, want 2", len(got))
	}
	now := time.Unix(1_800_000_000, 0)
	name, models, exp, off, on := "renamed", []string{"gpt-4o", "gpt-4o-mini"}, now.Add(time.Hour), false, true
	k, err := s.UpdateAPIKey(ctx, mine, KeyUpdate{Name: &name, Models: &models, ExpiresAt: &exp, Enabled: &off}, now)
	if err != nil {
		t.Fatal(err)
	}
	if k.Name != name || !reflect.DeepEqual(k.Models, models) || !k.ExpiresAt.Equal(exp) || !k.Disabled || k.State(now) != KeyRevoked {
		t.Errorf("after update: %+v", k)
	}
	// The worker's view (ListAPIKeys) refuses a disabled key.
	all, _ := s.ListAPIKeys(ctx)
	for _, a := range all {
		if a.ID == mine && a.RevokedAt.IsZero() {
			t.Error("a disabled key is active for the workers")
		}
	}
	if k, err = s.UpdateAPIKey(ctx, mine, KeyUpdate{Enabled: &on}, now); err != nil || k.State(now) != KeyActive || k.Disabled {
		t.Errorf("re-enable: %+v, %v", k, err)
	}
	if err := s.RevokeOwnedKey(ctx, mine, now); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateAPIKey(ctx, mine, KeyUpdate{Enabled: &on}, now); !errors.Is(err, ErrKeyRevoked) {
		t.Errorf("re-enable a revoked key: %v, want ErrKeyRevoked", err)
	}
	if err := s.RevokeOwnedKey(ctx, 999, now); !errors.Is(err, ErrNotFound) {
		t.Errorf("revoke missing: %v", err)
	}
	bad := []string{"a,b"}
	if _, err := s.UpdateAPIKey(ctx, mine, KeyUpdate{Models: &bad}, now); err == nil {
		t.Error("a model name with a comma was accepted")
	}
}
