package anthropic

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/llm-proxy/llm-proxy/routing/provider"
)

// Inbound serves one client request in Anthropic's Messages format (POST
// /v1/messages on the gateway) from an OpenAI-shaped answer, so the request
// can be routed to any upstream like a chat completion:
//
//	openaiBody, model, stream, err := in.Request(clientBody)  // 400 on err
//	... route model, send openaiBody through the upstream's Translator ...
//	non-streaming: client gets in.Response(chatCompletion)
//	streaming:     for each OpenAI chunk: w.Write(in.StreamChunk(buf[:0], chunk))
//	               at the end (upstream done): w.Write(in.Finish(buf[:0]))
//	errors:        client gets ErrorBody(status, openaiErrorBody), same status
//
// The zero value is ready; one Inbound serves one request.
type Inbound struct {
	model string

	// stream state
	started    bool
	finished   bool
	id         string
	blockOpen  bool
	blockIndex int // index of the open (or last) Anthropic content block
	blockTool  int // OpenAI tool call index of the open block, -1 for text
	nextBlock  int // index the next content block gets
	finish     string
	usage      *provider.ChatUsage
}

// Errors from Inbound.Request; their text is shown to API clients.
var (
	errInboundModel    = errors.New("model: field required")
	errInboundMessages = errors.New("messages: at least one message is required")
)

type inboundRequest struct {
	Model         string          `json:"model"`
	System        json.RawMessage `json:"system"`
	Messages      []message       `json:"messages"`
	MaxTokens     *int            `json:"max_tokens"`
	Temperature   *float64        `json:"temperature"`
	TopP          *float64        `json:"top_p"`
	StopSequences []string        `json:"stop_sequences"`
	Stream        bool            `json:"stream"`
	Tools         []tool          `json:"tools"`
	ToolChoice    *toolChoice     `json:"tool_choice"`
	Metadata      *metadata       `json:"metadata"`
}

// Request converts an Anthropic Messages request into an OpenAI chat request.
// model is the client's model name (route on it); stream reports
// "stream": true, in which case the OpenAI body asks for usage in the stream.
// top_k and thinking have no OpenAI equivalent and are dropped.
func (in *Inbound) Request(body []byte) (openaiBody []byte, model string, stream bool, err error) {
	var r inboundRequest
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, "", false, fmt.Errorf("invalid request body: %w", err)
	}
	if r.Model == "" {
		return nil, "", false, errInboundModel
	}
	if len(r.Messages) == 0 {
		return nil, "", false, errInboundMessages
	}
	in.model = r.Model
	out := provider.ChatRequest{
		Model:       r.Model,
		MaxTokens:   r.MaxTokens,
		Temperature: r.Temperature,
		TopP:        r.TopP,
		Stop:        r.StopSequences,
		Stream:      r.Stream,
	}
	if r.Stream {
		out.StreamOptions = &provider.StreamOptions{IncludeUsage: true}
	}
	if r.Metadata != nil {
		out.User = r.Metadata.UserID
	}
	if sys, err := systemText(r.System); err != nil {
		return nil, "", false, err
	} else if sys != "" {
		out.Messages = append(out.Messages, provider.ChatMessage{Role: "system", Content: provider.TextContent(sys)})
	}
	for i := range r.Messages {
		m := &r.Messages[i]
		switch m.Role {
		case "user":
			msgs, err := inboundUser(m.Content)
			if err != nil {
				return nil, "", false, fmt.Errorf("messages.%d: %w", i, err)
			}
			out.Messages = append(out.Messages, msgs...)
		case "assistant":
			msg, err := inboundAssistant(m.Content)
			if err != nil {
				return nil, "", false, fmt.Errorf("messages.%d: %w", i, err)
			}
			out.Messages = append(out.Messages, msg)
		default:
			return nil, "", false, fmt.Errorf("messages.%d.role: must be \"user\" or \"assistant\"", i)
		}
	}
	for i, t := range r.Tools {
		if t.Type != "" && t.Type != "custom" {
			return nil, "", false, fmt.Errorf("tools.%d: tool type %q is not supported by this gateway", i, t.Type)
		}
		var ot provider.Tool
		ot.Type = "function"
		ot.Function.Name = t.Name
		ot.Function.Description = t.Description
		ot.Function.Parameters = t.InputSchema
		out.Tools = append(out.Tools, ot)
	}
	if tc := r.ToolChoice; tc != nil {
		switch tc.Type {
		case "auto":
			out.ToolChoice = json.RawMessage(`"auto"`)
		case "any":
			out.ToolChoice = json.RawMessage(`"required"`)
		case "none":
			out.ToolChoice = json.RawMessage(`"none"`)
		case "tool":
			name, _ := json.Marshal(tc.Name)
			out.ToolChoice = json.RawMessage(`{"type":"function","function":{"name":` + string(name) + `}}`)
		default:
			return nil, "", false, fmt.Errorf("tool_choice.type: unknown value %q", tc.Type)
		}
		if tc.DisableParallelToolUse {
			f := false
			out.ParallelToolCalls = &f
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, "", false, fmt.Errorf("anthropic: encode chat request: %w", err)
	}
	return b, r.Model, r.Stream, nil
}

