// Package provider holds what the provider adapters share: the Translator
// contract, the OpenAI chat wire types they decode and encode, and the token
// estimator used when an upstream reports no usage.
//
// Clients speak OpenAI's chat API to the gateway. A Translator turns one such
// request into a provider's wire format and the provider's answer back; it is
// pure (no network I/O, no clock unless injected) and holds the state of one
// request, so the worker makes a new one per attempt. The pass-through fast
// path for OpenAI-compatible upstreams stays in package openai and does not use
// this interface.
package provider

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/pkoukk/tiktoken-go"
	tiktoken_loader "github.com/pkoukk/tiktoken-go-loader"
)

// Translator converts one OpenAI-shaped chat request to a provider's wire
// format and the provider's answer back. One instance serves one upstream
// attempt; methods are called from one goroutine in this order:
// Request, then either Response (non-streaming, 2xx), StreamEvent for each
// upstream SSE event (streaming, 2xx), or Error (non-2xx).
//
// Contract for the caller (the worker):
//   - Request: path is appended to the upstream base URL (which has no
//     trailing slash) and may carry a query string. headers are set on the
//     upstream request as given and include authentication when the
//     translator was built with a key; the caller still sets
//     Content-Type: application/json. An error means the client's request
//     cannot be expressed for this provider: answer 400 with its text.
//   - Response: out is the OpenAI chat.completion body for the client. An
//     error means the upstream answered something unreadable (a 502 case).
//   - StreamEvent: event is the SSE "event:" name (nil if none) and data the
//     joined "data:" payload of one event. chunks are OpenAI
//     chat.completion.chunk payloads to send as "data: <chunk>\n\n" in order;
//     they may alias data and are valid until the next call. The translator
//     already honours the client's stream_options.include_usage (it adds or
//     drops the usage-only chunk itself). usage is non-nil once the final
//     counts are known (at the latest together with done). done=true means
//     the upstream finished normally: the caller writes "data: [DONE]\n\n"
//     and stops reading; the translator never emits [DONE] itself. An error
//     of type *StreamError is a failure the upstream reported inside the
//     stream: send its JSON as a data event, then [DONE]. Any other error is
//     an unreadable stream, to be handled like a cut connection.
//   - Error: status is the upstream's HTTP status, kept for the client; the
//     result is an OpenAI error body ({"error":{"message",...}}).
type Translator interface {
	Request(openaiBody []byte, upstreamModel string, stream bool) (path string, headers map[string]string, body []byte, err error)
	Response(body []byte) (out []byte, usage Usage, err error)
	StreamEvent(event, data []byte) (chunks [][]byte, usage *Usage, done bool, err error)
	Error(status int, body []byte) []byte
}

// Usage is the token accounting of one request. Estimated is true when the
// upstream reported no counts and they were computed with EstimateTokens.
type Usage struct {
	PromptTokens     int
	CompletionTokens int
	Estimated        bool
}

// StreamError is an error an upstream reported inside a stream that had
// already started with a 2xx status.
type StreamError struct {
	Type    string
	Message string
}

func (e *StreamError) Error() string {
	return "upstream stream error: " + e.Type + ": " + e.Message
}

// JSON returns the OpenAI-shaped error payload for the client.
func (e *StreamError) JSON() []byte { return ErrorJSON(e.Message, e.Type, "") }

// ErrorJSON encodes OpenAI's error object. An empty code is sent as null.
func ErrorJSON(message, typ, code string) []byte {
	var v struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	v.Error.Message, v.Error.Type = message, typ
	if code != "" {
		v.Error.Code = &code
	}
	b, _ := json.Marshal(v)
	return b
}

// FallbackMessage is the error message used when an upstream error body is
// not the JSON shape expected: the body itself if it is short printable text,
// else the status text.
func FallbackMessage(status int, body []byte) string {
	s := strings.TrimSpace(string(body))
	if s == "" || len(s) > 1024 || !utf8.ValidString(s) {
		if t := http.StatusText(status); t != "" {
			return fmt.Sprintf("upstream returned %d %s", status, t)
		}
		return fmt.Sprintf("upstream returned status %d", status)
	}
	return s
}

// ---- OpenAI chat wire types -------------------------------------------------

