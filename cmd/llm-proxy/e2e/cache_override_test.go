package e2e

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
)

// With LLM_PROXY_CACHE_MODE at its default (off), a route's or a key's cache
// override still switches the cache on for its requests, and only for them.
func TestCacheOverridesWithGlobalModeOff(t *testing.T) {
	mock := startMock(t)
	g := newGateway(t, nil)
	g.cli(t, "upstreams", "add", "--name", "mock", "--base-url", mock.baseURL(), "--models", "cached-model,plain-model")
	g.cli(t, "routes", "add", "--model", "cached-model", "--cache", "exact")
	_, key := g.createKey(t, "route-override")
	keyID, keyOn := g.createKey(t, "key-override")
	g.cli(t, "keys", "update", strconv.FormatInt(keyID, 10), "--cache", "exact")
	g.start(t)

	m := marker(t)
	ask := func(key, model, text string) string {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"model": model,
			"messages": []map[string]string{{"role": "user", "content": text}}})
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		a, err := postChat(ctx, g.client, g, key, string(body))
		if err != nil || a.status != 200 {
			t.Fatalf("chat %s %q: status %d err %v body %s", model, text, a.status, err, a.body)
		}
		return a.header.Get("X-LLM-Proxy-Cache")
	}
	// repeat asks until an answer comes from the cache (the first answer is
	// written in the background; the second may land on the other worker, whose
	// L1 is filled from L2).
	repeat := func(key, model, text string) string {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		got := ""
		for time.Now().Before(deadline) {
			if got = ask(key, model, text); strings.HasPrefix(got, "hit-") {
				return got
			}
			time.Sleep(50 * time.Millisecond)
		}
		return got
	}
	tests := []struct {
		name, key, model string
		cached           bool
	}{
		{"route override", key, "cached-model", true},
		{"no override", key, "plain-model", false},
		{"key override", keyOn, "plain-model", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := tt.name + " " + m
			first := ask(tt.key, tt.model, text)
			if !tt.cached {
				for i := range 3 {
					if got := ask(tt.key, tt.model, text); got != "" {
						t.Errorf("request %d: X-LLM-Proxy-Cache %q, want none (cache off)", i+2, got)
					}
				}
				if first != "" {
					t.Errorf("first: X-LLM-Proxy-Cache %q, want none", first)
				}
				reqs, err := mock.requests(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				n := 0
				for _, r := range reqs {
					if strings.Contains(r.Body, text) {
						n++
					}
				}
				if n != 4 {
					t.Errorf("mockllm saw %d requests, want all 4", n)
				}
				return
			}
			if first != "miss" {
				t.Errorf("first: X-LLM-Proxy-Cache %q, want miss", first)
			}
			if got := repeat(tt.key, tt.model, text); got != "hit-l1" && got != "hit-l2" {
				t.Errorf("repeat: X-LLM-Proxy-Cache %q, want hit-l1 or hit-l2", got)
			}
		})
	}
}
