package worker

import (
	"testing"
	"time"

	"github.com/llm-proxy/llm-proxy/routing/provider"
)

// An OpenAI-compatible upstream that reports no usage (streaming or not) still
// gets its tokens counted, with the tokenizer, and the record says they were
// estimated; an upstream that reports usage is taken at its word.
func TestUsageEstimatedWhenUpstreamReportsNone(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	const prompt = `{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello to the whole wide world, please."}]}`
	const streamPrompt = `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Say hello to the whole wide world, please."}]}`

	// Load the tokenizer first so the counts below are the tokenizer's, not the
	// four-bytes-per-token stand-in used while it loads.
	deadline := time.Now().Add(10 * time.Second)
	for !provider.TokenizerReady("gpt-4o") {
		if time.Now().After(deadline) {
			t.Fatal("tokenizer did not load in 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	wantPrompt := provider.EstimateUsage("gpt-4o", provider.KindChat, []byte(prompt), nil, false).PromptTokens

	tests := []struct {
		name          string
		behavior      upstreamBehavior
		body          string
		prompt, compl int
		estimated     bool
	}{
		{"json with usage", upstreamBehavior{}, prompt, 11, 7, false},
		{"json without usage", upstreamBehavior{noUsage: true}, prompt, wantPrompt,
			provider.EstimateTokens("gpt-4o", "Hello there"), true},
		{"stream with usage", upstreamBehavior{kind: "stream", chunks: 4}, streamPrompt, 9, 4, false},
		{"stream without usage", upstreamBehavior{kind: "stream", chunks: 4, noUsage: true}, streamPrompt, wantPrompt,
			provider.EstimateTokens("gpt-4o", "tok0 tok1 tok2 tok3 "), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.up.set(tt.behavior)
			resp, body := h.chat(t, keyAll, tt.body)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			rec := h.recordByID(t, resp.Header.Get("X-Request-Id"))
			if rec.PromptTokens != tt.prompt || rec.CompletionTokens != tt.compl || rec.TokensEstimated != tt.estimated {
				t.Errorf("record tokens %d/%d estimated=%v, want %d/%d estimated=%v",
					rec.PromptTokens, rec.CompletionTokens, rec.TokensEstimated, tt.prompt, tt.compl, tt.estimated)
			}
			if tt.estimated && (rec.PromptTokens < 5 || rec.CompletionTokens < 2) {
				t.Errorf("estimate %d/%d is implausibly small", rec.PromptTokens, rec.CompletionTokens)
			}
		})
	}
}
