package worker

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/llm-proxy/llm-proxy/cache"
	"github.com/llm-proxy/llm-proxy/routing/embed"
	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/store/spool"
)

func cacheHarness(t *testing.T, mode string) *harness {
	t.Helper()
	return newHarness(t, harnessOptions{cache: func(st *store.Store) *cache.Cache {
		cfg := cache.Config{Mode: mode, L1MB: 8, L2MB: 64, TTL: time.Hour, Namespace: cache.NamespaceKey,
			SemanticMaxMessages: 3, SemanticCapacity: 1000, PollInterval: 100 * time.Millisecond,
			HitFlushInterval: time.Second, EvictBatch: 100}
		var emb embed.Embedder
		if mode == cache.ModeSemantic {
			emb = embed.Lexical{}
		}
		c, err := cache.New(cfg, st, emb, hclog.NewNullLogger(), nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}})
}

// waitCached repeats a request until the cache answers it: answers are written to
// the cache off the request path.
func waitCached(t *testing.T, h *harness, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		resp, out := h.chat(t, keyAll, body, hdr...)
		if strings.HasPrefix(resp.Header.Get("X-LLM-Proxy-Cache"), "hit") || time.Now().After(deadline) {
			return resp, out
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestExactCache(t *testing.T) {
	h := cacheHarness(t, cache.ModeExact)
	body := `{"model":"gpt-4o","messages":[{"role":"user","content":"What is the capital of France?"}]}`

	resp, first := h.chat(t, keyAll, body)
	if resp.StatusCode != 200 || resp.Header.Get("X-LLM-Proxy-Cache") != "miss" {
		t.Fatalf("first: status %d cache %q", resp.StatusCode, resp.Header.Get("X-LLM-Proxy-Cache"))
	}
	// Key order and whitespace do not change the key.
	resp, second := waitCached(t, h, `{ "messages":[{"content":"What is the capital of France?","role":"user"}], "model":"gpt-4o" }`)
	if got := resp.Header.Get("X-LLM-Proxy-Cache"); got != "hit-l1" {
		t.Fatalf("second: cache %q, want hit-l1", got)
	}
	if string(second) != string(first) {
		t.Errorf("cached body differs:\n%s\n%s", second, first)
	}
	upstreamCalls := len(h.up.requests())

	// A stream asked for the same request is replayed from the cache as SSE.
	resp, out := h.chat(t, keyAll, strings.Replace(body, `"model"`, `"stream":true,"model"`, 1))
	if resp.Header.Get("X-LLM-Proxy-Cache") != "hit-l1" || !strings.Contains(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("stream: cache %q type %q", resp.Header.Get("X-LLM-Proxy-Cache"), resp.Header.Get("Content-Type"))
	}
	events := readSSE(t, strings.NewReader(string(out)))
	if len(events) == 0 || events[len(events)-1].data != "[DONE]" {
		t.Fatalf("replayed stream does not end with [DONE]: %s", out)
	}
	if streamContent(t, events) == "" {
		t.Errorf("replayed stream has no content: %s", out)
	}
	if n := len(h.up.requests()); n != upstreamCalls {
		t.Errorf("cache hits reached the upstream: %d calls, want %d", n, upstreamCalls)
	}

	// A different parameter is a different answer.
	resp, _ = h.chat(t, keyAll, strings.Replace(body, `"model"`, `"temperature":0.1,"model"`, 1))
	if resp.Header.Get("X-LLM-Proxy-Cache") != "miss" {
		t.Errorf("temperature change: cache %q, want miss", resp.Header.Get("X-LLM-Proxy-Cache"))
	}
	// no-store: neither lookup nor store; no-cache: no lookup.
	resp, _ = h.chat(t, keyAll, body, "Cache-Control", "no-store")
	if resp.Header.Get("X-LLM-Proxy-Cache") != "bypass" {
		t.Errorf("no-store: cache %q, want bypass", resp.Header.Get("X-LLM-Proxy-Cache"))
	}
	resp, _ = h.chat(t, keyAll, body, "Cache-Control", "no-cache")
	if resp.Header.Get("X-LLM-Proxy-Cache") != "miss" {
		t.Errorf("no-cache: cache %q, want miss", resp.Header.Get("X-LLM-Proxy-Cache"))
	}
	// Another key owner has its own namespace.
	resp, _ = h.chat(t, keyLimited, body)
	if resp.Header.Get("X-LLM-Proxy-Cache") != "miss" {
		t.Errorf("other key: cache %q, want miss (namespaces are per key)", resp.Header.Get("X-LLM-Proxy-Cache"))
	}
	hit := h.waitRecord(t, func(r spool.Record) bool { return r.Cache == "hit-l1" })
	if hit.Upstream != "" || hit.CostMicroUSD != 0 || hit.PromptTokens == 0 {
		t.Errorf("hit record = %+v: want no upstream, no cost, the original usage", hit)
	}
}

func TestSemanticCache(t *testing.T) {
	h := cacheHarness(t, cache.ModeSemantic)
	ask := func(q string) string {
		resp, _ := h.chat(t, keyAll, `{"model":"gpt-4o","messages":[{"role":"user","content":"`+q+`"}]}`)
		return resp.Header.Get("X-LLM-Proxy-Cache")
	}
	if got := ask("How do I reverse a list in Python?"); got != "miss" {
		t.Fatalf("first: %q", got)
	}
	// The first answer is written to the index in the background. Each try
	// differs in trailing spaces: another exact key (so a try that misses and is
	// stored itself cannot turn the next into an exact hit) but the same words.
	deadline := time.Now().Add(5 * time.Second)
	got := ""
	for i := 0; time.Now().Before(deadline); i++ {
		if got = ask("How can I reverse a list in Python?" + strings.Repeat(" ", i)); got == "hit-semantic" || got == "hit-l1" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got != "hit-semantic" {
		t.Fatalf("paraphrase: cache %q, want hit-semantic", got)
	}
	// The classic false hit: same words, another language.
	if got := ask("How do I reverse a list in Java?"); got != "miss" {
		t.Errorf("other language: cache %q, want miss", got)
	}
}
