package main

import (
	"bytes"
	"io"

	"github.com/hashicorp/go-hclog"
)

// Log redaction is the last line of defence: whatever code path logs a request header, a
// fasthttp parse error that quotes the raw request, or an upstream's error body that echoes
// a key, the line is scrubbed before it reaches stderr or a log file. Every hclog line of
// the supervisor (including the worker lines it re-emits) and of each worker passes through
// redactLine.
//
// What is redacted:
//   - the value after a header-like name followed by ':' or '=' (quoted or not):
//     Authorization, Proxy-Authorization, X-Api-Key, Api-Key, api_key, Cookie, Set-Cookie;
//   - the token after "Bearer " (any case);
//   - key shapes at a word start: "sk-" + 16 or more token characters (OpenAI, Anthropic
//     "sk-ant-…", our own client keys) and "AIza" + 30 or more (Google).
//
// Cost: a line with nothing to redact is scanned once, byte by byte against a 256-entry
// table of the first letters of the triggers, and returned as is without allocating.

// redacted replaces a secret. It contains no quote or backslash, so a JSON line stays valid.
const redacted = "[REDACTED]"

// trigger kinds.
const (
	trigHeader = iota + 1 // a header name: redact the value after ':' or '='
	trigBearer            // "bearer ": redact the next token
	trigKey               // a key shape: redact the whole token
)

type trigger struct {
	word []byte // lower case, except for case-sensitive key prefixes
	kind int
	fold bool // compare case-insensitively
	min  int  // trigKey: token characters needed after word
}

var triggers = []trigger{
	{word: []byte("authorization"), kind: trigHeader, fold: true},
	{word: []byte("api-key"), kind: trigHeader, fold: true},
	{word: []byte("api_key"), kind: trigHeader, fold: true},
	{word: []byte("cookie"), kind: trigHeader, fold: true},
	{word: []byte("bearer "), kind: trigBearer, fold: true},
	{word: []byte("sk-"), kind: trigKey, min: 16},
	{word: []byte("AIza"), kind: trigKey, min: 30},
}

// byFirst lists, for each byte, the triggers that can start with it (both cases for folded
// triggers); most bytes start none, so most of a line costs one table load per byte.
var byFirst [256][]*trigger

func init() {
	for i := range triggers {
		t := &triggers[i]
		c := t.word[0]
		byFirst[c] = append(byFirst[c], t)
		if t.fold && c >= 'a' && c <= 'z' {
			byFirst[c-'a'+'A'] = append(byFirst[c-'a'+'A'], t)
		}
	}
}

// redactLine returns p with secrets replaced, or p itself when it holds none.
func redactLine(p []byte) []byte {
	var out []byte // allocated on the first redaction
	last := 0      // p[last:] is not yet copied to out
	for i := 0; i < len(p); i++ {
		for _, t := range byFirst[p[i]] {
			if !hasWord(p[i:], t.word, t.fold) {
				continue
			}
			start, end := secretSpan(p, i, *t)
			if start < 0 {
				continue
			}
			if out == nil {
				out = make([]byte, 0, len(p)+len(redacted))
			}
			out = append(out, p[last:start]...)
			out = append(out, redacted...)
			last = end
			i = end - 1
			break
		}
	}
	if out == nil {
		return p
	}
	return append(out, p[last:]...)
}

// hasWord reports whether b starts with word (ASCII case-insensitively when fold).
func hasWord(b, word []byte, fold bool) bool {
	if len(b) < len(word) {
		return false
	}
	for j, w := range word {
		c := b[j]
		if fold && c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != w {
			return false
		}
	}
	return true
}

