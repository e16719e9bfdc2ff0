package store

import (
	"crypto/sha256"
	"testing"
	"time"
)

func TestGenerationsBumpPerTable(t *testing.T) {
	s := openTestStore(t, testConfig(t), testBox(t, "generation-test-secret"))
	ctx := testContext(t)
	var keyID int64
	steps := []struct {
		name string
		do   func() error
		want Generations // change from the previous step
	}{
		{"create key", func() (err error) {
			keyID, err = s.CreateAPIKey(ctx, APIKey{Name: "k", Hash: sha256.Sum256([]byte("k")), Prefix: "sk-k"})
			return err
		}, Generations{Keys: 1}},
		{"revoke key", func() error { return s.RevokeAPIKey(ctx, keyID, time.Now()) }, Generations{Keys: 1}},
		{"revoke key again", func() error { return s.RevokeAPIKey(ctx, keyID, time.Now()) }, Generations{}},
		{"add upstream without deployments", func() error {
			_, err := s.AddUpstream(ctx, Upstream{Name: "a", BaseURL: "http://127.0.0.1:1", APIKey: "sk"})
			return err
		}, Generations{Upstreams: 1}},
		{"add upstream with two deployments", func() error {
			_, err := s.AddUpstream(ctx, Upstream{Name: "b", BaseURL: "http://127.0.0.1:1",
				Deployments: []Deployment{{PublicModel: "m1"}, {PublicModel: "m2"}}})
			return err
		}, Generations{Upstreams: 3}},
		{"remove upstream", func() error { return s.RemoveUpstream(ctx, "a") }, Generations{Upstreams: 1}},
		{"set setting", func() error { return s.SetSetting(ctx, "K", "1") }, Generations{Settings: 1}},
		{"set same value", func() error { return s.SetSetting(ctx, "K", "1") }, Generations{}},
		{"change setting", func() error { return s.SetSetting(ctx, "K", "2") }, Generations{Settings: 1}},
		{"delete setting", func() error { return s.DeleteSetting(ctx, "K") }, Generations{Settings: 1}},
	}
	prev, err := s.Generations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		cur, err := s.Generations(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := Generations{Keys: cur.Keys - prev.Keys, Upstreams: cur.Upstreams - prev.Upstreams, Settings: cur.Settings - prev.Settings}
		if got != st.want {
			t.Errorf("%s: generations moved by %+v, want %+v", st.name, got, st.want)
		}
		prev = cur
	}
}
