// Package spool is the append-only file each worker writes one request record to per
// proxied request. A record is one JSON object on one line, written with a single write(2)
// and no fsync: the page cache outlives a kill -9 of the process, so a record whose
// response completed is never lost, and no request waits on SQLite. The primary ingests
// the files into request_logs (store.IngestSpools).
//
// Files are named <worker id>.<seq>.spool while written and renamed to
// <worker id>.<seq>.sealed when full or closed; readers key progress by the name without
// the suffix, so the rename never loses their place.
package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
	"unsafe"
)

// Record is one proxied request. Field meanings follow the request_logs columns.
type Record struct {
	RequestID        string `json:"request_id"`
	TsMs             int64  `json:"ts_ms"`  // request start, unix milliseconds
	Worker           int    `json:"worker"` // worker slot
	KeyID            int64  `json:"key_id"` // 0: the key was not recognised
	Endpoint         string `json:"endpoint"`
	Model            string `json:"model"`
	Upstream         string `json:"upstream"`
	UpstreamModel    string `json:"upstream_model"`
	Status           int    `json:"status"`
	Stream           bool   `json:"stream"`
	LatencyUs        int64  `json:"latency_us"`
	TtfbUs           int64  `json:"ttfb_us"`
	PromptTokens     int    `json:"prompt_tokens"`
	CompletionTokens int    `json:"completion_tokens"`
	ErrorClass       string `json:"error_class"`
	// Attempts is a JSON array (raw, already encoded) of the upstream attempts.
	Attempts        string `json:"attempts"`
	AttemptCount    int    `json:"attempt_count"`
	Cache           string `json:"cache"`
	Route           string `json:"route"`
	TokensEstimated bool   `json:"tokens_estimated"`
	CostMicroUSD    int64  `json:"cost_micro_usd"`
}

// AppendRecord appends r to dst as one JSON object line ending in '\n'. It allocates only
// when dst must grow, so a worker reusing one buffer per request allocates nothing; the
// keys match Record's json tags, so ParseRecord (encoding/json) reads it back.
func AppendRecord(dst []byte, r *Record) []byte {
	dst = append(dst, `{"request_id":`...)
	dst = appendString(dst, r.RequestID)
	dst = append(dst, `,"ts_ms":`...)
	dst = strconv.AppendInt(dst, r.TsMs, 10)
	dst = append(dst, `,"worker":`...)
	dst = strconv.AppendInt(dst, int64(r.Worker), 10)
	dst = append(dst, `,"key_id":`...)
	dst = strconv.AppendInt(dst, r.KeyID, 10)
	dst = append(dst, `,"endpoint":`...)
	dst = appendString(dst, r.Endpoint)
	dst = append(dst, `,"model":`...)
	dst = appendString(dst, r.Model)
	dst = append(dst, `,"upstream":`...)
	dst = appendString(dst, r.Upstream)
	dst = append(dst, `,"upstream_model":`...)
	dst = appendString(dst, r.UpstreamModel)
	dst = append(dst, `,"status":`...)
	dst = strconv.AppendInt(dst, int64(r.Status), 10)
	dst = append(dst, `,"stream":`...)
	dst = strconv.AppendBool(dst, r.Stream)
	dst = append(dst, `,"latency_us":`...)
	dst = strconv.AppendInt(dst, r.LatencyUs, 10)
	dst = append(dst, `,"ttfb_us":`...)
	dst = strconv.AppendInt(dst, r.TtfbUs, 10)
	dst = append(dst, `,"prompt_tokens":`...)
	dst = strconv.AppendInt(dst, int64(r.PromptTokens), 10)
	dst = append(dst, `,"completion_tokens":`...)
	dst = strconv.AppendInt(dst, int64(r.CompletionTokens), 10)
	dst = append(dst, `,"error_class":`...)
	dst = appendString(dst, r.ErrorClass)
	dst = append(dst, `,"attempts":`...)
	dst = appendString(dst, r.Attempts)
	dst = append(dst, `,"attempt_count":`...)
	dst = strconv.AppendInt(dst, int64(r.AttemptCount), 10)
	dst = append(dst, `,"cache":`...)
	dst = appendString(dst, r.Cache)
	dst = append(dst, `,"route":`...)
	dst = appendString(dst, r.Route)
	dst = append(dst, `,"tokens_estimated":`...)
	dst = strconv.AppendBool(dst, r.TokensEstimated)
	dst = append(dst, `,"cost_micro_usd":`...)
	dst = strconv.AppendInt(dst, r.CostMicroUSD, 10)
	return append(dst, "}\n"...)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string (RFC 8259 section 7). Control characters are
// escaped, and invalid UTF-8 becomes U+FFFD so the line stays valid JSON whatever a
// client put in its model name. '\n' is always escaped, which keeps one record per line.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// ErrCorrupt marks a line that is not a valid record.
var ErrCorrupt = errors.New("spool: corrupt record")

// ParseRecord decodes one line written by AppendRecord (the trailing '\n' is optional).
func ParseRecord(line []byte) (Record, error) {
	return parseRecord(line, false)
}

// ParseRecordShared is ParseRecord whose strings share line's memory instead of copying
// it, where they can: line must not change while the record is in use. Ingest parses
// every record the gateway serves into a batch buffer it keeps until the batch commits,
// and the copies were most of the parse's cost.
func ParseRecordShared(line []byte) (Record, error) {
	return parseRecord(line, true)
}

func parseRecord(line []byte, shared bool) (Record, error) {
	var r Record
	if parseFast(line, &r, shared) {
		return r, nil
	}
	return parseJSON(line)
}

// parseJSON is the fallback for lines parseFast declines. A record of its own: one that
// encoding/json has seen escapes to the heap, and parseFast's must not.
func parseJSON(line []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(line, &r); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if r.RequestID == "" {
		return Record{}, fmt.Errorf("%w: empty request_id", ErrCorrupt)
	}
	return r, nil
}

// parseFast reads a line in exactly the layout AppendRecord writes, with no string
// escapes, which is nearly every record; it reports false for anything else, and
// ParseRecord then falls back to encoding/json. Ingest parses every record the
// gateway serves, so this is on the primary's hot path (about 4x faster).
func parseFast(line []byte, r *Record, shared bool) bool {
	p := fastParser{b: line, shared: shared}
	ok := p.lit(`{"request_id":`) && p.str(&r.RequestID) &&
		p.lit(`,"ts_ms":`) && p.int(&r.TsMs) &&
		p.lit(`,"worker":`) && p.intN(&r.Worker) &&
		p.lit(`,"key_id":`) && p.int(&r.KeyID) &&
		p.lit(`,"endpoint":`) && p.str(&r.Endpoint) &&
		p.lit(`,"model":`) && p.str(&r.Model) &&
		p.lit(`,"upstream":`) && p.str(&r.Upstream) &&
		p.lit(`,"upstream_model":`) && p.str(&r.UpstreamModel) &&
		p.lit(`,"status":`) && p.intN(&r.Status) &&
		p.lit(`,"stream":`) && p.bool(&r.Stream) &&
		p.lit(`,"latency_us":`) && p.int(&r.LatencyUs) &&
		p.lit(`,"ttfb_us":`) && p.int(&r.TtfbUs) &&
		p.lit(`,"prompt_tokens":`) && p.intN(&r.PromptTokens) &&
		p.lit(`,"completion_tokens":`) && p.intN(&r.CompletionTokens) &&
		p.lit(`,"error_class":`) && p.str(&r.ErrorClass) &&
		p.lit(`,"attempts":`) && p.str(&r.Attempts) &&
		p.lit(`,"attempt_count":`) && p.intN(&r.AttemptCount) &&
		p.lit(`,"cache":`) && p.str(&r.Cache) &&
		p.lit(`,"route":`) && p.str(&r.Route) &&
		p.lit(`,"tokens_estimated":`) && p.bool(&r.TokensEstimated) &&
		p.lit(`,"cost_micro_usd":`) && p.int(&r.CostMicroUSD) &&
		p.lit("}")
	if !ok || r.RequestID == "" {
		return false
	}
	rest := p.b[p.i:]
	return len(rest) == 0 || (len(rest) == 1 && rest[0] == '\n')
}

type fastParser struct {
	b      []byte
	i      int
	shared bool // strings point into b (ParseRecordShared)
}

func (p *fastParser) lit(s string) bool {
	if len(p.b)-p.i < len(s) || string(p.b[p.i:p.i+len(s)]) != s {
		return false
	}
	p.i += len(s)
	return true
}

func (p *fastParser) str(dst *string) bool {
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return false
	}
	for j := p.i + 1; j < len(p.b); j++ {
		switch c := p.b[j]; {
		case c == '"':
			if !utf8.Valid(p.b[p.i+1 : j]) {
				return false // encoding/json replaces invalid bytes with U+FFFD
			}
			if v := p.b[p.i+1 : j]; p.shared && len(v) > 0 {
				*dst = unsafe.String(&v[0], len(v))
			} else {
				*dst = string(v)
			}
			p.i = j + 1
			return true
		case c == '\\':
			// The attempts column is JSON inside a string, so nearly every
			// proxied record has escaped quotes: unescape here rather than fall
			// back to encoding/json for the whole line.
			return p.escaped(dst, j)
		case c < 0x20:
			return false
		}
	}
	return false
}

