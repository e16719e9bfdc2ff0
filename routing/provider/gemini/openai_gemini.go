// Package gemini serves OpenAI chat requests from Google's Gemini API
// (models.generateContent and models.streamGenerateContent with alt=sse). It
// is a pure translator: bytes in, bytes out, no I/O.
package gemini

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/llm-proxy/llm-proxy/routing/provider"
)

// Translator serves one OpenAI chat request from a Gemini upstream whose base
// URL ends in the API version (".../v1beta"). The zero value works; set the
// fields before Request. It implements provider.Translator.
type Translator struct {
	// APIKey is sent as x-goog-api-key; empty sends no key header.
	APIKey string
	// Now stamps "created"; nil means time.Now.
	Now func() time.Time

	req          provider.ChatRequest
	model        string
	includeUsage bool
	created      int64
	candidates   int // how many candidates must finish before the stream is done
	// stream state
	id        string
	respModel string
	choices   map[int]*choiceState
	finished  int
	usage     *usageMetadata
	// text holds the streamed output only until usageMetadata shows up, for
	// estimating usage if it never does.
	text strings.Builder
}

type choiceState struct {
	roleSent bool
	finished bool
	nextTool int
}

var _ provider.Translator = (*Translator)(nil)

// ---- wire types ----

type generateRequest struct {
	Contents          []content         `json:"contents"`
	SystemInstruction *content          `json:"systemInstruction,omitempty"`
	Tools             []geminiTool      `json:"tools,omitempty"`
	ToolConfig        *toolConfig       `json:"toolConfig,omitempty"`
	GenerationConfig  *generationConfig `json:"generationConfig,omitempty"`
}

type content struct {
	Role  string `json:"role,omitempty"`
	Parts []part `json:"parts"`
}

type part struct {
	Text             string            `json:"text,omitempty"`
	Thought          bool              `json:"thought,omitempty"`
	InlineData       *blob             `json:"inlineData,omitempty"`
	FunctionCall     *functionCall     `json:"functionCall,omitempty"`
	FunctionResponse *functionResponse `json:"functionResponse,omitempty"`
}

type blob struct {
	MimeType string `json:"mimeType"`
	Data     string `json:"data"`
}

type functionCall struct {
	ID   string          `json:"id,omitempty"`
	Name string          `json:"name"`
	Args json.RawMessage `json:"args,omitempty"`
}

type functionResponse struct {
	Name     string          `json:"name"`
	Response json.RawMessage `json:"response"`
}

type geminiTool struct {
	FunctionDeclarations []functionDeclaration `json:"functionDeclarations"`
}

type functionDeclaration struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// ParametersJSONSchema takes a JSON Schema as is, unlike "parameters",
	// which accepts only an OpenAPI subset and rejects common keywords.
	ParametersJSONSchema json.RawMessage `json:"parametersJsonSchema,omitempty"`
}

type toolConfig struct {
	FunctionCallingConfig functionCallingConfig `json:"functionCallingConfig"`
}

type functionCallingConfig struct {
	Mode                 string   `json:"mode"`
	AllowedFunctionNames []string `json:"allowedFunctionNames,omitempty"`
}

type generationConfig struct {
	Temperature        *float64        `json:"temperature,omitempty"`
	TopP               *float64        `json:"topP,omitempty"`
	MaxOutputTokens    int             `json:"maxOutputTokens,omitempty"`
	StopSequences      []string        `json:"stopSequences,omitempty"`
	CandidateCount     int             `json:"candidateCount,omitempty"`
	PresencePenalty    *float64        `json:"presencePenalty,omitempty"`
	FrequencyPenalty   *float64        `json:"frequencyPenalty,omitempty"`
	Seed               *int64          `json:"seed,omitempty"`
	ResponseMimeType   string          `json:"responseMimeType,omitempty"`
	ResponseJSONSchema json.RawMessage `json:"responseJsonSchema,omitempty"`
}

type generateResponse struct {
	Candidates     []candidate `json:"candidates"`
	PromptFeedback *struct {
		BlockReason string `json:"blockReason"`
	} `json:"promptFeedback"`
	UsageMetadata *usageMetadata `json:"usageMetadata"`
	ModelVersion  string         `json:"modelVersion"`
	ResponseID    string         `json:"responseId"`
	Error         *apiError      `json:"error"`
}

