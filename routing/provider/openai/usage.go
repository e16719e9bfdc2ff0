package openai

import "bytes"

// Usage is the token accounting an upstream reports.
type Usage struct {
	PromptTokens     int
	CompletionTokens int
}

// ParseUsage finds the "usage" object in a response body or stream chunk and reads
// its token counts without decoding the rest. A quoted "usage" key cannot occur
// inside a JSON string value (its quotes would be escaped), so a byte search is
// exact. ok is false when there is no usage object.
func ParseUsage(b []byte) (u Usage, ok bool) {
	// The last "usage" followed by ':' is the key; a string value "usage" is not.
	i := len(b)
	for {
		i = bytes.LastIndex(b[:i], []byte(`"usage"`))
		if i < 0 {
			return u, false
		}
		j := skipSpace(b, i+len(`"usage"`))
		if j < len(b) && b[j] == ':' {
			i = j
			break
		}
	}
	i = skipSpace(b, i+1)
	if i >= len(b) || b[i] != '{' {
		return u, false // null
	}
	obj := b[i:skipValue(b, i)]
	u.PromptTokens, ok = intField(obj, `"prompt_tokens"`)
	if !ok {
		// Embeddings report only prompt tokens; Anthropic-style names are not expected here.
		return u, false
	}
	u.CompletionTokens, _ = intField(obj, `"completion_tokens"`)
	return u, true
}

// IsUsageOnlyChunk reports whether a stream chunk is the extra usage chunk that
// stream_options.include_usage adds (empty choices, a usage object).
func IsUsageOnlyChunk(data []byte) bool {
	i := bytes.Index(data, []byte(`"choices"`))
	if i < 0 {
		return false
	}
	i = skipSpace(data, i+len(`"choices"`))
	if i >= len(data) || data[i] != ':' {
		return false
	}
	i = skipSpace(data, i+1)
	if i >= len(data) || data[i] != '[' {
		return false
	}
	i = skipSpace(data, i+1)
	if i >= len(data) || data[i] != ']' {
		return false
	}
	_, ok := ParseUsage(data)
	return ok
}

// maxUsageDigits bounds a token count's digits: 15 is far above any real count
// and far below int64 overflow (found by FuzzParseUsage).
const maxUsageDigits = 15

// intField reads the non-negative integer value of key (quoted) inside obj.
func intField(obj []byte, key string) (int, bool) {
	for off := 0; ; {
		j := bytes.Index(obj[off:], []byte(key))
		if j < 0 {
			return 0, false
		}
		i := skipSpace(obj, off+j+len(key))
		off += j + len(key)
		if i >= len(obj) || obj[i] != ':' {
			continue
		}
		i = skipSpace(obj, i+1)
		n, digits := 0, 0
		for ; i < len(obj) && obj[i] >= '0' && obj[i] <= '9'; i++ {
			n = n*10 + int(obj[i]-'0')
			digits++
		}
		// More digits than any real count would overflow into a negative number
		// (and a negative cost): an upstream that sends one reports no usage.
		if digits == 0 || digits > maxUsageDigits {
			return 0, false
		}
		return n, true
	}
}
