package anthropic

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func TestInboundRequestGolden(t *testing.T) {
	var in Inbound
	body, model, stream, err := in.Request(readFixture(t, "inbound_request.json"))
	if err != nil {
		t.Fatal(err)
	}
	if model != "claude-sonnet" || !stream {
		t.Errorf("model, stream = %q, %v; want claude-sonnet, true", model, stream)
	}
	jsonEqual(t, "chat request", body, readFixture(t, "inbound_chat_request.golden.json"))
}

func TestInboundRequestErrors(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"invalid json", `{`, "invalid request body"},
		{"no model", `{"messages":[{"role":"user","content":"hi"}]}`, "model"},
		{"no messages", `{"model":"m","messages":[]}`, "messages"},
		{"bad role", `{"model":"m","messages":[{"role":"system","content":"hi"}]}`, "messages.0.role"},
		{"server tool", `{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"web_search_20250305","name":"web_search"}]}`, "web_search_20250305"},
		{"document block", `{"model":"m","messages":[{"role":"user","content":[{"type":"document"}]}]}`, "document"},
		{"bad tool_choice", `{"model":"m","messages":[{"role":"user","content":"hi"}],"tool_choice":{"type":"maybe"}}`, "tool_choice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := new(Inbound).Request([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestInboundResponseGolden(t *testing.T) {
	out, err := new(Inbound).Response(readFixture(t, "inbound_chat_completion.json"))
	if err != nil {
		t.Fatal(err)
	}
	jsonEqual(t, "message", out, readFixture(t, "inbound_message.golden.json"))
}