type candidate struct {
	Content      *content `json:"content"`
	FinishReason string   `json:"finishReason"`
	Index        int      `json:"index"`
}

type usageMetadata struct {
	PromptTokenCount        int `json:"promptTokenCount"`
	CandidatesTokenCount    int `json:"candidatesTokenCount"`
	CachedContentTokenCount int `json:"cachedContentTokenCount"`
	ThoughtsTokenCount      int `json:"thoughtsTokenCount"`
	ToolUsePromptTokenCount int `json:"toolUsePromptTokenCount"`
}

// usage converts to OpenAI's accounting: thinking tokens are billed as
// output, tool-use prompt tokens as input.
func (u *usageMetadata) usage() provider.Usage {
	return provider.Usage{
		PromptTokens:     u.PromptTokenCount + u.ToolUsePromptTokenCount,
		CompletionTokens: u.CandidatesTokenCount + u.ThoughtsTokenCount,
	}
}

type apiError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Status  string `json:"status"`
}

// FinishReason maps Gemini's finishReason to OpenAI's finish_reason; a
// candidate that called functions and stopped finishes with "tool_calls".
func FinishReason(reason string, calledTools bool) string {
	switch reason {
	case "MAX_TOKENS":
		return "length"
	case "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE":
		return "content_filter"
	}
	if calledTools {
		return "tool_calls"
	}
	return "stop" // STOP, OTHER, MALFORMED_FUNCTION_CALL, FINISH_REASON_UNSPECIFIED
}

// ---- request ----

// Request implements provider.Translator.
func (t *Translator) Request(openaiBody []byte, upstreamModel string, stream bool) (string, map[string]string, []byte, error) {
	t.req = provider.ChatRequest{}
	if err := json.Unmarshal(openaiBody, &t.req); err != nil {
		return "", nil, nil, fmt.Errorf("gemini: decode request: %w", err)
	}
	req := &t.req
	t.model = upstreamModel
	t.includeUsage = stream && req.IncludeUsage()
	t.created = now(t.Now)
	t.candidates = 1
	out := generateRequest{}
	gc := generationConfig{
		Temperature: req.Temperature, TopP: req.TopP, MaxOutputTokens: req.MaxOutputTokens(),
		StopSequences: req.Stop, PresencePenalty: req.PresencePenalty, FrequencyPenalty: req.FrequencyPenalty, Seed: req.Seed,
	}
	if req.N != nil && *req.N > 1 {
		gc.CandidateCount = *req.N
		t.candidates = *req.N
	}
	if rf := req.ResponseFormat; rf != nil {
		switch rf.Type {
		case "json_object":
			gc.ResponseMimeType = "application/json"
		case "json_schema":
			gc.ResponseMimeType = "application/json"
			if rf.JSONSchema != nil {
				gc.ResponseJSONSchema = rf.JSONSchema.Schema
			}
		}
	}
	if b, _ := json.Marshal(gc); string(b) != "{}" {
		out.GenerationConfig = &gc
	}
	// Tool results name the call only by id; Gemini wants the function name.
	callNames := map[string]string{}
	var system []part
	for i := range req.Messages {
		m := &req.Messages[i]
		switch m.Role {
		case "system", "developer":
			if s := m.Content.Text(); s != "" {
				system = append(system, part{Text: s})
			}
		case "user":
			ps, err := userParts(m.Content)
			if err != nil {
				return "", nil, nil, fmt.Errorf("messages[%d]: %w", i, err)
			}
			out.Contents = appendContent(out.Contents, "user", ps)
		case "assistant":
			var ps []part
			if s := m.Content.Text(); s != "" {
				ps = append(ps, part{Text: s})
			}
			for _, tc := range m.ToolCalls {
				args := json.RawMessage(strings.TrimSpace(tc.Function.Arguments))
				if len(args) == 0 {
					args = json.RawMessage("{}")
				}
				if args[0] != '{' || !json.Valid(args) {
					return "", nil, nil, fmt.Errorf("messages[%d]: tool call %q: arguments must be a JSON object", i, tc.ID)
				}
				callNames[tc.ID] = tc.Function.Name
				ps = append(ps, part{FunctionCall: &functionCall{Name: tc.Function.Name, Args: args}})
			}
			out.Contents = appendContent(out.Contents, "model", ps)
		case "tool":
			name := callNames[m.ToolCallID]
			if name == "" {
				name = m.Name
			}
			if name == "" {
				return "", nil, nil, fmt.Errorf("messages[%d]: no earlier assistant tool call has id %q", i, m.ToolCallID)
			}
			out.Contents = appendContent(out.Contents, "user", []part{{FunctionResponse: &functionResponse{Name: name, Response: toolResponse(m.Content.Text())}}})
		default:
			return "", nil, nil, fmt.Errorf("messages[%d]: unsupported role %q", i, m.Role)
		}
	}
	if len(out.Contents) == 0 {
		return "", nil, nil, errors.New("'messages' must contain at least one user or assistant message")
	}
	if len(system) > 0 {
		out.SystemInstruction = &content{Parts: system}
	}
	var decls []functionDeclaration
	for _, tl := range req.Tools {
		if tl.Type != "function" {
			return "", nil, nil, fmt.Errorf("tool type %q is not supported by this model's provider", tl.Type)
		}
		d := functionDeclaration{Name: tl.Function.Name, Description: tl.Function.Description}
		if p := tl.Function.Parameters; len(p) > 0 && !bytes.Equal(p, []byte("null")) {
			d.ParametersJSONSchema = p
		}
		decls = append(decls, d)
	}
	if len(decls) > 0 {
		out.Tools = []geminiTool{{FunctionDeclarations: decls}}
	}
	tc, err := provider.ParseToolChoice(req.ToolChoice)
	if err != nil {
		return "", nil, nil, err
	}
	switch tc.Mode {
	case "none":
		out.ToolConfig = &toolConfig{functionCallingConfig{Mode: "NONE"}}
	case "auto":
		out.ToolConfig = &toolConfig{functionCallingConfig{Mode: "AUTO"}}
	case "required":
		out.ToolConfig = &toolConfig{functionCallingConfig{Mode: "ANY"}}
	case "function":
		out.ToolConfig = &toolConfig{functionCallingConfig{Mode: "ANY", AllowedFunctionNames: []string{tc.Name}}}
	}
	body, err := json.Marshal(out)
	if err != nil {
		return "", nil, nil, fmt.Errorf("gemini: encode request: %w", err)
	}
	path := "/models/" + url.PathEscape(strings.TrimPrefix(upstreamModel, "models/"))
	if stream {
		path += ":streamGenerateContent?alt=sse"
	} else {
		path += ":generateContent"
	}
	headers := map[string]string{}
	if t.APIKey != "" {
		headers["x-goog-api-key"] = t.APIKey
	}
	return path, headers, body, nil
}