// escaped finishes str for a string with backslash escapes, the first at j. It
// takes the one-character escapes AppendRecord writes for quotes, backslashes
// and control characters; \u escapes are left to encoding/json.
func (p *fastParser) escaped(dst *string, j int) bool {
	out := make([]byte, 0, 2*(j-p.i))
	out = append(out, p.b[p.i+1:j]...)
	for ; j < len(p.b); j++ {
		c := p.b[j]
		switch {
		case c == '"':
			if !utf8.Valid(out) {
				return false
			}
			*dst = string(out)
			p.i = j + 1
			return true
		case c < 0x20:
			return false
		case c != '\\':
			out = append(out, c)
			continue
		}
		if j+1 >= len(p.b) {
			return false
		}
		j++
		switch p.b[j] {
		case '"', '\\', '/':
			out = append(out, p.b[j])
		case 'n':
			out = append(out, '\n')
		case 't':
			out = append(out, '\t')
		case 'r':
			out = append(out, '\r')
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		default:
			return false
		}
	}
	return false
}

func (p *fastParser) int(dst *int64) bool {
	j := p.i
	neg := j < len(p.b) && p.b[j] == '-'
	if neg {
		j++
	}
	start := j
	var n int64
	for ; j < len(p.b) && p.b[j] >= '0' && p.b[j] <= '9'; j++ {
		if j-start >= 18 {
			return false // let encoding/json judge overflow
		}
		n = n*10 + int64(p.b[j]-'0')
	}
	if j == start || (j-start > 1 && p.b[start] == '0') {
		return false // JSON has no leading zeros; encoding/json refuses the line
	}
	if neg {
		n = -n
	}
	*dst, p.i = n, j
	return true
}

func (p *fastParser) intN(dst *int) bool {
	var n int64
	if !p.int(&n) {
		return false
	}
	*dst = int(n)
	return true
}

func (p *fastParser) bool(dst *bool) bool {
	switch {
	case p.lit("true"):
		*dst = true
	case p.lit("false"):
		*dst = false
	default:
		return false
	}
	return true
}
