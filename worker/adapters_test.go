package worker

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/store/spool"
)

// fakeAnthropic is a minimal Messages API endpoint: it checks the request is in
// Anthropic's shape and answers with a fixed text, streamed or not.
type fakeAnthropic struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []map[string]any
	hdr []http.Header
}

func newFakeAnthropic(t *testing.T) *fakeAnthropic {
	f := &fakeAnthropic{}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAnthropic) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/messages" {
		http.Error(w, `{"type":"error","error":{"type":"not_found_error","message":"no"}}`, 404)
		return
	}
	var body map[string]any
	raw, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(raw, &body); err != nil {
		http.Error(w, `{"type":"error","error":{"type":"invalid_request_error","message":"bad json"}}`, 400)
		return
	}
	f.mu.Lock()
	f.got = append(f.got, body)
	f.hdr = append(f.hdr, r.Header.Clone())
	f.mu.Unlock()
	if body["stream"] == true {
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		events := []string{
			`event: message_start` + "\n" + `data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-test","content":[],"stop_reason":null,"usage":{"input_tokens":12,"output_tokens":1}}}`,
			`event: content_block_start` + "\n" + `data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`,
			`event: content_block_delta` + "\n" + `data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello "}}`,
			`event: content_block_delta` + "\n" + `data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"from Claude."}}`,
			`event: content_block_stop` + "\n" + `data: {"type":"content_block_stop","index":0}`,
			`event: message_delta` + "\n" + `data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":4}}`,
			`event: message_stop` + "\n" + `data: {"type":"message_stop"}`,
		}
		for _, e := range events {
			io.WriteString(w, e+"\n\n")
			fl.Flush()
		}
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"id":"msg_1","type":"message","role":"assistant","model":"claude-test",
"content":[{"type":"text","text":"Hello from Claude."}],"stop_reason":"end_turn",
"usage":{"input_tokens":12,"output_tokens":4}}`)
}

// TestOpenAISDKThroughAnthropicAdapter drives chat through the gateway to an
// Anthropic upstream with the official OpenAI Go SDK, streamed and not.
func TestOpenAISDKThroughAnthropicAdapter(t *testing.T) {
	fa := newFakeAnthropic(t)
	h := newHarness(t, harnessOptions{upstreams: func(*fakeUpstream) []store.Upstream {
		return []store.Upstream{{
			Name: "claude", Provider: "anthropic", BaseURL: fa.srv.URL + "/v1", APIKey: "anthropic-key",
			Weight: 1, Enabled: true,
			Deployments: []store.Deployment{{PublicModel: "sonnet", UpstreamModel: "claude-test", Weight: 1}},
		}}
	}})
	client := openai.NewClient(option.WithBaseURL("http://"+h.addr+"/v1"), option.WithAPIKey(keyAll), option.WithMaxRetries(0))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	params := openai.ChatCompletionNewParams{
		Model: "sonnet",
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage("Be brief."),
			openai.UserMessage("Say hello."),
		},
	}

	got, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Choices) != 1 || got.Choices[0].Message.Content != "Hello from Claude." || got.Choices[0].FinishReason != "stop" {
		t.Fatalf("completion = %+v", got.Choices)
	}
	if got.Usage.PromptTokens != 12 || got.Usage.CompletionTokens != 4 {
		t.Errorf("usage = %+v, want 12/4", got.Usage)
	}

	st := client.Chat.Completions.NewStreaming(ctx, params)
	var acc openai.ChatCompletionAccumulator
	for st.Next() {
		acc.AddChunk(st.Current())
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	if c := acc.Choices[0].Message.Content; c != "Hello from Claude." {
		t.Errorf("streamed content = %q", c)
	}

	fa.mu.Lock()
	defer fa.mu.Unlock()
	if len(fa.got) != 2 {
		t.Fatalf("anthropic upstream got %d requests, want 2", len(fa.got))
	}
	first := fa.got[0]
	if first["model"] != "claude-test" || first["system"] == nil || first["max_tokens"] == nil {
		t.Errorf("upstream request not in Anthropic's shape: %v", first)
	}
	if k := fa.hdr[0].Get("x-api-key"); k != "anthropic-key" {
		t.Errorf("x-api-key = %q, want the upstream's key", k)
	}
	if a := fa.hdr[0].Get("Authorization"); strings.Contains(a, keyAll) {
		t.Errorf("the client's key reached the upstream: %q", a)
	}
	rec := h.waitRecord(t, func(r spool.Record) bool { return r.Stream && r.Status == 200 })
	if rec.PromptTokens != 12 || rec.CompletionTokens != 4 || rec.Upstream != "claude" {
		t.Errorf("stream record = %+v", rec)
	}
}

// TestMessagesInbound serves Anthropic's Messages API from an OpenAI-compatible
// upstream: the answer, the stream events and the errors come back in Anthropic's shape.
func TestMessagesInbound(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	body := `{"model":"gpt-4o","max_tokens":64,"system":"Be brief.","messages":[{"role":"user","content":"Say hello."}]}`

	resp, out := h.do(t, http.MethodPost, "/v1/messages", "", body, "x-api-key", keyAll)
	if resp.StatusCode != 200 {
		t.Fatalf("status = %d: %s", resp.StatusCode, out)
	}
	var msg struct {
		Type    string `json:"type"`
		Role    string `json:"role"`
		Content []struct {
			Type, Text string
		} `json:"content"`
		StopReason string `json:"stop_reason"`
		Usage      struct {
			InputTokens  int `json:"input_tokens"`
			OutputTokens int `json:"output_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(out, &msg); err != nil {
		t.Fatalf("not JSON: %v: %s", err, out)
	}
	if msg.Type != "message" || msg.Role != "assistant" || len(msg.Content) == 0 || msg.Content[0].Text == "" {
		t.Errorf("message = %+v", msg)
	}
	up := h.up.last(t)
	if !strings.Contains(string(up.Body), `"messages"`) || !strings.Contains(string(up.Body), `"role":"system"`) {
		t.Errorf("upstream did not get an OpenAI chat request: %s", up.Body)
	}

	// Streaming: Anthropic events, ending with message_stop.
	h.up.set(upstreamBehavior{kind: "stream", chunks: 2})
	resp, out = h.do(t, http.MethodPost, "/v1/messages", "", strings.Replace(body, `"max_tokens":64`, `"max_tokens":64,"stream":true`, 1), "x-api-key", keyAll)
	if resp.StatusCode != 200 {
		t.Fatalf("stream status = %d: %s", resp.StatusCode, out)
	}
	s := string(out)
	for _, want := range []string{"event: message_start", "event: content_block_delta", `"text_delta"`, "event: message_stop"} {
		if !strings.Contains(s, want) {
			t.Errorf("stream lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "[DONE]") {
		t.Errorf("an Anthropic stream must not carry OpenAI's [DONE]:\n%s", s)
	}

	// Errors in Anthropic's shape.
	resp, out = h.do(t, http.MethodPost, "/v1/messages", "", body, "x-api-key", "sk-wrong")
	var e struct {
		Type  string `json:"type"`
		Error struct {
			Type, Message string
		} `json:"error"`
	}
	if resp.StatusCode != 401 || json.Unmarshal(out, &e) != nil || e.Type != "error" || e.Error.Type != "authentication_error" {
		t.Errorf("bad key: status %d body %s", resp.StatusCode, out)
	}
}