// ChatRequest is the part of an OpenAI chat completion request that the
// translators understand. Fields it does not list are dropped for
// non-OpenAI providers.
type ChatRequest struct {
	Model               string          `json:"model"`
	Messages            []ChatMessage   `json:"messages"`
	MaxTokens           *int            `json:"max_tokens,omitempty"`
	MaxCompletionTokens *int            `json:"max_completion_tokens,omitempty"`
	Temperature         *float64        `json:"temperature,omitempty"`
	TopP                *float64        `json:"top_p,omitempty"`
	N                   *int            `json:"n,omitempty"`
	Stop                StringList      `json:"stop,omitempty"`
	PresencePenalty     *float64        `json:"presence_penalty,omitempty"`
	FrequencyPenalty    *float64        `json:"frequency_penalty,omitempty"`
	Seed                *int64          `json:"seed,omitempty"`
	Stream              bool            `json:"stream,omitempty"`
	StreamOptions       *StreamOptions  `json:"stream_options,omitempty"`
	Tools               []Tool          `json:"tools,omitempty"`
	ToolChoice          json.RawMessage `json:"tool_choice,omitempty"`
	ParallelToolCalls   *bool           `json:"parallel_tool_calls,omitempty"`
	ResponseFormat      *ResponseFormat `json:"response_format,omitempty"`
	User                string          `json:"user,omitempty"`
}

// MaxOutputTokens is max_completion_tokens, else max_tokens, else 0.
func (r *ChatRequest) MaxOutputTokens() int {
	switch {
	case r.MaxCompletionTokens != nil:
		return *r.MaxCompletionTokens
	case r.MaxTokens != nil:
		return *r.MaxTokens
	}
	return 0
}

// IncludeUsage reports stream_options.include_usage.
func (r *ChatRequest) IncludeUsage() bool {
	return r.StreamOptions != nil && r.StreamOptions.IncludeUsage
}

// StreamOptions is OpenAI's stream_options.
type StreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// ResponseFormat is OpenAI's response_format.
type ResponseFormat struct {
	Type       string `json:"type"`
	JSONSchema *struct {
		Name   string          `json:"name"`
		Schema json.RawMessage `json:"schema,omitempty"`
		Strict *bool           `json:"strict,omitempty"`
	} `json:"json_schema,omitempty"`
}

// StringList decodes a JSON string or an array of strings (OpenAI's "stop").
type StringList []string

// UnmarshalJSON implements json.Unmarshaler.
func (l *StringList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*l = nil
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*l = StringList{s}
		return nil
	}
	var s []string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("'stop' must be a string or an array of strings")
	}
	*l = s
	return nil
}

// ChatMessage is one entry of "messages", and also the message of a
// non-streaming choice.
type ChatMessage struct {
	Role       string     `json:"role"`
	Content    Content    `json:"content"`
	Name       string     `json:"name,omitempty"`
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
}

// Content is a message's content. It decodes from a string (one text part),
// null (no parts) or an array of parts, and encodes back the same way: no
// parts as null, a single text part as a plain string.
type Content []ContentPart

// UnmarshalJSON implements json.Unmarshaler.
func (c *Content) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*c = nil
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*c = Content{{Type: "text", Text: s}}
		return nil
	}
	var parts []ContentPart
	if err := json.Unmarshal(b, &parts); err != nil {
		return fmt.Errorf("message content must be a string or an array of content parts")
	}
	*c = parts
	return nil
}

// MarshalJSON implements json.Marshaler.
func (c Content) MarshalJSON() ([]byte, error) {
	switch {
	case len(c) == 0:
		return []byte("null"), nil
	case len(c) == 1 && c[0].Type == "text":
		return json.Marshal(c[0].Text)
	}
	return json.Marshal([]ContentPart(c))
}

// Text joins the text parts.
func (c Content) Text() string {
	if len(c) == 1 {
		return c[0].Text
	}
	var b strings.Builder
	for _, p := range c {
		b.WriteString(p.Text)
	}
	return b.String()
}

// TextContent is content holding s, or no content when s is empty.
func TextContent(s string) Content {
	if s == "" {
		return nil
	}
	return Content{{Type: "text", Text: s}}
}

// ContentPart is one part of a message's content.
type ContentPart struct {
	Type     string    `json:"type"`
	Text     string    `json:"text,omitempty"`
	ImageURL *ImageURL `json:"image_url,omitempty"`
}

// ImageURL is an image part's target: an http(s) URL or a data: URL.
type ImageURL struct {
	URL    string `json:"url"`
	Detail string `json:"detail,omitempty"`
}

