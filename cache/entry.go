package cache

import (
	"encoding/binary"
	"errors"
	"time"
)

// Entry is one cached answer: the complete non-stream response body (a chat.completion,
// text_completion or embeddings list JSON) and what the request record needs to report it.
type Entry struct {
	Body             []byte
	Model            string // the model after alias resolution
	Namespace        string // whose entry it is ("" when shared); purges can select by it
	PromptTokens     int    // the original answer's usage, reported again on every hit
	CompletionTokens int
	Created          time.Time // when the upstream answered
	Expires          time.Time // Created + TTL
}

// TTL returns the entry's lifetime.
func (e Entry) TTL() time.Duration { return e.Expires.Sub(e.Created) }

// Fresh reports whether e may still be served at now.
func (e Entry) Fresh(now time.Time) bool { return now.Before(e.Expires) }

// entryVersion leads every encoded entry; a worker of a newer build that changes the layout
// bumps it and treats the old layout as a miss.
const entryVersion = 1

var errBadEntry = errors.New("cache: malformed L1 entry")

// appendEntry encodes e as: version, created (unix ms), expires (unix ms), prompt tokens,
// completion tokens, model and namespace (length-prefixed), body (the rest). Varints keep the header
// under 30 bytes for a typical entry.
func appendEntry(dst []byte, e Entry) []byte {
	dst = append(dst, entryVersion)
	dst = binary.AppendVarint(dst, e.Created.UnixMilli())
	dst = binary.AppendVarint(dst, e.Expires.UnixMilli())
	dst = binary.AppendUvarint(dst, uint64(max(e.PromptTokens, 0)))
	dst = binary.AppendUvarint(dst, uint64(max(e.CompletionTokens, 0)))
	dst = binary.AppendUvarint(dst, uint64(len(e.Model)))
	dst = append(dst, e.Model...)
	dst = binary.AppendUvarint(dst, uint64(len(e.Namespace)))
	dst = append(dst, e.Namespace...)
	return append(dst, e.Body...)
}

// entryHeader is an encoded entry's fields before the body; model and namespace
// alias the encoded bytes.
type entryHeader struct {
	created, expires int64 // unix ms
	prompt, compl    int
	model, ns        []byte
}

// decodeHeader parses b's header and returns it with the body; both alias b.
func decodeHeader(b []byte) (entryHeader, []byte, error) {
	if len(b) == 0 || b[0] != entryVersion {
		return entryHeader{}, nil, errBadEntry
	}
	b = b[1:]
	var vals [5]uint64
	for i := range vals {
		var n int
		if i < 2 {
			var v int64
			v, n = binary.Varint(b)
			vals[i] = uint64(v)
		} else {
			vals[i], n = binary.Uvarint(b)
		}
		if n <= 0 {
			return entryHeader{}, nil, errBadEntry
		}
		b = b[n:]
	}
	mlen := vals[4]
	if mlen > uint64(len(b)) {
		return entryHeader{}, nil, errBadEntry
	}
	h := entryHeader{created: int64(vals[0]), expires: int64(vals[1]),
		prompt: int(vals[2]), compl: int(vals[3]), model: b[:mlen]}
	b = b[mlen:]
	nlen, n := binary.Uvarint(b)
	if n <= 0 || nlen > uint64(len(b)-n) {
		return entryHeader{}, nil, errBadEntry
	}
	b = b[n:]
	h.ns = b[:nlen]
	return h, b[nlen:], nil
}

// decodeEntry parses b; Body aliases b, so b must be the caller's own copy.
func decodeEntry(b []byte) (Entry, error) {
	h, body, err := decodeHeader(b)
	if err != nil {
		return Entry{}, err
	}
	var ns string
	if len(h.ns) > 0 {
		ns = string(h.ns)
	}
	return Entry{
		Created:          time.UnixMilli(h.created),
		Expires:          time.UnixMilli(h.expires),
		PromptTokens:     h.prompt,
		CompletionTokens: h.compl,
		Model:            string(h.model),
		Namespace:        ns,
		Body:             body,
	}, nil
}