// appendContent merges consecutive turns of one role: Gemini expects the
// answers to all function calls of a turn in a single content.
func appendContent(cs []content, role string, ps []part) []content {
	if len(ps) == 0 {
		return cs
	}
	if n := len(cs); n > 0 && cs[n-1].Role == role {
		cs[n-1].Parts = append(cs[n-1].Parts, ps...)
		return cs
	}
	return append(cs, content{Role: role, Parts: ps})
}

func userParts(c provider.Content) ([]part, error) {
	var out []part
	for _, p := range c {
		switch p.Type {
		case "text":
			if p.Text != "" {
				out = append(out, part{Text: p.Text})
			}
		case "image_url":
			if p.ImageURL == nil {
				return nil, errors.New("image_url part without a url")
			}
			mt, data, ok := provider.ParseDataURL(p.ImageURL.URL)
			if !ok {
				return nil, errors.New("images for this model's provider must be base64 data: URLs")
			}
			out = append(out, part{InlineData: &blob{MimeType: mt, Data: data}})
		default:
			return nil, fmt.Errorf("content part type %q is not supported by this model's provider", p.Type)
		}
	}
	return out, nil
}

// toolResponse is a function result as Gemini's response object: a JSON
// object result is sent as is, anything else under "content".
func toolResponse(s string) json.RawMessage {
	b := bytes.TrimSpace([]byte(s))
	if len(b) > 0 && b[0] == '{' && json.Valid(b) {
		return b
	}
	v, _ := json.Marshal(map[string]string{"content": s})
	return v
}

// ---- response ----

