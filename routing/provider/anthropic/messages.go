// Package anthropic translates between OpenAI's chat API and Anthropic's
// Messages API, in both directions:
//
//   - Translator (openai_anthropic.go) serves OpenAI-speaking clients from an
//     Anthropic upstream: POST {base}/messages.
//   - Inbound (inbound.go) serves Anthropic-speaking clients (POST
//     /v1/messages on the gateway) from any OpenAI-shaped upstream.
//
// Both are pure: bytes in, bytes out, no I/O.
package anthropic

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Version is the anthropic-version header value sent when none is configured.
const Version = "2023-06-01"

// DefaultMaxTokens is sent as max_tokens, which Anthropic requires, when the
// client gave neither max_tokens nor max_completion_tokens.
const DefaultMaxTokens = 4096

// messagesRequest is the Messages API request body.
type messagesRequest struct {
	Model         string          `json:"model"`
	System        json.RawMessage `json:"system,omitempty"`
	Messages      []message       `json:"messages"`
	MaxTokens     int             `json:"max_tokens"`
	Temperature   *float64        `json:"temperature,omitempty"`
	TopP          *float64        `json:"top_p,omitempty"`
	TopK          *int            `json:"top_k,omitempty"`
	StopSequences []string        `json:"stop_sequences,omitempty"`
	Stream        bool            `json:"stream,omitempty"`
	Tools         []tool          `json:"tools,omitempty"`
	ToolChoice    *toolChoice     `json:"tool_choice,omitempty"`
	Metadata      *metadata       `json:"metadata,omitempty"`
}

type metadata struct {
	UserID string `json:"user_id,omitempty"`
}

type message struct {
	Role    string `json:"role"`
	Content blocks `json:"content"`
}

// blocks decodes from a string (one text block) or an array of blocks, and
// always encodes as an array.
type blocks []block

func (b *blocks) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '"' {
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		*b = blocks{{Type: "text", Text: s}}
		return nil
	}
	var v []block
	if err := json.Unmarshal(data, &v); err != nil {
		return fmt.Errorf("content must be a string or an array of content blocks")
	}
	*b = v
	return nil
}

// text joins the text blocks.
func (b blocks) text() string {
	if len(b) == 1 {
		return b[0].Text
	}
	var s []byte
	for _, c := range b {
		s = append(s, c.Text...)
	}
	return string(s)
}

// block is any content block; which fields are set depends on Type.
type block struct {
	Type string `json:"type"`
	// text
	Text string `json:"text,omitempty"`
	// image
	Source *imageSource `json:"source,omitempty"`
	// tool_use
	ID    string          `json:"id,omitempty"`
	Name  string          `json:"name,omitempty"`
	Input json.RawMessage `json:"input,omitempty"`
	// tool_result
	ToolUseID string `json:"tool_use_id,omitempty"`
	Content   blocks `json:"content,omitempty"`
	IsError   bool   `json:"is_error,omitempty"`
}

type imageSource struct {
	Type      string `json:"type"`
	MediaType string `json:"media_type,omitempty"`
	Data      string `json:"data,omitempty"`
	URL       string `json:"url,omitempty"`
}

type tool struct {
	// Type is empty or "custom" for client tools; server tools have others.
	Type        string          `json:"type,omitempty"`
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	InputSchema json.RawMessage `json:"input_schema"`
}

type toolChoice struct {
	Type                   string `json:"type"`
	Name                   string `json:"name,omitempty"`
	DisableParallelToolUse bool   `json:"disable_parallel_tool_use,omitempty"`
}

// messageResponse is the Messages API response (and message_start's message).
type messageResponse struct {
	ID           string  `json:"id"`
	Type         string  `json:"type"`
	Role         string  `json:"role"`
	Model        string  `json:"model"`
	Content      []block `json:"content"`
	StopReason   *string `json:"stop_reason"`
	StopSequence *string `json:"stop_sequence"`
	Usage        usage   `json:"usage"`
}

type usage struct {
	InputTokens              int `json:"input_tokens"`
	OutputTokens             int `json:"output_tokens"`
	CacheCreationInputTokens int `json:"cache_creation_input_tokens,omitempty"`
	CacheReadInputTokens     int `json:"cache_read_input_tokens,omitempty"`
}

// promptTokens is what OpenAI calls prompt tokens: Anthropic reports cache
// writes and reads apart from input_tokens, OpenAI counts them in.
func (u usage) promptTokens() int {
	return u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens
}

type apiError struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

type errorBody struct {
	Type  string   `json:"type"`
	Error apiError `json:"error"`
}

// FinishReason maps Anthropic's stop_reason to OpenAI's finish_reason.
// Unknown and missing reasons map to "stop".
func FinishReason(stopReason string) string {
	switch stopReason {
	case "max_tokens", "model_context_window_exceeded":
		return "length"
	case "tool_use":
		return "tool_calls"
	case "refusal":
		return "content_filter"
	default: // end_turn, stop_sequence, pause_turn
		return "stop"
	}
}

// StopReason maps OpenAI's finish_reason to Anthropic's stop_reason.
func StopReason(finishReason string) string {
	switch finishReason {
	case "length":
		return "max_tokens"
	case "tool_calls", "function_call":
		return "tool_use"
	case "content_filter":
		return "refusal"
	default:
		return "end_turn"
	}
}
