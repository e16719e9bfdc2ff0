package cache

import (
	"context"
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/llm-proxy/llm-proxy/routing/embed"
	"github.com/llm-proxy/llm-proxy/store"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func openStore(t *testing.T, path string) *store.Store {
	t.Helper()
	ctx := testCtx(t)
	st, err := store.Open(ctx, store.Config{Path: path, MaxOpenConns: 8, MaxIdleConns: 2}, nil, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return st
}

func testConfig() Config {
	return Config{Mode: ModeSemantic, L1MB: 1, L2MB: 1, TTL: time.Hour, Namespace: NamespaceKey, SemanticMaxMessages: 3,
		SemanticCapacity: 1000, PollInterval: 10 * time.Millisecond, HitFlushInterval: 20 * time.Millisecond, EvictBatch: 10}
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestConfigValidate(t *testing.T) {
	if err := testConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []func(*Config){
		func(c *Config) { c.Mode = "on" }, func(c *Config) { c.L1MB = 0 }, func(c *Config) { c.L2MB = 0 },
		func(c *Config) { c.TTL = 0 }, func(c *Config) { c.Namespace = "user" }, func(c *Config) { c.SemanticThreshold = 1.5 },
		func(c *Config) { c.SemanticMaxMessages = 0 }, func(c *Config) { c.SemanticCapacity = 0 },
		func(c *Config) { c.PollInterval = 0 }, func(c *Config) { c.EvictBatch = 0 },
	}
	for i, f := range bad {
		c := testConfig()
		f(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("case %d: %+v accepted", i, c)
		}
	}
	c := testConfig()
	if c.NamespaceFor("7") != "key:7" {
		t.Error("per-key namespace")
	}
	c.Namespace = NamespaceShared
	if c.NamespaceFor("7") != "" {
		t.Error("shared namespace")
	}
	for tier, want := range map[Tier]string{TierMiss: "miss", TierL1: "hit-l1", TierL2: "hit-l2", TierSemantic: "hit-semantic", TierBypass: "bypass"} {
		if tier.String() != want {
			t.Errorf("%d.String() = %q, want %q", tier, tier.String(), want)
		}
	}
}

// TestTiers runs two Caches on one database, as two workers would.
func TestTiers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db", "llm-proxy.db")
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	w1, err := New(testConfig(), openStore(t, path), nil, nil, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	st2 := openStore(t, path)
	w2, err := New(testConfig(), st2, nil, nil, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	k := mustKey(t, "key:1", "chat", "gpt-4o", `{"messages":[{"role":"user","content":"hi"}]}`)
	if _, tier, ok := w1.Get(ctx, k); ok || tier != TierMiss {
		t.Fatalf("empty cache: %v, %v", tier, ok)
	}
	e := Entry{Body: []byte(`{"id":"c1"}`), Model: "gpt-4o", Namespace: "key:1", PromptTokens: 5, CompletionTokens: 7}
	if err := w1.Put(ctx, k, e); err != nil {
		t.Fatal(err)
	}
	check := func(c *Cache, want Tier) {
		t.Helper()
		got, tier, ok := c.Get(ctx, k)
		if !ok || tier != want || string(got.Body) != `{"id":"c1"}` || got.PromptTokens != 5 || got.CompletionTokens != 7 ||
			!got.Expires.Equal(clk.now().Add(time.Hour).Truncate(time.Second)) && tier == TierL2 {
			t.Fatalf("Get = %+v, %v, %v; want tier %v", got, tier, ok, want)
		}
	}
	check(w1, TierL1)
	check(w2, TierL2) // the other worker reads L2...
	check(w2, TierL1) // ...which filled its L1

	// Hits are counted per tier and flushed in batches.
	if err := w2.FlushHits(ctx); err != nil {
		t.Fatal(err)
	}
	row, _, _ := st2.CacheGet(ctx, k[:], clk.now())
	if row.Hits != 2 {
		t.Errorf("hits after flush = %d, want 2", row.Hits)
	}

	// A purge from a third party reaches both L1s through the generation poll.
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, c := range []*Cache{w1, w2} {
		wg.Go(func() {
			if err := c.Run(runCtx); err != nil {
				t.Error(err)
			}
		})
	}
	defer func() { stop(); wg.Wait() }()
	time.Sleep(30 * time.Millisecond) // let both record the current generation
	if n, err := st2.CachePurge(ctx, store.CacheFilter{Model: "gpt-4o"}); err != nil || n != 1 {
		t.Fatalf("purge = %d, %v", n, err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for w1.L1().Len() != 0 || w2.L1().Len() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("a worker's L1 survived the purge")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, _, ok := w1.Get(ctx, k); ok {
		t.Error("purged entry served")
	}

	// Expiry: an entry is not served after its TTL from either tier.
	if err := w1.Put(ctx, k, e); err != nil {
		t.Fatal(err)
	}
	clk.add(time.Hour)
	if _, _, ok := w1.Get(ctx, k); ok {
		t.Error("expired entry served")
	}
	if err := w1.Delete(ctx, k); err != nil {
		t.Error(err)
	}
}

func TestEvict(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	st := openStore(t, filepath.Join(t.TempDir(), "x.db"))
	c, err := New(testConfig(), st, nil, nil, clk.now) // L2 budget 1 MiB
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	l, won, err := st.TryAcquire(ctx, "me", 1, 0, clk.now())
	if err != nil || !won {
		t.Fatal(won, err)
	}
	body := []byte(strings.Repeat("x", 300_000))
	for i := range 5 {
		if err := c.Put(ctx, keyOf(i), Entry{Body: body, Model: "m"}); err != nil {
			t.Fatal(err)
		}
		clk.add(time.Second)
	}
	n, err := c.Evict(ctx, l.Epoch)
	if err != nil || n != 2 {
		t.Fatalf("Evict = %d, %v; want 2 (5 x 300 kB into 1 MiB)", n, err)
	}
	stats, _ := st.CacheStats(ctx, clk.now())
	if stats.Bytes > 1<<20 || stats.Entries != 3 {
		t.Errorf("stats = %+v", stats)
	}
	if _, err := c.Evict(ctx, l.Epoch+1); err != store.ErrFenced {
		t.Errorf("stale epoch: %v", err)
	}
}

func TestSemanticTier(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	st := openStore(t, path)
	c, err := New(testConfig(), st, embed.Lexical{}, nil, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	if c.Threshold() != embed.DefaultThreshold(embed.Lexical{}) {
		t.Errorf("threshold %v", c.Threshold())
	}
	ctx := testCtx(t)
	req := func(q string) (Key, SemanticRequest, []float32) {
		body := `{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":` + mustJSON(q) + `}]}`
		k := mustKey(t, "key:1", "chat", "m", body)
		r, ok := PrepareSemantic("key:1", "m", []byte(body), 3)
		if !ok {
			t.Fatalf("ineligible: %s", body)
		}
		v, err := c.Embed(ctx, r.Text, nil)
		if err != nil {
			t.Fatal(err)
		}
		return k, r, v
	}
	k, r, v := req("What is the capital of France?")
	if err := c.PutSemantic(ctx, k, Entry{Body: []byte(`{"answer":"Paris"}`), Model: "m", Namespace: "key:1"}, r, v); err != nil {
		t.Fatal(err)
	}
	_, r2, v2 := req("what's the capital of France")
	got, m, ok := c.SemanticGet(ctx, r2, v2)
	if !ok || string(got.Body) != `{"answer":"Paris"}` || m.Key != k || m.Score < c.Threshold() {
		t.Fatalf("SemanticGet = %s, %+v, %v", got.Body, m, ok)
	}
	_, r3, v3 := req("What is the capital of Spain?")
	if _, _, ok := c.SemanticGet(ctx, r3, v3); ok {
		t.Error("a different country hit")
	}

	// A fresh worker loads the vectors from SQLite.
	c2, err := New(testConfig(), openStore(t, path), embed.Lexical{}, nil, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := c2.LoadSemantic(ctx); err != nil || n != 1 {
		t.Fatalf("LoadSemantic = %d, %v", n, err)
	}
	if got, _, ok := c2.SemanticGet(ctx, r2, v2); !ok || string(got.Body) != `{"answer":"Paris"}` {
		t.Errorf("loaded worker: %s, %v", got.Body, ok)
	}

	// When the exact entry is gone, the vector is dropped on the next hit.
	if _, err := st.CacheDelete(ctx, k[:]); err != nil {
		t.Fatal(err)
	}
	c2.L1().Clear()
	if _, _, ok := c2.SemanticGet(ctx, r2, v2); ok || c2.Index().Len() != 0 {
		t.Errorf("hit on a deleted entry (ok %v, index %d)", ok, c2.Index().Len())
	}
	if err := c.PutSemantic(ctx, k, Entry{Body: []byte("x")}, r, []float32{1}); err == nil {
		t.Error("wrong dimension accepted")
	}
	// Purge clears this worker's index at once.
	if _, err := c.Purge(ctx, store.CacheFilter{All: true}); err != nil {
		t.Fatal(err)
	}
	if c.Index().Len() != 0 || c.L1().Len() != 0 {
		t.Error("memory tiers survived Purge")
	}
}

func mustJSON(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestSSERoundTrip(t *testing.T) {
	bodies := []string{
		`{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o","system_fingerprint":"fp_1",` +
			`"choices":[{"index":0,"message":{"role":"assistant","content":"Paris is the capital."},"finish_reason":"stop"},` +
			`{"index":1,"message":{"role":"assistant","content":"It is Paris."},"finish_reason":"length"}],` +
			`"usage":{"prompt_tokens":9,"completion_tokens":6,"total_tokens":15}}`,
		`{"id":"chatcmpl-2","object":"chat.completion","created":1700000001,"model":"gpt-4o",` +
			`"choices":[{"index":0,"message":{"role":"assistant","tool_calls":[{"id":"call_1","type":"function",` +
			`"function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}}]},"finish_reason":"tool_calls"}],` +
			`"usage":{"prompt_tokens":20,"completion_tokens":10,"total_tokens":30}}`,
		`{"id":"cmpl-3","object":"text_completion","created":1700000002,"model":"gpt-3.5-turbo-instruct",` +
			`"choices":[{"index":0,"text":" world","finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`,
	}
	for _, body := range bodies {
		sse, err := AppendSSE(nil, []byte(body), true)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(string(sse), "data: [DONE]\n\n") {
			t.Fatalf("stream does not end with [DONE]: %q", sse)
		}
		var a Assembler
		for _, ev := range strings.Split(strings.TrimSuffix(string(sse), "\n\n"), "\n\n") {
			payload, ok := strings.CutPrefix(ev, "data: ")
			if !ok {
				t.Fatalf("event %q is not a data line", ev)
			}
			if payload != "[DONE]" {
				var chunk map[string]any
				if err := json.Unmarshal([]byte(payload), &chunk); err != nil {
					t.Fatalf("chunk %q: %v", payload, err)
				}
				if obj := chunk["object"]; obj != "chat.completion.chunk" && obj != "text_completion" {
					t.Errorf("chunk object %v", obj)
				}
			}
			a.Add([]byte(payload))
		}
		if !a.Complete() {
			t.Fatal("assembled stream not complete")
		}
		got, err := a.Body()
		if err != nil {
			t.Fatal(err)
		}
		var want, have any
		_ = json.Unmarshal([]byte(body), &want)
		_ = json.Unmarshal(got, &have)
		if !reflect.DeepEqual(want, have) {
			t.Errorf("round trip:\n got %s\nwant %s", got, body)
		}
	}
	// Without include_usage no usage chunk is sent.
	sse, _ := AppendSSE(nil, []byte(bodies[0]), false)
	if strings.Contains(string(sse), "usage") {
		t.Error("usage chunk sent without include_usage")
	}
	if _, err := AppendSSE(nil, []byte("nope"), false); err == nil {
		t.Error("bad body accepted")
	}
}

func TestAssemblerIncomplete(t *testing.T) {
	chunks := []string{
		`{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`,
		`{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}`,
		`{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}`,
	}
	var a Assembler
	for _, c := range chunks {
		a.Add([]byte(c))
	}
	if a.Complete() {
		t.Error("complete without finish_reason and [DONE]")
	}
	if _, err := a.Body(); err == nil {
		t.Error("Body of a cut stream")
	}
	a.Add([]byte(`{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`))
	a.Add([]byte(`{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`))
	a.Add([]byte("[DONE]"))
	body, err := a.Body()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`
	if string(body) != want {
		t.Errorf("Body =\n%s\nwant\n%s", body, want)
	}
	var bad Assembler
	bad.Add([]byte(`{not json`))
	bad.Add([]byte("[DONE]"))
	if bad.Complete() {
		t.Error("malformed stream complete")
	}
}

// An L1 nobody stores into holds no freecache (the garbage collector would count its
// whole size as live heap); lookups, deletes and purges on it are misses and no-ops.
func TestL1MadeOnFirstSet(t *testing.T) {
	l := NewL1(64)
	var k Key
	k[0] = 1
	now := time.Now()
	if _, ok := l.Get(k, now); ok || l.Delete(k) || l.Len() != 0 {
		t.Fatal("an empty L1 answered a lookup")
	}
	l.Clear()
	if l.made() != nil {
		t.Fatal("the freecache was made before any Set")
	}
	if err := l.Set(k, Entry{Body: []byte(`{}`), Expires: now.Add(time.Minute)}, now); err != nil {
		t.Fatal(err)
	}
	if _, ok := l.Get(k, now); !ok || l.Len() != 1 || l.made() == nil {
		t.Fatal("an entry set in L1 is not found")
	}
}
