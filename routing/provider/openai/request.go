// Package openai is the pass-through translator for OpenAI-compatible upstreams.
// It never decodes a request body: it scans the top-level object for the few fields
// the gateway needs (model, stream, stream_options, user) and rewrites the model in
// the raw bytes, so everything else reaches the upstream exactly as the client sent it.
package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
)

// Errors returned by ScanRequest; their text is shown to API clients.
var (
	ErrInvalidJSON  = errors.New("the request body is not valid JSON")
	ErrNotObject    = errors.New("the request body must be a JSON object")
	ErrModelMissing = errors.New("you must provide a model parameter")
	ErrModelType    = errors.New("'model' must be a string")
	ErrStreamType   = errors.New("'stream' must be a boolean")
)

// span is a half-open byte range of a value inside the body; start < 0 means absent.
type span struct{ start, end int }

func (s span) ok() bool { return s.start >= 0 }

// Request is what the gateway reads from a request body. Byte slices alias the body.
type Request struct {
	// Model is the requested model name (unescaped).
	Model []byte
	// Stream reports "stream": true.
	Stream bool
	// IncludeUsage reports "stream_options": {"include_usage": true}.
	IncludeUsage bool
	// User is the raw "user" string value, if any (for conversation affinity).
	User []byte

	model, streamOptions, includeUsage span
	// closeBrace is the offset of the object's closing '}'.
	closeBrace int
	// empty reports an object with no members ("{}").
	empty   bool
	unquote []byte
}

// ScanRequest validates body and fills r with its top-level fields. It allocates
// nothing for bodies whose model name and keys have no escapes.
//
// Validation is one pass over the body and refuses, besides malformed JSON:
// nesting deeper than MaxDepth, more than MaxMessages entries in "messages",
// strings that are not valid UTF-8, a top-level key given twice, and top-level
// fields that would choose the upstream (api_base, api_key, ...). A hostile body
// is refused as soon as the pass reaches the offending byte.
func ScanRequest(body []byte, r *Request) error {
	*r = Request{model: span{-1, -1}, streamOptions: span{-1, -1}, includeUsage: span{-1, -1}, unquote: r.unquote[:0]}
	v := validator{b: body}
	i := skipSpace(body, 0)
	if i >= len(body) {
		return ErrInvalidJSON
	}
	if body[i] != '{' {
		end, err := v.value(i, 1)
		if err != nil {
			return err
		}
		if skipSpace(body, end) != len(body) {
			return ErrInvalidJSON
		}
		return ErrNotObject
	}
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == '}' {
		r.empty = true
		r.closeBrace = i
		if skipSpace(body, i+1) != len(body) {
			return ErrInvalidJSON
		}
		return ErrModelMissing
	}
	var keys keySet
	// fieldErr is the first complaint about a field's content. It is returned only
	// once the whole body has proved well-formed, so malformed JSON always reads as
	// ErrInvalidJSON, whatever came before the break.
	var fieldErr error
	for {
		if i >= len(body) || body[i] != '"' {
			return ErrInvalidJSON
		}
		ks := i
		ke, escaped, err := v.str(i)
		if err != nil {
			return err
		}
		key := body[ks+1 : ke-1]
		if escaped {
			// Decoders unescape keys: "mod\u0065l" is "model" to the upstream.
			key = unescapeKey(body[ks:ke])
		}
		if fieldErr == nil {
			if !keys.add(key) {
				fieldErr = &KeyError{Err: ErrDuplicateKey, Key: string(key)}
			} else if isUpstreamKey(key) {
				fieldErr = &KeyError{Err: ErrUpstreamOverride, Key: string(key)}
			}
		}
		i = skipSpace(body, ke)
		if i >= len(body) || body[i] != ':' {
			return ErrInvalidJSON
		}
		vs := skipSpace(body, i+1)
		var ve int
		if string(key) == "messages" && vs < len(body) && body[vs] == '[' {
			ve, err = v.array(vs, 2, MaxMessages)
		} else {
			ve, err = v.value(vs, 2)
		}
		if err != nil {
			return err
		}
		switch string(key) {
		case "model":
			r.model = span{vs, ve}
		case "stream":
			switch string(body[vs:ve]) {
			case "true":
				r.Stream = true
			case "false", "null":
				r.Stream = false
			default:
				if fieldErr == nil {
					fieldErr = ErrStreamType
				}
			}
		case "stream_options":
			r.streamOptions = span{vs, ve}
		case "user":
			if body[vs] == '"' {
				r.User = body[vs+1 : ve-1]
			}
		case "messages":
			// null is what SDKs send for "not given"; the upstream decides.
			if body[vs] != '[' && body[vs] != 'n' && fieldErr == nil {
				fieldErr = ErrMessagesType
			}
		}
		i = skipSpace(body, ve)
		if i >= len(body) {
			return ErrInvalidJSON
		}
		if body[i] == '}' {
			r.closeBrace = i
			if skipSpace(body, i+1) != len(body) {
				return ErrInvalidJSON
			}
			break
		}
		if body[i] != ',' {
			return ErrInvalidJSON
		}
		i = skipSpace(body, i+1)
	}
	if fieldErr != nil {
		return fieldErr
	}
	if !r.model.ok() || string(body[r.model.start:r.model.end]) == "null" {
		return ErrModelMissing
	}
	if body[r.model.start] != '"' {
		return ErrModelType
	}
	raw := body[r.model.start+1 : r.model.end-1]
	if bytes.IndexByte(raw, '\\') < 0 {
		r.Model = raw
	} else {
		s, err := strconv.Unquote(string(body[r.model.start:r.model.end]))
		if err != nil {
			// JSON escapes such as \/ are not Go escapes; fall back to the JSON decoder.
			if json.Unmarshal(body[r.model.start:r.model.end], &s) != nil {
				return ErrModelType
			}
		}
		r.unquote = append(r.unquote[:0], s...)
		r.Model = r.unquote
	}
	if len(r.Model) == 0 {
		return ErrModelMissing
	}
	if r.streamOptions.ok() && body[r.streamOptions.start] == '{' {
		r.scanStreamOptions(body)
	}
	return nil
}