func systemText(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", nil
	}
	var bs blocks
	if err := json.Unmarshal(raw, &bs); err != nil {
		return "", fmt.Errorf("system: %w", err)
	}
	var parts []string
	for _, b := range bs {
		if b.Type == "text" && b.Text != "" {
			parts = append(parts, b.Text)
		}
	}
	return strings.Join(parts, "\n\n"), nil
}

// inboundUser splits a user turn: OpenAI wants each tool result as its own
// "tool" message right after the assistant's calls, then the user's content.
func inboundUser(bs blocks) ([]provider.ChatMessage, error) {
	var out []provider.ChatMessage
	var parts provider.Content
	for _, b := range bs {
		switch b.Type {
		case "text":
			if b.Text != "" {
				parts = append(parts, provider.ContentPart{Type: "text", Text: b.Text})
			}
		case "image":
			if b.Source == nil {
				return nil, errors.New("image block without source")
			}
			u := b.Source.URL
			if b.Source.Type == "base64" {
				u = "data:" + b.Source.MediaType + ";base64," + b.Source.Data
			}
			parts = append(parts, provider.ContentPart{Type: "image_url", ImageURL: &provider.ImageURL{URL: u}})
		case "tool_result":
			out = append(out, provider.ChatMessage{Role: "tool", ToolCallID: b.ToolUseID, Content: provider.TextContent(b.Content.text())})
		default:
			return nil, fmt.Errorf("content block type %q is not supported by this gateway", b.Type)
		}
	}
	if len(parts) > 0 {
		out = append(out, provider.ChatMessage{Role: "user", Content: parts})
	}
	return out, nil
}

func inboundAssistant(bs blocks) (provider.ChatMessage, error) {
	msg := provider.ChatMessage{Role: "assistant"}
	var text strings.Builder
	for _, b := range bs {
		switch b.Type {
		case "text":
			text.WriteString(b.Text)
		case "tool_use":
			msg.ToolCalls = append(msg.ToolCalls, provider.ToolCall{
				ID: b.ID, Type: "function",
				Function: provider.FunctionCall{Name: b.Name, Arguments: compactJSON(b.Input)},
			})
		case "thinking", "redacted_thinking":
			// Reasoning of an earlier turn; OpenAI's chat format has no place for it.
		default:
			return msg, fmt.Errorf("content block type %q is not supported by this gateway", b.Type)
		}
	}
	msg.Content = provider.TextContent(text.String())
	return msg, nil
}

