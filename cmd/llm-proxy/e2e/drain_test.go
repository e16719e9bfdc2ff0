package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
)

// TestLongStreamAndDrain runs a gateway whose every timeout is 1 s or less — read,
// idle, request, first-byte and stream-idle 1 s, upstream 500 ms — in front of a
// mockllm whose every stream takes about 3 s (30 chunks, 100 ms apart), and an
// upstream that serves only named models. A stream three times longer than
// LLM_PROXY_REQUEST_TIMEOUT stands in for the ten-minute stream under the default
// 600 s. It ends the gateway with SIGTERM in the middle of a stream.
func TestLongStreamAndDrain(t *testing.T) {
	const chunks = 30
	slowReply := reply(chunks)
	mock := startMock(t, "--reply", slowReply, "--chunks", "30", "--chunk-delay", "100ms")
	g := newGateway(t, map[string]string{
		"LLM_PROXY_READ_TIMEOUT":    "1s",
		"LLM_PROXY_IDLE_TIMEOUT":    "1s",
		"LLM_PROXY_REQUEST_TIMEOUT": "1s",
		// Below the request timeout, so a single hanging attempt is ended by the
		// upstream timeout and the request timeout shows only across attempts.
		"LLM_PROXY_UPSTREAM_TIMEOUT": "500ms",
		// The streams' first chunk comes at once and the next every 100 ms: neither
		// timer may fire, and a 3 s stream outlasts both.
		"LLM_PROXY_FIRST_BYTE_TIMEOUT":  "1s",
		"LLM_PROXY_STREAM_IDLE_TIMEOUT": "1s",
	})
	// hang-1 is an alias whose upstream model carries mockllm's hang fault; slowpoke
	// is the same on three upstreams, so its attempt chain could run for 1.5 s.
	g.cli(t, "upstreams", "add", "--name", "mock", "--base-url", mock.baseURL(), "--models", "mock-1,hang-1=mock-1@hang")
	for _, name := range []string{"slow-a", "slow-b", "slow-c"} {
		g.cli(t, "upstreams", "add", "--name", name, "--base-url", mock.baseURL(), "--models", "slowpoke=mock-1@hang")
	}
	keyID, key := g.createKey(t, "drain")
	g.start(t)
	// With a 1 s idle timeout the gateway closes kept-alive connections quickly; a
	// new connection per request keeps a close from racing a request's reuse.
	hc := freshClient(0)
	c := g.sdk(key, hc)

	t.Run("unknown_model", func(t *testing.T) {
		ctx := ctxTimeout(t, requestTimeout)
		_, err := c.Chat.Completions.New(ctx, chatParams("gpt-x", marker(t)))
		ae := apiError(t, err, http.StatusNotFound)
		if ae.Code != "model_not_found" {
			t.Errorf("code = %q, want model_not_found", ae.Code)
		}
	})

	t.Run("upstream_timeout", func(t *testing.T) {
		ctx := ctxTimeout(t, requestTimeout)
		prompt := marker(t)
		start := time.Now()
		_, err := c.Chat.Completions.New(ctx, chatParams("hang-1", prompt))
		took := time.Since(start)
		ae := apiError(t, err, http.StatusGatewayTimeout)
		if ae.Code != "upstream_timeout" {
			t.Errorf("code = %q, want upstream_timeout", ae.Code)
		}
		// Well before the 1 s request timeout: this 504 is the upstream timeout's.
		if took < 450*time.Millisecond || took > 900*time.Millisecond {
			t.Errorf("504 after %s, want about the 500ms LLM_PROXY_UPSTREAM_TIMEOUT", took)
		}
		if got := ae.Response.Header.Get("X-LLM-Proxy-Attempts"); got != "1" {
			t.Errorf("X-LLM-Proxy-Attempts = %q, want 1 (hang-1 has one deployment)", got)
		}
		// Giving up must also close the upstream request.
		if r, ok := mock.waitRequest(t, 3*time.Second, func(r mockRequest) bool {
			return strings.Contains(r.Body, prompt) && !r.InFlight
		}); !ok || !r.ClientClosed {
			t.Errorf("the timed-out upstream request was not closed (found %t, %+v)", ok, r)
		}
	})

	t.Run("request_timeout_non_stream", func(t *testing.T) {
		// Three hanging deployments, each given up after 500 ms: without the request
		// timeout the chain would end after three attempts and about 1.5 s. The 1 s
		// request timeout cuts the second attempt and answers the documented 504.
		ctx := ctxTimeout(t, requestTimeout)
		prompt := marker(t)
		start := time.Now()
		_, err := c.Chat.Completions.New(ctx, chatParams("slowpoke", prompt))
		took := time.Since(start)
		ae := apiError(t, err, http.StatusGatewayTimeout)
		if ae.Type != "upstream_error" || ae.Code != "upstream_timeout" {
			t.Errorf("type, code = %q, %q; want upstream_error, upstream_timeout", ae.Type, ae.Code)
		}
		if took < 950*time.Millisecond || took > 1400*time.Millisecond {
			t.Errorf("504 after %s, want about the 1s LLM_PROXY_REQUEST_TIMEOUT", took)
		}
		if got := ae.Response.Header.Get("X-LLM-Proxy-Attempts"); got != "2" {
			t.Errorf("X-LLM-Proxy-Attempts = %q, want 2 (the request timeout ends the chain during the second of three)", got)
		}
		// Both attempts reached the mock, and the gateway closed both.
		if n := closedRequests(t, mock, prompt, 2); n != 2 {
			t.Errorf("the mock saw %d closed hanging requests for the prompt, want 2", n)
		}
	})

	t.Run("long_stream", func(t *testing.T) {
		// No timeout may cut a stream that has started: this one lasts about 3 s,
		// three times the request, read, idle, first-byte and stream-idle timeouts.
		ctx := ctxTimeout(t, requestTimeout)
		start := time.Now()
		resp := postStream(ctx, t, hc, g, key, marker(t))
		defer resp.Body.Close()
		r, err := readSSE(t, resp.Body, nil)
		took := time.Since(start)
		if err != nil {
			t.Fatalf("stream broke after %s and %d events: %v", took, r.events, err)
		}
		if !r.done {
			t.Errorf("the stream ended without [DONE] after %s", took)
		}
		if r.content != slowReply {
			t.Errorf("content = %q, want %q", r.content, slowReply)
		}
		if r.finish != "stop" {
			t.Errorf("finish_reason = %q, want stop", r.finish)
		}
		if took < 2500*time.Millisecond {
			t.Errorf("stream took %s; it must outlast the 1s timeouts to prove anything", took)
		}
		if !t.Failed() {
			t.Logf("a %s stream completed with a request timeout of 1s", took.Round(time.Millisecond))
		}
	})

	t.Run("sigterm_drain", func(t *testing.T) {
		ctx := ctxTimeout(t, time.Minute)
		resp := postStream(ctx, t, hc, g, key, marker(t))
		defer resp.Body.Close()
		reqID := resp.Header.Get("X-Request-Id")

		var sigAt time.Time
		r, err := readSSE(t, resp.Body, func() {
			if !sigAt.IsZero() {
				return
			}
			// The stream is open and flowing: stop the gateway now.
			if serr := g.cmd.Process.Signal(syscall.SIGTERM); serr != nil {
				t.Fatalf("SIGTERM the supervisor: %v", serr)
			}
			sigAt = time.Now()
		})
		if err != nil {
			t.Fatalf("stream broke after %d events (SIGTERM sent at %v): %v", r.events, sigAt, err)
		}
		if sigAt.IsZero() {
			t.Fatal("the stream carried no event, so SIGTERM was never sent")
		}
		if !r.done {
			t.Errorf("the stream ended without [DONE] %s after SIGTERM", time.Since(sigAt))
		}
		if r.content != slowReply || r.finish != "stop" {
			t.Errorf("content = %q (finish %q), want the whole answer %q (stop)", r.content, r.finish, slowReply)
		}
		t.Logf("stream finished %s after SIGTERM", time.Since(sigAt).Round(time.Millisecond))

		select {
		case <-g.exited:
			if g.exitErr != nil {
				t.Errorf("supervisor exit: %v, want status 0", g.exitErr)
			}
		case <-time.After(stopTimeout):
			t.Fatalf("supervisor still runs %s after the drained stream ended", stopTimeout)
		}
		// The supervisor ingests the spools after its workers stopped, so the
		// record is there once it has exited.
		row, ok, err := g.logRow(reqID)
		if err != nil || !ok {
			t.Fatalf("request_logs has no row for the drained stream %s after exit (err %v)", reqID, err)
		}
		if want := (logRow{KeyID: keyID, Endpoint: "chat", Model: "mock-1", Upstream: "mock", UpstreamModel: "mock-1",
			Status: 200, Stream: true, PromptTokens: row.PromptTokens, CompletionTokens: chunks}); row != want || row.PromptTokens == 0 {
			t.Errorf("request_logs row = %+v, want %+v with prompt tokens", row, want)
		}
	})
}