func TestInboundResponseMalformedArguments(t *testing.T) {
	in := `{"id":"c","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"x","type":"function","function":{"name":"f","arguments":"{\"a\":"}}]},"finish_reason":"length"}]}`
	out, err := new(Inbound).Response([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"c","type":"message","role":"assistant","model":"m","content":[{"type":"tool_use","id":"x","name":"f","input":{}}],"stop_reason":"max_tokens","stop_sequence":null,"usage":{"input_tokens":0,"output_tokens":0}}`
	jsonEqual(t, "message", out, []byte(want))
	if _, err := new(Inbound).Response([]byte(`{"choices":[]}`)); err == nil {
		t.Error("a completion without choices was accepted")
	}
}

func TestInboundStreamGolden(t *testing.T) {
	var in Inbound
	var out []byte
	for _, line := range nonEmptyLines(readFixture(t, "inbound_chat_stream.txt")) {
		var err error
		out, err = in.StreamChunk(out, line)
		if err != nil {
			t.Fatalf("chunk %s: %v", line, err)
		}
	}
	// Finish after [DONE] must add nothing.
	if again := in.Finish(nil); len(again) != 0 {
		t.Errorf("second Finish wrote %s", again)
	}
	got, want := parseSSE(out), parseSSE(readFixture(t, "inbound_events.golden.sse"))
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d:\n%s", len(got), len(want), out)
	}
	for i := range want {
		if !bytes.Equal(got[i].event, want[i].event) {
			t.Errorf("event %d = %s, want %s", i, got[i].event, want[i].event)
		}
		jsonEqual(t, "event "+string(want[i].event), got[i].data, want[i].data)
	}
}

func TestInboundStreamError(t *testing.T) {
	var in Inbound
	out, err := in.StreamChunk(nil, []byte(`{"error":{"message":"stream stalled","type":"timeout"}}`))
	if err != nil {
		t.Fatal(err)
	}
	evs := parseSSE(out)
	if len(evs) != 1 || string(evs[0].event) != "error" {
		t.Fatalf("events = %s, want one error event", out)
	}
	jsonEqual(t, "error event", evs[0].data, []byte(`{"type":"error","error":{"type":"timeout","message":"stream stalled"}}`))
}

func TestInboundErrorBody(t *testing.T) {
	tests := []struct {
		status int
		body   string
		want   string
	}{
		{400, `{"error":{"message":"bad model","type":"invalid_request_error"}}`, `{"type":"error","error":{"type":"invalid_request_error","message":"bad model"}}`},
		{401, `{"error":{"message":"Incorrect API key provided"}}`, `{"type":"error","error":{"type":"authentication_error","message":"Incorrect API key provided"}}`},
		{429, `{"error":{"message":"slow down"}}`, `{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}`},
		{503, `<html>down</html>`, `{"type":"error","error":{"type":"overloaded_error","message":"<html>down</html>"}}`},
		{504, ``, `{"type":"error","error":{"type":"api_error","message":"upstream returned 504 Gateway Timeout"}}`},
		{422, `{}`, `{"type":"error","error":{"type":"invalid_request_error","message":"{}"}}`},
	}
	for _, tt := range tests {
		jsonEqual(t, "error body", ErrorBody(tt.status, []byte(tt.body)), []byte(tt.want))
	}
}

// TestRoundTrip sends an Anthropic client request through Inbound and then
// the Anthropic Translator, as /v1/messages routed to an Anthropic upstream
// would: what reaches the upstream must say what the client said.
func TestRoundTrip(t *testing.T) {
	client := readFixture(t, "inbound_request.json")
	chat, _, stream, err := new(Inbound).Request(client)
	if err != nil {
		t.Fatal(err)
	}
	_, _, up, err := new(Translator).Request(chat, "claude-sonnet", stream)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	_ = json.Unmarshal(up, &got)
	var want map[string]any
	_ = json.Unmarshal(client, &want)
	// Dropped on purpose: top_k (no OpenAI field) and the thinking block.
	delete(want, "top_k")
	msgs := want["messages"].([]any)
	asst := msgs[1].(map[string]any)
	asst["content"] = asst["content"].([]any)[1:]
	// Text-only content and system come back in their canonical forms.
	msgs[0].(map[string]any)["content"] = []any{map[string]any{"type": "text", "text": "Weather in Paris?"}}
	want["system"] = "You are a weather bot."
	tr := msgs[2].(map[string]any)["content"].([]any)[0].(map[string]any)
	tr["content"] = []any{map[string]any{"type": "text", "text": "18C"}}
	wb, _ := json.Marshal(want)
	jsonEqual(t, "round trip", up, wb)
}

// fakeAnthropic plays a gateway with an Anthropic upstream in one handler:
// the request goes through Translator.Request, the canned Anthropic answer
// through Response or StreamEvent.
func fakeAnthropic(t *testing.T) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var probe struct {
			Stream bool `json:"stream"`
		}
		_ = json.Unmarshal(body, &probe)
		tr := &Translator{APIKey: "k"}
		if _, _, _, err := tr.Request(body, "claude-sonnet-4-5-20250929", probe.Stream); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if !probe.Stream {
			out, _, err := tr.Response(readFixture(t, "messages_response.json"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(out)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range parseSSE(readFixture(t, "messages_stream.sse")) {
			chunks, _, done, err := tr.StreamEvent(ev.event, ev.data)
			if err != nil {
				t.Errorf("stream event: %v", err)
				return
			}
			for _, c := range chunks {
				_, _ = w.Write([]byte("data: " + string(c) + "\n\n"))
			}
			if done {
				_, _ = w.Write([]byte("data: [DONE]\n\n"))
			}
		}
	}))
}

// TestOpenAISDK drives the translation with the official OpenAI Go SDK, so
// the chunks and completions are checked against a real client's parser.
func TestOpenAISDK(t *testing.T) {
	srv := fakeAnthropic(t)
	defer srv.Close()
	client := openai.NewClient(option.WithBaseURL(srv.URL+"/v1"), option.WithAPIKey("sk-test"), option.WithMaxRetries(0))
	params := openai.ChatCompletionNewParams{
		Model:    "claude-sonnet",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("be brief"), openai.UserMessage("Weather in Paris?")},
	}
	ctx := context.Background()
	c, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Choices[0].Message.ToolCalls; len(got) != 1 || got[0].Function.Name != "get_weather" || got[0].Function.Arguments != `{"city":"Paris","unit":"celsius"}` {
		t.Errorf("tool calls = %+v", got)
	}
	if c.Choices[0].FinishReason != "tool_calls" || c.Usage.PromptTokens != 592 || c.Usage.CompletionTokens != 89 {
		t.Errorf("finish %q usage %+v", c.Choices[0].FinishReason, c.Usage)
	}

	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	s := client.Chat.Completions.NewStreaming(ctx, params)
	var acc openai.ChatCompletionAccumulator
	for s.Next() {
		acc.AddChunk(s.Current())
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	msg := acc.Choices[0].Message
	if msg.Content != "Okay, let me check." {
		t.Errorf("streamed content = %q", msg.Content)
	}
	if len(msg.ToolCalls) != 1 || msg.ToolCalls[0].ID != "toolu_01T1x1fJ34qAmk2tNTrN7Up6" || msg.ToolCalls[0].Function.Arguments != `{"city": "Paris"}` {
		t.Errorf("streamed tool calls = %+v", msg.ToolCalls)
	}
	if acc.Choices[0].FinishReason != "tool_calls" || acc.Usage.PromptTokens != 472 || acc.Usage.CompletionTokens != 89 {
		t.Errorf("streamed finish %q usage %+v", acc.Choices[0].FinishReason, acc.Usage)
	}
}

func FuzzInbound(f *testing.F) {
	f.Add(readFixture(f, "inbound_request.json"), readFixture(f, "inbound_chat_completion.json"))
	for _, l := range nonEmptyLines(readFixture(f, "inbound_chat_stream.txt")) {
		f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":[{"type":"tool_result","content":[{"type":"text"}]}]}]}`), l)
	}
	f.Fuzz(func(t *testing.T, req, resp []byte) {
		var in Inbound
		if out, _, _, err := in.Request(req); err == nil && !json.Valid(out) {
			t.Fatalf("invalid chat request %s", out)
		}
		if out, err := in.Response(resp); err == nil && !json.Valid(out) {
			t.Fatalf("invalid message %s", out)
		}
		out, _ := in.StreamChunk(nil, resp)
		out = in.Finish(out)
		for _, ev := range parseSSE(out) {
			if !json.Valid(ev.data) {
				t.Fatalf("invalid event data %s", ev.data)
			}
		}
		ErrorBody(500, resp)
	})
}
