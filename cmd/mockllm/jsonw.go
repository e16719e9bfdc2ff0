package main

import (
	"strconv"
	"sync"
	"unicode"
	"unicode/utf8"
)

// Responses are written with these append helpers instead of encoding/json:
// the shapes are fixed, and skipping reflection keeps the hot path at a few
// allocations per request.

const hexDigits = "0123456789abcdef"

// appendString appends s as a quoted JSON string. Invalid UTF-8 becomes
// U+FFFD, and U+2028/U+2029 are escaped so the output is also valid
// JavaScript (the same choices encoding/json makes).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

func appendInt(b []byte, n int64) []byte { return strconv.AppendInt(b, n, 10) }

// appendUsage appends `"usage":{...}` (no leading comma).
func appendUsage(b []byte, prompt, completion int, withCompletion bool) []byte {
	b = append(b, `"usage":{"prompt_tokens":`...)
	b = appendInt(b, int64(prompt))
	if withCompletion {
		b = append(b, `,"completion_tokens":`...)
		b = appendInt(b, int64(completion))
	}
	b = append(b, `,"total_tokens":`...)
	b = appendInt(b, int64(prompt+completion))
	return append(b, '}')
}

// bufPool holds response buffers. Buffers that grew past maxPooledBuf (a big
// embeddings batch, say) are dropped so the pool does not pin memory.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

const maxPooledBuf = 64 << 10

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(p *[]byte) {
	if cap(*p) > maxPooledBuf {
		return
	}
	*p = (*p)[:0]
	bufPool.Put(p)
}

// isSpace reports whether the rune separates words, with the same rule as
// strings.Fields so token counts match what a test computes with it.
func isSpace(r rune) bool {
	if r < utf8.RuneSelf {
		return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\v' || r == '\f'
	}
	return unicode.IsSpace(r)
}

// countWords counts whitespace-separated words without allocating; it is the
// mock's stand-in for a tokenizer.
func countWords(s string) int {
	n := 0
	in := false
	for i := 0; i < len(s); {
		r, size := rune(s[i]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRuneInString(s[i:])
		}
		i += size
		if isSpace(r) {
			in = false
		} else if !in {
			in = true
			n++
		}
	}
	return n
}

// wordStarts returns the byte offset of the first byte of every word.
func wordStarts(s string) []int {
	var starts []int
	in := false
	for i := 0; i < len(s); {
		r, size := rune(s[i]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRuneInString(s[i:])
		}
		if isSpace(r) {
			in = false
		} else if !in {
			in = true
			starts = append(starts, i)
		}
		i += size
	}
	return starts
}

// splitReply cuts s into at most n pieces at word starts, spreading the words
// as evenly as possible. Whitespace stays attached to the word before it, so
// the pieces always concatenate back to s exactly. A reply with fewer words
// than n gives one piece per word; an empty reply gives one empty piece.
func splitReply(s string, n int) []string {
	starts := wordStarts(s)
	w := len(starts)
	if n < 1 {
		n = 1
	}
	if w <= 1 || n == 1 {
		return []string{s}
	}
	if n > w {
		n = w
	}
	pieces := make([]string, n)
	from := 0
	for i := 1; i < n; i++ {
		to := starts[i*w/n]
		pieces[i-1] = s[from:to]
		from = to
	}
	pieces[n-1] = s[from:]
	return pieces
}