// postStream opens a mock-1 chat stream over plain HTTP, so the caller sees the
// raw SSE events, [DONE] included, which the SDK's stream reader swallows.
func postStream(ctx context.Context, t *testing.T, hc *http.Client, g *gateway, key, prompt string) *http.Response {
	t.Helper()
	body := `{"model":"mock-1","stream":true,"messages":[{"role":"user","content":"` + prompt + `"}]}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.baseURL()+"/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		t.Fatalf("status = %d, want 200: %s", resp.StatusCode, readAll(t, resp))
	}
	return resp
}

// sseResult is what a chat stream carried.
type sseResult struct {
	content string
	finish  string
	events  int  // data events before [DONE]
	done    bool // [DONE] arrived
}

// readSSE reads a chat completion stream to its end, calling onEvent (if not nil)
// after each chunk. An error event, a chunk that is not JSON or data after [DONE]
// fails the test; err is a read error other than EOF.
func readSSE(t *testing.T, body io.Reader, onEvent func()) (sseResult, error) {
	t.Helper()
	var r sseResult
	var content strings.Builder
	br := bufio.NewReader(body)
	for {
		line, err := br.ReadString('\n')
		if data, ok := strings.CutPrefix(line, "data:"); ok {
			data = strings.TrimSpace(data)
			switch {
			case r.done:
				t.Errorf("data after [DONE]: %q", data)
			case data == "[DONE]":
				r.done = true
			default:
				var ch openai.ChatCompletionChunk
				if jerr := json.Unmarshal([]byte(data), &ch); jerr != nil || strings.Contains(data, `"error"`) {
					t.Errorf("bad event %q (%v)", data, jerr)
				}
				for _, choice := range ch.Choices {
					content.WriteString(choice.Delta.Content)
					if choice.FinishReason != "" {
						r.finish = choice.FinishReason
					}
				}
				r.events++
				if onEvent != nil {
					onEvent()
				}
			}
		}
		if err == io.EOF {
			r.content = content.String()
			return r, nil
		}
		if err != nil {
			r.content = content.String()
			return r, err
		}
	}
}

// closedRequests waits up to 3 s until mockllm lists want requests whose body holds
// prompt as closed by the gateway, and returns how many it last saw.
func closedRequests(t *testing.T, mock *mockServer, prompt string, want int) int {
	t.Helper()
	ctx := ctxTimeout(t, 3*time.Second)
	n := 0
	for {
		if reqs, err := mock.requests(ctx); err == nil {
			n = 0
			for _, r := range reqs {
				if strings.Contains(r.Body, prompt) && !r.InFlight && r.ClientClosed {
					n++
				}
			}
			if n == want {
				return n
			}
		}
		select {
		case <-ctx.Done():
			return n
		case <-time.After(20 * time.Millisecond):
		}
	}
}
