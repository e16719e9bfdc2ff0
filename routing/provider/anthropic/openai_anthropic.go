package anthropic

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/llm-proxy/llm-proxy/routing/provider"
)

// Translator serves one OpenAI chat request from an Anthropic upstream
// (POST {base}/messages). The zero value works; set the fields before
// Request. It implements provider.Translator.
type Translator struct {
	// APIKey is sent as x-api-key; empty sends no key header.
	APIKey string
	// Version is the anthropic-version header; empty means Version.
	Version string
	// DefaultMaxTokens is sent when the client set no limit; 0 means
	// DefaultMaxTokens.
	DefaultMaxTokens int
	// Now stamps "created"; nil means time.Now.
	Now func() time.Time

	includeUsage bool
	created      int64
	id, model    string
	usage        usage
	finish       string
	// toolIndex maps a content block index to its OpenAI tool call index.
	toolIndex map[int]int
	nextTool  int
}

var _ provider.Translator = (*Translator)(nil)

// Errors from Request; their text is shown to API clients.
var (
	errMultipleChoices = errors.New("'n' greater than 1 is not supported by this model's provider")
	errEmptyMessages   = errors.New("'messages' must contain at least one user or assistant message")
)

// Request implements provider.Translator.
func (t *Translator) Request(openaiBody []byte, upstreamModel string, stream bool) (string, map[string]string, []byte, error) {
	var req provider.ChatRequest
	if err := json.Unmarshal(openaiBody, &req); err != nil {
		return "", nil, nil, fmt.Errorf("anthropic: decode request: %w", err)
	}
	t.includeUsage = stream && req.IncludeUsage()
	t.created = now(t.Now)
	if req.N != nil && *req.N > 1 {
		return "", nil, nil, errMultipleChoices
	}
	out := messagesRequest{
		Model:         upstreamModel,
		MaxTokens:     req.MaxOutputTokens(),
		Temperature:   req.Temperature,
		TopP:          req.TopP,
		StopSequences: req.Stop,
		Stream:        stream,
	}
	if out.MaxTokens <= 0 {
		out.MaxTokens = t.DefaultMaxTokens
		if out.MaxTokens <= 0 {
			out.MaxTokens = DefaultMaxTokens
		}
	}
	if req.User != "" {
		out.Metadata = &metadata{UserID: req.User}
	}
	var system []string
	for i := range req.Messages {
		m := &req.Messages[i]
		switch m.Role {
		case "system", "developer":
			if s := m.Content.Text(); s != "" {
				system = append(system, s)
			}
		case "user":
			bs, err := userBlocks(m.Content)
			if err != nil {
				return "", nil, nil, err
			}
			out.Messages = appendMessage(out.Messages, "user", bs)
		case "assistant":
			bs, err := assistantBlocks(m)
			if err != nil {
				return "", nil, nil, err
			}
			out.Messages = appendMessage(out.Messages, "assistant", bs)
		case "tool":
			if m.ToolCallID == "" {
				return "", nil, nil, fmt.Errorf("messages[%d]: 'tool_call_id' is required for role 'tool'", i)
			}
			b := block{Type: "tool_result", ToolUseID: m.ToolCallID}
			if s := m.Content.Text(); s != "" {
				b.Content = blocks{{Type: "text", Text: s}}
			}
			// Anthropic wants every tool result of a turn in one user message.
			out.Messages = appendMessage(out.Messages, "user", blocks{b})
		default:
			return "", nil, nil, fmt.Errorf("messages[%d]: unsupported role %q", i, m.Role)
		}
	}
	if len(out.Messages) == 0 {
		return "", nil, nil, errEmptyMessages
	}
	if len(system) > 0 {
		out.System, _ = json.Marshal(strings.Join(system, "\n\n"))
	}
	for _, tl := range req.Tools {
		if tl.Type != "function" {
			return "", nil, nil, fmt.Errorf("tool type %q is not supported by this model's provider", tl.Type)
		}
		schema := tl.Function.Parameters
		if len(schema) == 0 || bytes.Equal(schema, []byte("null")) {
			schema = json.RawMessage(`{"type":"object","properties":{}}`)
		}
		out.Tools = append(out.Tools, tool{Name: tl.Function.Name, Description: tl.Function.Description, InputSchema: schema})
	}
	tc, err := provider.ParseToolChoice(req.ToolChoice)
	if err != nil {
		return "", nil, nil, err
	}
	switch tc.Mode {
	case "none":
		out.ToolChoice = &toolChoice{Type: "none"}
	case "auto":
		out.ToolChoice = &toolChoice{Type: "auto"}
	case "required":
		out.ToolChoice = &toolChoice{Type: "any"}
	case "function":
		out.ToolChoice = &toolChoice{Type: "tool", Name: tc.Name}
	}
	if req.ParallelToolCalls != nil && !*req.ParallelToolCalls && len(out.Tools) > 0 {
		if out.ToolChoice == nil {
			out.ToolChoice = &toolChoice{Type: "auto"}
		}
		if out.ToolChoice.Type != "none" {
			out.ToolChoice.DisableParallelToolUse = true
		}
	}
	body, err := json.Marshal(out)
	if err != nil {
		return "", nil, nil, fmt.Errorf("anthropic: encode request: %w", err)
	}
	version := t.Version
	if version == "" {
		version = Version
	}
	headers := map[string]string{"anthropic-version": version}
	if t.APIKey != "" {
		headers["x-api-key"] = t.APIKey
	}
	return "/messages", headers, body, nil
}

