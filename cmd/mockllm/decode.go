package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
)

// Request bodies are decoded with encoding/json into small structs: it
// validates the whole document (bad JSON must be a 400) and the custom
// unmarshalers below count words without keeping message text around.

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type chatRequest struct {
	Model         string         `json:"model"`
	Messages      []chatMessage  `json:"messages"`
	Stream        bool           `json:"stream"`
	StreamOptions *streamOptions `json:"stream_options"`
}

type chatMessage struct {
	Content contentWords `json:"content"`
}

type textRequest struct {
	Model         string         `json:"model"`
	Prompt        *promptWords   `json:"prompt"`
	Stream        bool           `json:"stream"`
	StreamOptions *streamOptions `json:"stream_options"`
}

type embeddingsRequest struct {
	Model          string      `json:"model"`
	Input          *inputTexts `json:"input"`
	Dimensions     *int        `json:"dimensions"`
	EncodingFormat string      `json:"encoding_format"`
}

// maxDims bounds "dimensions" so one request cannot ask for a gigabyte.
const maxDims = 1 << 16

func decodeRequest(rt route, body []byte, req *request) *apiError {
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("We could not parse the JSON body of your request: the body is empty.")
	}
	var err error
	switch rt {
	case routeChat:
		var v chatRequest
		if err = json.Unmarshal(body, &v); err != nil {
			break
		}
		if v.Messages == nil && v.Model != "" {
			return badRequest("Missing required parameter: 'messages'.")
		}
		req.model, req.stream = v.Model, v.Stream
		req.includeUsage = v.StreamOptions != nil && v.StreamOptions.IncludeUsage
		for _, m := range v.Messages {
			// 3 per message mirrors the fixed per-message overhead of
			// OpenAI's chat token counting.
			req.promptTokens += int(m.Content) + 3
		}
	case routeText:
		var v textRequest
		if err = json.Unmarshal(body, &v); err != nil {
			break
		}
		if v.Prompt == nil && v.Model != "" {
			return badRequest("Missing required parameter: 'prompt'.")
		}
		req.model, req.stream = v.Model, v.Stream
		req.includeUsage = v.StreamOptions != nil && v.StreamOptions.IncludeUsage
		if v.Prompt != nil {
			req.promptTokens = int(*v.Prompt)
		}
	case routeEmbeddings:
		var v embeddingsRequest
		if err = json.Unmarshal(body, &v); err != nil {
			break
		}
		req.model = v.Model
		if v.Model == "" {
			return nil // reported as a missing model
		}
		if v.Input == nil || len(*v.Input) == 0 {
			return badRequest("Missing required parameter: 'input'.")
		}
		req.inputs = *v.Input
		for _, in := range req.inputs {
			req.promptTokens += countWords(in)
		}
		if v.Dimensions != nil {
			if *v.Dimensions < 1 || *v.Dimensions > maxDims {
				return badRequest("Invalid value for 'dimensions': must be between 1 and " + strconv.Itoa(maxDims) + ".")
			}
			req.dims = *v.Dimensions
		}
		switch v.EncodingFormat {
		case "", "float":
		case "base64":
			req.base64 = true
		default:
			return badRequest("Invalid value for 'encoding_format': must be 'float' or 'base64'.")
		}
	}
	var syntaxErr *json.SyntaxError
	if err != nil && !errors.As(err, &syntaxErr) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return badRequest("Invalid request body: " + err.Error())
	}
	if err != nil {
		return badRequest("We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.) Details: " + err.Error())
	}
	return nil
}

// contentWords decodes a chat message's content (a string, an array of
// content parts, or null) into its word count.
type contentWords int

func (c *contentWords) UnmarshalJSON(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	switch b[0] {
	case 'n':
		*c = 0
	case '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*c = contentWords(countWords(s))
	case '[':
		var parts []struct {
			Text string `json:"text"`
		}
		if err := json.Unmarshal(b, &parts); err != nil {
			return err
		}
		n := 0
		for _, p := range parts {
			n += countWords(p.Text)
		}
		*c = contentWords(n)
	default:
		return errors.New("content must be a string, an array of content parts or null")
	}
	return nil
}

// promptWords decodes a legacy completion prompt: a string, an array of
// strings, a token array, or an array of token arrays (one token = one word).
type promptWords int

func (p *promptWords) UnmarshalJSON(b []byte) error {
	texts, err := decodeTexts(b)
	if err != nil {
		return err
	}
	n := 0
	for _, t := range texts {
		n += countWords(t)
	}
	*p = promptWords(n)
	return nil
}

// inputTexts decodes embeddings input into one string per input; token
// arrays become their numbers joined by spaces, so they hash and count like
// text.
type inputTexts []string

func (in *inputTexts) UnmarshalJSON(b []byte) error {
	texts, err := decodeTexts(b)
	if err != nil {
		return err
	}
	*in = texts
	return nil
}

func decodeTexts(b []byte) ([]string, error) {
	if len(b) == 0 || b[0] == 'n' {
		return nil, nil
	}
	if b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, err
		}
		return []string{s}, nil
	}
	if b[0] != '[' {
		return nil, errors.New("expected a string, an array of strings or an array of tokens")
	}
	var items []json.RawMessage
	if err := json.Unmarshal(b, &items); err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return []string{}, nil
	}
	switch items[0][0] {
	case '"':
		out := make([]string, len(items))
		for i, it := range items {
			if err := json.Unmarshal(it, &out[i]); err != nil {
				return nil, errors.New("array input must be all strings, all tokens or all token arrays")
			}
		}
		return out, nil
	case '[':
		out := make([]string, len(items))
		for i, it := range items {
			s, err := joinTokens(it)
			if err != nil {
				return nil, err
			}
			out[i] = s
		}
		return out, nil
	default:
		s, err := joinTokens(b)
		if err != nil {
			return nil, err
		}
		return []string{s}, nil
	}
}

func joinTokens(b []byte) (string, error) {
	var toks []int64
	if err := json.Unmarshal(b, &toks); err != nil {
		return "", errors.New("token arrays must hold integers")
	}
	var sb strings.Builder
	for i, t := range toks {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(strconv.FormatInt(t, 10))
	}
	return sb.String(), nil
}
