package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/valyala/fasthttp"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/llm-proxy/llm-proxy/routing"
	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/worker/otlp"
)

// collector is an OTLP/HTTP trace receiver on 127.0.0.1 that decodes each export
// with the official protobuf types and keeps it.
type collector struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []*coltrace.ExportTraceServiceRequest
	path string // the path of the last export
}

func startCollector(t *testing.T) *collector {
	t.Helper()
	c := &collector{}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		var msg coltrace.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(b, &msg)
		}
		if err != nil || r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "want an OTLP protobuf export", http.StatusBadRequest)
			return
		}
		c.mu.Lock()
		c.reqs = append(c.reqs, &msg)
		c.path = r.URL.Path
		c.mu.Unlock()
	}))
	t.Cleanup(c.srv.Close)
	return c
}

// spans returns every span received so far, in the order they were exported.
func (c *collector) spans() []*tracepb.Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*tracepb.Span
	for _, r := range c.reqs {
		for _, rs := range r.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				out = append(out, ss.GetSpans()...)
			}
		}
	}
	return out
}

// waitSpans polls until n spans arrived (or 5 s passed) and returns them.
func (c *collector) waitSpans(t *testing.T, n int) []*tracepb.Span {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := c.spans()
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// attrMap renders attributes as strings for comparison.
func attrMap(kvs []*commonpb.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		switch v := kv.GetValue().GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.GetKey()] = v.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.GetKey()] = "int:" + strconv.FormatInt(v.IntValue, 10)
		case *commonpb.AnyValue_BoolValue:
			if v.BoolValue {
				m[kv.GetKey()] = "bool:true"
			} else {
				m[kv.GetKey()] = "bool:false"
			}
		default:
			m[kv.GetKey()] = "?"
		}
	}
	return m
}

