package openai

import (
	"encoding/json"
	"errors"
	"unicode/utf8"
)

// Limits on what a request body may contain. They are far above anything a real
// client sends (OpenAI itself caps messages at 2048) and low enough that a hostile
// body is refused after one linear pass, before anything else looks at it.
const (
	// MaxDepth is the deepest nesting of objects and arrays, the top-level object
	// counting as 1. Tool schemas nest maybe ten levels; a "[[[[..." bomb stops
	// at the 65th bracket instead of costing a decoder 10 MB of recursion.
	MaxDepth = 64
	// MaxMessages is the most entries the top-level "messages" array may hold.
	MaxMessages = 2048
)

// Errors of the validation pass; like ScanRequest's, their text is shown to clients.
var (
	ErrTooDeep          = errors.New("the request body nests objects and arrays more than 64 levels deep")
	ErrTooManyMessages  = errors.New("'messages' may hold at most 2048 entries")
	ErrMessagesType     = errors.New("'messages' must be an array")
	ErrInvalidUTF8      = errors.New("the request body contains a string that is not valid UTF-8")
	ErrDuplicateKey     = errors.New("duplicate key")
	ErrUpstreamOverride = errors.New("the request may not choose the upstream")
)

// KeyError names the top-level key behind ErrDuplicateKey or ErrUpstreamOverride;
// errors.Is matches those sentinels.
type KeyError struct {
	Err error
	Key string
}

func (e *KeyError) Error() string {
	if e.Err == ErrDuplicateKey {
		return "duplicate key '" + e.Key + "'"
	}
	return e.Err.Error() + ": '" + e.Key + "' is not accepted"
}

func (e *KeyError) Unwrap() error { return e.Err }

// upstreamKeys are top-level fields that some SDKs and gateways (LiteLLM and its
// clients) read as "send this request to that endpoint with that credential". The
// gateway alone chooses upstreams; a body that tries is refused rather than passed
// on, since an OpenAI-compatible upstream behind us might honour it (SSRF, key
// exfiltration).
var upstreamKeys = [...]string{
	"api_base", "api_key", "api_type", "api_version", "azure_ad_token", "azure_endpoint",
	"base_url", "custom_llm_provider", "extra_headers", "organization",
}

func isUpstreamKey(key []byte) bool {
	for _, k := range upstreamKeys {
		if string(key) == k {
			return true
		}
	}
	return false
}

// stringClass marks the bytes a string scan must stop at: '"', '\\', control
// characters (not allowed raw in JSON strings) and the start of multi-byte UTF-8.
var stringClass = func() (t [256]bool) {
	for c := 0; c < 0x20; c++ {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	for c := 0x80; c < 0x100; c++ {
		t[c] = true
	}
	return t
}()

// validator checks JSON grammar, nesting depth and UTF-8 in one pass over the body,
// without building anything. Errors are its sentinels, never positions: clients get
// the same message whatever the offset.
type validator struct {
	b []byte
}

// str validates the string starting at b[i] == '"' and returns the offset after it
// and whether it contains escapes.
func (v *validator) str(i int) (end int, escaped bool, err error) {
	b := v.b
	for i++; i < len(b); {
		c := b[i]
		if !stringClass[c] {
			i++
			continue
		}
		switch {
		case c == '"':
			return i + 1, escaped, nil
		case c == '\\':
			escaped = true
			if i+1 >= len(b) {
				return 0, false, ErrInvalidJSON
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return 0, false, ErrInvalidJSON
				}
				i += 6
			default:
				return 0, false, ErrInvalidJSON
			}
		case c < 0x20:
			return 0, false, ErrInvalidJSON
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size <= 1 {
				return 0, false, ErrInvalidUTF8
			}
			i += size
		}
	}
	return 0, false, ErrInvalidJSON
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// number validates -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at b[i].
func (v *validator) number(i int) (int, error) {
	b := v.b
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i++; i < len(b) && isDigit(b[i]); i++ {
		}
	default:
		return 0, ErrInvalidJSON
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return 0, ErrInvalidJSON
		}
		for ; i < len(b) && isDigit(b[i]); i++ {
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			return 0, ErrInvalidJSON
		}
		for ; i < len(b) && isDigit(b[i]); i++ {
		}
	}
	return i, nil
}