func (r *Request) scanStreamOptions(body []byte) {
	i := skipSpace(body, r.streamOptions.start+1)
	if body[i] == '}' {
		return
	}
	for {
		ke := skipString(body, i)
		key := body[i+1 : ke-1]
		i = skipSpace(body, skipSpace(body, ke)+1)
		ve := skipValue(body, i)
		if bytes.Equal(key, []byte("include_usage")) {
			r.includeUsage = span{i, ve}
			r.IncludeUsage = string(body[i:ve]) == "true"
		}
		i = skipSpace(body, ve)
		if body[i] == '}' {
			return
		}
		i = skipSpace(body, i+1)
	}
}

// AppendRewrite appends body to dst with the model value replaced by model (when
// model is non-empty) and, when forceUsage is set, stream_options.include_usage
// set to true, so the upstream reports token usage on streams. Nothing else
// changes. r must come from ScanRequest on the same body.
func AppendRewrite(dst, body []byte, r *Request, model string, forceUsage bool) []byte {
	type edit struct {
		at, end int
		text    string
		quote   bool
	}
	var edits [2]edit
	n := 0
	if model != "" {
		edits[n] = edit{r.model.start, r.model.end, model, true}
		n++
	}
	if forceUsage && !r.IncludeUsage {
		switch {
		case r.includeUsage.ok():
			edits[n] = edit{r.includeUsage.start, r.includeUsage.end, "true", false}
		case r.streamOptions.ok() && body[r.streamOptions.start] == '{':
			// Insert as the first member of the existing object.
			at := r.streamOptions.start + 1
			text := `"include_usage":true,`
			if body[skipSpace(body, at)] == '}' {
				text = `"include_usage":true`
			}
			edits[n] = edit{at, at, text, false}
		case r.streamOptions.ok():
			// "stream_options": null
			edits[n] = edit{r.streamOptions.start, r.streamOptions.end, `{"include_usage":true}`, false}
		default:
			text := `,"stream_options":{"include_usage":true}`
			if r.empty {
				text = text[1:]
			}
			edits[n] = edit{r.closeBrace, r.closeBrace, text, false}
		}
		n++
	}
	if n == 2 && edits[1].at < edits[0].at {
		edits[0], edits[1] = edits[1], edits[0]
	}
	last := 0
	for _, e := range edits[:n] {
		dst = append(dst, body[last:e.at]...)
		if e.quote {
			dst = appendJSONString(dst, e.text)
		} else {
			dst = append(dst, e.text...)
		}
		last = e.end
	}
	return append(dst, body[last:]...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string literal.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the offset just past the string starting at b[i] == '"'.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// skipValue returns the offset just past the (valid) JSON value starting at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = skipString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return i
	default:
		for ; i < len(b); i++ {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
		}
		return i
	}
}
