package worker

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// TraceConfig turns on OpenTelemetry export. Embedded in Config.
type TraceConfig struct {
	OTelEndpoint     string        `envconfig:"OTEL_ENDPOINT" default:"" desc:"OTLP/HTTP collector URL, e.g. http://127.0.0.1:4318 (/v1/traces is added when the URL has no path); empty: tracing off"`
	OTelServiceName  string        `envconfig:"OTEL_SERVICE_NAME" default:"llm-proxy" desc:"service.name of the exported spans"`
	OTelSampleRatio  float64       `envconfig:"OTEL_SAMPLE_RATIO" default:"1" desc:"share of requests traced (0 to 1) when the client sent no sampled traceparent"`
	OTelBatchTimeout time.Duration `envconfig:"OTEL_BATCH_TIMEOUT" default:"5s" desc:"longest a finished span waits before it is exported"`
}

// traceparentHeader is the W3C Trace Context header (https://www.w3.org/TR/trace-context/).
const traceparentHeader = "traceparent"

// tracing exports one span per proxied request and one child span per upstream
// attempt. A nil *tracing is "off": every method is a no-op, so the request path
// pays one nil check and no allocation.
type tracing struct {
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
	prop     propagation.TraceContext
}

// newTracing builds the exporter when cfg has an endpoint; nil (off) otherwise.
func newTracing(cfg TraceConfig, version string, slot int) (*tracing, error) {
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
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(u.String()))
	if err != nil {
		return nil, fmt.Errorf("otlp exporter: %w", err)
	}
	return newTracingWith(sdktrace.NewBatchSpanProcessor(exp, sdktrace.WithBatchTimeout(cfg.OTelBatchTimeout)),
		cfg, version, slot), nil
}

// newTracingWith builds tracing around a span processor (tests pass an in-memory one).
func newTracingWith(sp sdktrace.SpanProcessor, cfg TraceConfig, version string, slot int) *tracing {
	res := resource.NewSchemaless(
		attribute.String("service.name", cfg.OTelServiceName),
		attribute.String("service.version", version),
		attribute.Int("llm_proxy.worker_slot", slot),
	)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSpanProcessor(sp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.OTelSampleRatio))),
	)
	return &tracing{provider: tp, tracer: tp.Tracer("github.com/llm-proxy/llm-proxy/worker")}
}

// shutdown exports what is buffered; called when the worker stops.
func (t *tracing) shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	if err := t.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("worker: tracing shutdown: %w", err)
	}
	return nil
}

// headerCarrier reads the client's trace context from fasthttp request headers.
type headerCarrier struct{ h *fasthttp.RequestHeader }

func (c headerCarrier) Get(key string) string { return string(c.h.Peek(key)) }
func (c headerCarrier) Set(key, value string) { c.h.Set(key, value) }
func (c headerCarrier) Keys() []string        { return []string{traceparentHeader, "tracestate"} }

// startRequest opens the request span as a child of the client's traceparent, if any.
func (t *tracing) startRequest(ctx *fasthttp.RequestCtx, x *exchange, endpoint string) {
	if t == nil {
		return
	}
	parent := t.prop.Extract(context.Background(), headerCarrier{&ctx.Request.Header})
	x.spanCtx, x.span = t.tracer.Start(parent, "llm.request "+endpoint,
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithTimestamp(x.started),
		trace.WithAttributes(
			attribute.String("llm_proxy.request_id", x.rec.RequestID),
			attribute.String("llm_proxy.endpoint", endpoint),
			attribute.Int64("llm_proxy.key_id", x.rec.KeyID),
		))
}

// endRequest closes the request span with the record's outcome.
func (t *tracing) endRequest(x *exchange) {
	if x.span == nil {
		return
	}
	r := &x.rec
	x.span.SetAttributes(
		attribute.String("gen_ai.request.model", r.Model),
		attribute.String("gen_ai.response.model", r.UpstreamModel),
		attribute.String("llm_proxy.upstream", r.Upstream),
		attribute.Int("http.response.status_code", r.Status),
		attribute.Int("gen_ai.usage.input_tokens", r.PromptTokens),
		attribute.Int("gen_ai.usage.output_tokens", r.CompletionTokens),
		attribute.String("llm_proxy.cache", r.Cache),
		attribute.Bool("llm_proxy.stream", r.Stream),
		attribute.Int("llm_proxy.attempts", r.AttemptCount),
		attribute.Int64("llm_proxy.cost_micro_usd", r.CostMicroUSD),
	)
	if r.ErrorClass != "" {
		x.span.SetAttributes(attribute.String("error.type", r.ErrorClass))
	}
	if r.Status >= 500 || r.Status == 0 {
		x.span.SetStatus(codes.Error, r.ErrorClass)
	}
	x.span.End()
	x.span, x.spanCtx = nil, nil
}

// startAttempt opens the span of one upstream call and puts its traceparent on req.
// With tracing off the client's own traceparent, if it sent one, is passed on, so a
// trace that started in the client still reaches the provider.
func (t *tracing) startAttempt(x *exchange, a *attempt, req *fasthttp.Request) {
	if t == nil || x.span == nil {
		if len(x.traceparent) > 0 {
			req.Header.SetBytesV(traceparentHeader, x.traceparent)
		}
		return
	}
	_, a.span = t.tracer.Start(x.spanCtx, "llm.attempt "+a.dep.Upstream.Name,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("llm_proxy.upstream", a.dep.Upstream.Name),
			attribute.String("llm_proxy.provider", a.dep.Upstream.Provider),
			attribute.String("gen_ai.request.model", a.model),
			attribute.Int("llm_proxy.attempt", x.rec.AttemptCount+1),
		))
	sc := a.span.SpanContext()
	if !sc.IsValid() {
		if len(x.traceparent) > 0 {
			req.Header.SetBytesV(traceparentHeader, x.traceparent)
		}
		return
	}
	req.Header.Set(traceparentHeader, formatTraceparent(sc))
	if ts := sc.TraceState().String(); ts != "" {
		req.Header.Set("tracestate", ts)
	}
}

func formatTraceparent(sc trace.SpanContext) string {
	tid, sid := sc.TraceID(), sc.SpanID()
	return "00-" + tid.String() + "-" + sid.String() + "-" + sc.TraceFlags().String()
}

// endAttempt closes an attempt's span with its outcome; the attempt's close calls it,
// so a streamed answer's span lasts until the stream ends.
func endAttempt(a *attempt) {
	if a.span == nil {
		return
	}
	a.span.SetAttributes(attribute.Int("http.response.status_code", a.outcome.Status))
	if e := attemptError(a); e != "" {
		a.span.SetAttributes(attribute.String("error.type", e))
		a.span.SetStatus(codes.Error, e)
	} else if a.clientErr != "" {
		a.span.SetStatus(codes.Error, "unsupported_request")
	}
	a.span.End()
	a.span = nil
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
