package provider

import (
	"bytes"
	"encoding/json"
	"strings"
)

// Kind names the OpenAI endpoint an exchange went to, for EstimateUsage.
type Kind uint8

const (
	KindChat        Kind = iota // /v1/chat/completions
	KindCompletions             // /v1/completions
	KindEmbeddings              // /v1/embeddings
)

// EstimateUsage counts the tokens of an OpenAI-compatible exchange whose
// upstream reported no usage (many self-hosted servers do not, or ignore
// stream_options.include_usage). req is the request body the upstream got;
// resp is the answer: a complete JSON body, or for a stream its chunk payloads
// joined by newlines. Usage.Estimated is always true.
//
// While model's tokenizer is still loading (TokenizerReady), the same text is
// counted at four bytes per token, so the first requests after a worker start
// are approximate rather than late.
func EstimateUsage(model string, kind Kind, req, resp []byte, stream bool) Usage {
	count := func(s string) int { return EstimateTokens(model, s) }
	if !TokenizerReady(model) {
		count = func(s string) int { return (len(s) + 3) / 4 }
	}
	u := Usage{Estimated: true}
	switch kind {
	case KindChat:
		var r ChatRequest
		if json.Unmarshal(req, &r) == nil {
			u.PromptTokens = count(promptText(&r)) + perMessageTokens*len(r.Messages) + 3
		}
		u.CompletionTokens = count(chatAnswerText(resp, stream))
	case KindCompletions:
		var r struct {
			Prompt json.RawMessage `json:"prompt"`
		}
		if json.Unmarshal(req, &r) == nil {
			u.PromptTokens = countInput(r.Prompt, count)
		}
		u.CompletionTokens = count(completionText(resp, stream))
	case KindEmbeddings:
		var r struct {
			Input json.RawMessage `json:"input"`
		}
		if json.Unmarshal(req, &r) == nil {
			u.PromptTokens = countInput(r.Input, count)
		}
	}
	return u
}

// countInput counts a prompt or input field: a string, an array of strings, an
// array of token ids, or an array of token-id arrays.
func countInput(raw json.RawMessage, count func(string) int) int {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return count(one)
	}
	var many []json.RawMessage
	if json.Unmarshal(raw, &many) != nil {
		return 0
	}
	n := 0
	for _, item := range many {
		switch {
		case json.Unmarshal(item, &one) == nil:
			n += count(one)
		case len(item) > 0 && item[0] == '[':
			var ids []json.RawMessage
			if json.Unmarshal(item, &ids) == nil {
				n += len(ids)
			}
		default:
			n++ // a single token id
		}
	}
	return n
}

// eachPayload calls fn with the complete body, or with every line of a joined
// stream.
func eachPayload(resp []byte, stream bool, fn func([]byte)) {
	if !stream {
		fn(resp)
		return
	}
	for len(resp) > 0 {
		line := resp
		if i := bytes.IndexByte(resp, '\n'); i >= 0 {
			line, resp = resp[:i], resp[i+1:]
		} else {
			resp = nil
		}
		if len(line) > 0 {
			fn(line)
		}
	}
}

func chatAnswerText(resp []byte, stream bool) string {
	var b strings.Builder
	eachPayload(resp, stream, func(p []byte) {
		if stream {
			var c ChatChunk
			if json.Unmarshal(p, &c) != nil {
				return
			}
			for _, ch := range c.Choices {
				if ch.Delta.Content != nil {
					b.WriteString(*ch.Delta.Content)
				}
				for _, tc := range ch.Delta.ToolCalls {
					b.WriteString(tc.Function.Name)
					b.WriteString(tc.Function.Arguments)
				}
			}
			return
		}
		var r struct {
			Choices []Choice `json:"choices"`
		}
		if json.Unmarshal(p, &r) != nil {
			return
		}
		for _, ch := range r.Choices {
			b.WriteString(ch.Message.Content.Text())
			for _, tc := range ch.Message.ToolCalls {
				b.WriteString(tc.Function.Name)
				b.WriteString(tc.Function.Arguments)
			}
		}
	})
	return b.String()
}

func completionText(resp []byte, stream bool) string {
	var b strings.Builder
	eachPayload(resp, stream, func(p []byte) {
		var r struct {
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
		}
		if json.Unmarshal(p, &r) != nil {
			return
		}
		for _, ch := range r.Choices {
			b.WriteString(ch.Text)
		}
	})
	return b.String()
}
