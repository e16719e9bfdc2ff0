package provider

import (
	"testing"
	"time"
)

func waitTokenizer(t *testing.T, model string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !TokenizerReady(model) {
		if time.Now().After(deadline) {
			t.Fatalf("tokenizer for %s not loaded after 10 s", model)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEstimateUsage(t *testing.T) {
	const model = "gpt-4o-mini"
	waitTokenizer(t, model)
	tok := func(s string) int { return EstimateTokens(model, s) }
	chatReq := []byte(`{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"What is the capital of France?"}]}`)
	chatPrompt := tok("system\nBe brief.\nuser\nWhat is the capital of France?\n") + 2*perMessageTokens + 3
	tests := []struct {
		name           string
		kind           Kind
		req, resp      string
		stream         bool
		prompt, answer int
	}{
		{"chat", KindChat, string(chatReq),
			`{"choices":[{"index":0,"message":{"role":"assistant","content":"Paris is the capital of France."},"finish_reason":"stop"}]}`,
			false, chatPrompt, tok("Paris is the capital of France.")},
		{"chat tool call", KindChat, string(chatReq),
			`{"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"lookup","arguments":"{\"city\":\"Paris\"}"}}]},"finish_reason":"tool_calls"}]}`,
			false, chatPrompt, tok(`lookup{"city":"Paris"}`)},
		{"chat stream", KindChat, string(chatReq),
			"{\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n" +
				"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Paris is\"}}]}\n" +
				"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\" the capital.\"}}]}\n" +
				"{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n",
			true, chatPrompt, tok("Paris is the capital.")},
		{"completions", KindCompletions, `{"model":"m","prompt":"Once upon a time"}`,
			`{"choices":[{"text":" there was a fox.","index":0}]}`, false, tok("Once upon a time"), tok(" there was a fox.")},
		{"completions prompt list", KindCompletions, `{"model":"m","prompt":["Once upon","a time"]}`,
			`{"choices":[{"text":"ok","index":0}]}`, false, tok("Once upon") + tok("a time"), tok("ok")},
		{"embeddings strings", KindEmbeddings, `{"model":"m","input":["hello world","good night moon"]}`, `{"data":[]}`, false,
			tok("hello world") + tok("good night moon"), 0},
		{"embeddings token ids", KindEmbeddings, `{"model":"m","input":[[1,2,3],[4,5]]}`, `{"data":[]}`, false, 5, 0},
		{"unreadable answer", KindChat, string(chatReq), `<html>oops</html>`, false, chatPrompt, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := EstimateUsage(model, tt.kind, []byte(tt.req), []byte(tt.resp), tt.stream)
			if u.PromptTokens != tt.prompt || u.CompletionTokens != tt.answer || !u.Estimated {
				t.Errorf("got prompt %d completion %d estimated %v, want %d %d true",
					u.PromptTokens, u.CompletionTokens, u.Estimated, tt.prompt, tt.answer)
			}
		})
	}
}

func BenchmarkEstimateUsageChat(b *testing.B) {
	const model = "gpt-4o-mini"
	for !TokenizerReady(model) {
		time.Sleep(10 * time.Millisecond)
	}
	req := []byte(`{"model":"m","messages":[{"role":"user","content":"What is the capital of France? Answer in one sentence please."}]}`)
	resp := []byte(`{"choices":[{"index":0,"message":{"role":"assistant","content":"Paris is the capital of France, and has been for centuries."},"finish_reason":"stop"}]}`)
	b.ReportAllocs()
	for b.Loop() {
		EstimateUsage(model, KindChat, req, resp, false)
	}
}