func (v *validator) literal(i int, lit string) (int, error) {
	if len(v.b)-i < len(lit) || string(v.b[i:i+len(lit)]) != lit {
		return 0, ErrInvalidJSON
	}
	return i + len(lit), nil
}

// value validates the value at b[i] (no leading space) nested at depth (the
// top-level value is at depth 1) and returns the offset after it.
func (v *validator) value(i, depth int) (int, error) {
	b := v.b
	if i >= len(b) {
		return 0, ErrInvalidJSON
	}
	switch c := b[i]; {
	case c == '"':
		end, _, err := v.str(i)
		return end, err
	case c == '{':
		return v.object(i, depth)
	case c == '[':
		return v.array(i, depth, 0)
	case c == 't':
		return v.literal(i, "true")
	case c == 'f':
		return v.literal(i, "false")
	case c == 'n':
		return v.literal(i, "null")
	case c == '-' || isDigit(c):
		return v.number(i)
	}
	return 0, ErrInvalidJSON
}

// object validates the object at b[i] == '{'.
func (v *validator) object(i, depth int) (int, error) {
	if depth > MaxDepth {
		return 0, ErrTooDeep
	}
	b := v.b
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return 0, ErrInvalidJSON
		}
		ke, _, err := v.str(i)
		if err != nil {
			return 0, err
		}
		i = skipSpace(b, ke)
		if i >= len(b) || b[i] != ':' {
			return 0, ErrInvalidJSON
		}
		if i, err = v.value(skipSpace(b, i+1), depth+1); err != nil {
			return 0, err
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return 0, ErrInvalidJSON
		}
		switch b[i] {
		case '}':
			return i + 1, nil
		case ',':
			i = skipSpace(b, i+1)
		default:
			return 0, ErrInvalidJSON
		}
	}
}

// array validates the array at b[i] == '['. max > 0 bounds its entries: the
// whole array need not be read to refuse it.
func (v *validator) array(i, depth, max int) (int, error) {
	if depth > MaxDepth {
		return 0, ErrTooDeep
	}
	b := v.b
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, nil
	}
	for n := 1; ; n++ {
		if max > 0 && n > max {
			return 0, ErrTooManyMessages
		}
		var err error
		if i, err = v.value(i, depth+1); err != nil {
			return 0, err
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return 0, ErrInvalidJSON
		}
		switch b[i] {
		case ']':
			return i + 1, nil
		case ',':
			i = skipSpace(b, i+1)
		default:
			return 0, ErrInvalidJSON
		}
	}
}

// keySet remembers the top-level keys seen so far to refuse duplicates. Two
// members with one key are read differently by different decoders (first wins in
// some, last in others), so the gateway and the upstream could disagree about
// the model; refusing them removes the question. The first keys live in a fixed
// array, so a normal body allocates nothing; only a body with more than
// len(inline) members pays for a map.
type keySet struct {
	inline [24][]byte
	n      int
	more   map[string]struct{}
}

// add records key and reports false if it was already present.
func (s *keySet) add(key []byte) bool {
	for _, k := range s.inline[:min(s.n, len(s.inline))] {
		if string(k) == string(key) {
			return false
		}
	}
	if s.more != nil {
		if _, dup := s.more[string(key)]; dup {
			return false
		}
	}
	if s.n < len(s.inline) {
		s.inline[s.n] = key
	} else {
		if s.more == nil {
			s.more = make(map[string]struct{})
		}
		s.more[string(key)] = struct{}{}
	}
	s.n++
	return true
}

// unescapeKey decodes a key with escapes the way the upstream's decoder will
// ("mod\u0065l" is "model"). Keys with escapes are rare; this allocates.
func unescapeKey(raw []byte) []byte {
	var k string
	if json.Unmarshal(raw, &k) != nil {
		return raw[1 : len(raw)-1]
	}
	return []byte(k)
}
