package worker

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/llm-proxy/llm-proxy/cache"
	"github.com/llm-proxy/llm-proxy/routing/embed"
	"github.com/llm-proxy/llm-proxy/store"
)

// countingEmbedder counts Embed calls, to check one embedding per request.
type countingEmbedder struct {
	embed.Lexical
	n atomic.Int64
}

func (c *countingEmbedder) Embed(ctx context.Context, text string, dst []float32) ([]float32, error) {
	c.n.Add(1)
	return c.Lexical.Embed(ctx, text, dst)
}

func semanticUpstreams(up *fakeUpstream) []store.Upstream {
	u := store.Upstream{Name: "fake", BaseURL: up.URL(), APIKey: "upstream-key", Weight: 1, Enabled: true}
	for _, m := range []string{"coder-model", "support-model", "cheap-model", "gpt-4o"} {
		u.Deployments = append(u.Deployments, store.Deployment{PublicModel: m, UpstreamModel: m, Weight: 1})
	}
	return []store.Upstream{u}
}

var testSemanticRoute = store.SemanticRoute{Model: "auto", Default: "cheap-model", Targets: []store.SemanticTarget{
	{Name: "code", Model: "coder-model", Threshold: 0.2, Utterances: []string{
		"write a python function that sorts a list",
		"fix this bug in my go code",
		"how do I reverse a string in javascript",
		"explain this stack trace from my java program",
	}},
	{Name: "billing", Model: "support-model", Threshold: 0.2, Utterances: []string{
		"I was charged twice on my credit card",
		"how do I get a refund for my subscription",
		"update the billing address on my invoice",
	}},
}}

// waitSnapshot waits until the worker's semantic snapshot satisfies ok (it reloads on
// the change counters every 250 ms).
func waitSnapshot(t *testing.T, h *harness, ok func(*semSnapshot) bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		if s := h.w.sem.snap.Load(); s != nil && ok(s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the worker did not reload its semantic snapshot within 3 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func chatBody(model, text string) string {
	b, _ := json.Marshal(map[string]any{"model": model, "messages": []map[string]string{{"role": "user", "content": text}}})
	return string(b)
}

func TestSemanticRouting(t *testing.T) {
	emb := &countingEmbedder{}
	h := newHarness(t, harnessOptions{upstreams: semanticUpstreams, cache: func(st *store.Store) *cache.Cache {
		c, err := cache.New(cache.Config{Mode: cache.ModeSemantic, L1MB: 8, L2MB: 64, TTL: time.Hour, Namespace: cache.NamespaceKey,
			SemanticMaxMessages: 3, SemanticCapacity: 1000, PollInterval: 100 * time.Millisecond,
			HitFlushInterval: time.Second, EvictBatch: 100}, st, emb, hclog.NewNullLogger(), nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}})
	if err := h.st.PutSemanticRoute(context.Background(), testSemanticRoute); err != nil {
		t.Fatal(err)
	}
	waitSnapshot(t, h, func(s *semSnapshot) bool { return s.routers["auto"] != nil })

	tests := []struct {
		name, text, wantModel, wantTarget string
	}{
		{"code request", "write a python function that reverses a list", "coder-model", "target=code "},
		{"billing request", "I want a refund, I was charged twice for my subscription", "support-model", "target=billing "},
		{"no match goes to the default", "what is the capital of France", "cheap-model", "target=default "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := emb.n.Load()
			resp, out := h.chat(t, keyAll, chatBody("auto", tt.text))
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, out)
			}
			if n := emb.n.Load() - before; n != 1 {
				t.Errorf("%d Embed calls for one request, want 1 (routing and the semantic cache share it)", n)
			}
			route := resp.Header.Get("X-LLM-Proxy-Route")
			if !strings.HasPrefix(route, "semantic:") || !strings.Contains(route, tt.wantTarget) ||
				!strings.Contains(route, "model="+tt.wantModel) || !strings.Contains(route, "score=") {
				t.Errorf("X-LLM-Proxy-Route = %q, want %s model=%s and a score", route, tt.wantTarget, tt.wantModel)
			}
			var sent struct{ Model string }
			if err := json.Unmarshal(h.up.last(t).Body, &sent); err != nil || sent.Model != tt.wantModel {
				t.Errorf("upstream got model %q (%v), want %q", sent.Model, err, tt.wantModel)
			}
			rec := h.recordByID(t, resp.Header.Get("X-Request-Id"))
			if rec.Model != tt.wantModel || rec.Route != route {
				t.Errorf("record model %q route %q, want %q and the header %q", rec.Model, rec.Route, tt.wantModel, route)
			}
		})
	}

	// A model without a semantic route is untouched.
	resp, _ := h.chat(t, keyAll, chatBody("gpt-4o", "write a python function"))
	if resp.StatusCode != 200 || resp.Header.Get("X-LLM-Proxy-Route") != "" {
		t.Errorf("plain model: status %d route header %q", resp.StatusCode, resp.Header.Get("X-LLM-Proxy-Route"))
	}

	// Removing the route reaches the worker: "auto" is then an unknown model.
	if err := h.st.DeleteSemanticRoute(context.Background(), "auto"); err != nil {
		t.Fatal(err)
	}
	waitSnapshot(t, h, func(s *semSnapshot) bool { return s.routers["auto"] == nil })
	if resp, _ := h.chat(t, keyAll, chatBody("auto", "hello")); resp.StatusCode != 404 {
		t.Errorf("after removal: status %d, want 404", resp.StatusCode)
	}
}

