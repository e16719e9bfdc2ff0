package e2e

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
)

// TestLongStreamAndDrain runs a gateway with 1 s read, idle and upstream-header
// timeouts in front of a mockllm whose every stream takes about 3 s (30 chunks,
// 100 ms apart), and an upstream that serves only named models. It ends the
// gateway with SIGTERM in the middle of a stream.
func TestLongStreamAndDrain(t *testing.T) {
	const chunks = 30
	slowReply := reply(chunks)
	mock := startMock(t, "--reply", slowReply, "--chunks", "30", "--chunk-delay", "100ms")
	g := newGateway(t, map[string]string{
		"LLM_PROXY_READ_TIMEOUT":     "1s",
		"LLM_PROXY_IDLE_TIMEOUT":     "1s",
		"LLM_PROXY_UPSTREAM_TIMEOUT": "1s",
	})
	// hang-1 is an alias whose upstream model carries mockllm's hang fault.
	g.cli(t, "upstreams", "add", "--name", "mock", "--base-url", mock.baseURL(), "--models", "mock-1,hang-1=mock-1@hang")
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
		if took < 900*time.Millisecond || took > 5*time.Second {
			t.Errorf("504 after %s, want about the 1s LLM_PROXY_UPSTREAM_TIMEOUT", took)
		}
		// Giving up must also close the upstream request.
		if r, ok := mock.waitRequest(t, 3*time.Second, func(r mockRequest) bool {
			return strings.Contains(r.Body, prompt) && !r.InFlight
		}); !ok || !r.ClientClosed {
			t.Errorf("the timed-out upstream request was not closed (found %t, %+v)", ok, r)
		}
	})

	t.Run("long_stream", func(t *testing.T) {
		// No write timeout may cut a stream: this one lasts about 3 s, three times
		// the read and idle timeouts.
		ctx := ctxTimeout(t, requestTimeout)
		start := time.Now()
		r := readStream(ctx, t, c, chatParams("mock-1", marker(t)))
		took := time.Since(start)
		if r.content != slowReply {
			t.Errorf("content = %q, want %q", r.content, slowReply)
		}
		if r.finish != "stop" {
			t.Errorf("finish_reason = %q, want stop", r.finish)
		}
		if took < 2500*time.Millisecond {
			t.Errorf("stream took %s; it must outlast the 1s timeouts to prove anything", took)
		}
		t.Logf("a %s stream completed with read and idle timeouts of 1s", took.Round(time.Millisecond))
	})

	t.Run("sigterm_drain", func(t *testing.T) {
		ctx := ctxTimeout(t, time.Minute)
		body := `{"model":"mock-1","stream":true,"messages":[{"role":"user","content":"` + marker(t) + `"}]}`
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
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status = %d, want 200: %s", resp.StatusCode, readAll(t, resp))
		}
		reqID := resp.Header.Get("X-Request-Id")

		var content strings.Builder
		var finish string
		var events int
		var sigAt time.Time
		done := false
		br := bufio.NewReader(resp.Body)
		for {
			line, err := br.ReadString('\n')
			if data, ok := strings.CutPrefix(line, "data:"); ok {
				data = strings.TrimSpace(data)
				switch {
				case done:
					t.Errorf("data after [DONE]: %q", data)
				case data == "[DONE]":
					done = true
				default:
					var ch openai.ChatCompletionChunk
					if jerr := json.Unmarshal([]byte(data), &ch); jerr != nil || strings.Contains(data, `"error"`) {
						t.Errorf("bad event %q (%v)", data, jerr)
					}
					for _, choice := range ch.Choices {
						content.WriteString(choice.Delta.Content)
						if choice.FinishReason != "" {
							finish = choice.FinishReason
						}
					}
					events++
					if sigAt.IsZero() {
						// The stream is open and flowing: stop the gateway now.
						if serr := g.cmd.Process.Signal(syscall.SIGTERM); serr != nil {
							t.Fatalf("SIGTERM the supervisor: %v", serr)
						}
						sigAt = time.Now()
					}
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("stream broke %s after SIGTERM, after %d events: %v", time.Since(sigAt), events, err)
			}
		}
		if sigAt.IsZero() {
			t.Fatal("the stream carried no event, so SIGTERM was never sent")
		}
		if !done {
			t.Errorf("the stream ended without [DONE] %s after SIGTERM", time.Since(sigAt))
		}
		if content.String() != slowReply || finish != "stop" {
			t.Errorf("content = %q (finish %q), want the whole answer %q (stop)", content.String(), finish, slowReply)
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
