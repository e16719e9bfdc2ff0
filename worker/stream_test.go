package worker

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/llm-proxy/llm-proxy/store/spool"
)

// postStream sends a streaming chat request and reads its events as they arrive.
func postStream(t *testing.T, h *harness, body string) (*http.Response, []sseEvent, time.Time) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.url("/v1/chat/completions"), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+keyAll)
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp, readSSE(t, resp.Body), start
}

// upstreamIncludeUsage reports stream_options.include_usage in what the upstream received.
func upstreamIncludeUsage(t *testing.T, body []byte) bool {
	t.Helper()
	var req struct {
		StreamOptions struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatalf("upstream body is not JSON: %v: %s", err, body)
	}
	return req.StreamOptions.IncludeUsage
}

func TestStreamingChunksArriveAsSent(t *testing.T) {
	const chunks, gap = 5, 150 * time.Millisecond
	tests := []struct {
		name      string
		body      string
		wantUsage bool // the client asked for the usage chunk
	}{
		{"usage not asked", `{"model":"alias","stream":true,"messages":[{"role":"user","content":"hi"}]}`, false},
		{"usage asked", `{"model":"alias","stream":true,"stream_options":{"include_usage":true},"messages":[]}`, true},
		{"usage refused", `{"model":"alias","stream":true,"stream_options":{"include_usage":false},"messages":[]}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			h.up.set(upstreamBehavior{kind: "stream", chunks: chunks, delay: gap})
			resp, events, _ := postStream(t, h, tt.body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
				t.Errorf("Content-Type = %q, want text/event-stream", ct)
			}
			if v := resp.Header.Get("X-LLM-Proxy-Upstream"); v != "fake" {
				t.Errorf("X-LLM-Proxy-Upstream = %q, want fake", v)
			}

			// The upstream always gets include_usage so the gateway can record tokens.
			up := h.up.last(t)
			if !upstreamIncludeUsage(t, up.Body) {
				t.Errorf("upstream body lacks stream_options.include_usage=true: %s", up.Body)
			}
			if !strings.Contains(string(up.Body), `"model":"real-model"`) {
				t.Errorf("upstream body model not rewritten: %s", up.Body)
			}

			if len(events) == 0 || events[len(events)-1].data != "[DONE]" {
				t.Fatalf("stream does not end with [DONE]: %+v", events)
			}
			if got, want := streamContent(t, events), "tok0 tok1 tok2 tok3 tok4 "; got != want {
				t.Errorf("content = %q, want %q", got, want)
			}
			var content []time.Time
			usageChunks := 0
			for _, e := range events {
				if strings.Contains(e.data, `"content":"tok`) {
					content = append(content, e.at)
				}
				if strings.Contains(e.data, `"choices":[]`) {
					usageChunks++
					if !strings.Contains(e.data, `"prompt_tokens":9,"completion_tokens":5`) {
						t.Errorf("usage chunk = %s", e.data)
					}
				}
			}
			if want := map[bool]int{true: 1, false: 0}[tt.wantUsage]; usageChunks != want {
				t.Errorf("client got %d usage-only chunks, want %d", usageChunks, want)
			}
			// Chunks reach the client as the upstream sends them, not in one burst.
			if len(content) != chunks {
				t.Fatalf("got %d content chunks, want %d", len(content), chunks)
			}
			if spread := content[chunks-1].Sub(content[0]); spread < time.Duration(chunks-1)*gap*3/4 {
				t.Errorf("content chunks arrived within %v, want spread over about %v", spread, time.Duration(chunks-1)*gap)
			}
			for i := 1; i < chunks; i++ {
				if d := content[i].Sub(content[i-1]); d < gap/3 {
					t.Errorf("chunk %d arrived %v after chunk %d, want about %v", i, d, i-1, gap)
				}
			}

			rec := h.recordByID(t, resp.Header.Get("X-Request-Id"))
			if !rec.Stream || rec.Status != 200 || rec.PromptTokens != 9 || rec.CompletionTokens != chunks || rec.ErrorClass != "" {
				t.Errorf("record = %+v, want a 200 stream with 9/%d tokens", rec, chunks)
			}
			if rec.TtfbUs <= 0 || rec.LatencyUs < rec.TtfbUs || rec.LatencyUs < int64((chunks-1)*gap/time.Microsecond) {
				t.Errorf("record ttfb=%dus latency=%dus: latency must cover the whole stream", rec.TtfbUs, rec.LatencyUs)
			}
		})
	}
}

func TestStreamCutByUpstream(t *testing.T) {
	for _, kind := range []string{"cut", "abort"} {
		t.Run(kind, func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			h.up.set(upstreamBehavior{kind: kind, chunks: 3, delay: 20 * time.Millisecond})
			resp, events, _ := postStream(t, h, `{"model":"gpt-4o","stream":true,"messages":[]}`)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if got := streamContent(t, events[:max(len(events)-2, 0)]); got != "tok0 tok1 tok2 " {
				t.Errorf("content before the cut = %q, want the 3 chunks sent", got)
			}
			n := len(events)
			if n < 2 || events[n-1].data != "[DONE]" {
				t.Fatalf("stream does not end with [DONE]: %+v", events)
			}
			var e openAIError
			if err := json.Unmarshal([]byte(events[n-2].data), &e); err != nil || e.Error.Message == "" || e.Error.Type == "" {
				t.Errorf("event before [DONE] is not an OpenAI error object: %s", events[n-2].data)
			}
			for _, ev := range events {
				if strings.Contains(ev.data, `"finish_reason":"stop"`) {
					t.Errorf("a cut stream must not look finished: %s", ev.data)
				}
			}
			rec := h.recordByID(t, resp.Header.Get("X-Request-Id"))
			if rec.Status != http.StatusBadGateway || rec.ErrorClass != classStreamBroken || !rec.Stream {
				t.Errorf("record status=%d class=%q stream=%v, want 502 %q true", rec.Status, rec.ErrorClass, rec.Stream, classStreamBroken)
			}
		})
	}
}

func TestClientDisconnectMidStream(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.up.set(upstreamBehavior{kind: "stream", chunks: 100, delay: 100 * time.Millisecond})
	conn := h.rawRequest(t, "/v1/chat/completions", keyAll, `{"model":"gpt-4o","stream":true,"messages":[]}`)
	req, _ := http.NewRequest(http.MethodPost, h.url("/v1/chat/completions"), nil)
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	br := bufio.NewReader(resp.Body)
	for got := 0; got < 2; {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("read stream: %v", err)
		}
		if strings.Contains(line, `"content":"tok`) {
			got++
		}
	}
	closedAt := time.Now()
	conn.Close()
	at, ok := h.up.waitCancelled(t, 3*time.Second)
	if !ok {
		t.Fatal("the upstream stream was never cancelled after the client left")
	}
	if d := at.Sub(closedAt); d > time.Second {
		t.Errorf("upstream cancelled %v after the client left, want < 1 s", d)
	}
	rec := h.waitRecord(t, func(r spool.Record) bool { return r.Stream })
	if rec.Status != statusClientClosed || rec.ErrorClass != classClientClosed {
		t.Errorf("record status=%d class=%q, want 499 %q", rec.Status, rec.ErrorClass, classClientClosed)
	}
	if n := len(h.up.requests()); n != 1 {
		t.Errorf("upstream saw %d requests, want 1", n)
	}
}
