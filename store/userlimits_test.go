package store

import (
	"crypto/sha256"
	"errors"
	"reflect"
	"testing"
)

// TestUserLimitsRoundTrip: a user's limits and models are stored, read back by User and
// ListUsers, carried by ListAPIKeys on each of the user's keys, and every change bumps
// the keys change counter so workers reload.
func TestUserLimitsRoundTrip(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	if _, err := s.EnsureFirstAdmin(ctx, "admin", "x"); err != nil {
		t.Fatal(err)
	}
	uid, err := s.CreateUser(ctx, User{Username: "alice", PasswordHash: "x", Role: RoleUser})
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"a1", "a2"} {
		if _, err := s.CreateAPIKey(ctx, APIKey{Name: name, Hash: sha256.Sum256([]byte(name)), Prefix: name, UserID: uid,
			Limits: KeyLimits{RPM: int64(100 + i)}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.CreateAPIKey(ctx, APIKey{Name: "cli", Hash: sha256.Sum256([]byte("cli")), Prefix: "cli"}); err != nil {
		t.Fatal(err)
	}

	lim := KeyLimits{RPM: 5, TPM: 1000, MaxParallel: 2, BudgetMicroUSD: 2_500_000, BudgetTokens: 9000, BudgetPeriod: "month"}
	before, err := s.Generations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetUserLimits(ctx, uid, lim); err != nil {
		t.Fatal(err)
	}
	after, err := s.Generations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Keys == before.Keys {
		t.Error("SetUserLimits did not bump the keys change counter")
	}
	u, err := s.User(ctx, uid)
	if err != nil {
		t.Fatal(err)
	}
	if u.Limits != lim {
		t.Errorf("User().Limits = %+v, want %+v", u.Limits, lim)
	}
	keys, err := s.ListAPIKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		want := lim
		if k.UserID == 0 {
			want = KeyLimits{}
		}
		if k.UserLimits != want {
			t.Errorf("key %s: UserLimits = %+v, want %+v", k.Name, k.UserLimits, want)
		}
		if k.Name == "a2" && k.Limits.RPM != 101 {
			t.Errorf("key a2: own RPM = %d, want 101 (the join must not mix up the columns)", k.Limits.RPM)
		}
	}

	// UpdateUser sets limits and models in one go; 0 clears a limit.
	models := []string{" gpt-4o ", "", "alias"}
	lim2 := KeyLimits{TPM: 50}
	u, err = s.UpdateUser(ctx, uid, UserUpdate{Limits: &lim2, Models: &models}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := u.Models, []string{"gpt-4o", "alias"}; !reflect.DeepEqual(got, want) {
		t.Errorf("models = %q, want %q", got, want)
	}
	if u.Limits != lim2 {
		t.Errorf("limits = %+v, want %+v", u.Limits, lim2)
	}
	users, err := s.ListUsers(ctx)
	if err != nil || len(users) != 2 || users[1].Limits != lim2 || len(users[1].Models) != 2 {
		t.Errorf("ListUsers = %+v, %v", users, err)
	}
	um, err := s.UserModels(ctx)
	if err != nil || !reflect.DeepEqual(um[uid], []string{"gpt-4o", "alias"}) {
		t.Errorf("UserModels = %v, %v", um, err)
	}

	for name, tc := range map[string]struct {
		err error
		fn  func() error
	}{
		"bad period":    {nil, func() error { return s.SetUserLimits(ctx, uid, KeyLimits{BudgetPeriod: "week"}) }},
		"no such user":  {ErrNotFound, func() error { return s.SetUserLimits(ctx, uid+100, lim) }},
		"comma in name": {nil, func() error { return s.SetUserModels(ctx, uid, []string{"a,b"}) }},
	} {
		err := tc.fn()
		if err == nil || (tc.err != nil && !errors.Is(err, tc.err)) {
			t.Errorf("%s: err = %v, want an error (%v)", name, err, tc.err)
		}
	}
	if u, _ := s.User(ctx, uid); u.Limits != lim2 {
		t.Errorf("a refused change was written: %+v", u.Limits)
	}
}