// Response implements provider.Translator.
func (t *Translator) Response(body []byte) ([]byte, provider.Usage, error) {
	var r generateResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, provider.Usage{}, fmt.Errorf("gemini: decode response: %w", err)
	}
	out := provider.ChatCompletion{
		ID: t.completionID(r.ResponseID), Object: "chat.completion", Created: now(t.Now), Model: t.modelName(r.ModelVersion),
		Choices: []provider.Choice{},
	}
	var text strings.Builder
	for _, c := range r.Candidates {
		msg := provider.ChatMessage{Role: "assistant"}
		var s strings.Builder
		if c.Content != nil {
			for _, p := range c.Content.Parts {
				switch {
				case p.Thought:
				case p.FunctionCall != nil:
					msg.ToolCalls = append(msg.ToolCalls, t.toolCall(p.FunctionCall, r.ResponseID, c.Index, len(msg.ToolCalls)))
				default:
					s.WriteString(p.Text)
				}
			}
		}
		msg.Content = provider.TextContent(s.String())
		text.WriteString(s.String())
		for _, tc := range msg.ToolCalls {
			text.WriteString(tc.Function.Arguments)
		}
		out.Choices = append(out.Choices, provider.Choice{Index: c.Index, Message: msg, FinishReason: FinishReason(c.FinishReason, len(msg.ToolCalls) > 0)})
	}
	if len(out.Choices) == 0 && r.PromptFeedback != nil && r.PromptFeedback.BlockReason != "" {
		// The prompt itself was blocked: no candidate at all.
		out.Choices = append(out.Choices, provider.Choice{Message: provider.ChatMessage{Role: "assistant"}, FinishReason: "content_filter"})
	}
	var u provider.Usage
	cached := 0
	if r.UsageMetadata != nil {
		u = r.UsageMetadata.usage()
		cached = r.UsageMetadata.CachedContentTokenCount
	} else {
		u = t.estimate(text.String())
	}
	out.Usage = provider.NewChatUsage(u.PromptTokens, u.CompletionTokens, cached)
	b, err := json.Marshal(out)
	if err != nil {
		return nil, provider.Usage{}, fmt.Errorf("gemini: encode response: %w", err)
	}
	return b, u, nil
}

func (t *Translator) estimate(completion string) provider.Usage {
	return provider.Usage{
		PromptTokens:     provider.EstimatePrompt(t.model, &t.req),
		CompletionTokens: provider.EstimateTokens(t.model, completion),
		Estimated:        true,
	}
}

func (t *Translator) completionID(responseID string) string {
	if responseID == "" {
		return "chatcmpl-gemini"
	}
	return "chatcmpl-" + responseID
}

func (t *Translator) modelName(version string) string {
	if version != "" {
		return version
	}
	return t.model
}

// toolCall gives a function call an id: Gemini's own when it sends one, else
// one built from the response id so calls of different turns differ.
func (t *Translator) toolCall(fc *functionCall, responseID string, choice, n int) provider.ToolCall {
	id := fc.ID
	if id == "" {
		id = "call_" + strconv.Itoa(choice) + "_" + strconv.Itoa(n)
		if responseID != "" {
			id = "call_" + responseID + "_" + strconv.Itoa(choice) + "_" + strconv.Itoa(n)
		}
	}
	args := "{}"
	if len(fc.Args) > 0 && !bytes.Equal(fc.Args, []byte("null")) {
		var b bytes.Buffer
		if json.Compact(&b, fc.Args) == nil {
			args = b.String()
		}
	}
	return provider.ToolCall{ID: id, Type: "function", Function: provider.FunctionCall{Name: fc.Name, Arguments: args}}
}