// appendMessage adds a message, merging it into the previous one when the
// role repeats: OpenAI sends one "tool" message per result, Anthropic wants
// them (and any user text after them) in a single user turn.
func appendMessage(msgs []message, role string, bs blocks) []message {
	if len(bs) == 0 {
		return msgs
	}
	if n := len(msgs); n > 0 && msgs[n-1].Role == role {
		msgs[n-1].Content = append(msgs[n-1].Content, bs...)
		return msgs
	}
	return append(msgs, message{Role: role, Content: bs})
}

func userBlocks(c provider.Content) (blocks, error) {
	var out blocks
	for _, p := range c {
		switch p.Type {
		case "text":
			if p.Text != "" {
				out = append(out, block{Type: "text", Text: p.Text})
			}
		case "image_url":
			if p.ImageURL == nil || p.ImageURL.URL == "" {
				return nil, errors.New("image_url part without a url")
			}
			out = append(out, block{Type: "image", Source: imageSourceFor(p.ImageURL.URL)})
		default:
			return nil, fmt.Errorf("content part type %q is not supported by this model's provider", p.Type)
		}
	}
	return out, nil
}

func imageSourceFor(u string) *imageSource {
	if mt, data, ok := provider.ParseDataURL(u); ok {
		return &imageSource{Type: "base64", MediaType: mt, Data: data}
	}
	return &imageSource{Type: "url", URL: u}
}

func assistantBlocks(m *provider.ChatMessage) (blocks, error) {
	var out blocks
	if s := m.Content.Text(); s != "" {
		out = append(out, block{Type: "text", Text: s})
	}
	for _, tc := range m.ToolCalls {
		args := json.RawMessage(strings.TrimSpace(tc.Function.Arguments))
		if len(args) == 0 {
			args = json.RawMessage("{}")
		}
		if !json.Valid(args) || args[0] != '{' {
			return nil, fmt.Errorf("tool call %q: arguments must be a JSON object", tc.ID)
		}
		out = append(out, block{Type: "tool_use", ID: tc.ID, Name: tc.Function.Name, Input: args})
	}
	return out, nil
}

