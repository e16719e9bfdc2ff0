package otlp

import (
	"math/bits"
	"time"
)

// Protobuf wire types (protobuf encoding guide, "Message Structure").
const (
	wireVarint  = 0
	wireFixed64 = 1
	wireBytes   = 2
	wireFixed32 = 5
)

// Field numbers of the messages written, from opentelemetry-proto.
const (
	// collector/trace/v1: ExportTraceServiceRequest
	requestResourceSpans = 1
	// trace/v1: ResourceSpans
	resourceSpansResource   = 1
	resourceSpansScopeSpans = 2
	// trace/v1: ScopeSpans
	scopeSpansScope = 1
	scopeSpansSpans = 2
	// common/v1: InstrumentationScope
	scopeName = 1
	// resource/v1: Resource
	resourceAttributes = 1
	// trace/v1: Span
	spanTraceID    = 1
	spanSpanID     = 2
	spanTraceState = 3
	spanParentID   = 4
	spanName       = 5
	spanKind       = 6
	spanStart      = 7 // fixed64 unix nanoseconds
	spanEnd        = 8 // fixed64 unix nanoseconds
	spanAttributes = 9
	spanStatus     = 15
	spanFlags      = 16 // fixed32
	// trace/v1: Status
	statusMessage = 2
	statusCode    = 3
	// common/v1: KeyValue and AnyValue
	keyValueKey   = 1
	keyValueValue = 2
	anyString     = 1
	anyBool       = 2
	anyInt        = 3
)

// OTLP span flags (trace.proto, SpanFlags): bits 0-7 carry the W3C trace flags;
// these two say whether the parent is known to be remote, and whether it is.
const (
	flagHasIsRemote = 0x100
	flagIsRemote    = 0x200
)

// Source names what produced a batch of spans: the resource (service.name and
// the like) and the instrumentation scope.
type Source struct {
	Resource []Attr
	Scope    string
}

// AppendExportRequest appends the protobuf encoding of an ExportTraceServiceRequest
// holding spans, all from src, to b. Sizes are computed before each nested message
// is written, so the encoding takes no allocation beyond growing b.
func AppendExportRequest(b []byte, src Source, spans []*Span) []byte {
	rs := resourceSpansSize(src, spans)
	b = appendTag(b, requestResourceSpans, wireBytes)
	b = appendVarint(b, uint64(rs))

	b = appendTag(b, resourceSpansResource, wireBytes)
	b = appendVarint(b, uint64(attrsSize(resourceAttributes, src.Resource)))
	b = appendAttrs(b, resourceAttributes, src.Resource)

	b = appendTag(b, resourceSpansScopeSpans, wireBytes)
	b = appendVarint(b, uint64(scopeSpansSize(src, spans)))
	b = appendTag(b, scopeSpansScope, wireBytes)
	b = appendVarint(b, uint64(scopeSize(src)))
	if src.Scope != "" {
		b = appendString(b, scopeName, src.Scope)
	}
	for _, s := range spans {
		b = appendTag(b, scopeSpansSpans, wireBytes)
		b = appendVarint(b, uint64(spanSize(s)))
		b = appendSpan(b, s)
	}
	return b
}

func resourceSpansSize(src Source, spans []*Span) int {
	return bytesFieldSize(resourceSpansResource, attrsSize(resourceAttributes, src.Resource)) +
		bytesFieldSize(resourceSpansScopeSpans, scopeSpansSize(src, spans))
}

func scopeSpansSize(src Source, spans []*Span) int {
	n := bytesFieldSize(scopeSpansScope, scopeSize(src))
	for _, s := range spans {
		n += bytesFieldSize(scopeSpansSpans, spanSize(s))
	}
	return n
}

func scopeSize(src Source) int {
	if src.Scope == "" {
		return 0
	}
	return bytesFieldSize(scopeName, len(src.Scope))
}

func spanSize(s *Span) int {
	n := bytesFieldSize(spanTraceID, len(s.TraceID)) + bytesFieldSize(spanSpanID, len(s.SpanID))
	if s.TraceState != "" {
		n += bytesFieldSize(spanTraceState, len(s.TraceState))
	}
	if !s.ParentID.IsZero() {
		n += bytesFieldSize(spanParentID, len(s.ParentID))
	}
	if s.Name != "" {
		n += bytesFieldSize(spanName, len(s.Name))
	}
	if s.Kind != KindUnspecified {
		n += tagSize(spanKind) + varintSize(uint64(s.Kind))
	}
	if unixNano(s.Start) != 0 {
		n += tagSize(spanStart) + 8
	}
	if unixNano(s.End) != 0 {
		n += tagSize(spanEnd) + 8
	}
	n += attrsSize(spanAttributes, s.Attrs)
	if s.Status != StatusUnset {
		n += bytesFieldSize(spanStatus, statusSize(s))
	}
	return n + tagSize(spanFlags) + 4
}