// secretSpan returns the bytes p[start:end] to replace for trigger t found at i, or
// start -1 when this occurrence is not a secret (a word that merely contains the
// trigger, a name not followed by a value).
func secretSpan(p []byte, i int, t trigger) (start, end int) {
	j := i + len(t.word)
	switch t.kind {
	case trigKey:
		if i > 0 && isAlnum(p[i-1]) && !afterEscape(p, i) {
			return -1, 0 // "task-…", "disk-…"
		}
		end = tokenEnd(p, j)
		if end-j < t.min {
			return -1, 0
		}
		return i, end
	case trigBearer:
		for j < len(p) && p[j] == ' ' {
			j++
		}
		end = tokenEnd(p, j)
		if end == j {
			return -1, 0
		}
		return j, end
	}
	// A header name: optional closing quote (JSON key, possibly escaped), spaces, then
	// ':' or '=', spaces, and the value.
	if j < len(p) && p[j] == '\\' && j+1 < len(p) && p[j+1] == '"' {
		j += 2
	} else if j < len(p) && p[j] == '"' {
		j++
	}
	for j < len(p) && p[j] == ' ' {
		j++
	}
	if j >= len(p) || (p[j] != ':' && p[j] != '=') {
		return -1, 0
	}
	j++
	for j < len(p) && p[j] == ' ' {
		j++
	}
	if j >= len(p) {
		return -1, 0
	}
	if p[j] == '"' { // a quoted value: up to the closing quote, skipping escapes
		j++
		end = j
		for end < len(p) && p[end] != '"' && p[end] != '\n' {
			if p[end] == '\\' {
				if end+1 < len(p) && p[end+1] == '"' {
					break // an escaped quote ends a value quoted inside a JSON string
				}
				end++
			}
			end++
		}
		end = min(end, len(p))
	} else {
		end = plainValueEnd(p, j, t.word[0] == 'c')
		// Keep an auth scheme ("Bearer ", "Basic "): it helps debugging and is no secret.
		if k := bytes.IndexByte(p[j:end], ' '); k > 0 && t.word[0] != 'c' && isScheme(p[j:j+k]) {
			j += k + 1
		}
	}
	if end == j {
		return -1, 0
	}
	return j, end
}

// plainValueEnd is where an unquoted header value starting at j ends: at a quote, a
// backslash (an escape inside a JSON string, such as \r\n or \"), or a line end. Spaces end
// it too, except after an auth scheme word ("Bearer x") and in cookies ("a=1; b=2").
func plainValueEnd(p []byte, j int, cookie bool) int {
	end := j
	spaces := 0
	for end < len(p) {
		c := p[end]
		if c == '"' || c == '\\' || c == '\r' || c == '\n' {
			break
		}
		if c == ' ' && !cookie {
			if spaces > 0 || !isScheme(p[j:end]) {
				break
			}
			spaces++
		}
		end++
	}
	// Keep a trailing comma or space out of the redaction.
	for end > j && (p[end-1] == ' ' || p[end-1] == ',') {
		end--
	}
	return end
}

// isScheme reports whether w is a bare word of letters, like "Bearer" or "Basic".
func isScheme(w []byte) bool {
	if len(w) == 0 {
		return false
	}
	for _, c := range w {
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
			return false
		}
	}
	return true
}

// tokenEnd returns the end of the run of key characters (letters, digits, '-', '_', '.',
// '~', '+', '/', '=') starting at j.
func tokenEnd(p []byte, j int) int {
	for j < len(p) {
		c := p[j]
		if !isAlnum(c) && c != '-' && c != '_' && c != '.' && c != '~' && c != '+' && c != '/' && c != '=' {
			break
		}
		j++
	}
	return j
}

// afterEscape reports whether p[:i] ends with a quoted-string escape (\n, \x00, \u0000),
// as in a fasthttp parse error that quotes the raw request: the key after it starts a word.
func afterEscape(p []byte, i int) bool {
	return i >= 2 && p[i-2] == '\\' ||
		i >= 4 && p[i-4] == '\\' && p[i-3] == 'x' ||
		i >= 6 && p[i-6] == '\\' && p[i-5] == 'u'
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// redactingWriter scrubs each line before handing it on. hclog hands over one whole
// formatted line per Write (or LevelWrite), so a secret is never split across calls.
type redactingWriter struct {
	next io.Writer
}

var _ hclog.LevelWriter = redactingWriter{}

func (w redactingWriter) Write(p []byte) (int, error) {
	if _, err := w.next.Write(redactLine(p)); err != nil {
		return 0, err
	}
	// The caller's line was consumed whole, whatever length the redacted copy had.
	return len(p), nil
}

func (w redactingWriter) LevelWrite(level hclog.Level, p []byte) (int, error) {
	lw, ok := w.next.(hclog.LevelWriter)
	if !ok {
		return w.Write(p)
	}
	if _, err := lw.LevelWrite(level, redactLine(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}