// StreamEvent implements provider.Translator. Each SSE event of
// streamGenerateContent?alt=sse is a whole GenerateContentResponse holding
// the next piece of each candidate; the stream is done once every candidate
// has a finishReason (Gemini sends no end marker).
func (t *Translator) StreamEvent(_, data []byte) ([][]byte, *provider.Usage, bool, error) {
	var r generateResponse
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, nil, false, fmt.Errorf("gemini: decode stream event: %w", err)
	}
	if r.Error != nil {
		return nil, nil, false, &provider.StreamError{Type: errorType(r.Error.Status), Message: r.Error.Message}
	}
	if t.created == 0 {
		t.created = now(t.Now)
	}
	if t.candidates == 0 {
		t.candidates = 1
	}
	if t.id == "" {
		t.id = t.completionID(r.ResponseID)
		t.respModel = t.modelName(r.ModelVersion)
		t.choices = map[int]*choiceState{}
	}
	if r.UsageMetadata != nil {
		t.usage = r.UsageMetadata
		t.text.Reset()
	}
	var chunks [][]byte
	if len(r.Candidates) == 0 && r.PromptFeedback != nil && r.PromptFeedback.BlockReason != "" {
		f := "content_filter"
		chunks = append(chunks, t.chunk(0, provider.Delta{Role: "assistant"}, &f))
		t.finished = t.candidates
	}
	for _, c := range r.Candidates {
		st := t.choices[c.Index]
		if st == nil {
			st = &choiceState{}
			t.choices[c.Index] = st
		}
		if st.finished {
			continue
		}
		var d provider.Delta
		if !st.roleSent {
			st.roleSent = true
			d.Role = "assistant"
		}
		var s strings.Builder
		if c.Content != nil {
			for _, p := range c.Content.Parts {
				switch {
				case p.Thought:
				case p.FunctionCall != nil:
					tc := t.toolCall(p.FunctionCall, r.ResponseID, c.Index, st.nextTool)
					td := provider.ToolCallDelta{Index: st.nextTool, ID: tc.ID, Type: "function"}
					td.Function.Name, td.Function.Arguments = tc.Function.Name, tc.Function.Arguments
					d.ToolCalls = append(d.ToolCalls, td)
					st.nextTool++
					if t.usage == nil {
						t.text.WriteString(tc.Function.Arguments)
					}
				default:
					s.WriteString(p.Text)
				}
			}
		}
		if s.Len() > 0 || d.Role != "" {
			str := s.String()
			d.Content = &str
			if t.usage == nil {
				t.text.WriteString(str)
			}
		}
		if d.Role != "" || d.Content != nil || len(d.ToolCalls) > 0 {
			chunks = append(chunks, t.chunk(c.Index, d, nil))
		}
		if c.FinishReason != "" {
			st.finished = true
			t.finished++
			f := FinishReason(c.FinishReason, st.nextTool > 0)
			chunks = append(chunks, t.chunk(c.Index, provider.Delta{}, &f))
		}
	}
	if t.finished < t.candidates {
		return chunks, nil, false, nil
	}
	var u provider.Usage
	cached := 0
	if t.usage != nil {
		u = t.usage.usage()
		cached = t.usage.CachedContentTokenCount
	} else {
		u = t.estimate(t.text.String())
	}
	if t.includeUsage {
		c := provider.ChatChunk{
			ID: t.id, Object: "chat.completion.chunk", Created: t.created, Model: t.respModel,
			Choices: []provider.ChunkChoice{}, Usage: provider.NewChatUsage(u.PromptTokens, u.CompletionTokens, cached),
		}
		b, _ := json.Marshal(c)
		chunks = append(chunks, b)
	}
	return chunks, &u, true, nil
}

func (t *Translator) chunk(index int, d provider.Delta, finish *string) []byte {
	c := provider.ChatChunk{
		ID: t.id, Object: "chat.completion.chunk", Created: t.created, Model: t.respModel,
		Choices: []provider.ChunkChoice{{Index: index, Delta: d, FinishReason: finish}},
	}
	b, _ := json.Marshal(c)
	return b
}

// Error implements provider.Translator: Google's
// {"error":{"code","message","status"}} becomes OpenAI's error object, the
// status ("RESOURCE_EXHAUSTED") as code and, lower-cased, as type.
func (t *Translator) Error(status int, body []byte) []byte {
	b := bytes.TrimSpace(body)
	if len(b) > 0 && b[0] == '[' {
		// Non-SSE streaming answers wrap the error in an array.
		var arr []json.RawMessage
		if json.Unmarshal(b, &arr) == nil && len(arr) > 0 {
			b = arr[0]
		}
	}
	var e struct {
		Error *apiError `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != nil && e.Error.Message != "" {
		return provider.ErrorJSON(e.Error.Message, errorType(e.Error.Status), e.Error.Status)
	}
	return provider.ErrorJSON(provider.FallbackMessage(status, body), "upstream_error", "")
}

func errorType(status string) string {
	if status == "" {
		return "upstream_error"
	}
	return strings.ToLower(status)
}

func now(f func() time.Time) int64 {
	if f == nil {
		return time.Now().Unix()
	}
	return f().Unix()
}
