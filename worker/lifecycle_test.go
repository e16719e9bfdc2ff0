package worker

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestShutdownDrainsOpenStream(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.up.set(upstreamBehavior{kind: "stream", chunks: 6, delay: 100 * time.Millisecond})
	type result struct {
		events []sseEvent
		status int
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, h.url("/v1/chat/completions"), strings.NewReader(`{"model":"gpt-4o","stream":true,"messages":[]}`))
		req.Header.Set("Authorization", "Bearer "+keyAll)
		resp, err := h.client.Do(req)
		if err != nil {
			done <- result{}
			return
		}
		defer resp.Body.Close()
		done <- result{readSSE(t, resp.Body), resp.StatusCode}
	}()
	h.up.waitReceived(t)
	time.Sleep(150 * time.Millisecond) // the stream is open and mid-way

	start := time.Now()
	if err := h.shutdown(5 * time.Second); err != nil {
		t.Fatalf("Shutdown with an open stream: %v", err)
	}
	took := time.Since(start)
	r := <-done
	if r.status != http.StatusOK {
		t.Fatalf("stream status %d", r.status)
	}
	if n := len(r.events); n == 0 || r.events[n-1].data != "[DONE]" {
		t.Fatalf("the stream open during Shutdown did not finish: %+v", r.events)
	}
	if got, want := streamContent(t, r.events), "tok0 tok1 tok2 tok3 tok4 tok5 "; got != want {
		t.Errorf("content = %q, want %q", got, want)
	}
	if took < 200*time.Millisecond {
		t.Errorf("Shutdown returned after %v, before the stream could have finished", took)
	}
	// New connections are refused once Shutdown has returned.
	if resp, err := http.Get(h.url("/api/health")); err == nil {
		resp.Body.Close()
		t.Errorf("a new request after Shutdown got status %d, want a refused connection", resp.StatusCode)
	}
}

// TestConcurrentRequests runs streams and plain requests side by side (under
// -race in CI) to check that pooled per-request state never leaks between them.
func TestConcurrentRequests(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.up.set(upstreamBehavior{kind: "stream", chunks: 4, delay: 5 * time.Millisecond})
	const workers, each = 6, 8
	var wg sync.WaitGroup
	ids := make(chan string, workers*each)
	for g := range workers {
		wg.Go(func() {
			for i := range each {
				model := []string{"gpt-4o", "alias"}[(g+i)%2]
				stream := (g+i)%3 != 0
				body := fmt.Sprintf(`{"model":%q,"stream":%v,"user":"u%d-%d","messages":[]}`, model, stream, g, i)
				req, _ := http.NewRequest(http.MethodPost, h.url("/v1/chat/completions"), strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+keyAll)
				resp, err := h.client.Do(req)
				if err != nil {
					t.Errorf("request: %v", err)
					return
				}
				if stream {
					ev := readSSE(t, resp.Body)
					if got := streamContent(t, ev); got != "tok0 tok1 tok2 tok3 " {
						t.Errorf("%s: content %q", body, got)
					}
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("%s: status %d", body, resp.StatusCode)
				}
				ids <- resp.Header.Get("X-Request-Id")
			}
		})
	}
	wg.Wait()
	close(ids)
	recs := h.records(t)
	byID := map[string]int{}
	for _, r := range recs {
		byID[r.RequestID]++
		wantUp := map[string]string{"gpt-4o": "gpt-4o", "alias": "real-model"}[r.Model]
		if r.Status != 200 || r.UpstreamModel != wantUp || r.ErrorClass != "" {
			t.Errorf("record %+v: want status 200 and upstream model %q", r, wantUp)
		}
		if want := map[bool][2]int{true: {9, 4}, false: {11, 7}}[r.Stream]; r.PromptTokens != want[0] || r.CompletionTokens != want[1] {
			t.Errorf("record (stream=%v) tokens %d/%d, want %d/%d", r.Stream, r.PromptTokens, r.CompletionTokens, want[0], want[1])
		}
	}
	n := 0
	for id := range ids {
		n++
		if byID[id] != 1 {
			t.Errorf("request %q has %d records, want 1", id, byID[id])
		}
	}
	if len(recs) != n || n != workers*each {
		t.Errorf("%d records for %d requests, want %d", len(recs), n, workers*each)
	}
}
