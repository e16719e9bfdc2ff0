package worker

import (
	"context"
	"crypto/sha256"
	"strconv"
	"testing"
	"time"

	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/store/spool"
)

// TestRateLimitAnswers429 checks a key's RPM limit end to end in one worker: the
// requests past the limit get OpenAI's 429 with Retry-After and x-ratelimit-*
// headers, and admitted requests carry the remaining quota.
func TestRateLimitAnswers429(t *testing.T) {
	h := newHarness(t, harnessOptions{limits: true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.st.SetAPIKeyLimits(ctx, h.keyIDs["all"], store.KeyLimits{RPM: 3}); err != nil {
		t.Fatal(err)
	}
	// Wait for the snapshot to carry the limit.
	deadline := time.Now().Add(2 * time.Second)
	for h.w.keys.Load().lookup(sha(keyAll)).limits.RPM != 3 {
		if time.Now().After(deadline) {
			t.Fatal("limit not picked up within 2 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	body := `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`
	for i := range 3 {
		resp, out := h.chat(t, keyAll, body)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d %s", i+1, resp.StatusCode, out)
		}
		if got, want := resp.Header.Get("x-ratelimit-remaining-requests"), strconv.Itoa(2-i); got != want {
			t.Errorf("request %d: remaining %q, want %q", i+1, got, want)
		}
	}
	resp, out := h.chat(t, keyAll, body)
	checkError(t, resp, out, 429, "rate_limit_exceeded")
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 61 {
		t.Errorf("Retry-After = %q", resp.Header.Get("Retry-After"))
	}
	if resp.Header.Get("x-ratelimit-limit-requests") != "3" || resp.Header.Get("x-ratelimit-remaining-requests") != "0" {
		t.Errorf("limit headers: %v", resp.Header)
	}
	h.waitRecord(t, func(r spool.Record) bool { return r.Status == 429 && r.ErrorClass == classRateLimited })
	// Another key is not affected.
	if resp, _ := h.chat(t, keyLimited, body); resp.StatusCode != 200 {
		t.Errorf("other key: status %d", resp.StatusCode)
	}
}

func sha(key string) [32]byte { return sha256.Sum256([]byte(key)) }
