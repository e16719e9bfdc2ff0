package provider

import (
	"encoding/json"
	"reflect"
	"strings"
	"sync"
	"testing"
)

func TestEstimateTokens(t *testing.T) {
	// OpenAI's cookbook counts "tiktoken is great!" as 6 cl100k_base tokens.
	if got := EstimateTokens("gpt-4", "tiktoken is great!"); got != 6 {
		t.Errorf("cl100k count = %d, want 6", got)
	}
	if got := EstimateTokens("gpt-4o", ""); got != 0 {
		t.Errorf("empty text = %d tokens, want 0", got)
	}
	// o200k_base has far more non-Latin merges: picking it for gpt-4o
	// families shows as a smaller count for Japanese text.
	jp := strings.Repeat("東京の天気はどうですか。明日は雨が降るでしょう。", 4)
	o200k, cl100k := EstimateTokens("gpt-4o-mini", jp), EstimateTokens("claude-sonnet-4-5", jp)
	if o200k == 0 || o200k >= cl100k {
		t.Errorf("o200k count %d should be below cl100k count %d", o200k, cl100k)
	}
	if got := EstimateTokens("azure/gpt-4o", jp); got != o200k {
		t.Errorf("prefixed model name counted %d, want %d", got, o200k)
	}
}

func TestEstimateTokensConcurrent(t *testing.T) {
	want := EstimateTokens("gpt-4.1", "The quick brown fox jumps over the lazy dog.")
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				if got := EstimateTokens("gpt-4.1", "The quick brown fox jumps over the lazy dog."); got != want {
					t.Errorf("concurrent count %d, want %d", got, want)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestEstimatePrompt(t *testing.T) {
	var r ChatRequest
	if err := json.Unmarshal([]byte(`{"messages":[{"role":"user","content":"tiktoken is great!"}]}`), &r); err != nil {
		t.Fatal(err)
	}
	// 6 text tokens + "user" and two newlines, 4 per message, 3 for the reply.
	base := EstimateTokens("gpt-4", "user\ntiktoken is great!\n")
	if got, want := EstimatePrompt("gpt-4", &r), base+4+3; got != want {
		t.Errorf("EstimatePrompt = %d, want %d", got, want)
	}
}

func TestContent(t *testing.T) {
	tests := []struct {
		name, in, out string
		text          string
	}{
		{"string", `"hi"`, `"hi"`, "hi"},
		{"null", `null`, `null`, ""},
		{"parts", `[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA=="}}]`,
			`[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA=="}}]`, "a"},
		{"single text part", `[{"type":"text","text":"x"}]`, `"x"`, "x"},
		{"two text parts", `[{"type":"text","text":"x"},{"type":"text","text":"y"}]`, `[{"type":"text","text":"x"},{"type":"text","text":"y"}]`, "xy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Content
			if err := json.Unmarshal([]byte(tt.in), &c); err != nil {
				t.Fatal(err)
			}
			out, err := json.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tt.out {
				t.Errorf("round trip = %s, want %s", out, tt.out)
			}
			if c.Text() != tt.text {
				t.Errorf("Text() = %q, want %q", c.Text(), tt.text)
			}
		})
	}
	var c Content
	if err := json.Unmarshal([]byte(`42`), &c); err == nil {
		t.Error("number content accepted")
	}
}

func TestStringList(t *testing.T) {
	tests := []struct {
		in   string
		want StringList
		ok   bool
	}{
		{`"END"`, StringList{"END"}, true},
		{`["a","b"]`, StringList{"a", "b"}, true},
		{`null`, nil, true},
		{`3`, nil, false},
	}
	for _, tt := range tests {
		var got StringList
		err := json.Unmarshal([]byte(tt.in), &got)
		if (err == nil) != tt.ok || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestParseDataURL(t *testing.T) {
	tests := []struct {
		in, mt, data string
		ok           bool
	}{
		{"data:image/png;base64,iVBO", "image/png", "iVBO", true},
		{"data:image/jpeg;base64,", "image/jpeg", "", true},
		{"data:text/plain,hello", "", "", false},
		{"https://example.com/a.png", "", "", false},
		{"data:;base64,AA", "", "", false},
	}
	for _, tt := range tests {
		mt, data, ok := ParseDataURL(tt.in)
		if mt != tt.mt || data != tt.data || ok != tt.ok {
			t.Errorf("ParseDataURL(%q) = %q, %q, %v; want %q, %q, %v", tt.in, mt, data, ok, tt.mt, tt.data, tt.ok)
		}
	}
}

func TestParseToolChoice(t *testing.T) {
	tests := []struct {
		in   string
		want ToolChoice
		ok   bool
	}{
		{``, ToolChoice{}, true},
		{`null`, ToolChoice{}, true},
		{`"auto"`, ToolChoice{Mode: "auto"}, true},
		{`"required"`, ToolChoice{Mode: "required"}, true},
		{`"none"`, ToolChoice{Mode: "none"}, true},
		{`{"type":"function","function":{"name":"f"}}`, ToolChoice{Mode: "function", Name: "f"}, true},
		{`"always"`, ToolChoice{}, false},
		{`{"type":"function"}`, ToolChoice{}, false},
	}
	for _, tt := range tests {
		got, err := ParseToolChoice(json.RawMessage(tt.in))
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("ParseToolChoice(%s) = %+v, %v; want %+v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestErrorJSON(t *testing.T) {
	if got, want := string(ErrorJSON(`say "hi"`, "invalid_request_error", "")), `{"error":{"message":"say \"hi\"","type":"invalid_request_error","param":null,"code":null}}`; got != want {
		t.Errorf("ErrorJSON = %s, want %s", got, want)
	}
	if got, want := string(ErrorJSON("m", "t", "c")), `{"error":{"message":"m","type":"t","param":null,"code":"c"}}`; got != want {
		t.Errorf("ErrorJSON = %s, want %s", got, want)
	}
	long := strings.Repeat("x", 2000)
	tests := []struct {
		status int
		body   string
		want   string
	}{
		{502, "bad gateway", "bad gateway"},
		{502, "  ", "upstream returned 502 Bad Gateway"},
		{500, long, "upstream returned 500 Internal Server Error"},
		{599, "", "upstream returned status 599"},
	}
	for _, tt := range tests {
		if got := FallbackMessage(tt.status, []byte(tt.body)); got != tt.want {
			t.Errorf("FallbackMessage(%d, %.20q) = %q, want %q", tt.status, tt.body, got, tt.want)
		}
	}
}

func BenchmarkEstimateTokens(b *testing.B) {
	text := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 40)
	EstimateTokens("gpt-4o", text)
	b.ReportAllocs()
	for b.Loop() {
		EstimateTokens("gpt-4o", text)
	}
}
