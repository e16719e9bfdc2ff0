package worker

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/worker/otlp"
)

// TraceConfig turns on OpenTelemetry export. Embedded in Config.
type TraceConfig struct {
	OTelEndpoint     string        `envconfig:"OTEL_ENDPOINT" default:"" desc:"OTLP/HTTP collector URL, e.g. http://127.0.0.1:4318 (/v1/traces is added when the URL has no path); empty: tracing off"`
	OTelServiceName  string        `envconfig:"OTEL_SERVICE_NAME" default:"llm-proxy" desc:"service.name of the exported spans"`
	OTelSampleRatio  float64       `envconfig:"OTEL_SAMPLE_RATIO" default:"1" desc:"share of requests traced (0 to 1) when the client sent no sampled traceparent"`
	OTelBatchTimeout time.Duration `envconfig:"OTEL_BATCH_TIMEOUT" default:"5s" desc:"longest a finished span waits before it is exported"`
	OTelHeaders      string        `envconfig:"OTEL_HEADERS" default:"" desc:"headers sent to the collector, as key=value pairs separated by commas (values URL-encoded), e.g. x-honeycomb-team=KEY; empty: OTEL_EXPORTER_OTLP_HEADERS if set"`
	OTelGzip         bool          `envconfig:"OTEL_GZIP" default:"false" desc:"gzip the span batches sent to the collector"`
}

// W3C Trace Context headers (https://www.w3.org/TR/trace-context/).
const (
	traceparentHeader = "traceparent"
	tracestateHeader  = "tracestate"
)

// flagSampled is the W3C trace flag "sampled"; the only flag passed on.
const flagSampled = 0x01

// traceScope is the instrumentation scope of the gateway's spans.
const traceScope = "github.com/llm-proxy/llm-proxy/worker"

// tracing exports one span per proxied request and one child span per upstream
// attempt. A nil *tracing is "off": every method is a no-op, so the request path
// pays one nil check and no allocation.
type tracing struct {
	exp *otlp.Exporter
	// A root trace is sampled when the low 63 bits of the second half of its trace
	// id are below sampleBound: the OpenTelemetry TraceIDRatioBased rule, so that
	// every service with the same ratio keeps the same traces. sampleAll stands in
	// for a ratio of 1, whose bound does not fit.
	sampleBound uint64
	sampleAll   bool
}

// traceContext is the request span's identity, kept whenever tracing is on, also
// for requests that are not sampled: their upstreams still get a traceparent.
type traceContext struct {
	traceID otlp.TraceID
	spanID  otlp.SpanID
	flags   byte   // W3C trace flags: flagSampled or 0
	state   string // the client's tracestate, passed on
	valid   bool
}

// newTracing builds the exporter when cfg has an endpoint; nil (off) otherwise.
func newTracing(cfg TraceConfig, version string, slot int, logger hclog.Logger) (*tracing, error) {
	if cfg.OTelEndpoint == "" {
		return nil, nil
	}
	u, err := url.Parse(cfg.OTelEndpoint)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("LLM_PROXY_OTEL_ENDPOINT=%q is invalid: want an http(s) URL such as http://127.0.0.1:4318", cfg.OTelEndpoint)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/traces"
	}
	raw := cfg.OTelHeaders
	if raw == "" {
		// The variable every OpenTelemetry SDK reads, so a collector set up for
		// other services works here too.
		raw = os.Getenv("OTEL_EXPORTER_OTLP_HEADERS")
	}
	headers, err := parseOTelHeaders(raw)
	if err != nil {
		return nil, err
	}
	logger = logger.Named("tracing")
	var errs throttle
	exp := otlp.NewExporter(otlp.ExporterOptions{URL: u.String(), BatchTimeout: cfg.OTelBatchTimeout,
		Gzip: cfg.OTelGzip, Headers: headers,
		OnError: func(err error) {
			// At most one line a minute: a collector that is down must not flood the log.
			if errs.allow(time.Now(), time.Minute) {
				logger.Warn("span export failed; spans are dropped while the collector refuses them", "error", err)
			}
		}}, otlp.Source{
		Resource: []otlp.Attr{
			otlp.String("service.name", cfg.OTelServiceName),
			otlp.String("service.version", version),
			otlp.Int("llm_proxy.worker_slot", int64(slot)),
		},
		Scope: traceScope,
	})
	t := &tracing{exp: exp}
	switch r := cfg.OTelSampleRatio; {
	case r >= 1:
		t.sampleAll = true
	case r > 0:
		t.sampleBound = uint64(r * (1 << 63))
	}
	return t, nil
}

