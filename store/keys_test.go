package store

import (
	"crypto/sha256"
	"errors"
	"slices"
	"testing"
	"time"
)

func TestAPIKeyState(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name string
		key  APIKey
		want string
	}{
		{"never expires", APIKey{}, KeyActive},
		{"expires later", APIKey{ExpiresAt: now.Add(time.Second)}, KeyActive},
		{"expires now", APIKey{ExpiresAt: now}, KeyExpired},
		{"expired", APIKey{ExpiresAt: now.Add(-time.Hour)}, KeyExpired},
		{"revoked", APIKey{RevokedAt: now.Add(-time.Hour)}, KeyRevoked},
		{"revoked and expired", APIKey{RevokedAt: now.Add(-time.Hour), ExpiresAt: now.Add(-time.Hour)}, KeyRevoked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.key.State(now); got != tt.want {
				t.Errorf("State() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestAPIKeysCRUD(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	created := time.Unix(1_700_000_000, 0)
	in := []APIKey{
		{Name: "ci", Hash: sha256.Sum256([]byte("sk-one")), Prefix: "sk-one", CreatedAt: created},
		{Name: "team", Hash: sha256.Sum256([]byte("sk-two")), Prefix: "sk-two", Models: []string{"gpt-4o", "gpt-4o-mini"},
			CreatedAt: created, ExpiresAt: created.Add(24 * time.Hour)},
	}
	var ids []int64
	for _, k := range in {
		id, err := s.CreateAPIKey(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if _, err := s.CreateAPIKey(ctx, APIKey{Name: "dup", Hash: in[0].Hash, Prefix: "sk-one"}); !errors.Is(err, ErrExists) {
		t.Errorf("create with a duplicate hash: err = %v, want ErrExists", err)
	}

	revokedAt := created.Add(time.Hour)
	if err := s.RevokeAPIKey(ctx, ids[0], revokedAt); err != nil {
		t.Fatal(err)
	}
	// A second revoke keeps the first time.
	if err := s.RevokeAPIKey(ctx, ids[0], revokedAt.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeAPIKey(ctx, 9999, revokedAt); !errors.Is(err, ErrNotFound) {
		t.Errorf("revoke missing key: err = %v, want ErrNotFound", err)
	}

	got, err := s.ListAPIKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []APIKey{in[0], in[1]}
	want[0].ID, want[1].ID = ids[0], ids[1]
	want[0].RevokedAt = revokedAt
	if len(got) != len(want) {
		t.Fatalf("listed %d keys, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.ID != w.ID || g.Name != w.Name || g.Hash != w.Hash || g.Prefix != w.Prefix ||
			!slices.Equal(g.Models, w.Models) || !g.CreatedAt.Equal(w.CreatedAt) ||
			!g.ExpiresAt.Equal(w.ExpiresAt) || !g.RevokedAt.Equal(w.RevokedAt) {
			t.Errorf("key %d = %+v, want %+v", i, g, w)
		}
	}
	now := created.Add(2 * time.Hour)
	if got, want := got[0].State(now), KeyRevoked; got != want {
		t.Errorf("revoked key State = %q, want %q", got, want)
	}
	if got, want := got[1].State(now), KeyActive; got != want {
		t.Errorf("live key State = %q, want %q", got, want)
	}
}
