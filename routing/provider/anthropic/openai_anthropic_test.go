package anthropic

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/llm-proxy/llm-proxy/routing/provider"
)

var fixedNow = func() time.Time { return time.Unix(1700000000, 0) }

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// jsonEqual compares two JSON documents by value, so fixtures can be
// indented while translators write compact JSON.
func jsonEqual(t testing.TB, what string, got, want []byte) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: got invalid JSON %q: %v", what, got, err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("%s: fixture invalid JSON: %v", what, err)
	}
	if !reflect.DeepEqual(g, w) {
		gi, _ := json.MarshalIndent(g, "", "  ")
		wi, _ := json.MarshalIndent(w, "", "  ")
		t.Errorf("%s mismatch\n got: %s\nwant: %s", what, gi, wi)
	}
}

type sseEvent struct{ event, data []byte }

// parseSSE splits a text/event-stream body into events.
func parseSSE(b []byte) []sseEvent {
	var out []sseEvent
	for _, block := range strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n\n") {
		var ev sseEvent
		for _, line := range strings.Split(block, "\n") {
			if v, ok := strings.CutPrefix(line, "event:"); ok {
				ev.event = []byte(strings.TrimSpace(v))
			} else if v, ok := strings.CutPrefix(line, "data:"); ok {
				ev.data = append(ev.data, strings.TrimPrefix(v, " ")...)
			}
		}
		if ev.data != nil {
			out = append(out, ev)
		}
	}
	return out
}

func nonEmptyLines(b []byte) [][]byte {
	var out [][]byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(l)) > 0 {
			out = append(out, l)
		}
	}
	return out
}

func TestRequestGolden(t *testing.T) {
	tr := &Translator{APIKey: "sk-ant-test", Now: fixedNow}
	path, headers, body, err := tr.Request(readFixture(t, "chat_request.json"), "claude-sonnet-4-5-20250929", true)
	if err != nil {
		t.Fatal(err)
	}
	if path != "/messages" {
		t.Errorf("path = %q, want /messages", path)
	}
	wantHeaders := map[string]string{"anthropic-version": "2023-06-01", "x-api-key": "sk-ant-test"}
	if !reflect.DeepEqual(headers, wantHeaders) {
		t.Errorf("headers = %v, want %v", headers, wantHeaders)
	}
	jsonEqual(t, "request", body, readFixture(t, "messages_request.golden.json"))
}

func TestRequestFields(t *testing.T) {
	tests := []struct {
		name string
		tr   Translator
		in   string
		want string // JSON subset: every key here must match
	}{
		{"default max_tokens", Translator{}, `{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
			`{"model":"up","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`},
		{"configured default", Translator{DefaultMaxTokens: 100}, `{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
			`{"max_tokens":100}`},
		{"max_tokens wins over default", Translator{DefaultMaxTokens: 100}, `{"model":"m","max_tokens":7,"messages":[{"role":"user","content":"hi"}]}`,
			`{"max_tokens":7}`},
		{"required", Translator{}, `{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"required"}`,
			`{"tool_choice":{"type":"any"}}`},
		{"named tool", Translator{}, `{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"f"}}}`,
			`{"tool_choice":{"type":"tool","name":"f"}}`},
		{"none", Translator{}, `{"model":"m","messages":[{"role":"user","content":"hi"}],"tool_choice":"none"}`,
			`{"tool_choice":{"type":"none"}}`},
		{"consecutive users merge", Translator{}, `{"model":"m","messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}`,
			`{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, body, err := tt.tr.Request([]byte(tt.in), "up", false)
			if err != nil {
				t.Fatal(err)
			}
			var got, want map[string]any
			_ = json.Unmarshal(body, &got)
			_ = json.Unmarshal([]byte(tt.want), &want)
			if _, ok := got["stream"]; ok {
				t.Errorf("non-streaming request has \"stream\": %s", body)
			}
			for k, w := range want {
				if !reflect.DeepEqual(got[k], w) {
					t.Errorf("%s = %v, want %v (body %s)", k, got[k], w, body)
				}
			}
		})
	}
}

func TestRequestVersionAndNoKey(t *testing.T) {
	tr := &Translator{Version: "2024-01-01"}
	_, headers, _, err := tr.Request([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`), "up", false)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"anthropic-version": "2024-01-01"}
	if !reflect.DeepEqual(headers, want) {
		t.Errorf("headers = %v, want %v", headers, want)
	}
}

