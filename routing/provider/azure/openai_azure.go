// Package azure serves OpenAI chat requests from Azure OpenAI deployments.
// Azure speaks OpenAI's wire format, so bodies pass through untouched except
// for the model value and stream_options (see package openai); what differs
// is the URL (deployment in the path, api-version in the query) and the
// api-key header.
package azure

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"

	"github.com/llm-proxy/llm-proxy/routing/provider"
	"github.com/llm-proxy/llm-proxy/routing/provider/openai"
)

// DefaultAPIVersion is the GA data-plane inference version used when none is
// configured; it supports stream_options.include_usage.
const DefaultAPIVersion = "2024-10-21"

// Translator serves one OpenAI chat request from an Azure OpenAI resource
// whose base URL is "https://<resource>.openai.azure.com". The upstream model
// name is the deployment name. The zero value works; set the fields before
// Request. It implements provider.Translator.
type Translator struct {
	// APIKey is sent as api-key; empty sends no key header.
	APIKey string
	// APIVersion is the api-version query value; empty means DefaultAPIVersion.
	APIVersion string

	scan         openai.Request
	deployment   string
	includeUsage bool   // the client asked for the usage chunk
	body         []byte // the upstream body, kept for estimating usage
	usage        *provider.Usage
	// text holds streamed output until a usage chunk arrives, for estimating
	// usage if none ever does.
	text strings.Builder
}

var _ provider.Translator = (*Translator)(nil)

// Request implements provider.Translator. The body keeps every field; only
// "model" becomes the deployment name (Azure ignores it) and, for streams,
// stream_options.include_usage is forced on so usage is always known.
func (t *Translator) Request(openaiBody []byte, upstreamModel string, stream bool) (string, map[string]string, []byte, error) {
	if err := openai.ScanRequest(openaiBody, &t.scan); err != nil {
		return "", nil, nil, err
	}
	if upstreamModel == "" {
		upstreamModel = string(t.scan.Model)
	}
	t.deployment = upstreamModel
	t.includeUsage = t.scan.IncludeUsage
	t.body = openai.AppendRewrite(nil, openaiBody, &t.scan, upstreamModel, stream)
	version := t.APIVersion
	if version == "" {
		version = DefaultAPIVersion
	}
	path := "/openai/deployments/" + url.PathEscape(upstreamModel) + "/chat/completions?api-version=" + url.QueryEscape(version)
	headers := map[string]string{}
	if t.APIKey != "" {
		headers["api-key"] = t.APIKey
	}
	return path, headers, t.body, nil
}

// Response implements provider.Translator: the body passes through (out
// aliases body).
func (t *Translator) Response(body []byte) ([]byte, provider.Usage, error) {
	if u, ok := openai.ParseUsage(body); ok {
		return body, provider.Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens}, nil
	}
	var c provider.ChatCompletion
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, provider.Usage{}, fmt.Errorf("azure: decode response: %w", err)
	}
	var s strings.Builder
	for _, ch := range c.Choices {
		s.WriteString(ch.Message.Content.Text())
		for _, tc := range ch.Message.ToolCalls {
			s.WriteString(tc.Function.Name)
			s.WriteString(tc.Function.Arguments)
		}
	}
	return body, t.estimate(s.String()), nil
}

// streamDelta is the part of a chunk read while estimating.
type streamDelta struct {
	Choices []struct {
		Delta struct {
			Content   string `json:"content"`
			ToolCalls []struct {
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
	} `json:"choices"`
}

// StreamEvent implements provider.Translator: chunks pass through (aliasing
// data) except the usage-only chunk the client did not ask for; "[DONE]"
// ends the stream.
func (t *Translator) StreamEvent(_, data []byte) ([][]byte, *provider.Usage, bool, error) {
	d := bytes.TrimSpace(data)
	if bytes.Equal(d, []byte("[DONE]")) {
		u := t.usage
		if u == nil {
			e := t.estimate(t.text.String())
			u = &e
		}
		return nil, u, true, nil
	}
	if bytes.HasPrefix(d, []byte(`{"error"`)) {
		var e struct {
			Error struct {
				Code    any    `json:"code"`
				Type    string `json:"type"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(d, &e) == nil {
			typ := e.Error.Type
			if typ == "" {
				typ = "upstream_error"
			}
			return nil, nil, false, &provider.StreamError{Type: typ, Message: e.Error.Message}
		}
	}
	if u, ok := openai.ParseUsage(d); ok {
		t.usage = &provider.Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens}
		t.text.Reset()
		if !t.includeUsage && openai.IsUsageOnlyChunk(d) {
			return nil, nil, false, nil
		}
	} else if t.usage == nil {
		var sd streamDelta
		if json.Unmarshal(d, &sd) == nil {
			for _, c := range sd.Choices {
				t.text.WriteString(c.Delta.Content)
				for _, tc := range c.Delta.ToolCalls {
					t.text.WriteString(tc.Function.Name)
					t.text.WriteString(tc.Function.Arguments)
				}
			}
		}
	}
	return [][]byte{data}, nil, false, nil
}

func (t *Translator) estimate(completion string) provider.Usage {
	u := provider.Usage{CompletionTokens: provider.EstimateTokens(t.deployment, completion), Estimated: true}
	var req provider.ChatRequest
	if json.Unmarshal(t.body, &req) == nil {
		u.PromptTokens = provider.EstimatePrompt(t.deployment, &req)
	}
	return u
}

// Error implements provider.Translator. Azure's errors already have OpenAI's
// {"error":{...,"message"}} shape and pass through; anything else (a gateway
// HTML page) is wrapped.
func (t *Translator) Error(status int, body []byte) []byte {
	var e struct {
		Error *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != nil && e.Error.Message != "" {
		return body
	}
	return provider.ErrorJSON(provider.FallbackMessage(status, body), "upstream_error", "")
}
