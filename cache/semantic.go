package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"strings"
)

// Scope partitions the semantic tier: only prompts with the same namespace, model, earlier
// messages (system prompt included) and answer-changing parameters are ever compared, so
// the vector only has to decide "same question?", never "same settings?".
type Scope [16]byte

// SemanticRequest is what the semantic tier needs from an eligible chat request.
type SemanticRequest struct {
	Scope Scope
	Text  string // the last user message: what is embedded and guarded
}

// DefaultMaxMessages is the longest conversation the semantic tier considers: a system
// prompt, and up to one earlier exchange... in practice "system + user" or a lone user.
const DefaultMaxMessages = 3

// scopeVersion is hashed first, like keyVersion.
const scopeVersion = "llm-proxy-semantic-scope/1"

// scopeIgnored are ignoredFields plus the messages, which are hashed separately (all but
// the last) because the last user message is what the vector compares.
var scopeIgnored = func() map[string]bool {
	m := map[string]bool{"messages": true}
	for k := range ignoredFields {
		m[k] = true
	}
	return m
}()

type chatRequest struct {
	Messages     []chatMessage   `json:"messages"`
	Tools        json.RawMessage `json:"tools"`
	Functions    json.RawMessage `json:"functions"`
	ToolChoice   json.RawMessage `json:"tool_choice"`
	FunctionCall json.RawMessage `json:"function_call"`
}

type chatMessage struct {
	Role         string          `json:"role"`
	Content      json.RawMessage `json:"content"`
	ToolCalls    json.RawMessage `json:"tool_calls"`
	FunctionCall json.RawMessage `json:"function_call"`
	ToolCallID   string          `json:"tool_call_id"`
}

// PrepareSemantic decides whether a chat completions request may use the semantic tier and,
// if so, returns its scope and the text to embed. Eligible: at most maxMessages messages
// (<= 0: DefaultMaxMessages), the last one from the user with text content only; no tools
// or functions offered, no tool or function messages or calls anywhere (a tool call's
// answer depends on live data; a paraphrase must not replay it).
func PrepareSemantic(namespace, model string, body []byte, maxMessages int) (SemanticRequest, bool) {
	if maxMessages <= 0 {
		maxMessages = DefaultMaxMessages
	}
	var req chatRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return SemanticRequest{}, false
	}
	n := len(req.Messages)
	if n == 0 || n > maxMessages || present(req.Tools) || present(req.Functions) ||
		present(req.ToolChoice) || present(req.FunctionCall) {
		return SemanticRequest{}, false
	}
	for _, m := range req.Messages {
		switch m.Role {
		case "tool", "function":
			return SemanticRequest{}, false
		}
		if present(m.ToolCalls) || present(m.FunctionCall) || m.ToolCallID != "" {
			return SemanticRequest{}, false
		}
	}
	last := req.Messages[n-1]
	if last.Role != "user" {
		return SemanticRequest{}, false
	}
	text, ok := textContent(last.Content)
	if !ok || strings.TrimSpace(text) == "" {
		return SemanticRequest{}, false
	}

	kb := keyBufPool.Get().(*keyBuf)
	defer keyBufPool.Put(kb)
	out := append(kb.out[:0], scopeVersion...)
	out = appendField(out, namespace)
	out = appendField(out, model)
	out, err := kb.canonical(out, body, scopeIgnored)
	if err != nil {
		return SemanticRequest{}, false
	}
	for _, m := range req.Messages[:n-1] {
		out = append(out, 'M')
		if out, err = kb.canonical(out, mustMarshal(m), nil); err != nil {
			return SemanticRequest{}, false
		}
	}
	kb.out = out
	sum := sha256.Sum256(out)
	var sc Scope
	copy(sc[:], sum[:16])
	return SemanticRequest{Scope: sc, Text: text}, true
}

func mustMarshal(m chatMessage) []byte {
	// Re-marshal only role and content: fields like "name" are kept by the exact key but
	// are not part of what an earlier turn said.
	b, _ := json.Marshal(struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content,omitempty"`
	}{m.Role, m.Content})
	return b
}

// present reports whether a raw field holds something other than null or an empty array.
func present(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && !bytes.Equal(t, []byte("null")) && !bytes.Equal(t, []byte("[]"))
}

// textContent returns a message's text: a string, or an array of only text parts (joined
// by newlines). Images, audio and files make it ineligible.
func textContent(raw json.RawMessage) (string, bool) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, true
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil || len(parts) == 0 {
		return "", false
	}
	texts := make([]string, 0, len(parts))
	for _, p := range parts {
		if p.Type != "text" {
			return "", false
		}
		texts = append(texts, p.Text)
	}
	return strings.Join(texts, "\n"), true
}
