package cache

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// completion is the part of a chat.completion (or text_completion) body that replay and
// assembly need. Unknown fields are not carried over: a replayed stream has the shape
// OpenAI's streams have, not the shape of the stored body.
type completion struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	Created           int64           `json:"created"`
	Model             string          `json:"model"`
	SystemFingerprint string          `json:"system_fingerprint,omitempty"`
	Choices           []choice        `json:"choices"`
	Usage             json.RawMessage `json:"usage,omitempty"`
}

type choice struct {
	Index        int             `json:"index"`
	Message      *message        `json:"message,omitempty"`
	Delta        *message        `json:"delta,omitempty"`
	Text         *string         `json:"text,omitempty"` // text_completion
	Logprobs     json.RawMessage `json:"logprobs,omitempty"`
	FinishReason *string         `json:"finish_reason"`
}

type message struct {
	Role      string     `json:"role,omitempty"`
	Content   *string    `json:"content,omitempty"`
	Refusal   *string    `json:"refusal,omitempty"`
	ToolCalls []toolCall `json:"tool_calls,omitempty"`
}

type toolCall struct {
	Index    *int   `json:"index,omitempty"`
	ID       string `json:"id,omitempty"`
	Type     string `json:"type,omitempty"`
	Function struct {
		Name      string `json:"name,omitempty"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// AppendSSE appends the Server-Sent Events that stream the stored answer body (a
// chat.completion or text_completion), in OpenAI's format: per choice a role chunk, a
// content chunk (and tool-call chunks), a finish chunk; then, if includeUsage (the request
// had stream_options.include_usage), a usage chunk with empty choices; then "data: [DONE]".
func AppendSSE(dst, body []byte, includeUsage bool) ([]byte, error) {
	var c completion
	if err := json.Unmarshal(body, &c); err != nil {
		return dst, fmt.Errorf("cache: replay: %w", err)
	}
	chat := c.Object != "text_completion"
	chunk := completion{ID: c.ID, Created: c.Created, Model: c.Model, SystemFingerprint: c.SystemFingerprint,
		Object: "chat.completion.chunk"}
	if !chat {
		chunk.Object = "text_completion"
	}
	var err error
	emit := func(ch choice) {
		if err != nil {
			return
		}
		chunk.Choices = []choice{ch}
		var b []byte
		if b, err = json.Marshal(chunk); err == nil {
			dst = appendEvent(dst, b)
		}
	}
	for _, ch := range c.Choices {
		if !chat {
			text := ""
			if ch.Text != nil {
				text = *ch.Text
			}
			emit(choice{Index: ch.Index, Text: &text, Logprobs: ch.Logprobs})
			emit(choice{Index: ch.Index, Text: new(string), FinishReason: ch.FinishReason})
			continue
		}
		if ch.Message == nil {
			return dst, errors.New("cache: replay: choice without message")
		}
		empty := ""
		emit(choice{Index: ch.Index, Delta: &message{Role: orDefault(ch.Message.Role, "assistant"), Content: &empty}})
		if ch.Message.Content != nil && *ch.Message.Content != "" {
			emit(choice{Index: ch.Index, Delta: &message{Content: ch.Message.Content}, Logprobs: ch.Logprobs})
		}
		if ch.Message.Refusal != nil {
			emit(choice{Index: ch.Index, Delta: &message{Refusal: ch.Message.Refusal}})
		}
		for i, tc := range ch.Message.ToolCalls {
			tc.Index = &i
			emit(choice{Index: ch.Index, Delta: &message{ToolCalls: []toolCall{tc}}})
		}
		emit(choice{Index: ch.Index, Delta: &message{}, FinishReason: ch.FinishReason})
	}
	if err != nil {
		return dst, fmt.Errorf("cache: replay: %w", err)
	}
	if includeUsage && len(c.Usage) > 0 {
		chunk.Choices = []choice{}
		chunk.Usage = c.Usage
		b, err := json.Marshal(chunk)
		if err != nil {
			return dst, fmt.Errorf("cache: replay: %w", err)
		}
		dst = appendEvent(dst, b)
	}
	return append(dst, "data: [DONE]\n\n"...), nil
}

func appendEvent(dst, payload []byte) []byte {
	dst = append(dst, "data: "...)
	dst = append(dst, payload...)
	return append(dst, '\n', '\n')
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// Assembler rebuilds the non-stream body of a streamed answer from its chunk payloads (the
// JSON after "data: "), so a streamed answer can be cached and later served to both kinds
// of request. The zero value is ready; it is not safe for concurrent use.
type Assembler struct {
	head    completion
	choices map[int]*assembled
	order   []int
	usage   json.RawMessage
	done    bool
	err     error
}

type assembled struct {
	role      string
	content   strings.Builder
	refusal   strings.Builder
	hasRef    bool
	text      strings.Builder
	tools     []toolCall
	logprobs  []json.RawMessage
	finish    *string
	textCompl bool
}

// Add feeds one event payload. "[DONE]" marks the end. A malformed payload makes the
// answer uncacheable (Body returns the error) but is not fatal to the stream.
func (a *Assembler) Add(payload []byte) {
	payload = bytes.TrimSpace(payload)
	if bytes.Equal(payload, []byte("[DONE]")) {
		a.done = true
		return
	}
	if a.err != nil || len(payload) == 0 {
		return
	}
	var c completion
	if err := json.Unmarshal(payload, &c); err != nil {
		a.err = fmt.Errorf("cache: assemble: %w", err)
		return
	}
	if a.head.ID == "" {
		a.head.ID = c.ID
	}
	if a.head.Created == 0 {
		a.head.Created = c.Created
	}
	if c.Model != "" {
		a.head.Model = c.Model
	}
	if c.SystemFingerprint != "" {
		a.head.SystemFingerprint = c.SystemFingerprint
	}
	if c.Object == "text_completion" {
		a.head.Object = "text_completion"
	}
	if len(c.Usage) > 0 && !bytes.Equal(bytes.TrimSpace(c.Usage), []byte("null")) {
		a.usage = append(json.RawMessage(nil), c.Usage...)
	}
	if a.choices == nil {
		a.choices = make(map[int]*assembled)
	}
	for _, ch := range c.Choices {
		s := a.choices[ch.Index]
		if s == nil {
			s = &assembled{}
			a.choices[ch.Index] = s
			a.order = append(a.order, ch.Index)
		}
		if ch.Text != nil {
			s.textCompl = true
			s.text.WriteString(*ch.Text)
		}
		if d := ch.Delta; d != nil {
			if d.Role != "" {
				s.role = d.Role
			}
			if d.Content != nil {
				s.content.WriteString(*d.Content)
			}
			if d.Refusal != nil {
				s.hasRef = true
				s.refusal.WriteString(*d.Refusal)
			}
			for _, tc := range d.ToolCalls {
				i := len(s.tools) - 1
				if tc.Index != nil {
					i = *tc.Index
				}
				for i >= len(s.tools) {
					s.tools = append(s.tools, toolCall{})
				}
				if i < 0 {
					continue
				}
				t := &s.tools[i]
				if tc.ID != "" {
					t.ID = tc.ID
				}
				if tc.Type != "" {
					t.Type = tc.Type
				}
				if tc.Function.Name != "" {
					t.Function.Name += tc.Function.Name
				}
				t.Function.Arguments += tc.Function.Arguments
			}
		}
		if len(ch.Logprobs) > 0 && !bytes.Equal(ch.Logprobs, []byte("null")) {
			s.logprobs = append(s.logprobs, append(json.RawMessage(nil), ch.Logprobs...))
		}
		if ch.FinishReason != nil {
			s.finish = ch.FinishReason
		}
	}
}

// Complete reports whether the stream ended with [DONE] and every choice has a
// finish_reason: only complete answers may be cached.
func (a *Assembler) Complete() bool {
	if a.err != nil || !a.done || len(a.choices) == 0 {
		return false
	}
	for _, s := range a.choices {
		if s.finish == nil {
			return false
		}
	}
	return true
}

// Usage returns the raw usage object of the stream (nil if none was sent).
func (a *Assembler) Usage() json.RawMessage { return a.usage }

// Body returns the assembled chat.completion (or text_completion) JSON; an error if the
// stream was malformed or incomplete.
func (a *Assembler) Body() ([]byte, error) {
	if a.err != nil {
		return nil, a.err
	}
	if !a.Complete() {
		return nil, errors.New("cache: assemble: stream incomplete")
	}
	out := a.head
	if out.Object == "" {
		out.Object = "chat.completion"
	}
	out.Usage = a.usage
	idx := slices.Clone(a.order)
	slices.Sort(idx)
	for _, i := range idx {
		s := a.choices[i]
		ch := choice{Index: i, FinishReason: s.finish, Logprobs: mergeLogprobs(s.logprobs)}
		if s.textCompl || out.Object == "text_completion" {
			t := s.text.String()
			ch.Text = &t
		} else {
			content := s.content.String()
			m := &message{Role: orDefault(s.role, "assistant"), Content: &content}
			if s.hasRef {
				r := s.refusal.String()
				m.Refusal = &r
			}
			if len(s.tools) > 0 {
				m.ToolCalls = s.tools
				if content == "" {
					m.Content = nil
				}
			}
			ch.Message = m
		}
		out.Choices = append(out.Choices, ch)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("cache: assemble: %w", err)
	}
	return b, nil
}

// mergeLogprobs concatenates the "content" arrays of chat logprobs chunks; other shapes are
// kept from the first chunk only.
func mergeLogprobs(parts []json.RawMessage) json.RawMessage {
	if len(parts) == 0 {
		return nil
	}
	var all []json.RawMessage
	for _, p := range parts {
		var lp struct {
			Content []json.RawMessage `json:"content"`
		}
		if err := json.Unmarshal(p, &lp); err != nil || lp.Content == nil {
			return parts[0]
		}
		all = append(all, lp.Content...)
	}
	b, err := json.Marshal(map[string]any{"content": all})
	if err != nil {
		return parts[0]
	}
	return b
}