func TestValidTraceparent(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false}, // zero trace id
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false}, // zero span id
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false}, // upper case
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false}, // version ff
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", false},
		{"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := validTraceparent([]byte(tt.in)); got != tt.want {
			t.Errorf("validTraceparent(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// TestTraceparentRoundTrip: parsing a traceparent and writing it back gives it again.
func TestTraceparentRoundTrip(t *testing.T) {
	for _, in := range []string{
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-0123456789abcdef0123456789abcdef-fedcba9876543210-00",
	} {
		tid, sid, flags := parseTraceparent([]byte(in))
		if got := string(appendTraceparent(nil, tid, sid, flags)); got != in {
			t.Errorf("round trip of %q = %q", in, got)
		}
	}
}

func TestCleanTracestate(t *testing.T) {
	long := strings.Repeat("a", 257)
	many := strings.TrimSuffix(strings.Repeat("k=v,", 33), ",")
	var distinct []string
	for i := range 33 {
		distinct = append(distinct, "k"+strconv.Itoa(i)+"=v")
	}
	tests := []struct{ in, want string }{
		{"", ""},
		{"congo=t61rcWkgMzE", "congo=t61rcWkgMzE"},
		{"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"},
		{" rojo=1 ,\t, congo=2 ", "rojo=1,congo=2"}, // optional white space, empty member
		{"tenant@vendor=x", "tenant@vendor=x"},      // multi-tenant key
		{"Rojo=1", ""},                              // upper-case key
		{"rojo", ""},                                // no value
		{"=1", ""},                                  // no key
		{"rojo=a=b", ""},                            // '=' in the value
		{"rojo=1,rojo=2", ""},                       // duplicate key
		{"rojo=" + long, ""},                        // value too long
		{"rojo=caf\u00e9", ""},                      // non-ASCII value
		{many, ""},                                  // duplicate keys
		{strings.Join(distinct[:32], ","), strings.Join(distinct[:32], ",")},
		{strings.Join(distinct, ","), ""}, // 33 members
	}
	for _, tt := range tests {
		if got := cleanTracestate([]byte(tt.in)); got != tt.want {
			t.Errorf("cleanTracestate(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestSampleRoot: a trace that starts here is kept when the low 63 bits of the
// second half of its id fall below ratio * 2^63, the OpenTelemetry rule.
func TestSampleRoot(t *testing.T) {
	id := func(low string) otlp.TraceID {
		var tid otlp.TraceID
		b, _ := hex.DecodeString(low)
		copy(tid[8:], b)
		tid[0] = 0xff // the first half does not count
		return tid
	}
	tests := []struct {
		ratio float64
		low   string
		want  bool
	}{
		{1, "ffffffffffffffff", true},
		{2, "ffffffffffffffff", true},
		{0, "0000000000000000", false},
		{-1, "0000000000000000", false},
		{0.5, "7ffffffffffffffe", true},  // >>1 = 2^62 - 1
		{0.5, "8000000000000000", false}, // >>1 = 2^62
		{0.25, "3ffffffffffffffe", true},
		{0.25, "4000000000000000", false},
	}
	for _, tt := range tests {
		tr, err := newTracing(TraceConfig{OTelEndpoint: "http://127.0.0.1:1", OTelSampleRatio: tt.ratio}, "v", 0, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		if got := tr.sampleRoot(id(tt.low)); got != tt.want {
			t.Errorf("ratio %v, trace id low half %s: sampled %v, want %v", tt.ratio, tt.low, got, tt.want)
		}
		_ = tr.shutdown(context.Background())
	}
}

func TestNewTracingEndpoint(t *testing.T) {
	tests := []struct {
		endpoint string
		wantErr  bool
		wantNil  bool
	}{
		{"", false, true},
		{"http://127.0.0.1:4318", false, false},
		{"https://127.0.0.1:4318/otlp/v1/traces", false, false},
		{"ftp://127.0.0.1:4318", true, true},
		{"127.0.0.1:4318", true, true},
		{"http://", true, true},
	}
	for _, tt := range tests {
		tr, err := newTracing(TraceConfig{OTelEndpoint: tt.endpoint, OTelSampleRatio: 1}, "v", 0, hclog.NewNullLogger())
		if (err != nil) != tt.wantErr || (tr == nil) != tt.wantNil {
			t.Errorf("newTracing(%q) = %v, %v; want error %v, nil %v", tt.endpoint, tr, err, tt.wantErr, tt.wantNil)
		}
		_ = tr.shutdown(context.Background())
	}
}

// TestTraceparentPassThroughWhenOff: with tracing off the client's traceparent reaches
// the upstream unchanged; a malformed one is not passed on.
func TestTraceparentPassThroughWhenOff(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tests := []struct{ sent, want string }{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		{"garbage", ""},
		{"", ""},
	}
	for _, tt := range tests {
		var hdr []string
		if tt.sent != "" {
			hdr = []string{"traceparent", tt.sent}
		}
		resp, body := h.chat(t, keyAll, `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`, hdr...)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		if got := h.up.last(t).Header.Get("traceparent"); got != tt.want {
			t.Errorf("sent traceparent %q: upstream got %q, want %q", tt.sent, got, tt.want)
		}
	}
}

const (
	clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientSpan  = "00f067aa0ba902b7"
)

// TestTracingSpans drives the span hooks the request path calls and reads what a
// collector received: the request span continues the client's trace, each attempt
// is its child, the upstream request carries the attempt's traceparent and the
// client's tracestate, and the request span ends with the record's outcome.
func TestTracingSpans(t *testing.T) {
	col := startCollector(t)
	tr, err := newTracing(TraceConfig{OTelEndpoint: col.srv.URL, OTelServiceName: "test", OTelSampleRatio: 1, OTelBatchTimeout: time.Hour}, "v9", 3, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}

	var ctx fasthttp.RequestCtx
	ctx.Request.Header.Set("traceparent", "00-"+clientTrace+"-"+clientSpan+"-01")
	ctx.Request.Header.Set("tracestate", "rojo=00f067aa0ba902b7, congo=t61rcWkgMzE")
	x := &exchange{started: time.Now()}
	x.rec.RequestID, x.rec.KeyID = "req-1", 42
	keepTraceparent(&ctx, x)
	tr.startRequest(&ctx, x, "chat")

	dep := &routing.Deployment{Upstream: &routing.Upstream{Name: "up-a", Provider: "openai"}}
	var upstreamTPs, upstreamTSs []string
	for _, status := range []int{503, 200} {
		a := &attempt{dep: dep, model: "m", cancel: func() {}}
		req := fasthttp.AcquireRequest()
		tr.startAttempt(x, a, req)
		upstreamTPs = append(upstreamTPs, string(req.Header.Peek("traceparent")))
		upstreamTSs = append(upstreamTSs, string(req.Header.Peek("tracestate")))
		fasthttp.ReleaseRequest(req)
		a.outcome.Status = status
		x.rec.AttemptCount++
		endAttempt(a)
		if a.span != nil {
			t.Error("endAttempt left the span on the attempt")
		}
	}
	x.rec.Model, x.rec.UpstreamModel, x.rec.Upstream, x.rec.Status = "gpt-4o", "gpt-4o-2024", "up-a", 200
	x.rec.PromptTokens, x.rec.CompletionTokens, x.rec.Cache, x.rec.Stream = 11, 7, "miss", true
	x.rec.CostMicroUSD = 1234
	tr.endRequest(x)
	if x.span != nil || x.spanCtx.valid {
		t.Error("endRequest left the span on the exchange")
	}
	if err := tr.shutdown(context.Background()); err != nil { // flushes despite the hour-long batch timeout
		t.Fatal(err)
	}

	if col.path != "/v1/traces" {
		t.Errorf("exported to %q, want the default /v1/traces", col.path)
	}
	if len(col.reqs) != 1 {
		t.Fatalf("%d exports, want 1", len(col.reqs))
	}
	rs := col.reqs[0].GetResourceSpans()[0]
	if got, want := attrMap(rs.GetResource().GetAttributes()), map[string]string{
		"service.name": "test", "service.version": "v9", "llm_proxy.worker_slot": "int:3",
	}; !mapsEqual(got, want) {
		t.Errorf("resource %v, want %v", got, want)
	}
	if got := rs.GetScopeSpans()[0].GetScope().GetName(); got != "github.com/llm-proxy/llm-proxy/worker" {
		t.Errorf("scope %q", got)
	}
	spans := col.spans()
	if len(spans) != 3 {
		t.Fatalf("%d spans exported, want 3 (2 attempts, 1 request)", len(spans))
	}
	root := spans[2]
	if got := hex.EncodeToString(root.GetTraceId()); got != clientTrace {
		t.Errorf("request span trace id %s, want the client's", got)
	}
	if got := hex.EncodeToString(root.GetParentSpanId()); got != clientSpan {
		t.Errorf("request span parent %s, want the client's span", got)
	}
	if root.GetName() != "llm.request chat" || root.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("request span %q kind %v, want \"llm.request chat\" server", root.GetName(), root.GetKind())
	}
	if got, want := root.GetStartTimeUnixNano(), uint64(x.started.UnixNano()); got != want {
		t.Errorf("request span start %d, want the request's %d", got, want)
	}
	if root.GetEndTimeUnixNano() < root.GetStartTimeUnixNano() {
		t.Error("request span ends before it starts")
	}
	if got := root.GetTraceState(); got != "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE" {
		t.Errorf("request span tracestate %q", got)
	}
	if got := root.GetFlags(); got != 0x301 { // sampled, parent known to be remote
		t.Errorf("request span flags %#x, want 0x301", got)
	}
	if root.GetStatus().GetCode() != tracepb.Status_STATUS_CODE_UNSET {
		t.Errorf("request span status %v, want unset", root.GetStatus())
	}
	if got, want := attrMap(root.GetAttributes()), map[string]string{
		"llm_proxy.request_id":       "req-1",
		"llm_proxy.endpoint":         "chat",
		"llm_proxy.key_id":           "int:42",
		"gen_ai.request.model":       "gpt-4o",
		"gen_ai.response.model":      "gpt-4o-2024",
		"llm_proxy.upstream":         "up-a",
		"http.response.status_code":  "int:200",
		"gen_ai.usage.input_tokens":  "int:11",
		"gen_ai.usage.output_tokens": "int:7",
		"llm_proxy.cache":            "miss",
		"llm_proxy.stream":           "bool:true",
		"llm_proxy.attempts":         "int:2",
		"llm_proxy.cost_micro_usd":   "int:1234",
	}; !mapsEqual(got, want) {
		t.Errorf("request span attributes\n got %v\nwant %v", got, want)
	}
	for i, a := range spans[:2] {
		if string(a.GetParentSpanId()) != string(root.GetSpanId()) || string(a.GetTraceId()) != string(root.GetTraceId()) {
			t.Errorf("attempt %d is not a child of the request span", i)
		}
		if a.GetName() != "llm.attempt up-a" || a.GetKind() != tracepb.Span_SPAN_KIND_CLIENT {
			t.Errorf("attempt %d: %q kind %v, want \"llm.attempt up-a\" client", i, a.GetName(), a.GetKind())
		}
		want := "00-" + clientTrace + "-" + hex.EncodeToString(a.GetSpanId()) + "-01"
		if upstreamTPs[i] != want {
			t.Errorf("attempt %d sent traceparent %q, want %q", i, upstreamTPs[i], want)
		}
		if upstreamTSs[i] != "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE" {
			t.Errorf("attempt %d sent tracestate %q", i, upstreamTSs[i])
		}
	}
	if got, want := attrMap(spans[0].GetAttributes()), map[string]string{
		"llm_proxy.upstream": "up-a", "llm_proxy.provider": "openai", "gen_ai.request.model": "m",
		"llm_proxy.attempt": "int:1", "http.response.status_code": "int:503", "error.type": classUpstream,
	}; !mapsEqual(got, want) {
		t.Errorf("first attempt attributes\n got %v\nwant %v", got, want)
	}
	if st := spans[0].GetStatus(); st.GetCode() != tracepb.Status_STATUS_CODE_ERROR || st.GetMessage() != classUpstream {
		t.Errorf("503 attempt status %v, want error %q", st, classUpstream)
	}
	if st := spans[1].GetStatus(); st.GetCode() != tracepb.Status_STATUS_CODE_UNSET {
		t.Errorf("200 attempt status %v, want unset", st)
	}
	if got := attrMap(spans[1].GetAttributes())["llm_proxy.attempt"]; got != "int:2" {
		t.Errorf("second attempt number %q, want int:2", got)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestTracingSampling: the client's sampled flag decides, either way; a trace that
// starts here follows the ratio. Every upstream request carries a traceparent of
// the request's trace, sampled or not, so the provider can continue it.
func TestTracingSampling(t *testing.T) {
	tests := []struct {
		name        string
		traceparent string
		ratio       float64
		wantSpans   int // exported: request span + one attempt span
		wantFlags   string
		wantClient  bool // the client's trace id is kept
		wantErrStat bool
	}{
		{"client sampled, ratio 0", "00-" + clientTrace + "-" + clientSpan + "-01", 0, 2, "01", true, false},
		{"client not sampled, ratio 1", "00-" + clientTrace + "-" + clientSpan + "-00", 1, 0, "00", true, false},
		{"client other flags", "00-" + clientTrace + "-" + clientSpan + "-03", 0, 2, "01", true, false},
		{"root, ratio 1", "", 1, 2, "01", false, false},
		{"root, ratio 0", "", 0, 0, "00", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			col := startCollector(t)
			tr, err := newTracing(TraceConfig{OTelEndpoint: col.srv.URL + "/custom/traces", OTelSampleRatio: tt.ratio, OTelBatchTimeout: time.Hour}, "v", 0, hclog.NewNullLogger())
			if err != nil {
				t.Fatal(err)
			}
			var ctx fasthttp.RequestCtx
			if tt.traceparent != "" {
				ctx.Request.Header.Set("traceparent", tt.traceparent)
			}
			x := &exchange{started: time.Now()}
			keepTraceparent(&ctx, x)
			tr.startRequest(&ctx, x, "chat")
			a := &attempt{dep: &routing.Deployment{Upstream: &routing.Upstream{Name: "u"}}, cancel: func() {}}
			req := fasthttp.AcquireRequest()
			defer fasthttp.ReleaseRequest(req)
			tr.startAttempt(x, a, req)
			endAttempt(a)
			x.rec.Status = 0 // never answered: an error
			tr.endRequest(x)
			if err := tr.shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}

			tp := string(req.Header.Peek("traceparent"))
			if !validTraceparent([]byte(tp)) {
				t.Fatalf("upstream traceparent %q is not valid", tp)
			}
			if got := tp[53:]; got != tt.wantFlags {
				t.Errorf("upstream traceparent flags %s, want %s", got, tt.wantFlags)
			}
			if got := tp[3:35] == clientTrace; got != tt.wantClient {
				t.Errorf("upstream traceparent %s: client's trace kept %v, want %v", tp, got, tt.wantClient)
			}
			if tt.traceparent != "" && tp[36:52] == clientSpan {
				t.Errorf("upstream traceparent %s names the client's span, want the attempt's", tp)
			}
			spans := col.spans()
			if len(spans) != tt.wantSpans {
				t.Fatalf("%d spans exported, want %d", len(spans), tt.wantSpans)
			}
			if tt.wantSpans == 0 {
				return
			}
			if col.path != "/custom/traces" {
				t.Errorf("exported to %q, want the configured path", col.path)
			}
			if got := hex.EncodeToString(spans[0].GetSpanId()); got != tp[36:52] {
				t.Errorf("attempt span %s, upstream traceparent %s", got, tp)
			}
			root := spans[1]
			if tt.traceparent == "" && (len(root.GetParentSpanId()) != 0 || root.GetFlags() != 0x101) {
				t.Errorf("root span parent %x flags %#x, want none and 0x101", root.GetParentSpanId(), root.GetFlags())
			}
			if root.GetStatus().GetCode() != tracepb.Status_STATUS_CODE_ERROR {
				t.Errorf("status-0 request span status %v, want error", root.GetStatus())
			}
		})
	}
}

// TestTracingThroughWorker: with LLM_PROXY_OTEL_ENDPOINT set, a proxied request is
// exported within the batch timeout as a request span with one attempt span, and
// the upstream receives the attempt's traceparent and the client's tracestate.
func TestTracingThroughWorker(t *testing.T) {
	col := startCollector(t)
	h := newHarness(t, harnessOptions{cfg: func(c *Config) {
		c.OTelEndpoint = col.srv.URL
		c.OTelSampleRatio = 1
		c.OTelBatchTimeout = 20 * time.Millisecond
	}})
	resp, body := h.chat(t, keyAll, `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`,
		"traceparent", "00-"+clientTrace+"-"+clientSpan+"-01", "tracestate", "rojo=1")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	up := h.up.last(t).Header
	spans := col.waitSpans(t, 2)
	if len(spans) != 2 {
		t.Fatalf("%d spans exported, want 2", len(spans))
	}
	attemptSpan, root := spans[0], spans[1]
	if strings.HasPrefix(attemptSpan.GetName(), "llm.request") { // the order they ended in is not fixed
		attemptSpan, root = root, attemptSpan
	}
	if string(attemptSpan.GetParentSpanId()) != string(root.GetSpanId()) {
		t.Errorf("attempt span %q is not a child of %q", attemptSpan.GetName(), root.GetName())
	}
	if want := "00-" + clientTrace + "-" + hex.EncodeToString(attemptSpan.GetSpanId()) + "-01"; up.Get("traceparent") != want {
		t.Errorf("upstream traceparent %q, want %q", up.Get("traceparent"), want)
	}
	if up.Get("tracestate") != "rojo=1" {
		t.Errorf("upstream tracestate %q, want rojo=1", up.Get("tracestate"))
	}
	if got := attrMap(root.GetAttributes())["llm_proxy.request_id"]; got != resp.Header.Get("X-Request-Id") {
		t.Errorf("request span request id %q, want %q", got, resp.Header.Get("X-Request-Id"))
	}
	if got := attrMap(root.GetAttributes())["http.response.status_code"]; got != "int:200" {
		t.Errorf("request span status code %s, want 200", got)
	}
}

// TestTracingOffAllocatesNothing: with tracing off the hooks on the request path cost
// no allocation (the client's traceparent is copied into the exchange's own buffer).
func TestTracingOffAllocatesNothing(t *testing.T) {
	var tr *tracing
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	x := &exchange{traceparent: make([]byte, 0, 64)}
	a := &attempt{cancel: func() {}}
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	tr.startAttempt(x, a, req) // warm the header buffer
	allocs := testing.AllocsPerRun(100, func() {
		keepTraceparent(&ctx, x)
		tr.startRequest(&ctx, x, "chat")
		tr.startAttempt(x, a, req)
		endAttempt(a)
		tr.endRequest(x)
	})
	if allocs != 0 {
		t.Errorf("tracing off: %v allocations per request, want 0", allocs)
	}
}

func BenchmarkTracingOff(b *testing.B) {
	var tr *tracing
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	x := &exchange{}
	a := &attempt{cancel: func() {}}
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	b.ReportAllocs()
	for b.Loop() {
		keepTraceparent(&ctx, x)
		tr.startRequest(&ctx, x, "chat")
		tr.startAttempt(x, a, req)
		endAttempt(a)
		tr.endRequest(x)
	}
}

// BenchmarkTracingOn: the hooks of one sampled request with one attempt, exported
// to a collector on 127.0.0.1 (spans beyond the queue are dropped, as in production).
func BenchmarkTracingOn(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) }))
	defer srv.Close()
	tr, err := newTracing(TraceConfig{OTelEndpoint: srv.URL, OTelSampleRatio: 1, OTelBatchTimeout: 10 * time.Millisecond}, "v", 0, hclog.NewNullLogger())
	if err != nil {
		b.Fatal(err)
	}
	defer tr.shutdown(context.Background())
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	x := &exchange{started: time.Now()}
	dep := &routing.Deployment{Upstream: &routing.Upstream{Name: "up", Provider: "openai"}}
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	b.ReportAllocs()
	for b.Loop() {
		keepTraceparent(&ctx, x)
		tr.startRequest(&ctx, x, "chat")
		a := attempt{dep: dep, model: "m"}
		tr.startAttempt(x, &a, req)
		endAttempt(&a)
		tr.endRequest(x)
	}
}

// TestUserModelAllowList: a key owned by a user with a model list may use only the
// models both lists allow, and GET /v1/models lists just those; clearing the user's
// list reaches the worker through the key snapshot.
func TestUserModelAllowList(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	uid, err := h.st.CreateUser(ctx, store.User{Username: "alice", PasswordHash: "x", Role: store.RoleUser})
	if err != nil {
		t.Fatal(err)
	}
	const userKey = "sk-test-user-owned-0123456789abcdef"
	if _, err := h.st.CreateAPIKey(ctx, store.APIKey{Name: "alice-key", Hash: sha256.Sum256([]byte(userKey)), Prefix: userKey[:10], UserID: uid}); err != nil {
		t.Fatal(err)
	}
	if err := h.st.SetUserModels(ctx, uid, []string{"alias", "gpt-4o"}); err != nil {
		t.Fatal(err)
	}
	models := func(key string) []string {
		resp, body := h.do(t, http.MethodGet, "/v1/models", key, "")
		if resp.StatusCode != http.StatusOK {
			// The new key reaches the snapshot within a refresh; until then, 401.
			return []string{resp.Status}
		}
		var out struct {
			Data []struct {
				ID string `json:"id"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, d := range out.Data {
			ids = append(ids, d.ID)
		}
		slices.Sort(ids)
		return ids
	}
	waitModels := func(key string, want []string) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for {
			got := models(key)
			if slices.Equal(got, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET /v1/models = %v, want %v", got, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitModels(userKey, []string{"alias", "gpt-4o"})

	chat := func(model string) int {
		resp, _ := h.chat(t, userKey, `{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`)
		return resp.StatusCode
	}
	if got := chat("gpt-4o"); got != http.StatusOK {
		t.Errorf("allowed model: status %d, want 200", got)
	}
	resp, body := h.chat(t, userKey, `{"model":"text-embedding-3-small","messages":[{"role":"user","content":"hi"}]}`)
	checkError(t, resp, body, http.StatusForbidden, "model_not_allowed")
	// Other keys are untouched by alice's list.
	if got := models(keyAll); !slices.Contains(got, "text-embedding-3-small") {
		t.Errorf("key without a user lists %v, want every model", got)
	}

	if err := h.st.SetUserModels(ctx, uid, nil); err != nil {
		t.Fatal(err)
	}
	waitModels(userKey, []string{"alias", "gpt-4o", "text-embedding-3-small"})
	if got := chat("text-embedding-3-small"); got == http.StatusForbidden {
		t.Errorf("after clearing the user's list: still 403")
	}
}

func TestParseOTelHeaders(t *testing.T) {
	tests := []struct {
		raw     string
		want    map[string]string
		wantErr bool
	}{
		{raw: "", want: nil},
		{raw: "x-honeycomb-team=abc", want: map[string]string{"x-honeycomb-team": "abc"}},
		{raw: " a = 1 , Authorization=Bearer%20tok%3D ", want: map[string]string{"a": "1", "Authorization": "Bearer tok="}},
		{raw: "novalue", wantErr: true},
		{raw: "=v", wantErr: true},
		{raw: "bad key=v", wantErr: true},
		{raw: "k=%zz", wantErr: true},
		{raw: "k=a%0Db", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseOTelHeaders(tt.raw)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseOTelHeaders(%q) error = %v, want error %v", tt.raw, err, tt.wantErr)
			continue
		}
		if !tt.wantErr && !maps.Equal(got, tt.want) {
			t.Errorf("parseOTelHeaders(%q) = %v, want %v", tt.raw, got, tt.want)
		}
	}
}