// Response converts an OpenAI chat.completion body into an Anthropic message.
func (in *Inbound) Response(openaiBody []byte) ([]byte, error) {
	var c provider.ChatCompletion
	if err := json.Unmarshal(openaiBody, &c); err != nil {
		return nil, fmt.Errorf("anthropic: decode chat completion: %w", err)
	}
	if len(c.Choices) == 0 {
		return nil, errors.New("anthropic: chat completion without choices")
	}
	ch := c.Choices[0]
	out := messageResponse{ID: c.ID, Type: "message", Role: "assistant", Model: c.Model, Content: []block{}}
	if s := ch.Message.Content.Text(); s != "" {
		out.Content = append(out.Content, block{Type: "text", Text: s})
	}
	for _, tc := range ch.Message.ToolCalls {
		out.Content = append(out.Content, block{Type: "tool_use", ID: tc.ID, Name: tc.Function.Name, Input: toolInput(tc.Function.Arguments)})
	}
	if out.Model == "" {
		out.Model = in.model
	}
	sr := StopReason(ch.FinishReason)
	out.StopReason = &sr
	out.Usage = anthropicUsage(c.Usage)
	return json.Marshal(out)
}

// toolInput turns OpenAI's arguments string into Anthropic's input object;
// arguments that are not a JSON object (a model's malformed output) become {}.
func toolInput(args string) json.RawMessage {
	a := bytes.TrimSpace([]byte(args))
	if len(a) == 0 || a[0] != '{' || !json.Valid(a) {
		return json.RawMessage("{}")
	}
	return a
}

// anthropicUsage splits OpenAI's prompt tokens: Anthropic's input_tokens
// excludes tokens read from the cache.
func anthropicUsage(u *provider.ChatUsage) usage {
	if u == nil {
		return usage{}
	}
	out := usage{InputTokens: u.PromptTokens, OutputTokens: u.CompletionTokens}
	if d := u.PromptTokensDetails; d != nil && d.CachedTokens > 0 && d.CachedTokens <= u.PromptTokens {
		out.InputTokens -= d.CachedTokens
		out.CacheReadInputTokens = d.CachedTokens
	}
	return out
}

// inboundChunk is an OpenAI stream chunk, or an error payload sent mid-stream.
type inboundChunk struct {
	provider.ChatChunk
	Error *struct {
		Message string `json:"message"`
		Type    string `json:"type"`
	} `json:"error"`
}

// StreamChunk appends to dst the Anthropic SSE events (complete
// "event: ...\ndata: ...\n\n" frames) for one OpenAI chunk payload. data
// "[DONE]" is the same as calling Finish. An OpenAI error payload becomes an
// Anthropic "error" event.
func (in *Inbound) StreamChunk(dst, data []byte) ([]byte, error) {
	if bytes.Equal(bytes.TrimSpace(data), []byte("[DONE]")) {
		return in.Finish(dst), nil
	}
	var c inboundChunk
	if err := json.Unmarshal(data, &c); err != nil {
		return dst, fmt.Errorf("anthropic: decode chat chunk: %w", err)
	}
	if c.Error != nil {
		return ErrorEvent(dst, c.Error.Type, c.Error.Message), nil
	}
	if c.Usage != nil {
		in.usage = c.Usage
	}
	dst = in.start(dst, c.ID, c.Model)
	for _, ch := range c.Choices {
		if ch.Index != 0 {
			continue
		}
		if ch.Delta.Content != nil && *ch.Delta.Content != "" {
			if !in.blockOpen || in.blockTool != -1 {
				dst = in.openBlock(dst, -1, map[string]any{"type": "text", "text": ""})
			}
			dst = appendEvent(dst, "content_block_delta", map[string]any{
				"type": "content_block_delta", "index": in.blockIndex,
				"delta": map[string]string{"type": "text_delta", "text": *ch.Delta.Content},
			})
		}
		for _, tc := range ch.Delta.ToolCalls {
			if !in.blockOpen || in.blockTool != tc.Index {
				dst = in.openBlock(dst, tc.Index, map[string]any{
					"type": "tool_use", "id": tc.ID, "name": tc.Function.Name, "input": map[string]any{},
				})
			}
			if tc.Function.Arguments != "" {
				dst = appendEvent(dst, "content_block_delta", map[string]any{
					"type": "content_block_delta", "index": in.blockIndex,
					"delta": map[string]string{"type": "input_json_delta", "partial_json": tc.Function.Arguments},
				})
			}
		}
		if ch.FinishReason != nil && *ch.FinishReason != "" {
			in.finish = *ch.FinishReason
		}
	}
	return dst, nil
}

