package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"unicode/utf16"
	"unicode/utf8"
)

// Key identifies one exact-cache entry: the first 16 bytes of SHA-256 over the normalised
// request. 128 bits keep accidental collisions out of reach (2^64 entries for a 50% chance)
// while halving the L1/L2 key size.
type Key [16]byte

// String returns the key in lower-case hex, the form `cache purge --key-prefix` accepts.
func (k Key) String() string { return hex.EncodeToString(k[:]) }

// keyVersion is hashed first: a change to the normalisation bumps it so old entries are
// simply never found again rather than answered for a request they do not match.
const keyVersion = "llm-proxy-cache-key/1"

// ignoredFields do not change the answer: how it is delivered (stream, stream_options), who
// asked (user, safety_identifier, metadata), and provider bookkeeping. The model is hashed
// separately, after alias resolution. Every other field - including ones this version does
// not know - is part of the key: an unknown field that changes the answer must never be
// served a cached answer of a request without it, while the cost of the opposite mistake is
// only a miss.
var ignoredFields = map[string]bool{
	"model":             true,
	"stream":            true,
	"stream_options":    true,
	"user":              true,
	"safety_identifier": true,
	"metadata":          true,
	"store":             true,
	"service_tier":      true,
	"prompt_cache_key":  true,
}

// ErrNotObject is returned for a request body that is not a JSON object.
var ErrNotObject = errors.New("cache: request body is not a JSON object")

// NewKey hashes the normalised request: namespace (who may share the answer), endpoint
// ("chat", "completions", "embeddings"), model after alias resolution, and every
// answer-changing field of body re-encoded canonically (object keys sorted, insignificant
// whitespace dropped, strings unescaped, numbers in one spelling: 1, 1.0 and 1e0 are equal),
// so two requests that differ only in formatting, key order, stream, or user share an entry.
func NewKey(namespace, endpoint, model string, body []byte) (Key, error) {
	kb := keyBufPool.Get().(*keyBuf)
	defer keyBufPool.Put(kb)
	kb.out = kb.out[:0]
	kb.out = append(kb.out, keyVersion...)
	kb.out = appendField(kb.out, namespace)
	kb.out = appendField(kb.out, endpoint)
	kb.out = appendField(kb.out, model)
	var err error
	kb.out, err = kb.canonical(kb.out, body, ignoredFields)
	if err != nil {
		return Key{}, err
	}
	sum := sha256.Sum256(kb.out)
	var k Key
	copy(k[:], sum[:16])
	return k, nil
}