// Response implements provider.Translator.
func (t *Translator) Response(body []byte) ([]byte, provider.Usage, error) {
	var r messageResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, provider.Usage{}, fmt.Errorf("anthropic: decode response: %w", err)
	}
	msg := provider.ChatMessage{Role: "assistant"}
	var text strings.Builder
	for _, b := range r.Content {
		switch b.Type {
		case "text":
			text.WriteString(b.Text)
		case "tool_use":
			msg.ToolCalls = append(msg.ToolCalls, provider.ToolCall{
				ID: b.ID, Type: "function",
				Function: provider.FunctionCall{Name: b.Name, Arguments: compactJSON(b.Input)},
			})
		}
	}
	msg.Content = provider.TextContent(text.String())
	stop := ""
	if r.StopReason != nil {
		stop = *r.StopReason
	}
	u := provider.Usage{PromptTokens: r.Usage.promptTokens(), CompletionTokens: r.Usage.OutputTokens}
	out := provider.ChatCompletion{
		ID: r.ID, Object: "chat.completion", Created: now(t.Now), Model: r.Model,
		Choices: []provider.Choice{{Index: 0, Message: msg, FinishReason: FinishReason(stop)}},
		Usage:   provider.NewChatUsage(u.PromptTokens, u.CompletionTokens, r.Usage.CacheReadInputTokens),
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, provider.Usage{}, fmt.Errorf("anthropic: encode response: %w", err)
	}
	return b, u, nil
}

// compactJSON renders a tool input as OpenAI's arguments string.
func compactJSON(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "{}"
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return string(raw)
	}
	return b.String()
}

// streamEvent is any Messages API stream event; fields depend on Type.
type streamEvent struct {
	Type         string           `json:"type"`
	Message      *messageResponse `json:"message"`
	Index        int              `json:"index"`
	ContentBlock *block           `json:"content_block"`
	Delta        *struct {
		Type        string `json:"type"`
		Text        string `json:"text"`
		PartialJSON string `json:"partial_json"`
		StopReason  string `json:"stop_reason"`
	} `json:"delta"`
	Usage *usage    `json:"usage"`
	Error *apiError `json:"error"`
}

