package gemini

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

// sseData returns the data payload of every event of an SSE body.
func sseData(b []byte) [][]byte {
	var out [][]byte
	for _, line := range bytes.Split(b, []byte("\n")) {
		if d, ok := bytes.CutPrefix(line, []byte("data: ")); ok {
			out = append(out, d)
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
	tr := &Translator{APIKey: "AIza-test", Now: fixedNow}
	path, headers, body, err := tr.Request(readFixture(t, "chat_request.json"), "gemini-2.5-flash", true)
	if err != nil {
		t.Fatal(err)
	}
	if want := "/models/gemini-2.5-flash:streamGenerateContent?alt=sse"; path != want {
		t.Errorf("path = %q, want %q", path, want)
	}
	if want := map[string]string{"x-goog-api-key": "AIza-test"}; !reflect.DeepEqual(headers, want) {
		t.Errorf("headers = %v, want %v", headers, want)
	}
	jsonEqual(t, "request", body, readFixture(t, "generate_request.golden.json"))
}

func TestRequestPathsAndConfig(t *testing.T) {
	tests := []struct {
		name, model string
		stream      bool
		in          string
		wantPath    string
		wantBody    string
	}{
		{"plain", "gemini-2.0-flash", false, `{"model":"g","messages":[{"role":"user","content":"hi"}]}`,
			"/models/gemini-2.0-flash:generateContent",
			`{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}`},
		{"models/ prefix", "models/gemini-2.0-flash", false, `{"model":"g","messages":[{"role":"user","content":"hi"}]}`,
			"/models/gemini-2.0-flash:generateContent",
			`{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}`},
		{"n and schema", "g", false, `{"model":"g","n":2,"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}},"tool_choice":"none","max_completion_tokens":9,"max_tokens":100}`,
			"/models/g:generateContent",
			`{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"toolConfig":{"functionCallingConfig":{"mode":"NONE"}},"generationConfig":{"maxOutputTokens":9,"candidateCount":2,"responseMimeType":"application/json","responseJsonSchema":{"type":"object"}}}`},
		{"required", "g", false, `{"model":"g","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":null}}],"tool_choice":"required"}`,
			"/models/g:generateContent",
			`{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"tools":[{"functionDeclarations":[{"name":"f"}]}],"toolConfig":{"functionCallingConfig":{"mode":"ANY"}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, headers, body, err := (&Translator{}).Request([]byte(tt.in), tt.model, tt.stream)
			if err != nil {
				t.Fatal(err)
			}
			if path != tt.wantPath {
				t.Errorf("path = %q, want %q", path, tt.wantPath)
			}
			if len(headers) != 0 {
				t.Errorf("headers without a key = %v, want none", headers)
			}
			jsonEqual(t, "body", body, []byte(tt.wantBody))
		})
	}
}

func TestRequestErrors(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"invalid json", `[`, "decode request"},
		{"unknown tool call id", `{"model":"g","messages":[{"role":"user","content":"hi"},{"role":"tool","tool_call_id":"nope","content":"x"}]}`, `"nope"`},
		{"image by url", `{"model":"g","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://example.com/a.png"}}]}]}`, "data: URLs"},
		{"only system", `{"model":"g","messages":[{"role":"system","content":"x"}]}`, "at least one"},
		{"bad arguments", `{"model":"g","messages":[{"role":"assistant","tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"nope"}}]}]}`, "JSON object"},
		{"bad role", `{"model":"g","messages":[{"role":"robot","content":"x"}]}`, "robot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := (&Translator{}).Request([]byte(tt.in), "g", false)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestRequestToolNameFromMessage(t *testing.T) {
	// A tool message whose call is not in the history falls back to its name.
	in := `{"model":"g","messages":[{"role":"user","content":"hi"},{"role":"tool","tool_call_id":"x","name":"lookup","content":"42"}]}`
	_, _, body, err := (&Translator{}).Request([]byte(in), "g", false)
	if err != nil {
		t.Fatal(err)
	}
	jsonEqual(t, "body", body, []byte(`{"contents":[{"role":"user","parts":[{"text":"hi"},{"functionResponse":{"name":"lookup","response":{"content":"42"}}}]}]}`))
}

func TestResponseGolden(t *testing.T) {
	tr := &Translator{Now: fixedNow}
	out, u, err := tr.Response(readFixture(t, "generate_response.json"))
	if err != nil {
		t.Fatal(err)
	}
	jsonEqual(t, "response", out, readFixture(t, "chat_completion.golden.json"))
	if want := (provider.Usage{PromptTokens: 120, CompletionTokens: 42}); u != want {
		t.Errorf("usage = %+v, want %+v", u, want)
	}
}

func TestResponseBlocked(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"candidate safety", `{"candidates":[{"finishReason":"SAFETY","index":0}],"usageMetadata":{"promptTokenCount":5},"responseId":"r"}`,
			`{"id":"chatcmpl-r","object":"chat.completion","created":1700000000,"model":"g","choices":[{"index":0,"message":{"role":"assistant","content":null},"finish_reason":"content_filter"}],"usage":{"prompt_tokens":5,"completion_tokens":0,"total_tokens":5}}`},
		{"prompt blocked", `{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":5},"responseId":"r"}`,
			`{"id":"chatcmpl-r","object":"chat.completion","created":1700000000,"model":"g","choices":[{"index":0,"message":{"role":"assistant","content":null},"finish_reason":"content_filter"}],"usage":{"prompt_tokens":5,"completion_tokens":0,"total_tokens":5}}`},
		{"max tokens", `{"candidates":[{"content":{"parts":[{"text":"abc"}],"role":"model"},"finishReason":"MAX_TOKENS"}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":3},"responseId":"r"}`,
			`{"id":"chatcmpl-r","object":"chat.completion","created":1700000000,"model":"g","choices":[{"index":0,"message":{"role":"assistant","content":"abc"},"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := &Translator{Now: fixedNow}
			if _, _, _, err := tr.Request([]byte(`{"model":"x","messages":[{"role":"user","content":"hi"}]}`), "g", false); err != nil {
				t.Fatal(err)
			}
			out, _, err := tr.Response([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			jsonEqual(t, "response", out, []byte(tt.want))
		})
	}
}

func TestResponseEstimatedUsage(t *testing.T) {
	tr := &Translator{Now: fixedNow}
	req := `{"model":"x","messages":[{"role":"system","content":"Be terse."},{"role":"user","content":"Say hello to the whole wide world."}]}`
	if _, _, _, err := tr.Request([]byte(req), "gemini-2.0-flash", false); err != nil {
		t.Fatal(err)
	}
	text := "Hello, whole wide world! Nice to meet you."
	out, u, err := tr.Response([]byte(`{"candidates":[{"content":{"parts":[{"text":"` + text + `"}]},"finishReason":"STOP"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if !u.Estimated {
		t.Fatalf("usage %+v not marked estimated", u)
	}
	if want := provider.EstimateTokens("gemini-2.0-flash", text); u.CompletionTokens != want || want == 0 {
		t.Errorf("completion tokens = %d, want %d", u.CompletionTokens, want)
	}
	// The prompt holds 15 words of text plus per-message framing.
	if u.PromptTokens < 15 || u.PromptTokens > 40 {
		t.Errorf("prompt tokens = %d, want between 15 and 40", u.PromptTokens)
	}
	var c provider.ChatCompletion
	if err := json.Unmarshal(out, &c); err != nil || c.Usage == nil || c.Usage.CompletionTokens != u.CompletionTokens {
		t.Errorf("usage in body = %+v (%v), want the estimate", c.Usage, err)
	}
}

func streamAll(t *testing.T, tr *Translator, events [][]byte) ([][]byte, *provider.Usage) {
	t.Helper()
	var chunks [][]byte
	var usage *provider.Usage
	for i, d := range events {
		cs, u, done, err := tr.StreamEvent(nil, d)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		chunks = append(chunks, cs...)
		if u != nil {
			usage = u
		}
		if done != (i == len(events)-1) {
			t.Errorf("event %d: done = %v", i, done)
		}
	}
	return chunks, usage
}

func TestStreamGolden(t *testing.T) {
	tr := &Translator{Now: fixedNow}
	if _, _, _, err := tr.Request(readFixture(t, "chat_request.json"), "gemini-2.5-flash", true); err != nil {
		t.Fatal(err)
	}
	chunks, usage := streamAll(t, tr, sseData(readFixture(t, "generate_stream.sse")))
	want := nonEmptyLines(readFixture(t, "chat_stream.golden.txt"))
	if len(chunks) != len(want) {
		t.Fatalf("got %d chunks, want %d:\n%s", len(chunks), len(want), bytes.Join(chunks, []byte("\n")))
	}
	for i := range want {
		jsonEqual(t, "chunk", chunks[i], want[i])
	}
	if want := (provider.Usage{PromptTokens: 40, CompletionTokens: 20}); usage == nil || *usage != want {
		t.Errorf("usage = %+v, want %+v", usage, want)
	}
}

func TestStreamEstimatedUsageNoUsageChunk(t *testing.T) {
	tr := &Translator{Now: fixedNow}
	if _, _, _, err := tr.Request([]byte(`{"model":"x","messages":[{"role":"user","content":"Count to three."}],"stream":true}`), "gemini-2.0-flash", true); err != nil {
		t.Fatal(err)
	}
	events := [][]byte{
		[]byte(`{"candidates":[{"content":{"parts":[{"text":"One, two,"}],"role":"model"}}]}`),
		[]byte(`{"candidates":[{"content":{"parts":[{"text":" three."}],"role":"model"},"finishReason":"STOP"}]}`),
	}
	chunks, usage := streamAll(t, tr, events)
	if len(chunks) != 3 {
		t.Fatalf("got %d chunks, want 3 (two deltas, finish; no usage chunk): %s", len(chunks), bytes.Join(chunks, []byte("\n")))
	}
	if usage == nil || !usage.Estimated || usage.CompletionTokens != provider.EstimateTokens("gemini-2.0-flash", "One, two, three.") {
		t.Errorf("usage = %+v, want an estimate of the streamed text", usage)
	}
}

func TestStreamTwoCandidates(t *testing.T) {
	tr := &Translator{Now: fixedNow}
	if _, _, _, err := tr.Request([]byte(`{"model":"x","n":2,"messages":[{"role":"user","content":"hi"}]}`), "g", true); err != nil {
		t.Fatal(err)
	}
	events := [][]byte{
		[]byte(`{"candidates":[{"content":{"parts":[{"text":"A"}]},"index":0},{"content":{"parts":[{"text":"B"}]},"index":1}],"usageMetadata":{"promptTokenCount":1}}`),
		[]byte(`{"candidates":[{"content":{"parts":[{"text":"."}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":1}}`),
		[]byte(`{"candidates":[{"content":{"parts":[{"text":"!"}]},"finishReason":"MAX_TOKENS","index":1}],"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":4}}`),
	}
	chunks, usage := streamAll(t, tr, events)
	if len(chunks) != 6 {
		t.Fatalf("got %d chunks, want 6", len(chunks))
	}
	if !bytes.Contains(chunks[5], []byte(`"index":1`)) || !bytes.Contains(chunks[5], []byte(`"finish_reason":"length"`)) {
		t.Errorf("last chunk = %s, want choice 1 finishing with length", chunks[5])
	}
	if usage == nil || usage.CompletionTokens != 4 || usage.Estimated {
		t.Errorf("usage = %+v", usage)
	}
}

func TestStreamError(t *testing.T) {
	_, _, done, err := (&Translator{}).StreamEvent(nil, []byte(`{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}`))
	var se *provider.StreamError
	if !errors.As(err, &se) || done {
		t.Fatalf("err = %v, want *provider.StreamError", err)
	}
	if se.Type != "unavailable" || se.Message != "The model is overloaded." {
		t.Errorf("stream error = %+v", se)
	}
}

func TestFinishReason(t *testing.T) {
	tests := []struct {
		in    string
		tools bool
		want  string
	}{
		{"STOP", false, "stop"},
		{"STOP", true, "tool_calls"},
		{"MAX_TOKENS", false, "length"},
		{"MAX_TOKENS", true, "length"},
		{"SAFETY", false, "content_filter"},
		{"RECITATION", false, "content_filter"},
		{"PROHIBITED_CONTENT", false, "content_filter"},
		{"SPII", false, "content_filter"},
		{"BLOCKLIST", false, "content_filter"},
		{"OTHER", false, "stop"},
		{"MALFORMED_FUNCTION_CALL", false, "stop"},
		{"FINISH_REASON_UNSPECIFIED", false, "stop"},
	}
	for _, tt := range tests {
		if got := FinishReason(tt.in, tt.tools); got != tt.want {
			t.Errorf("FinishReason(%q, %v) = %q, want %q", tt.in, tt.tools, got, tt.want)
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
		{"quota", 429, `{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}`,
			`{"error":{"message":"Resource has been exhausted (e.g. check quota).","type":"resource_exhausted","param":null,"code":"RESOURCE_EXHAUSTED"}}`},
		{"array wrapped", 400, `[{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT"}}]`,
			`{"error":{"message":"API key not valid.","type":"invalid_argument","param":null,"code":"INVALID_ARGUMENT"}}`},
		{"html", 502, `<html><body>502</body></html>`,
			`{"error":{"message":"<html><body>502</body></html>","type":"upstream_error","param":null,"code":null}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jsonEqual(t, "error", (&Translator{}).Error(tt.status, []byte(tt.body)), []byte(tt.want))
		})
	}
}

func FuzzResponse(f *testing.F) {
	f.Add(readFixture(f, "generate_response.json"))
	f.Add([]byte(`{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":null}}]}}]}`))
	f.Add([]byte(`{"promptFeedback":{"blockReason":"OTHER"}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		tr := &Translator{}
		if out, _, err := tr.Response(body); err == nil && !json.Valid(out) {
			t.Fatalf("invalid JSON out: %s", out)
		}
		tr.Error(500, body)
	})
}

func FuzzStreamEvent(f *testing.F) {
	for _, d := range sseData(readFixture(f, "generate_stream.sse")) {
		f.Add(d)
	}
	f.Add([]byte(`{"error":{"status":"X"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tr := &Translator{includeUsage: true}
		for i := 0; i < 2; i++ {
			chunks, _, _, _ := tr.StreamEvent(nil, data)
			for _, c := range chunks {
				if !json.Valid(c) {
					t.Fatalf("invalid chunk %s", c)
				}
			}
		}
	})
}

func BenchmarkStreamEvent(b *testing.B) {
	tr := &Translator{}
	data := []byte(`{"candidates":[{"content":{"parts":[{"text":"Hello there, how are you"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":40},"modelVersion":"gemini-2.5-flash","responseId":"s1"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := tr.StreamEvent(nil, data); err != nil {
			b.Fatal(err)
		}
	}
}
