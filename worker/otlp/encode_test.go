package otlp

import (
	"math"
	"strings"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

func strAttr(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

func intAttr(k string, v int64) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: v}}}
}

func boolAttr(k string, v bool) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: v}}}
}

// TestAppendExportRequest decodes the encoder's bytes with the official OTLP types
// and compares them, message by message, with what the spans hold.
func TestAppendExportRequest(t *testing.T) {
	start := time.Unix(1700000000, 123456789)
	long := strings.Repeat("x", 300) // lengths above 127 take two varint bytes
	tid := TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	src := Source{
		Resource: []Attr{String("service.name", "llm-proxy"), Int("llm_proxy.worker_slot", 2)},
		Scope:    "github.com/llm-proxy/llm-proxy/worker",
	}
	server := &Span{
		TraceID: tid, SpanID: SpanID{1, 2, 3, 4, 5, 6, 7, 8}, ParentID: SpanID{0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		ParentRemote: true, TraceFlags: 1, TraceState: "rojo=1,congo=2",
		Name: "llm.request chat", Kind: KindServer, Start: start, End: start.Add(1500 * time.Millisecond),
		Attrs: []Attr{
			String("empty", ""), String("long", long), String("unicode", "héllo ✓"),
			Int("zero", 0), Int("neg", -1), Int("max", math.MaxInt64), Int("min", math.MinInt64), Int("big", 1<<40),
			Bool("yes", true), Bool("no", false),
		},
		Status: StatusError, StatusMessage: "upstream_error",
	}
	client := &Span{
		TraceID: tid, SpanID: SpanID{9, 9, 9, 9, 9, 9, 9, 9}, ParentID: server.SpanID, TraceFlags: 1,
		Name: "llm.attempt " + long, Kind: KindClient, Start: start.Add(time.Millisecond), End: start.Add(time.Second),
		Status: StatusError, // no message
	}
	bare := &Span{TraceID: tid, SpanID: SpanID{7}} // zero times, no name, no kind
	want := &coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
			strAttr("service.name", "llm-proxy"), intAttr("llm_proxy.worker_slot", 2),
		}},
		ScopeSpans: []*tracepb.ScopeSpans{{
			Scope: &commonpb.InstrumentationScope{Name: "github.com/llm-proxy/llm-proxy/worker"},
			Spans: []*tracepb.Span{
				{
					TraceId: tid[:], SpanId: server.SpanID[:], ParentSpanId: server.ParentID[:],
					TraceState: "rojo=1,congo=2", Flags: 0x301,
					Name: "llm.request chat", Kind: tracepb.Span_SPAN_KIND_SERVER,
					StartTimeUnixNano: uint64(start.UnixNano()), EndTimeUnixNano: uint64(start.Add(1500 * time.Millisecond).UnixNano()),
					Attributes: []*commonpb.KeyValue{
						strAttr("empty", ""), strAttr("long", long), strAttr("unicode", "héllo ✓"),
						intAttr("zero", 0), intAttr("neg", -1), intAttr("max", math.MaxInt64), intAttr("min", math.MinInt64), intAttr("big", 1<<40),
						boolAttr("yes", true), boolAttr("no", false),
					},
					Status: &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "upstream_error"},
				},
				{
					TraceId: tid[:], SpanId: client.SpanID[:], ParentSpanId: server.SpanID[:], Flags: 0x101,
					Name: "llm.attempt " + long, Kind: tracepb.Span_SPAN_KIND_CLIENT,
					StartTimeUnixNano: uint64(start.Add(time.Millisecond).UnixNano()), EndTimeUnixNano: uint64(start.Add(time.Second).UnixNano()),
					Status: &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR},
				},
				{TraceId: tid[:], SpanId: []byte{7, 0, 0, 0, 0, 0, 0, 0}, Flags: 0x100},
			},
		}},
	}}}

	prefix := []byte("keep")
	b := AppendExportRequest(prefix, src, []*Span{server, client, bare})
	if string(b[:4]) != "keep" {
		t.Fatalf("the bytes already in the buffer were overwritten: %q", b[:4])
	}
	var got coltrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(b[4:], &got); err != nil {
		t.Fatalf("the official types cannot decode the request: %v", err)
	}
	if !proto.Equal(&got, want) {
		t.Errorf("decoded request\n got %v\nwant %v", &got, want)
	}
	// The official encoder writes the same message in as many bytes: no field was
	// written twice or padded.
	if n := proto.Size(want); n != len(b)-4 {
		t.Errorf("encoded %d bytes, the official encoder %d", len(b)-4, n)
	}
	if u := got.ProtoReflect().GetUnknown(); len(u) != 0 {
		t.Errorf("unknown fields at the top level: %x", u)
	}
}

// TestAppendExportRequestEmpty: a batch without spans still decodes, with its resource.
func TestAppendExportRequestEmpty(t *testing.T) {
	b := AppendExportRequest(nil, Source{}, nil)
	var got coltrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if n := len(got.GetResourceSpans()); n != 1 || len(got.GetResourceSpans()[0].GetScopeSpans()[0].GetSpans()) != 0 {
		t.Errorf("decoded %v, want one resource with no spans", &got)
	}
}

func TestVarintSize(t *testing.T) {
	tests := []struct {
		v    uint64
		want int
	}{
		{0, 1}, {1, 1}, {127, 1}, {128, 2}, {16383, 2}, {16384, 3}, {math.MaxUint32, 5}, {math.MaxUint64, 10},
	}
	for _, tt := range tests {
		if got := varintSize(tt.v); got != tt.want || len(appendVarint(nil, tt.v)) != tt.want {
			t.Errorf("varintSize(%d) = %d, appended %d bytes; want %d", tt.v, got, len(appendVarint(nil, tt.v)), tt.want)
		}
	}
}

func BenchmarkAppendExportRequest(b *testing.B) {
	src := Source{Resource: []Attr{String("service.name", "llm-proxy"), String("service.version", "v1"), Int("llm_proxy.worker_slot", 1)}, Scope: "scope"}
	spans := make([]*Span, 512)
	for i := range spans {
		spans[i] = &Span{
			TraceID: TraceID{1}, SpanID: SpanID{2}, ParentID: SpanID{3}, TraceFlags: 1, Name: "llm.request chat", Kind: KindServer,
			Start: time.Now(), End: time.Now(),
			Attrs: []Attr{
				String("llm_proxy.request_id", "req_0b2f1400d2b2_1"), String("gen_ai.request.model", "gpt-4o"),
				Int("http.response.status_code", 200), Int("gen_ai.usage.input_tokens", 1234), Bool("llm_proxy.stream", true),
			},
		}
	}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendExportRequest(buf[:0], src, spans)
	}
	b.SetBytes(int64(len(buf)))
}