// ParseDataURL splits "data:<media type>;base64,<data>". ok is false for
// anything else.
func ParseDataURL(u string) (mediaType, data string, ok bool) {
	rest, found := strings.CutPrefix(u, "data:")
	if !found {
		return "", "", false
	}
	meta, data, found := strings.Cut(rest, ",")
	if !found {
		return "", "", false
	}
	mediaType, found = strings.CutSuffix(meta, ";base64")
	if !found || mediaType == "" {
		return "", "", false
	}
	return mediaType, data, true
}

// ToolCall is an assistant's function call; Arguments is a JSON text.
type ToolCall struct {
	ID       string       `json:"id"`
	Type     string       `json:"type"`
	Function FunctionCall `json:"function"`
}

// FunctionCall names a function and carries its JSON-encoded arguments.
type FunctionCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// Tool is an entry of "tools".
type Tool struct {
	Type     string `json:"type"`
	Function struct {
		Name        string          `json:"name"`
		Description string          `json:"description,omitempty"`
		Parameters  json.RawMessage `json:"parameters,omitempty"`
		Strict      *bool           `json:"strict,omitempty"`
	} `json:"function"`
}

// ToolChoice is the decoded tool_choice: Mode is "none", "auto", "required"
// or "function" (then Name is set); Mode is "" when tool_choice is absent.
type ToolChoice struct {
	Mode string
	Name string
}

// ParseToolChoice decodes OpenAI's tool_choice.
func ParseToolChoice(raw json.RawMessage) (ToolChoice, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return ToolChoice{}, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return ToolChoice{}, err
		}
		switch s {
		case "none", "auto", "required":
			return ToolChoice{Mode: s}, nil
		}
		return ToolChoice{}, fmt.Errorf("unknown tool_choice %q", s)
	}
	var v struct {
		Type     string `json:"type"`
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if err := json.Unmarshal(raw, &v); err != nil || v.Function.Name == "" {
		return ToolChoice{}, fmt.Errorf("tool_choice must be \"none\", \"auto\", \"required\" or {\"type\":\"function\",\"function\":{\"name\":...}}")
	}
	return ToolChoice{Mode: "function", Name: v.Function.Name}, nil
}

// ChatCompletion is OpenAI's non-streaming response.
type ChatCompletion struct {
	ID      string     `json:"id"`
	Object  string     `json:"object"`
	Created int64      `json:"created"`
	Model   string     `json:"model"`
	Choices []Choice   `json:"choices"`
	Usage   *ChatUsage `json:"usage,omitempty"`
}

// Choice is one choice of a ChatCompletion.
type Choice struct {
	Index        int         `json:"index"`
	Message      ChatMessage `json:"message"`
	FinishReason string      `json:"finish_reason"`
}

// ChatChunk is one OpenAI stream chunk.
type ChatChunk struct {
	ID      string        `json:"id"`
	Object  string        `json:"object"`
	Created int64         `json:"created"`
	Model   string        `json:"model"`
	Choices []ChunkChoice `json:"choices"`
	Usage   *ChatUsage    `json:"usage,omitempty"`
}

// ChunkChoice is one choice of a ChatChunk.
type ChunkChoice struct {
	Index        int     `json:"index"`
	Delta        Delta   `json:"delta"`
	FinishReason *string `json:"finish_reason"`
}

// Delta is a chunk's increment of the message.
type Delta struct {
	Role      string          `json:"role,omitempty"`
	Content   *string         `json:"content,omitempty"`
	ToolCalls []ToolCallDelta `json:"tool_calls,omitempty"`
}