// parseOTelHeaders reads "k1=v1,k2=v2" with URL-encoded values (the OTLP exporter
// convention).
func parseOTelHeaders(raw string) (map[string]string, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, pair := range strings.Split(raw, ",") {
		k, v, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" || strings.ContainsAny(k, " \t\r\n:") {
			return nil, fmt.Errorf("LLM_PROXY_OTEL_HEADERS: %q is not key=value", strings.TrimSpace(pair))
		}
		val, err := url.QueryUnescape(strings.TrimSpace(v))
		if err != nil || strings.ContainsAny(val, "\r\n") {
			return nil, fmt.Errorf("LLM_PROXY_OTEL_HEADERS: the value of %q is not valid", k)
		}
		out[k] = val
	}
	return out, nil
}

// shutdown exports what is buffered; called when the worker stops.
func (t *tracing) shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	if err := t.exp.Shutdown(ctx); err != nil {
		return fmt.Errorf("worker: tracing shutdown: %w", err)
	}
	return nil
}

// sampleRoot decides whether a trace that starts here is recorded.
func (t *tracing) sampleRoot(id otlp.TraceID) bool {
	if t.sampleAll {
		return true
	}
	var low uint64
	for _, b := range id[8:] {
		low = low<<8 | uint64(b)
	}
	return low>>1 < t.sampleBound
}

// startRequest opens the request span as a child of the client's traceparent, if
// any. Sampling is parent based: a client's sampled flag is honoured either way,
// and only a trace that starts here is sampled by ratio.
func (t *tracing) startRequest(ctx *fasthttp.RequestCtx, x *exchange, endpoint string) {
	if t == nil {
		return
	}
	sc := &x.spanCtx
	parentID, remote := otlp.SpanID{}, false
	if len(x.traceparent) > 0 { // keepTraceparent kept only a well-formed one
		sc.traceID, parentID, sc.flags = parseTraceparent(x.traceparent)
		sc.flags &= flagSampled
		sc.state = cleanTracestate(ctx.Request.Header.Peek(tracestateHeader))
		remote = true
	} else {
		sc.traceID, sc.flags, sc.state = newTraceID(), 0, ""
		if t.sampleRoot(sc.traceID) {
			sc.flags = flagSampled
		}
	}
	sc.spanID = newSpanID()
	sc.valid = true
	if sc.flags&flagSampled == 0 {
		return
	}
	s := t.exp.NewSpan()
	s.TraceID, s.SpanID, s.ParentID, s.ParentRemote = sc.traceID, sc.spanID, parentID, remote
	s.TraceFlags, s.TraceState = sc.flags, sc.state
	s.Name, s.Kind, s.Start = "llm.request "+endpoint, otlp.KindServer, x.started
	s.SetAttrs(
		otlp.String("llm_proxy.request_id", x.rec.RequestID),
		otlp.String("llm_proxy.endpoint", endpoint),
		otlp.Int("llm_proxy.key_id", x.rec.KeyID),
	)
	x.span = s
}

// endRequest closes the request span with the record's outcome.
func (t *tracing) endRequest(x *exchange) {
	if !x.spanCtx.valid {
		return
	}
	s := x.span
	x.span, x.spanCtx = nil, traceContext{} // x goes back to its pool
	if s == nil {
		return
	}
	r := &x.rec
	s.SetAttrs(
		otlp.String("gen_ai.request.model", r.Model),
		otlp.String("gen_ai.response.model", r.UpstreamModel),
		otlp.String("llm_proxy.upstream", r.Upstream),
		otlp.Int("http.response.status_code", int64(r.Status)),
		otlp.Int("gen_ai.usage.input_tokens", int64(r.PromptTokens)),
		otlp.Int("gen_ai.usage.output_tokens", int64(r.CompletionTokens)),
		otlp.String("llm_proxy.cache", r.Cache),
		otlp.Bool("llm_proxy.stream", r.Stream),
		otlp.Int("llm_proxy.attempts", int64(r.AttemptCount)),
		otlp.Int("llm_proxy.cost_micro_usd", r.CostMicroUSD),
	)
	if r.ErrorClass != "" {
		s.SetAttrs(otlp.String("error.type", r.ErrorClass))
	}
	if r.Status >= 500 || r.Status == 0 {
		s.SetError(r.ErrorClass)
	}
	s.Finish(time.Now())
}