func appendSpan(b []byte, s *Span) []byte {
	b = appendBytes(b, spanTraceID, s.TraceID[:])
	b = appendBytes(b, spanSpanID, s.SpanID[:])
	if s.TraceState != "" {
		b = appendString(b, spanTraceState, s.TraceState)
	}
	if !s.ParentID.IsZero() {
		b = appendBytes(b, spanParentID, s.ParentID[:])
	}
	if s.Name != "" {
		b = appendString(b, spanName, s.Name)
	}
	if s.Kind != KindUnspecified {
		b = appendTag(b, spanKind, wireVarint)
		b = appendVarint(b, uint64(s.Kind))
	}
	if t := unixNano(s.Start); t != 0 {
		b = appendTag(b, spanStart, wireFixed64)
		b = appendFixed64(b, t)
	}
	if t := unixNano(s.End); t != 0 {
		b = appendTag(b, spanEnd, wireFixed64)
		b = appendFixed64(b, t)
	}
	b = appendAttrs(b, spanAttributes, s.Attrs)
	if s.Status != StatusUnset {
		b = appendTag(b, spanStatus, wireBytes)
		b = appendVarint(b, uint64(statusSize(s)))
		if s.StatusMessage != "" {
			b = appendString(b, statusMessage, s.StatusMessage)
		}
		b = appendTag(b, statusCode, wireVarint)
		b = appendVarint(b, uint64(s.Status))
	}
	flags := uint32(s.TraceFlags) | flagHasIsRemote
	if s.ParentRemote {
		flags |= flagIsRemote
	}
	b = appendTag(b, spanFlags, wireFixed32)
	return append(b, byte(flags), byte(flags>>8), byte(flags>>16), byte(flags>>24))
}

func statusSize(s *Span) int {
	n := tagSize(statusCode) + varintSize(uint64(s.Status))
	if s.StatusMessage != "" {
		n += bytesFieldSize(statusMessage, len(s.StatusMessage))
	}
	return n
}

// attrsSize is the size of attrs written as repeated KeyValue field f.
func attrsSize(f int, attrs []Attr) int {
	n := 0
	for i := range attrs {
		n += bytesFieldSize(f, keyValueSize(&attrs[i]))
	}
	return n
}

func appendAttrs(b []byte, f int, attrs []Attr) []byte {
	for i := range attrs {
		a := &attrs[i]
		b = appendTag(b, f, wireBytes)
		b = appendVarint(b, uint64(keyValueSize(a)))
		b = appendString(b, keyValueKey, a.Key)
		b = appendTag(b, keyValueValue, wireBytes)
		b = appendVarint(b, uint64(anyValueSize(a)))
		// AnyValue is a oneof: its field is written even when it holds the
		// default value, or the receiver could not tell which type it has.
		switch a.Type {
		case ValueInt:
			b = appendTag(b, anyInt, wireVarint)
			b = appendVarint(b, uint64(a.Num))
		case ValueBool:
			b = appendTag(b, anyBool, wireVarint)
			b = appendVarint(b, uint64(a.Num&1))
		default:
			b = appendString(b, anyString, a.Str)
		}
	}
	return b
}

func keyValueSize(a *Attr) int {
	return bytesFieldSize(keyValueKey, len(a.Key)) + bytesFieldSize(keyValueValue, anyValueSize(a))
}

func anyValueSize(a *Attr) int {
	switch a.Type {
	case ValueInt:
		// int64 is written as the 64-bit two's complement, so a negative value takes 10 bytes.
		return tagSize(anyInt) + varintSize(uint64(a.Num))
	case ValueBool:
		return tagSize(anyBool) + 1
	default:
		return bytesFieldSize(anyString, len(a.Str))
	}
}

// unixNano is t in nanoseconds since the Unix epoch; 0 for the zero time, which
// OTLP reads as "unknown".
func unixNano(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.UnixNano())
}

func tagSize(f int) int { return varintSize(uint64(f) << 3) }

func bytesFieldSize(f, n int) int { return tagSize(f) + varintSize(uint64(n)) + n }

func varintSize(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

func appendTag(b []byte, f, wire int) []byte { return appendVarint(b, uint64(f)<<3|uint64(wire)) }

func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func appendFixed64(b []byte, v uint64) []byte {
	return append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24),
		byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56))
}

func appendString(b []byte, f int, s string) []byte {
	b = appendTag(b, f, wireBytes)
	b = appendVarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b []byte, f int, p []byte) []byte {
	b = appendTag(b, f, wireBytes)
	b = appendVarint(b, uint64(len(p)))
	return append(b, p...)
}
