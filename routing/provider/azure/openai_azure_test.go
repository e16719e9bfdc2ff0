package azure

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/llm-proxy/llm-proxy/routing/provider"
	"github.com/llm-proxy/llm-proxy/routing/provider/openai"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRequest(t *testing.T) {
	tests := []struct {
		name       string
		tr         Translator
		in         string
		deployment string
		stream     bool
		wantPath   string
		wantBody   string
	}{
		{"default version", Translator{APIKey: "azkey"}, `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"temperature":0.1}`, "prod-4o", false,
			"/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21",
			`{"model":"prod-4o","messages":[{"role":"user","content":"hi"}],"temperature":0.1}`},
		{"stream forces usage", Translator{APIKey: "azkey", APIVersion: "2025-01-01-preview"}, `{"model":"gpt-4o","stream":true,"messages":[]}`, "my deploy", true,
			"/openai/deployments/my%20deploy/chat/completions?api-version=2025-01-01-preview",
			`{"model":"my deploy","stream":true,"messages":[],"stream_options":{"include_usage":true}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, headers, body, err := tt.tr.Request([]byte(tt.in), tt.deployment, tt.stream)
			if err != nil {
				t.Fatal(err)
			}
			if path != tt.wantPath {
				t.Errorf("path = %q, want %q", path, tt.wantPath)
			}
			if want := map[string]string{"api-key": "azkey"}; !reflect.DeepEqual(headers, want) {
				t.Errorf("headers = %v, want %v", headers, want)
			}
			// Pass-through: byte-exact, only the edits asked for.
			if string(body) != tt.wantBody {
				t.Errorf("body = %s\nwant  %s", body, tt.wantBody)
			}
		})
	}
	if _, _, _, err := (&Translator{}).Request([]byte(`{"messages":[]}`), "d", false); !errors.Is(err, openai.ErrModelMissing) {
		t.Errorf("missing model: err = %v, want ErrModelMissing", err)
	}
}

func TestResponse(t *testing.T) {
	body := readFixture(t, "chat_completion.json")
	tr := &Translator{}
	if _, _, _, err := tr.Request([]byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`), "prod-4o", false); err != nil {
		t.Fatal(err)
	}
	out, u, err := tr.Response(body)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != string(body) {
		t.Error("response body changed; Azure answers pass through")
	}
	if want := (provider.Usage{PromptTokens: 19, CompletionTokens: 10}); u != want {
		t.Errorf("usage = %+v, want %+v", u, want)
	}
}

func TestResponseWithoutUsageIsEstimated(t *testing.T) {
	tr := &Translator{}
	if _, _, _, err := tr.Request([]byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"Tell me a joke about cats."}]}`), "gpt-4o", false); err != nil {
		t.Fatal(err)
	}
	answer := "Why did the cat sit on the computer? To keep an eye on the mouse."
	_, u, err := tr.Response([]byte(`{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"` + answer + `"},"finish_reason":"stop"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if !u.Estimated || u.CompletionTokens != provider.EstimateTokens("gpt-4o", answer) || u.PromptTokens < 7 {
		t.Errorf("usage = %+v, want an estimate (completion %d)", u, provider.EstimateTokens("gpt-4o", answer))
	}
	if _, _, err := tr.Response([]byte(`<html>`)); err == nil {
		t.Error("unreadable body without usage was accepted")
	}
}

func streamLines(t *testing.T) [][]byte {
	var out [][]byte
	for _, l := range strings.Split(string(readFixture(t, "chat_stream.sse")), "\n") {
		if d, ok := strings.CutPrefix(l, "data: "); ok {
			out = append(out, []byte(d))
		}
	}
	return out
}

func TestStream(t *testing.T) {
	tests := []struct {
		name         string
		req          string
		wantChunks   int
		wantUsageOut bool
	}{
		{"client asked for usage", `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}`, 4, true},
		{"client did not ask", `{"model":"m","stream":true,"messages":[]}`, 3, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := &Translator{}
			if _, _, _, err := tr.Request([]byte(tt.req), "d", true); err != nil {
				t.Fatal(err)
			}
			lines := streamLines(t)
			var got [][]byte
			var usage *provider.Usage
			for i, d := range lines {
				cs, u, done, err := tr.StreamEvent(nil, d)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, cs...)
				if u != nil {
					usage = u
				}
				if done != (i == len(lines)-1) {
					t.Errorf("line %d: done = %v", i, done)
				}
			}
			if len(got) != tt.wantChunks {
				t.Fatalf("got %d chunks, want %d", len(got), tt.wantChunks)
			}
			for i, c := range got {
				if string(c) != string(lines[i]) {
					t.Errorf("chunk %d = %s, want the upstream's bytes %s", i, c, lines[i])
				}
			}
			if want := (provider.Usage{PromptTokens: 9, CompletionTokens: 3}); usage == nil || *usage != want {
				t.Errorf("usage = %+v, want %+v", usage, want)
			}
		})
	}
}

func TestStreamWithoutUsageIsEstimated(t *testing.T) {
	tr := &Translator{}
	if _, _, _, err := tr.Request([]byte(`{"model":"m","stream":true,"messages":[{"role":"user","content":"Say hi"}]}`), "gpt-4o-mini", true); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{
		`{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]}`,
		`{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" there, friend"}}]}`,
	} {
		if _, u, done, err := tr.StreamEvent(nil, []byte(d)); err != nil || u != nil || done {
			t.Fatalf("chunk: usage %v done %v err %v", u, done, err)
		}
	}
	_, u, done, err := tr.StreamEvent(nil, []byte("[DONE]"))
	if err != nil || !done || u == nil {
		t.Fatalf("[DONE]: usage %v done %v err %v", u, done, err)
	}
	if !u.Estimated || u.CompletionTokens != provider.EstimateTokens("gpt-4o-mini", "Hi there, friend") || u.PromptTokens == 0 {
		t.Errorf("usage = %+v", u)
	}
}

func TestStreamErrorPayload(t *testing.T) {
	_, _, _, err := (&Translator{}).StreamEvent(nil, []byte(`{"error":{"code":"content_filter","message":"The response was filtered"}}`))
	var se *provider.StreamError
	if !errors.As(err, &se) || se.Message != "The response was filtered" {
		t.Fatalf("err = %v, want a StreamError with the message", err)
	}
}

func TestError(t *testing.T) {
	azureErr := `{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}`
	if got := (&Translator{}).Error(404, []byte(azureErr)); string(got) != azureErr {
		t.Errorf("Azure error changed: %s", got)
	}
	got := (&Translator{}).Error(502, []byte("<html>Bad Gateway</html>"))
	var e struct {
		Error struct{ Message, Type string }
	}
	if err := json.Unmarshal(got, &e); err != nil || e.Error.Message != "<html>Bad Gateway</html>" || e.Error.Type != "upstream_error" {
		t.Errorf("wrapped error = %s", got)
	}
}

func FuzzResponse(f *testing.F) {
	f.Add(readFixture(f, "chat_completion.json"))
	f.Add([]byte(`{"choices":[{"message":{"content":[{"type":"text","text":"x"}]}}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		tr := &Translator{}
		_, _, _ = tr.Response(body)
		_, _, _, _ = tr.StreamEvent(nil, body)
		_ = tr.Error(500, body)
	})
}
