package store

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

func TestUpstreams(t *testing.T) {
	cfg := testConfig(t)
	box := testBox(t, "the-right-secret-key")
	s := openTestStore(t, cfg, box)
	ctx := testContext(t)
	created := time.Unix(1_700_000_000, 0)
	const plaintextKey = "sk-proj-PLAINTEXT-provider-key"
	in := []Upstream{
		{Name: "openai", BaseURL: "https://api.example.test/v1", APIKey: plaintextKey, Weight: 2, Enabled: true, CreatedAt: created,
			Deployments: []Deployment{
				{PublicModel: "gpt", UpstreamModel: "gpt-4o", Weight: 3},
				{PublicModel: "gpt-4o-mini", Weight: 1},
			}},
		{Name: "local", Provider: "openai", BaseURL: "http://127.0.0.1:9/v1", Weight: 1, CreatedAt: created,
			Deployments: []Deployment{{PublicModel: AnyModel, Weight: 1}}},
	}
	var ids []int64
	for _, u := range in {
		id, err := s.AddUpstream(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if _, err := s.AddUpstream(ctx, Upstream{Name: "openai", BaseURL: "http://127.0.0.1:1"}); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate name: err = %v, want ErrExists", err)
	}

	got, err := s.ListUpstreams(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []Upstream{in[0], in[1]}
	want[0].ID, want[1].ID = ids[0], ids[1]
	want[0].Provider = "openai"
	want[0].Deployments = []Deployment{{PublicModel: "gpt", UpstreamModel: "gpt-4o", Weight: 3}, {PublicModel: "gpt-4o-mini", UpstreamModel: "gpt-4o-mini", Weight: 1}}
	if len(got) != len(want) {
		t.Fatalf("listed %d upstreams, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.ID != w.ID || g.Name != w.Name || g.Provider != w.Provider || g.BaseURL != w.BaseURL ||
			g.APIKey != w.APIKey || g.Weight != w.Weight || g.Enabled != w.Enabled || !g.CreatedAt.Equal(w.CreatedAt) ||
			!slices.Equal(g.Deployments, w.Deployments) {
			t.Errorf("upstream %d = %+v, want %+v", i, g, w)
		}
	}
	if n, err := s.CountUpstreams(ctx); err != nil || n != 2 {
		t.Errorf("CountUpstreams = %d, %v; want 2", n, err)
	}

	// The raw column holds neither the key nor anything a different secret can open.
	var raw []byte
	var nullKey bool
	err = s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, "SELECT name, api_key_enc FROM upstreams ORDER BY id", &sqlitex.ExecOptions{
			ResultFunc: func(stmt *sqlite.Stmt) error {
				if stmt.ColumnText(0) == "local" {
					nullKey = stmt.ColumnIsNull(1)
					return nil
				}
				raw = make([]byte, stmt.ColumnLen(1))
				stmt.ColumnBytes(1, raw)
				return nil
			},
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) == 0 || bytes.Contains(raw, []byte(plaintextKey)) || bytes.Contains(raw, []byte("PLAINTEXT")) {
		t.Errorf("api_key_enc = %q, want a sealed value without the plaintext", raw)
	}
	if !nullKey {
		t.Error("upstream without a key: api_key_enc is not NULL")
	}
	if _, err := testBox(t, "a-different-secret-key").Open(raw); err == nil {
		t.Error("a different secret key opened the sealed provider key")
	}
	other, err := Open(ctx, cfg, testBox(t, "a-different-secret-key"), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.ListUpstreams(ctx); err == nil {
		t.Error("ListUpstreams with the wrong secret key succeeded")
	}
	noBox, err := Open(ctx, cfg, nil, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer noBox.Close()
	if _, err := noBox.AddUpstream(ctx, Upstream{Name: "x", BaseURL: "http://127.0.0.1:1", APIKey: "k"}); err == nil {
		t.Error("AddUpstream with a key and no box succeeded")
	}

	// Removing cascades to deployments.
	if err := s.RemoveUpstream(ctx, "openai"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveUpstream(ctx, "openai"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second remove: err = %v, want ErrNotFound", err)
	}
	var deps int
	err = s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, "SELECT count(*) FROM deployments WHERE upstream_id = :id", &sqlitex.ExecOptions{
			Named:      map[string]any{":id": ids[0]},
			ResultFunc: func(stmt *sqlite.Stmt) error { deps = stmt.ColumnInt(0); return nil },
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if deps != 0 {
		t.Errorf("deployments left after removing their upstream = %d, want 0", deps)
	}
	if n, err := s.CountUpstreams(ctx); err != nil || n != 1 {
		t.Errorf("CountUpstreams after remove = %d, %v; want 1", n, err)
	}
}

func TestAddUpstreamRejects(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	tests := []struct {
		name string
		u    Upstream
	}{
		{"no name", Upstream{BaseURL: "http://127.0.0.1:1"}},
		{"no base url", Upstream{Name: "a"}},
		{"negative weight", Upstream{Name: "a", BaseURL: "http://127.0.0.1:1", Weight: -1}},
		{"wildcard with upstream model", Upstream{Name: "a", BaseURL: "http://127.0.0.1:1",
			Deployments: []Deployment{{PublicModel: AnyModel, UpstreamModel: "gpt-4o"}}}},
		{"duplicate deployment", Upstream{Name: "a", BaseURL: "http://127.0.0.1:1",
			Deployments: []Deployment{{PublicModel: "m"}, {PublicModel: "m"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.AddUpstream(ctx, tt.u); err == nil {
				t.Error("AddUpstream succeeded, want error")
			}
		})
	}
	// Nothing half-written: the failed duplicate-deployment insert rolled back the upstream.
	if n, err := s.CountUpstreams(ctx); err != nil || n != 0 {
		t.Errorf("CountUpstreams = %d, %v; want 0", n, err)
	}
}
