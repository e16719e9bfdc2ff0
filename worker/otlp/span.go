// Package otlp records trace spans and exports them to an OpenTelemetry collector
// over OTLP/HTTP in the protobuf encoding. It is a small replacement for the
// OpenTelemetry SDK and its exporter, whose gRPC and protobuf runtime dependencies
// added some 7 MB to the gateway's binary, and, as its text ends up resident, a few
// MiB to every idle worker's memory. It knows only what the gateway emits: spans with string,
// integer and boolean attributes and a status; no events, links or metrics.
//
// The wire format follows opentelemetry-proto (trace/v1/trace.proto,
// common/v1/common.proto, resource/v1/resource.proto and
// collector/trace/v1/trace_service.proto).
package otlp

import "time"

// TraceID identifies a trace; all zeros is invalid.
type TraceID [16]byte

// SpanID identifies a span within its trace; all zeros is invalid (and, as a
// parent, means "no parent").
type SpanID [8]byte

// IsZero reports the invalid all-zeros id.
func (t TraceID) IsZero() bool { return t == TraceID{} }

// IsZero reports the invalid all-zeros id.
func (s SpanID) IsZero() bool { return s == SpanID{} }

// SpanKind is the OTLP Span.SpanKind; the values are the protocol's.
type SpanKind int32

// Span kinds (trace.proto, Span.SpanKind).
const (
	KindUnspecified SpanKind = 0
	KindInternal    SpanKind = 1
	KindServer      SpanKind = 2 // handling of a request received from a remote client
	KindClient      SpanKind = 3 // a request sent to a remote server
)

// StatusCode is the OTLP Status.StatusCode; the values are the protocol's.
type StatusCode int32

// Status codes (trace.proto, Status.StatusCode).
const (
	StatusUnset StatusCode = 0
	StatusOK    StatusCode = 1
	StatusError StatusCode = 2
)

// ValueType says which of an Attr's fields holds its value.
type ValueType uint8

// Attribute value types (common.proto, AnyValue); the zero value is a string.
const (
	ValueString ValueType = iota
	ValueInt
	ValueBool
)

// Attr is one attribute (common.proto, KeyValue). Build it with String, Int or Bool.
type Attr struct {
	Key  string
	Type ValueType
	Str  string // the value of a ValueString
	Num  int64  // the value of a ValueInt; 1 or 0 for a ValueBool
}

// String is a string attribute.
func String(key, value string) Attr { return Attr{Key: key, Type: ValueString, Str: value} }

// Int is an integer attribute.
func Int(key string, value int64) Attr { return Attr{Key: key, Type: ValueInt, Num: value} }

// Bool is a boolean attribute.
func Bool(key string, value bool) Attr {
	a := Attr{Key: key, Type: ValueBool}
	if value {
		a.Num = 1
	}
	return a
}

// Span is one finished or in-progress operation. Spans taken from an Exporter's
// NewSpan go back to it with Finish; after Finish the caller must not touch the
// span again, as it is reused once exported.
type Span struct {
	TraceID TraceID
	SpanID  SpanID
	// ParentID is the parent span's id; zero for a root span.
	ParentID SpanID
	// ParentRemote: the parent span lives in another process (it came in a
	// traceparent header), recorded in the OTLP span flags.
	ParentRemote bool
	// TraceFlags are the W3C trace flags (bit 0: sampled).
	TraceFlags byte
	// TraceState is the W3C tracestate of the span's context; empty when none.
	TraceState string
	Name       string
	Kind       SpanKind
	Start, End time.Time
	Attrs      []Attr
	// Status is StatusUnset unless set; StatusMessage describes an error.
	Status        StatusCode
	StatusMessage string

	exp *Exporter // where Finish sends the span; nil: nowhere
}

// SetAttrs adds attributes (no de-duplication: callers set each key once).
func (s *Span) SetAttrs(attrs ...Attr) { s.Attrs = append(s.Attrs, attrs...) }

// SetError marks the span failed, with a short description.
func (s *Span) SetError(msg string) { s.Status, s.StatusMessage = StatusError, msg }

// Finish stamps the span's end and hands it to its exporter without blocking; a
// span that did not come from an Exporter is left alone.
func (s *Span) Finish(end time.Time) {
	s.End = end
	if s.exp != nil {
		s.exp.enqueue(s)
	}
}
