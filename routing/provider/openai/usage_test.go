package openai

import "testing"

func TestParseUsage(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		want   Usage
		wantOK bool
	}{
		{"chat completion", `{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46}}`, Usage{12, 34}, true},
		{"with details objects", `{"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}`, Usage{19, 10}, true},
		{"details first", `{"usage":{"prompt_tokens_details":{"cached_tokens":5},"completion_tokens_details":{"reasoning_tokens":3},"completion_tokens":7,"prompt_tokens":8}}`, Usage{8, 7}, true},
		{"whitespace", "{ \"usage\" : {\n \"prompt_tokens\" : 3 ,\n \"completion_tokens\" : 4 } }", Usage{3, 4}, true},
		{"embeddings", `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}`, Usage{8, 0}, true},
		{"stream usage chunk", `{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14}}`, Usage{9, 5}, true},
		{"content mentions usage earlier", `{"choices":[{"delta":{"content":"\"usage\": {\"prompt_tokens\": 99}"}}],"usage":{"prompt_tokens":1,"completion_tokens":2}}`, Usage{1, 2}, true},
		{"usage as a string value after the object", `{"usage":{"prompt_tokens":3,"completion_tokens":4},"choices":[{"delta":{"content":"usage"}}]}`, Usage{3, 4}, true},
		{"usage null", `{"choices":[{"delta":{"content":"x"}}],"usage":null}`, Usage{}, false},
		{"no usage", `{"choices":[{"delta":{"content":"x"}}]}`, Usage{}, false},
		{"usage without prompt_tokens", `{"usage":{"total_tokens":5}}`, Usage{}, false},
		{"usage is a content string only", `{"choices":[{"delta":{"content":"usage"}}]}`, Usage{}, false},
		{"truncated", `{"usage":{"prompt_tokens":`, Usage{}, false},
		{"overflowing count", `{"usage":{"prompt_tokens":9227000000000000000,"completion_tokens":1}}`, Usage{}, false},
		{"overflowing completion count", `{"usage":{"prompt_tokens":1,"completion_tokens":99999999999999999999}}`, Usage{1, 0}, true},
		{"empty", ``, Usage{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseUsage([]byte(tt.body))
			if ok != tt.wantOK || got != tt.want {
				t.Errorf("ParseUsage() = %+v, %v; want %+v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestIsUsageOnlyChunk(t *testing.T) {
	tests := []struct {
		name string
		data string
		want bool
	}{
		{"usage chunk", `{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14}}`, true},
		{"usage chunk with spaces", `{"choices" : [ ] , "usage" : {"prompt_tokens":1,"completion_tokens":1}}`, true},
		{"content chunk with usage null", `{"choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}`, false},
		{"content chunk with usage", `{"choices":[{"index":0,"delta":{"content":"hi"}}],"usage":{"prompt_tokens":1,"completion_tokens":1}}`, false},
		{"empty choices, usage null", `{"choices":[],"usage":null}`, false},
		{"empty choices, no usage", `{"choices":[]}`, false},
		{"no choices", `{"usage":{"prompt_tokens":1,"completion_tokens":1}}`, false},
		{"choices not an array", `{"choices":null,"usage":{"prompt_tokens":1,"completion_tokens":1}}`, false},
		{"done", `[DONE]`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsUsageOnlyChunk([]byte(tt.data)); got != tt.want {
				t.Errorf("IsUsageOnlyChunk(%s) = %v, want %v", tt.data, got, tt.want)
			}
		})
	}
}

func BenchmarkParseUsage(b *testing.B) {
	chunk := []byte(`{"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0}}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := ParseUsage(chunk); !ok || !IsUsageOnlyChunk(chunk) {
			b.Fatal("usage chunk not recognised")
		}
	}
}