// startAttempt opens the span of one upstream call and puts its traceparent on req.
// With tracing off the client's own traceparent, if it sent one, is passed on, so a
// trace that started in the client still reaches the provider. An attempt of a
// request that is not sampled gets a span id, so the upstream can continue the
// trace, but no span.
func (t *tracing) startAttempt(x *exchange, a *attempt, req *fasthttp.Request) {
	if t == nil || !x.spanCtx.valid {
		if len(x.traceparent) > 0 {
			req.Header.SetBytesV(traceparentHeader, x.traceparent)
		}
		return
	}
	sc := &x.spanCtx
	id := newSpanID()
	if sc.flags&flagSampled != 0 {
		s := t.exp.NewSpan()
		s.TraceID, s.SpanID, s.ParentID = sc.traceID, id, sc.spanID
		s.TraceFlags, s.TraceState = sc.flags, sc.state
		s.Name, s.Kind, s.Start = "llm.attempt "+a.dep.Upstream.Name, otlp.KindClient, time.Now()
		s.SetAttrs(
			otlp.String("llm_proxy.upstream", a.dep.Upstream.Name),
			otlp.String("llm_proxy.provider", a.dep.Upstream.Provider),
			otlp.String("gen_ai.request.model", a.model),
			otlp.Int("llm_proxy.attempt", int64(x.rec.AttemptCount+1)),
		)
		a.span = s
	}
	var tp [55]byte
	req.Header.SetBytesV(traceparentHeader, appendTraceparent(tp[:0], sc.traceID, id, sc.flags))
	if sc.state != "" {
		req.Header.Set(tracestateHeader, sc.state)
	}
}

// endAttempt closes an attempt's span with its outcome; the attempt's close calls it,
// so a streamed answer's span lasts until the stream ends.
func endAttempt(a *attempt) {
	s := a.span
	if s == nil {
		return
	}
	a.span = nil
	s.SetAttrs(otlp.Int("http.response.status_code", int64(a.outcome.Status)))
	if e := attemptError(a); e != "" {
		s.SetAttrs(otlp.String("error.type", e))
		s.SetError(e)
	} else if a.clientErr != "" {
		s.SetError("unsupported_request")
	}
	s.Finish(time.Now())
}

// newTraceID and newSpanID draw random, non-zero ids. The runtime's generator is
// seeded per process and needs no lock; ids only have to be unique, not secret.
func newTraceID() otlp.TraceID {
	var id otlp.TraceID
	for id.IsZero() {
		putUint64(id[:8], rand.Uint64())
		putUint64(id[8:], rand.Uint64())
	}
	return id
}

func newSpanID() otlp.SpanID {
	var id otlp.SpanID
	for id.IsZero() {
		putUint64(id[:], rand.Uint64())
	}
	return id
}

func putUint64(b []byte, v uint64) {
	for i := range b {
		b[i] = byte(v >> (56 - 8*i))
	}
}

// appendTraceparent appends the version-00 traceparent of a span.
func appendTraceparent(b []byte, tid otlp.TraceID, sid otlp.SpanID, flags byte) []byte {
	b = append(b, "00-"...)
	for _, c := range tid {
		b = append(b, hexDigits[c>>4], hexDigits[c&0xf])
	}
	b = append(b, '-')
	for _, c := range sid {
		b = append(b, hexDigits[c>>4], hexDigits[c&0xf])
	}
	return append(b, '-', hexDigits[flags>>4], hexDigits[flags&0xf])
}