func TestRequestErrors(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"invalid json", `{"model":`, "decode request"},
		{"n > 1", `{"model":"m","n":2,"messages":[{"role":"user","content":"hi"}]}`, "'n'"},
		{"only system", `{"model":"m","messages":[{"role":"system","content":"hi"}]}`, "at least one"},
		{"unknown role", `{"model":"m","messages":[{"role":"function","content":"hi"}]}`, "unsupported role"},
		{"tool without id", `{"model":"m","messages":[{"role":"tool","content":"hi"}]}`, "tool_call_id"},
		{"bad arguments", `{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"[1]"}}]}]}`, "JSON object"},
		{"audio part", `{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio"}]}]}`, "input_audio"},
		{"bad tool_choice", `{"model":"m","messages":[{"role":"user","content":"hi"}],"tool_choice":"sometimes"}`, "tool_choice"},
		{"bad stop", `{"model":"m","messages":[{"role":"user","content":"hi"}],"stop":5}`, "stop"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := (&Translator{}).Request([]byte(tt.in), "up", false)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestResponseGolden(t *testing.T) {
	tr := &Translator{Now: fixedNow}
	out, u, err := tr.Response(readFixture(t, "messages_response.json"))
	if err != nil {
		t.Fatal(err)
	}
	jsonEqual(t, "response", out, readFixture(t, "chat_completion.golden.json"))
	if want := (provider.Usage{PromptTokens: 592, CompletionTokens: 89}); u != want {
		t.Errorf("usage = %+v, want %+v", u, want)
	}
}

func TestResponseTextOnly(t *testing.T) {
	in := `{"id":"msg_1","type":"message","role":"assistant","model":"c","content":[{"type":"text","text":"Hi"},{"type":"text","text":" there"}],"stop_reason":"max_tokens","usage":{"input_tokens":3,"output_tokens":2}}`
	out, _, err := (&Translator{Now: fixedNow}).Response([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"msg_1","object":"chat.completion","created":1700000000,"model":"c","choices":[{"index":0,"message":{"role":"assistant","content":"Hi there"},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`
	jsonEqual(t, "response", out, []byte(want))
}

// streamThrough feeds every event of an SSE fixture to tr and returns the
// chunks, the usage reported with done, and at which event done came.
func streamThrough(t *testing.T, tr provider.Translator, sse []byte) (chunks [][]byte, usage *provider.Usage, doneAt int) {
	t.Helper()
	events := parseSSE(sse)
	doneAt = -1
	for i, ev := range events {
		cs, u, done, err := tr.StreamEvent(ev.event, ev.data)
		if err != nil {
			t.Fatalf("event %d (%s): %v", i, ev.event, err)
		}
		for _, c := range cs {
			chunks = append(chunks, append([]byte(nil), c...))
		}
		if u != nil {
			usage = u
		}
		if done {
			if doneAt >= 0 {
				t.Fatalf("done twice (events %d and %d)", doneAt, i)
			}
			doneAt = i
		}
	}
	if doneAt != len(events)-1 {
		t.Errorf("done at event %d, want the last (%d)", doneAt, len(events)-1)
	}
	return chunks, usage, doneAt
}

func TestStreamGolden(t *testing.T) {
	tr := &Translator{Now: fixedNow}
	if _, _, _, err := tr.Request(readFixture(t, "chat_request.json"), "claude-sonnet-4-5-20250929", true); err != nil {
		t.Fatal(err)
	}
	chunks, usage, _ := streamThrough(t, tr, readFixture(t, "messages_stream.sse"))
	want := nonEmptyLines(readFixture(t, "chat_stream.golden.txt"))
	if len(chunks) != len(want) {
		t.Fatalf("got %d chunks, want %d:\n%s", len(chunks), len(want), bytes.Join(chunks, []byte("\n")))
	}
	for i := range want {
		jsonEqual(t, "chunk", chunks[i], want[i])
	}
	if want := (provider.Usage{PromptTokens: 472, CompletionTokens: 89}); usage == nil || *usage != want {
		t.Errorf("usage = %+v, want %+v", usage, want)
	}
}

func TestStreamWithoutIncludeUsage(t *testing.T) {
	tr := &Translator{Now: fixedNow}
	if _, _, _, err := tr.Request([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}`), "up", true); err != nil {
		t.Fatal(err)
	}
	chunks, usage, _ := streamThrough(t, tr, readFixture(t, "messages_stream.sse"))
	if len(chunks) != 7 {
		t.Fatalf("got %d chunks, want 7 (no usage chunk)", len(chunks))
	}
	for _, c := range chunks {
		if bytes.Contains(c, []byte(`"usage"`)) {
			t.Errorf("usage chunk sent although the client did not ask: %s", c)
		}
	}
	if usage == nil || usage.PromptTokens != 472 || usage.CompletionTokens != 89 {
		t.Errorf("usage = %+v, want 472/89 reported to the caller anyway", usage)
	}
}

func TestStreamErrorEvent(t *testing.T) {
	tr := &Translator{}
	_, _, done, err := tr.StreamEvent([]byte("error"), []byte(`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`))
	var se *provider.StreamError
	if !errors.As(err, &se) || done {
		t.Fatalf("err = %v, done = %v; want *provider.StreamError", err, done)
	}
	jsonEqual(t, "stream error", se.JSON(), []byte(`{"error":{"message":"Overloaded","type":"overloaded_error","param":null,"code":null}}`))
	if _, _, _, err := tr.StreamEvent(nil, []byte(`{"type":`)); err == nil || errors.As(err, &se) {
		t.Errorf("malformed event: err = %v, want a plain decode error", err)
	}
}

func TestFinishReason(t *testing.T) {
	tests := []struct{ in, want string }{
		{"end_turn", "stop"},
		{"max_tokens", "length"},
		{"tool_use", "tool_calls"},
		{"stop_sequence", "stop"},
		{"pause_turn", "stop"},
		{"refusal", "content_filter"},
		{"model_context_window_exceeded", "length"},
		{"", "stop"},
		{"something_new", "stop"},
	}
	for _, tt := range tests {
		if got := FinishReason(tt.in); got != tt.want {
			t.Errorf("FinishReason(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	back := []struct{ in, want string }{
		{"stop", "end_turn"}, {"length", "max_tokens"}, {"tool_calls", "tool_use"},
		{"content_filter", "refusal"}, {"function_call", "tool_use"}, {"", "end_turn"},
	}
	for _, tt := range back {
		if got := StopReason(tt.in); got != tt.want {
			t.Errorf("StopReason(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestError(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"anthropic error", 529, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`,
			`{"error":{"message":"Overloaded","type":"overloaded_error","param":null,"code":null}}`},
		{"rate limit", 429, `{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"},"request_id":"req_1"}`,
			`{"error":{"message":"Number of request tokens has exceeded your per-minute rate limit","type":"rate_limit_error","param":null,"code":null}}`},
		{"plain text", 502, "Bad Gateway from proxy",
			`{"error":{"message":"Bad Gateway from proxy","type":"upstream_error","param":null,"code":null}}`},
		{"empty", 503, "",
			`{"error":{"message":"upstream returned 503 Service Unavailable","type":"upstream_error","param":null,"code":null}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jsonEqual(t, "error", (&Translator{}).Error(tt.status, []byte(tt.body)), []byte(tt.want))
		})
	}
}

func FuzzResponse(f *testing.F) {
	f.Add(readFixture(f, "messages_response.json"))
	f.Add([]byte(`{"content":[{"type":"tool_use","input":null}],"stop_reason":null}`))
	f.Add([]byte(`{"content":"x"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		out, _, err := (&Translator{}).Response(body)
		if err == nil && !json.Valid(out) {
			t.Fatalf("invalid JSON out for %q: %s", body, out)
		}
		(&Translator{}).Error(500, body)
	})
}

func FuzzStreamEvent(f *testing.F) {
	for _, ev := range parseSSE(readFixture(f, "messages_stream.sse")) {
		f.Add(ev.event, ev.data)
	}
	f.Add([]byte("error"), []byte(`{"type":"error"}`))
	f.Add([]byte(""), []byte(`{"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"x"}}`))
	f.Fuzz(func(t *testing.T, event, data []byte) {
		tr := &Translator{includeUsage: true}
		// Run the event after a normal start and again on its own, so both a
		// fresh and a mid-stream translator see it.
		_, _, _, _ = tr.StreamEvent(nil, []byte(`{"type":"message_start","message":{"id":"m","usage":{"input_tokens":1}}}`))
		chunks, _, _, _ := tr.StreamEvent(event, data)
		for _, c := range chunks {
			if !json.Valid(c) {
				t.Fatalf("invalid chunk %s", c)
			}
		}
		_, _, _, _ = (&Translator{}).StreamEvent(event, data)
	})
}

func BenchmarkStreamEventTextDelta(b *testing.B) {
	tr := &Translator{}
	_, _, _, _ = tr.StreamEvent(nil, []byte(`{"type":"message_start","message":{"id":"msg_1","model":"claude","usage":{"input_tokens":10}}}`))
	data := []byte(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello there, how are you"}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := tr.StreamEvent([]byte("content_block_delta"), data); err != nil {
			b.Fatal(err)
		}
	}
}