func TestCacheModeOverrides(t *testing.T) {
	// The global mode is off; overrides turn the cache on per route and off per key.
	h := newHarness(t, harnessOptions{upstreams: semanticUpstreams, cache: func(st *store.Store) *cache.Cache {
		c, err := cache.New(cache.Config{Mode: cache.ModeOff, L1MB: 8, L2MB: 64, TTL: time.Hour, Namespace: cache.NamespaceKey,
			SemanticMaxMessages: 3, SemanticCapacity: 1000, PollInterval: 100 * time.Millisecond,
			HitFlushInterval: time.Second, EvictBatch: 100}, st, nil, hclog.NewNullLogger(), nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}})
	ctx := context.Background()
	if err := h.st.SetRouteCache(ctx, store.RouteCache{Model: "gpt-4o", Mode: cache.ModeExact, TTL: 2 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	waitSnapshot(t, h, func(s *semSnapshot) bool { return s.routeCache["gpt-4o"].Mode == cache.ModeExact })

	body := chatBody("gpt-4o", "What is the capital of France?")
	if resp, _ := h.chat(t, keyAll, body); resp.Header.Get("X-LLM-Proxy-Cache") != "miss" {
		t.Fatalf("route override exact: first request cache %q, want miss", resp.Header.Get("X-LLM-Proxy-Cache"))
	}
	if resp, _ := waitCached(t, h, body); resp.Header.Get("X-LLM-Proxy-Cache") != "hit-l1" {
		t.Fatalf("route override exact: repeat cache %q, want hit-l1", resp.Header.Get("X-LLM-Proxy-Cache"))
	}
	// The entry lives for the route's TTL, not the global hour.
	k, err := cache.NewKey(cache.Config{Namespace: cache.NamespaceKey}.NamespaceFor("key:"+strconv.FormatInt(h.keyIDs["all"], 10)),
		"chat", "gpt-4o", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	// The cache writer fills L1 before L2, so the hit above can come first.
	var e store.CacheEntry
	ok := false
	for deadline := time.Now().Add(5 * time.Second); !ok && time.Now().Before(deadline); {
		if e, ok, err = h.st.CacheGet(ctx, k[:], time.Now()); err != nil {
			t.Fatal(err)
		} else if !ok {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if !ok {
		t.Fatal("L2 entry: not written within 5 s")
	}
	if ttl := e.ExpiresAt.Sub(e.CreatedAt); ttl < 2*time.Hour-time.Second || ttl > 2*time.Hour+time.Second {
		t.Errorf("entry lives %s, want the route's 2h", ttl)
	}

	// Another model keeps the global mode: off, no cache header.
	other := chatBody("cheap-model", "What is the capital of France?")
	for range 2 {
		if resp, _ := h.chat(t, keyAll, other); resp.Header.Get("X-LLM-Proxy-Cache") != "" {
			t.Fatalf("model without override: cache %q, want none (global off)", resp.Header.Get("X-LLM-Proxy-Cache"))
		}
	}

	// A key override beats the route's.
	if err := h.st.SetAPIKeyCacheMode(ctx, h.keyIDs["all"], cache.ModeOff); err != nil {
		t.Fatal(err)
	}
	waitSnapshot(t, h, func(s *semSnapshot) bool { return s.keyCache[h.keyIDs["all"]] == cache.ModeOff })
	calls := len(h.up.requests())
	if resp, _ := h.chat(t, keyAll, body); resp.Header.Get("X-LLM-Proxy-Cache") != "" {
		t.Fatalf("key override off: cache %q, want none", resp.Header.Get("X-LLM-Proxy-Cache"))
	}
	if len(h.up.requests()) != calls+1 {
		t.Errorf("key override off: the request did not reach the upstream")
	}
}
