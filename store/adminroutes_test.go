package store

import (
	"errors"
	"testing"
	"time"
)

func TestUpdateAPIKeyWithLimits(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	now := time.Unix(1_700_000_000, 0)
	uid, err := s.CreateUser(ctx, User{Username: "owner", PasswordHash: "x", Role: RoleUser})
	if err != nil {
		t.Fatal(err)
	}
	mine, err := s.CreateAPIKey(ctx, APIKey{Name: "mine", Hash: [32]byte{1}, Prefix: "sk-1", UserID: uid,
		Limits: KeyLimits{RPM: 10, BudgetMicroUSD: 5_000_000, BudgetPeriod: "day"}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.CreateAPIKey(ctx, APIKey{Name: "other", Hash: [32]byte{2}, Prefix: "sk-2"})
	if err != nil {
		t.Fatal(err)
	}

	got, err := s.APIKeyLimits(ctx, uid)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[mine] != (KeyLimits{RPM: 10, BudgetMicroUSD: 5_000_000, BudgetPeriod: "day"}) {
		t.Errorf("APIKeyLimits(owner) = %+v", got)
	}
	if all, _ := s.APIKeyLimits(ctx, 0); len(all) != 2 || all[other] != (KeyLimits{}) {
		t.Errorf("APIKeyLimits(all) = %+v", all)
	}

	name := "renamed"
	lim := KeyLimits{TPM: 1000, MaxParallel: 2, BudgetTokens: 50_000, BudgetPeriod: "month"}
	k, err := s.UpdateAPIKeyWithLimits(ctx, mine, KeyUpdate{Name: &name}, &lim, now)
	if err != nil {
		t.Fatal(err)
	}
	if k.Name != "renamed" || k.Limits != lim || k.UserID != uid {
		t.Errorf("updated key = %+v", k)
	}
	// nil limits keep them; a bad enable changes nothing at all.
	off := false
	if k, err = s.UpdateAPIKeyWithLimits(ctx, mine, KeyUpdate{Enabled: &off}, nil, now); err != nil || k.Limits != lim || !k.Disabled {
		t.Errorf("disable = %+v, %v", k, err)
	}
	if err := s.RevokeOwnedKey(ctx, other, now); err != nil {
		t.Fatal(err)
	}
	on := true
	if _, err := s.UpdateAPIKeyWithLimits(ctx, other, KeyUpdate{Enabled: &on, Name: &name}, &lim, now); !errors.Is(err, ErrKeyRevoked) {
		t.Errorf("enable a revoked key: %v, want ErrKeyRevoked", err)
	}
	if k, _ := s.OwnedKeyWithLimits(ctx, other); k.Name != "other" || k.Limits != (KeyLimits{}) {
		t.Errorf("a refused update wrote %+v", k)
	}
	if _, err := s.UpdateAPIKeyWithLimits(ctx, 999, KeyUpdate{}, &lim, now); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing key: %v", err)
	}
	if _, err := s.OwnedKeyWithLimits(ctx, 999); !errors.Is(err, ErrNotFound) {
		t.Errorf("OwnedKeyWithLimits(missing): %v", err)
	}
}

func TestCacheStatsByModel(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	now := time.Unix(1_700_000_000, 0)
	putEntry(t, s, cacheKey(1), "", "gpt-4o", "aaaa", now, now.Add(time.Hour))
	putEntry(t, s, cacheKey(2), "", "gpt-4o", "bbbbbbbb", now, now.Add(-time.Second))
	putEntry(t, s, cacheKey(3), "", "mini", "c", now, now.Add(time.Hour))
	if err := s.CacheTouch(ctx, map[string]int64{string(cacheKey(1)): 3, string(cacheKey(3)): 1}, now); err != nil {
		t.Fatal(err)
	}
	got, err := s.CacheStatsByModel(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	keyLen := int64(len(cacheKey(1)))
	want := []CacheModelStats{
		{Model: "gpt-4o", Entries: 2, Bytes: 12 + 2*(keyLen+cacheRowOverhead), Hits: 3, Expired: 1},
		{Model: "mini", Entries: 1, Bytes: 1 + keyLen + cacheRowOverhead, Hits: 1},
	}
	if len(got) != len(want) {
		t.Fatalf("CacheStatsByModel = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("row %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}