// parseTraceparent reads the ids and flags of a traceparent validTraceparent accepted.
func parseTraceparent(v []byte) (tid otlp.TraceID, sid otlp.SpanID, flags byte) {
	unhex := func(c byte) byte {
		if c >= 'a' {
			return c - 'a' + 10
		}
		return c - '0'
	}
	for i := range tid {
		tid[i] = unhex(v[3+2*i])<<4 | unhex(v[4+2*i])
	}
	for i := range sid {
		sid[i] = unhex(v[36+2*i])<<4 | unhex(v[37+2*i])
	}
	return tid, sid, unhex(v[53])<<4 | unhex(v[54])
}

// maxTracestateMembers is the W3C limit on tracestate list members.
const maxTracestateMembers = 32

// cleanTracestate returns the client's tracestate with optional white space and
// empty members removed, or "" when it is malformed: a bad tracestate is dropped,
// never allowed to affect the traceparent (W3C Trace Context, section 3.3).
func cleanTracestate(v []byte) string {
	if len(v) == 0 || len(v) > 8192 {
		return ""
	}
	out := make([]byte, 0, len(v))
	var keys [maxTracestateMembers][]byte
	n := 0
	for len(v) > 0 {
		var m []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			m, v = v[:i], v[i+1:]
		} else {
			m, v = v, nil
		}
		m = bytes.Trim(m, " \t")
		if len(m) == 0 {
			continue
		}
		eq := bytes.IndexByte(m, '=')
		if eq <= 0 || n == maxTracestateMembers || !validTracestateKey(m[:eq]) || !validTracestateValue(m[eq+1:]) {
			return ""
		}
		for _, k := range keys[:n] {
			if string(k) == string(m[:eq]) {
				return "" // a key may appear once
			}
		}
		keys[n] = m[:eq]
		n++
		if len(out) > 0 {
			out = append(out, ',')
		}
		out = append(out, m...)
	}
	return string(out)
}

// validTracestateKey: lcalpha or digit first, then lcalpha / digit / _ - * / and
// at most one @ between a tenant and a system id; 256 characters at most.
func validTracestateKey(k []byte) bool {
	if len(k) == 0 || len(k) > 256 || !(k[0] >= 'a' && k[0] <= 'z' || k[0] >= '0' && k[0] <= '9') {
		return false
	}
	at := false
	for i, c := range k {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_', c == '-', c == '*', c == '/':
		case c == '@' && !at && i > 0 && i < len(k)-1:
			at = true
		default:
			return false
		}
	}
	return true
}

// validTracestateValue: 1 to 256 printable ASCII characters other than ',' and
// '=', not ending in a space.
func validTracestateValue(v []byte) bool {
	if len(v) == 0 || len(v) > 256 || v[len(v)-1] == ' ' {
		return false
	}
	for _, c := range v {
		if c < 0x20 || c > 0x7e || c == ',' || c == '=' {
			return false
		}
	}
	return true
}

// keepTraceparent copies the client's traceparent into x (reusing x's buffer) when it
// is well formed, so it can be passed on with tracing off.
func keepTraceparent(ctx *fasthttp.RequestCtx, x *exchange) {
	v := ctx.Request.Header.Peek(traceparentHeader)
	x.traceparent = x.traceparent[:0]
	if validTraceparent(v) {
		x.traceparent = append(x.traceparent, v...)
	}
}

// validTraceparent checks the version-00 shape: 2-32-16-2 lower-case hex fields, with
// neither id all zeros (W3C Trace Context, section 3.2).
func validTraceparent(v []byte) bool {
	if len(v) != 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return false
	}
	hex := func(b []byte) (nonZero bool, ok bool) {
		for _, c := range b {
			switch {
			case c >= '0' && c <= '9':
				nonZero = nonZero || c != '0'
			case c >= 'a' && c <= 'f':
				nonZero = true
			default:
				return false, false
			}
		}
		return nonZero, true
	}
	if _, ok := hex(v[0:2]); !ok || string(v[0:2]) == "ff" {
		return false
	}
	if nz, ok := hex(v[3:35]); !ok || !nz {
		return false
	}
	if nz, ok := hex(v[36:52]); !ok || !nz {
		return false
	}
	_, ok := hex(v[53:55])
	return ok
}
