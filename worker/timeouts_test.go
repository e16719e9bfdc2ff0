package worker

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/store/spool"
)

// TestFirstByteTimeoutFailsOver: a stream whose first bytes do not come within
// FIRST_BYTE_TIMEOUT is abandoned for the next deployment, and the client never
// notices.
func TestFirstByteTimeoutFailsOver(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		select { // headers sent, then nothing
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	t.Cleanup(slow.Close)
	h := newHarness(t, harnessOptions{
		cfg: func(c *Config) { c.FirstByteTimeout = 300 * time.Millisecond },
		upstreams: func(up *fakeUpstream) []store.Upstream {
			return []store.Upstream{
				{Name: "slow", BaseURL: slow.URL + "/v1", Weight: 1, Enabled: true,
					Deployments: []store.Deployment{{PublicModel: "gpt-4o", UpstreamModel: "gpt-4o", Weight: 1, Priority: 0}}},
				{Name: "fast", BaseURL: up.URL(), Weight: 1, Enabled: true,
					Deployments: []store.Deployment{{PublicModel: "gpt-4o", UpstreamModel: "gpt-4o", Weight: 1, Priority: 1}}},
			}
		},
	})
	h.up.set(upstreamBehavior{kind: "stream", chunks: 3})
	start := time.Now()
	resp, out := h.chat(t, keyAll, `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 || resp.Header.Get("X-LLM-Proxy-Upstream") != "fast" || resp.Header.Get("X-LLM-Proxy-Attempts") != "2" {
		t.Fatalf("status %d upstream %q attempts %q: %s", resp.StatusCode, resp.Header.Get("X-LLM-Proxy-Upstream"),
			resp.Header.Get("X-LLM-Proxy-Attempts"), out)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("failover took %v", el)
	}
	events := readSSE(t, strings.NewReader(string(out)))
	if got := streamContent(t, events); got != "tok0 tok1 tok2 " {
		t.Errorf("content = %q", got)
	}
	rec := h.waitRecord(t, func(r spool.Record) bool { return r.Stream && r.Status == 200 })
	if rec.AttemptCount != 2 || !strings.Contains(rec.Attempts, `"upstream":"slow"`) || !strings.Contains(rec.Attempts, `"error":"upstream_timeout"`) {
		t.Errorf("attempts = %d %s", rec.AttemptCount, rec.Attempts)
	}
}

// TestStreamIdleTimeout: a stream that goes silent mid-way is ended with an SSE
// error event and [DONE], never a made-up finish_reason.
func TestStreamIdleTimeout(t *testing.T) {
	h := newHarness(t, harnessOptions{cfg: func(c *Config) { c.StreamIdleTimeout = 300 * time.Millisecond }})
	h.up.set(upstreamBehavior{kind: "stream", chunks: 3, delay: 2 * time.Second})
	r2, err := http.NewRequest(http.MethodPost, h.url("/v1/chat/completions"),
		strings.NewReader(`{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	r2.Header.Set("Authorization", "Bearer "+keyAll)
	start := time.Now()
	resp, err := h.client.Do(r2)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if el := time.Since(start); el > 1500*time.Millisecond {
		t.Errorf("stream ended after %v, want about the 300 ms idle timeout", el)
	}
	s := string(out)
	if !strings.Contains(s, `"code":"stream_idle_timeout"`) || !strings.HasSuffix(s, "data: [DONE]\n\n") {
		t.Errorf("stream end = %q", s)
	}
	if strings.Contains(s, `"finish_reason":"stop"`) {
		t.Errorf("an idle stream must not be reported as finished: %q", s)
	}
	h.waitRecord(t, func(r spool.Record) bool { return r.ErrorClass == classStreamIdle && r.Status == 504 })
}