// ToolCallDelta is a chunk's increment of one tool call; ID, Type and Name
// come with the call's first delta only.
type ToolCallDelta struct {
	Index    int    `json:"index"`
	ID       string `json:"id,omitempty"`
	Type     string `json:"type,omitempty"`
	Function struct {
		Name      string `json:"name,omitempty"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// ChatUsage is OpenAI's usage object.
type ChatUsage struct {
	PromptTokens        int                  `json:"prompt_tokens"`
	CompletionTokens    int                  `json:"completion_tokens"`
	TotalTokens         int                  `json:"total_tokens"`
	PromptTokensDetails *PromptTokensDetails `json:"prompt_tokens_details,omitempty"`
}

// PromptTokensDetails carries the prompt tokens served from a cache.
type PromptTokensDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

// NewChatUsage fills total_tokens and, when cached > 0, the cache details.
func NewChatUsage(prompt, completion, cached int) *ChatUsage {
	u := &ChatUsage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion}
	if cached > 0 {
		u.PromptTokensDetails = &PromptTokensDetails{CachedTokens: cached}
	}
	return u
}

// ---- token estimation -------------------------------------------------------

var encoders struct {
	once       sync.Once
	o200k      *tiktoken.Tiktoken
	cl100k     *tiktoken.Tiktoken
	o200kOnce  sync.Once
	cl100kOnce sync.Once
	o200kDone  atomic.Bool
	cl100kDone atomic.Bool
	// loading: a background load of that table was started (one goroutine, not
	// one per request while it loads).
	o200kLoading, cl100kLoading atomic.Bool
}

// o200kPrefixes are the model families tokenized with o200k_base; everything
// else (older OpenAI models and other providers, for which no public
// tokenizer exists) is counted with cl100k_base as an approximation.
var o200kPrefixes = []string{"gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o", "gpt-oss"}

func usesO200k(model string) bool {
	m := strings.ToLower(model)
	if i := strings.LastIndexByte(m, '/'); i >= 0 {
		m = m[i+1:]
	}
	for _, p := range o200kPrefixes {
		if strings.HasPrefix(m, p) {
			return true
		}
	}
	return false
}

func encoderFor(model string) *tiktoken.Tiktoken {
	// The BPE tables ship inside the loader module, so nothing is fetched at
	// run time; SetBpeLoader is a package global of tiktoken, set once.
	encoders.once.Do(func() { tiktoken.SetBpeLoader(tiktoken_loader.NewOfflineLoader()) })
	if usesO200k(model) {
		encoders.o200kOnce.Do(func() {
			encoders.o200k, _ = tiktoken.GetEncoding("o200k_base")
			encoders.o200kDone.Store(true)
		})
		return encoders.o200k
	}
	encoders.cl100kOnce.Do(func() {
		encoders.cl100k, _ = tiktoken.GetEncoding("cl100k_base")
		encoders.cl100kDone.Store(true)
	})
	return encoders.cl100k
}

// TokenizerReady reports whether model's tokenizer is loaded. When it is not,
// it starts loading it in the background and returns false: a table costs
// ~100-150 ms and ~20 MiB to load, which a request must not wait for, and a
// worker whose upstreams all report usage never pays it.
func TokenizerReady(model string) bool {
	done, loading := &encoders.cl100kDone, &encoders.cl100kLoading
	if usesO200k(model) {
		done, loading = &encoders.o200kDone, &encoders.o200kLoading
	}
	if done.Load() {
		return true
	}
	if loading.CompareAndSwap(false, true) {
		go encoderFor(model)
	}
	return false
}

// EstimateTokens counts the tokens of text with the tokenizer of model's
// family (o200k_base or cl100k_base). The first call per tokenizer loads its
// table (tens of milliseconds). If the table cannot be loaded it falls back to
// one token per four bytes.
func EstimateTokens(model, text string) int {
	if text == "" {
		return 0
	}
	enc := encoderFor(model)
	if enc == nil {
		return (len(text) + 3) / 4
	}
	return len(enc.EncodeOrdinary(text))
}

// perMessageTokens is the framing overhead OpenAI documents for chat formats
// (role and separators), added per message when estimating a prompt.
const perMessageTokens = 4

// EstimatePrompt estimates the prompt tokens of a chat request: the text of
// every message, tool call and tool definition, plus a small per-message
// overhead. Images are not counted.
func EstimatePrompt(model string, r *ChatRequest) int {
	return EstimateTokens(model, promptText(r)) + perMessageTokens*len(r.Messages) + 3
}

func promptText(r *ChatRequest) string {
	var b strings.Builder
	for _, m := range r.Messages {
		b.WriteString(m.Role)
		b.WriteByte('\n')
		b.WriteString(m.Content.Text())
		for _, tc := range m.ToolCalls {
			b.WriteString(tc.Function.Name)
			b.WriteString(tc.Function.Arguments)
		}
		b.WriteByte('\n')
	}
	for _, t := range r.Tools {
		b.WriteString(t.Function.Name)
		b.WriteString(t.Function.Description)
		b.Write(t.Function.Parameters)
	}
	return b.String()
}