// start emits message_start once, before anything else.
func (in *Inbound) start(dst []byte, id, model string) []byte {
	if in.started {
		return dst
	}
	in.started = true
	in.blockTool = -1
	if model == "" {
		model = in.model
	}
	in.id = id
	msg := messageResponse{ID: id, Type: "message", Role: "assistant", Model: model, Content: []block{}}
	return appendEvent(dst, "message_start", map[string]any{"type": "message_start", "message": msg})
}

func (in *Inbound) openBlock(dst []byte, tool int, cb map[string]any) []byte {
	dst = in.closeBlock(dst)
	in.blockOpen, in.blockIndex, in.blockTool = true, in.nextBlock, tool
	in.nextBlock++
	return appendEvent(dst, "content_block_start", map[string]any{
		"type": "content_block_start", "index": in.blockIndex, "content_block": cb,
	})
}

func (in *Inbound) closeBlock(dst []byte) []byte {
	if !in.blockOpen {
		return dst
	}
	in.blockOpen = false
	return appendEvent(dst, "content_block_stop", map[string]any{"type": "content_block_stop", "index": in.blockIndex})
}

// Finish appends the closing events (content_block_stop, message_delta with
// the stop reason and usage, message_stop). Call it once the upstream stream
// ended normally; later calls append nothing.
func (in *Inbound) Finish(dst []byte) []byte {
	if in.finished {
		return dst
	}
	in.finished = true
	dst = in.start(dst, in.id, in.model)
	dst = in.closeBlock(dst)
	u := anthropicUsage(in.usage)
	du := map[string]int{"output_tokens": u.OutputTokens}
	if in.usage != nil {
		du["input_tokens"] = u.InputTokens
		if u.CacheReadInputTokens > 0 {
			du["cache_read_input_tokens"] = u.CacheReadInputTokens
		}
	}
	dst = appendEvent(dst, "message_delta", map[string]any{
		"type":  "message_delta",
		"delta": map[string]any{"stop_reason": StopReason(in.finish), "stop_sequence": nil},
		"usage": du,
	})
	return appendEvent(dst, "message_stop", map[string]any{"type": "message_stop"})
}

// ErrorEvent appends an Anthropic stream "error" event.
func ErrorEvent(dst []byte, typ, message string) []byte {
	if typ == "" {
		typ = "api_error"
	}
	return appendEvent(dst, "error", errorBody{Type: "error", Error: apiError{Type: typ, Message: message}})
}

func appendEvent(dst []byte, name string, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only maps of strings, numbers and the types above reach here.
		panic("anthropic: encode event: " + err.Error())
	}
	dst = append(dst, "event: "...)
	dst = append(dst, name...)
	dst = append(dst, "\ndata: "...)
	dst = append(dst, b...)
	return append(dst, "\n\n"...)
}

// ErrorBody converts an OpenAI-shaped error body into Anthropic's error shape,
// choosing the Anthropic error type from the HTTP status, which is unchanged.
func ErrorBody(status int, openaiBody []byte) []byte {
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	msg := ""
	if json.Unmarshal(openaiBody, &e) == nil {
		msg = e.Error.Message
	}
	if msg == "" {
		msg = provider.FallbackMessage(status, openaiBody)
	}
	b, _ := json.Marshal(errorBody{Type: "error", Error: apiError{Type: ErrorType(status), Message: msg}})
	return b
}

// ErrorType is Anthropic's error type for an HTTP status.
func ErrorType(status int) string {
	switch status {
	case 400:
		return "invalid_request_error"
	case 401:
		return "authentication_error"
	case 403:
		return "permission_error"
	case 404:
		return "not_found_error"
	case 413:
		return "request_too_large"
	case 429:
		return "rate_limit_error"
	case 503, 529:
		return "overloaded_error"
	}
	if status >= 400 && status < 500 {
		return "invalid_request_error"
	}
	return "api_error"
}