// StreamEvent implements provider.Translator. The sequence is message_start,
// content blocks (content_block_start, content_block_delta...,
// content_block_stop), message_delta, message_stop, with ping events anywhere.
func (t *Translator) StreamEvent(event, data []byte) ([][]byte, *provider.Usage, bool, error) {
	var ev streamEvent
	if err := json.Unmarshal(data, &ev); err != nil {
		return nil, nil, false, fmt.Errorf("anthropic: decode stream event: %w", err)
	}
	if ev.Type == "" {
		ev.Type = string(event)
	}
	if t.created == 0 {
		t.created = now(t.Now)
	}
	switch ev.Type {
	case "message_start":
		if ev.Message == nil {
			return nil, nil, false, errors.New("anthropic: message_start without message")
		}
		t.id, t.model, t.usage = ev.Message.ID, ev.Message.Model, ev.Message.Usage
		empty := ""
		return t.chunk(provider.Delta{Role: "assistant", Content: &empty}, nil), nil, false, nil
	case "content_block_start":
		if ev.ContentBlock == nil {
			return nil, nil, false, errors.New("anthropic: content_block_start without content_block")
		}
		switch ev.ContentBlock.Type {
		case "tool_use":
			if t.toolIndex == nil {
				t.toolIndex = make(map[int]int)
			}
			i := t.nextTool
			t.nextTool++
			t.toolIndex[ev.Index] = i
			d := provider.ToolCallDelta{Index: i, ID: ev.ContentBlock.ID, Type: "function"}
			d.Function.Name = ev.ContentBlock.Name
			return t.chunk(provider.Delta{ToolCalls: []provider.ToolCallDelta{d}}, nil), nil, false, nil
		case "text":
			if ev.ContentBlock.Text != "" {
				s := ev.ContentBlock.Text
				return t.chunk(provider.Delta{Content: &s}, nil), nil, false, nil
			}
		}
		return nil, nil, false, nil
	case "content_block_delta":
		if ev.Delta == nil {
			return nil, nil, false, errors.New("anthropic: content_block_delta without delta")
		}
		switch ev.Delta.Type {
		case "text_delta":
			if ev.Delta.Text == "" {
				return nil, nil, false, nil
			}
			s := ev.Delta.Text
			return t.chunk(provider.Delta{Content: &s}, nil), nil, false, nil
		case "input_json_delta":
			i, ok := t.toolIndex[ev.Index]
			if !ok || ev.Delta.PartialJSON == "" {
				return nil, nil, false, nil
			}
			d := provider.ToolCallDelta{Index: i}
			d.Function.Arguments = ev.Delta.PartialJSON
			return t.chunk(provider.Delta{ToolCalls: []provider.ToolCallDelta{d}}, nil), nil, false, nil
		}
		// thinking_delta, signature_delta, citations_delta: not in OpenAI's shape.
		return nil, nil, false, nil
	case "message_delta":
		if ev.Usage != nil {
			// message_delta's usage is cumulative; newer API versions also
			// repeat the input counts here.
			t.usage.OutputTokens = ev.Usage.OutputTokens
			if ev.Usage.InputTokens > 0 || ev.Usage.CacheReadInputTokens > 0 || ev.Usage.CacheCreationInputTokens > 0 {
				t.usage.InputTokens = ev.Usage.InputTokens
				t.usage.CacheReadInputTokens = ev.Usage.CacheReadInputTokens
				t.usage.CacheCreationInputTokens = ev.Usage.CacheCreationInputTokens
			}
		}
		if ev.Delta != nil && ev.Delta.StopReason != "" {
			t.finish = FinishReason(ev.Delta.StopReason)
			f := t.finish
			return t.chunk(provider.Delta{}, &f), nil, false, nil
		}
		return nil, nil, false, nil
	case "message_stop":
		u := provider.Usage{PromptTokens: t.usage.promptTokens(), CompletionTokens: t.usage.OutputTokens}
		var chunks [][]byte
		if t.finish == "" {
			// A stream that ends without message_delta still needs a finish chunk.
			t.finish = "stop"
			f := t.finish
			chunks = t.chunk(provider.Delta{}, &f)
		}
		if t.includeUsage {
			c := provider.ChatChunk{
				ID: t.id, Object: "chat.completion.chunk", Created: t.created, Model: t.model,
				Choices: []provider.ChunkChoice{},
				Usage:   provider.NewChatUsage(u.PromptTokens, u.CompletionTokens, t.usage.CacheReadInputTokens),
			}
			b, _ := json.Marshal(c)
			chunks = append(chunks, b)
		}
		return chunks, &u, true, nil
	case "error":
		se := &provider.StreamError{Type: "api_error", Message: "upstream stream error"}
		if ev.Error != nil {
			se.Type, se.Message = ev.Error.Type, ev.Error.Message
		}
		return nil, nil, false, se
	}
	// ping, content_block_stop, and event types added later.
	return nil, nil, false, nil
}

func (t *Translator) chunk(d provider.Delta, finish *string) [][]byte {
	c := provider.ChatChunk{
		ID: t.id, Object: "chat.completion.chunk", Created: t.created, Model: t.model,
		Choices: []provider.ChunkChoice{{Index: 0, Delta: d, FinishReason: finish}},
	}
	b, _ := json.Marshal(c)
	return [][]byte{b}
}

// Error implements provider.Translator: Anthropic's
// {"type":"error","error":{"type","message"}} becomes OpenAI's error object
// with the same type and message.
func (t *Translator) Error(status int, body []byte) []byte {
	var e errorBody
	if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
		return provider.ErrorJSON(e.Error.Message, e.Error.Type, "")
	}
	return provider.ErrorJSON(provider.FallbackMessage(status, body), "upstream_error", "")
}

func now(f func() time.Time) int64 {
	if f == nil {
		return time.Now().Unix()
	}
	return f().Unix()
}