// appendField writes s length-prefixed, so ("ab","c") and ("a","bc") never hash alike.
func appendField(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// keyBuf holds the scratch space of one canonicalisation; pooled so a key costs no
// allocation in the steady state.
type keyBuf struct {
	out    []byte
	str    []byte   // unescaped string scratch
	tmp    []byte   // an object's canonical member values while it sorts them
	fields []member // object members of every open object, stacked
}

type member struct {
	name       []byte // unescaped key: a sub-slice of the body, or a copy when it had escapes
	start, end int    // the canonical value's span, relative to the object's start in the output
}

var keyBufPool = sync.Pool{New: func() any { return &keyBuf{out: make([]byte, 0, 2048)} }}

// canonical appends the canonical form of the JSON object body, skipping top-level members
// named in skip. The encoding is a tagged, length-prefixed stream (not JSON): it only has to
// be injective, and that is easier to guarantee than canonical JSON.
func (kb *keyBuf) canonical(dst, body []byte, skip map[string]bool) ([]byte, error) {
	i := skipWS(body, 0)
	if i >= len(body) || body[i] != '{' {
		return dst, ErrNotObject
	}
	dst, end, err := kb.value(dst, body, i, 0, skip)
	if err != nil {
		return dst, err
	}
	if skipWS(body, end) != len(body) {
		return dst, errors.New("cache: trailing data after the request object")
	}
	return dst, nil
}

const maxDepth = 200

// value appends the canonical form of the value at body[i] and returns the index after it.
func (kb *keyBuf) value(dst, body []byte, i, depth int, skip map[string]bool) ([]byte, int, error) {
	if depth > maxDepth {
		return dst, 0, errors.New("cache: request nested too deeply")
	}
	i = skipWS(body, i)
	if i >= len(body) {
		return dst, 0, errUnexpectedEnd
	}
	switch c := body[i]; {
	case c == '{':
		return kb.object(dst, body, i, depth, skip)
	case c == '[':
		dst = append(dst, '[')
		i = skipWS(body, i+1)
		if i < len(body) && body[i] == ']' {
			return append(dst, ']'), i + 1, nil
		}
		for {
			var err error
			dst, i, err = kb.value(dst, body, i, depth+1, nil)
			if err != nil {
				return dst, 0, err
			}
			i = skipWS(body, i)
			if i >= len(body) {
				return dst, 0, errUnexpectedEnd
			}
			if body[i] == ']' {
				return append(dst, ']'), i + 1, nil
			}
			if body[i] != ',' {
				return dst, 0, syntaxError(i)
			}
			i++
		}
	case c == '"':
		s, end, err := kb.unquote(body, i)
		if err != nil {
			return dst, 0, err
		}
		dst = append(dst, 's')
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		return append(dst, s...), end, nil
	case c == 't' && bytes.HasPrefix(body[i:], []byte("true")):
		return append(dst, 'T'), i + 4, nil
	case c == 'f' && bytes.HasPrefix(body[i:], []byte("false")):
		return append(dst, 'F'), i + 5, nil
	case c == 'n' && bytes.HasPrefix(body[i:], []byte("null")):
		return append(dst, 'N'), i + 4, nil
	case c == '-' || ('0' <= c && c <= '9'):
		end := i + 1
		for end < len(body) && bytes.IndexByte([]byte("0123456789+-.eE"), body[end]) >= 0 {
			end++
		}
		var err error
		dst, err = appendNumber(dst, body[i:end])
		return dst, end, err
	default:
		return dst, 0, syntaxError(i)
	}
}

// object canonicalises each member's value straight after dst as it parses it (one
// pass over the input), then sorts the members by unescaped name and writes them out
// in that order from a copy of their canonical values. Duplicate names are kept in
// input order after sorting (stable), so two bodies that a JSON decoder would read
// differently never share a key.
func (kb *keyBuf) object(dst, body []byte, i, depth int, skip map[string]bool) ([]byte, int, error) {
	base := len(kb.fields)
	defer func() { kb.fields = kb.fields[:base] }()
	i = skipWS(body, i+1)
	if i < len(body) && body[i] == '}' {
		return append(dst, '{', '}'), i + 1, nil
	}
	start := len(dst)
	for {
		i = skipWS(body, i)
		if i >= len(body) || body[i] != '"' {
			return dst, 0, syntaxError(i)
		}
		name, end, err := kb.unquote(body, i)
		if err != nil {
			return dst, 0, err
		}
		if end-i-2 != len(name) {
			// An escaped name lives in kb.str until the next unquote; keep a copy.
			name = append([]byte(nil), name...)
		}
		i = skipWS(body, end)
		if i >= len(body) || body[i] != ':' {
			return dst, 0, syntaxError(i)
		}
		vstart := skipWS(body, i+1)
		// At the top level an explicit null means "unset" to the providers, like an
		// absent field; skipped members are not part of the key either.
		topNull := skip != nil && vstart < len(body) && body[vstart] == 'n'
		if topNull || (skip != nil && skip[string(name)]) {
			if i, err = skipValue(body, vstart, depth+1); err != nil {
				return dst, 0, err
			}
			if topNull && i-vstart != 4 {
				return dst, 0, syntaxError(vstart)
			}
		} else {
			cstart := len(dst) - start
			if dst, i, err = kb.value(dst, body, vstart, depth+1, nil); err != nil {
				return dst, 0, err
			}
			kb.fields = append(kb.fields, member{name: name, start: cstart, end: len(dst) - start})
		}
		i = skipWS(body, i)
		if i >= len(body) {
			return dst, 0, errUnexpectedEnd
		}
		if body[i] == '}' {
			i++
			break
		}
		if body[i] != ',' {
			return dst, 0, syntaxError(i)
		}
		i++
	}
	// Members' canonical values are in dst[start:], in input order; nested objects
	// have finished their own reordering, so one scratch copy serves every level.
	kb.tmp = append(kb.tmp[:0], dst[start:]...)
	dst = dst[:start]
	mine := kb.fields[base:]
	slices.SortStableFunc(mine, func(a, b member) int { return bytes.Compare(a.name, b.name) })
	dst = append(dst, '{')
	dst = binary.AppendUvarint(dst, uint64(len(mine)))
	for _, m := range mine {
		dst = binary.AppendUvarint(dst, uint64(len(m.name)))
		dst = append(dst, m.name...)
		dst = append(dst, kb.tmp[m.start:m.end]...)
	}
	return append(dst, '}'), i, nil
}

// appendNumber writes one spelling per value: an integer literal as its digits (exact even
// beyond 2^53, e.g. a large seed), anything else through float64, as 'i' + integer digits
// when the value is integral and small, else 'f' + the shortest round-trip form.
func appendNumber(dst, lit []byte) ([]byte, error) {
	if !bytes.ContainsAny(lit, ".eE") {
		if !validInteger(lit) {
			return dst, fmt.Errorf("cache: bad number %q", lit)
		}
		if bytes.Equal(lit, []byte("-0")) {
			lit = lit[1:]
		}
		dst = append(dst, 'i')
		dst = binary.AppendUvarint(dst, uint64(len(lit)))
		return append(dst, lit...), nil
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	if err != nil {
		return dst, fmt.Errorf("cache: bad number %q", lit)
	}
	if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		dst = append(dst, 'i', 0)
		start := len(dst)
		dst = strconv.AppendInt(dst, int64(f), 10)
		dst[start-1] = byte(len(dst) - start) // at most 17 digits: a one-byte uvarint
		return dst, nil
	}
	dst = append(dst, 'f')
	start := len(dst)
	dst = append(dst, 0)
	dst = strconv.AppendFloat(dst, f, 'g', -1, 64)
	dst[start] = byte(len(dst) - start - 1)
	return dst, nil
}

func validInteger(b []byte) bool {
	if len(b) > 0 && b[0] == '-' {
		b = b[1:]
	}
	if len(b) == 0 || (len(b) > 1 && b[0] == '0') {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

var errUnexpectedEnd = errors.New("cache: request JSON ends early")

func syntaxError(i int) error { return fmt.Errorf("cache: request JSON invalid at offset %d", i) }

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the index after the value at body[i] without decoding it.
func skipValue(body []byte, i, depth int) (int, error) {
	if depth > maxDepth {
		return 0, errors.New("cache: request nested too deeply")
	}
	i = skipWS(body, i)
	if i >= len(body) {
		return 0, errUnexpectedEnd
	}
	switch c := body[i]; {
	case c == '"':
		return skipString(body, i)
	case c == '{' || c == '[':
		close := byte('}')
		if c == '[' {
			close = ']'
		}
		i = skipWS(body, i+1)
		if i < len(body) && body[i] == close {
			return i + 1, nil
		}
		for {
			if c == '{' {
				end, err := skipString(body, skipWS(body, i))
				if err != nil {
					return 0, err
				}
				i = skipWS(body, end)
				if i >= len(body) || body[i] != ':' {
					return 0, syntaxError(i)
				}
				i++
			}
			end, err := skipValue(body, i, depth+1)
			if err != nil {
				return 0, err
			}
			i = skipWS(body, end)
			if i >= len(body) {
				return 0, errUnexpectedEnd
			}
			if body[i] == close {
				return i + 1, nil
			}
			if body[i] != ',' {
				return 0, syntaxError(i)
			}
			i++
		}
	case c == 't' && bytes.HasPrefix(body[i:], []byte("true")):
		return i + 4, nil
	case c == 'f' && bytes.HasPrefix(body[i:], []byte("false")):
		return i + 5, nil
	case c == 'n' && bytes.HasPrefix(body[i:], []byte("null")):
		return i + 4, nil
	case c == '-' || ('0' <= c && c <= '9'):
		for i < len(body) && bytes.IndexByte([]byte("0123456789+-.eE"), body[i]) >= 0 {
			i++
		}
		return i, nil
	}
	return 0, syntaxError(i)
}

func skipString(body []byte, i int) (int, error) {
	if i >= len(body) || body[i] != '"' {
		return 0, syntaxError(i)
	}
	for j := i + 1; ; {
		q := bytes.IndexByte(body[j:], '"')
		if q < 0 {
			return 0, errUnexpectedEnd
		}
		q += j
		// The quote ends the string unless an odd run of backslashes escapes it.
		n := 0
		for k := q - 1; k > i && body[k] == '\\'; k-- {
			n++
		}
		if n%2 == 0 {
			return q + 1, nil
		}
		j = q + 1
	}
}

// unquote returns the unescaped content of the string at body[i] (valid until the next
// call) and the index after it. Strings without escapes are returned as sub-slices.
func (kb *keyBuf) unquote(body []byte, i int) ([]byte, int, error) {
	end, err := skipString(body, i)
	if err != nil {
		return nil, 0, err
	}
	raw := body[i+1 : end-1]
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw, end, nil
	}
	s := kb.str[:0]
	for j := 0; j < len(raw); j++ {
		c := raw[j]
		if c != '\\' {
			s = append(s, c)
			continue
		}
		j++
		if j >= len(raw) {
			return nil, 0, syntaxError(i)
		}
		switch raw[j] {
		case '"', '\\', '/':
			s = append(s, raw[j])
		case 'b':
			s = append(s, '\b')
		case 'f':
			s = append(s, '\f')
		case 'n':
			s = append(s, '\n')
		case 'r':
			s = append(s, '\r')
		case 't':
			s = append(s, '\t')
		case 'u':
			r, n := decodeU(raw[j+1:])
			if n == 0 {
				return nil, 0, syntaxError(i + 1 + j)
			}
			j += n
			if utf16.IsSurrogate(r) {
				r2, n2 := rune(-1), 0
				if j+2 < len(raw) && raw[j+1] == '\\' && raw[j+2] == 'u' {
					r2, n2 = decodeU(raw[j+3:])
				}
				if d := utf16.DecodeRune(r, r2); d != utf8.RuneError && n2 > 0 {
					r = d
					j += 2 + n2
				} else {
					r = utf8.RuneError
				}
			}
			s = utf8.AppendRune(s, r)
		default:
			return nil, 0, syntaxError(i + 1 + j)
		}
	}
	kb.str = s
	return s, end, nil
}

// decodeU reads four hex digits; n is 4, or 0 if they are not there.
func decodeU(b []byte) (rune, int) {
	if len(b) < 4 {
		return 0, 0
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			r = r<<4 | rune(c-'0')
		case 'a' <= c && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case 'A' <= c && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, 0
		}
	}
	return r, 4
}
