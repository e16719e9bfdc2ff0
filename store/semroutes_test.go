package store

import (
	"crypto/sha256"
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestSemanticRoutesRoundTrip(t *testing.T) {
	s := openTestStore(t, testConfig(t), testBox(t, "semroute-test-secret"))
	ctx := testContext(t)
	g0, err := s.Generations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := SemanticRoute{Model: "auto", Default: "small", Targets: []SemanticTarget{
		{Name: "code", Model: "big", Threshold: 0.3, Utterances: []string{"write code", "fix my bug"}},
		{Name: "chat", Model: "mid", Threshold: 0.25, Utterances: []string{"hello there"}},
	}}
	if err := s.PutSemanticRoute(ctx, r); err != nil {
		t.Fatal(err)
	}
	g1, _ := s.Generations(ctx)
	if g1.Upstreams <= g0.Upstreams {
		t.Fatalf("upstreams generation %d -> %d: workers would not reload", g0.Upstreams, g1.Upstreams)
	}
	got, err := s.SemanticRoutes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Model != "auto" || got[0].Default != "small" || got[0].TopK != DefaultSemanticTopK {
		t.Fatalf("routes = %+v", got)
	}
	if !reflect.DeepEqual(got[0].Targets, r.Targets) {
		t.Fatalf("targets = %+v, want %+v", got[0].Targets, r.Targets)
	}

	if err := s.SetSemanticThresholds(ctx, "auto", map[string]float64{"chat": 0.5}); err != nil {
		t.Fatal(err)
	}
	got, _ = s.SemanticRoutes(ctx)
	if got[0].Targets[1].Threshold != 0.5 || got[0].Targets[0].Threshold != 0.3 {
		t.Fatalf("after fit: %+v", got[0].Targets)
	}
	if err := s.SetSemanticThresholds(ctx, "auto", map[string]float64{"nope": 0.5}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown target: err = %v, want ErrNotFound", err)
	}

	// Replacing drops targets no longer listed.
	r.Targets = r.Targets[:1]
	if err := s.PutSemanticRoute(ctx, r); err != nil {
		t.Fatal(err)
	}
	got, _ = s.SemanticRoutes(ctx)
	if len(got[0].Targets) != 1 {
		t.Fatalf("after replace: %+v", got[0].Targets)
	}
	if err := s.DeleteSemanticRoute(ctx, "auto"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSemanticRoute(ctx, "auto"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: err = %v, want ErrNotFound", err)
	}
	if got, _ = s.SemanticRoutes(ctx); len(got) != 0 {
		t.Fatalf("after delete: %+v", got)
	}
}

func TestPutSemanticRouteValidates(t *testing.T) {
	s := openTestStore(t, testConfig(t), testBox(t, "semroute-test-secret"))
	ctx := testContext(t)
	tgt := SemanticTarget{Name: "a", Model: "m", Threshold: 0.5, Utterances: []string{"x"}}
	tests := []struct {
		name string
		r    SemanticRoute
	}{
		{"no default", SemanticRoute{Model: "auto", Targets: []SemanticTarget{tgt}}},
		{"default is itself", SemanticRoute{Model: "auto", Default: "auto", Targets: []SemanticTarget{tgt}}},
		{"no targets", SemanticRoute{Model: "auto", Default: "d"}},
		{"target to itself", SemanticRoute{Model: "auto", Default: "d", Targets: []SemanticTarget{{Name: "a", Model: "auto", Utterances: []string{"x"}}}}},
		{"duplicate target", SemanticRoute{Model: "auto", Default: "d", Targets: []SemanticTarget{tgt, tgt}}},
		{"no utterances", SemanticRoute{Model: "auto", Default: "d", Targets: []SemanticTarget{{Name: "a", Model: "m"}}}},
		{"threshold out of range", SemanticRoute{Model: "auto", Default: "d", Targets: []SemanticTarget{{Name: "a", Model: "m", Threshold: 2, Utterances: []string{"x"}}}}},
	}
	for _, tt := range tests {
		if err := s.PutSemanticRoute(ctx, tt.r); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}

func TestCacheOverrides(t *testing.T) {
	s := openTestStore(t, testConfig(t), testBox(t, "semroute-test-secret"))
	ctx := testContext(t)
	if err := s.PutRoute(ctx, Route{Model: "gpt", Strategy: "round_robin"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRouteCache(ctx, RouteCache{Model: "gpt", Mode: "semantic", TTL: 2 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRouteCache(ctx, RouteCache{Model: "new", Mode: "off"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.RouteCaches(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]RouteCache{
		"gpt": {Model: "gpt", Mode: "semantic", TTL: 2 * time.Hour},
		"new": {Model: "new", Mode: "off"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("RouteCaches = %+v, want %+v", got, want)
	}
	routes, _ := s.Routes(ctx)
	if len(routes) != 2 || routes[0].Strategy != "round_robin" {
		t.Fatalf("the cache override changed the route's strategy: %+v", routes)
	}
	// Clearing the override leaves the route.
	if err := s.SetRouteCache(ctx, RouteCache{Model: "gpt"}); err != nil {
		t.Fatal(err)
	}
	if got, _ = s.RouteCaches(ctx); len(got) != 1 {
		t.Fatalf("after clearing: %+v", got)
	}
	if err := s.SetRouteCache(ctx, RouteCache{Model: "gpt", Mode: "bogus"}); err == nil {
		t.Fatal("invalid mode accepted")
	}

	id, err := s.CreateAPIKey(ctx, APIKey{Name: "k", Hash: sha256.Sum256([]byte("k")), Prefix: "sk-k"})
	if err != nil {
		t.Fatal(err)
	}
	g0, _ := s.Generations(ctx)
	if err := s.SetAPIKeyCacheMode(ctx, id, "exact"); err != nil {
		t.Fatal(err)
	}
	g1, _ := s.Generations(ctx)
	if g1.Keys <= g0.Keys {
		t.Fatal("keys generation did not move: workers would not see the override")
	}
	km, err := s.APIKeyCacheModes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(km, map[int64]string{id: "exact"}) {
		t.Fatalf("APIKeyCacheModes = %v", km)
	}
	if err := s.SetAPIKeyCacheMode(ctx, id+100, "exact"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown key: err = %v, want ErrNotFound", err)
	}
	if err := s.SetAPIKeyCacheMode(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	if km, _ = s.APIKeyCacheModes(ctx); len(km) != 0 {
		t.Fatalf("after clearing: %v", km)
	}
}
