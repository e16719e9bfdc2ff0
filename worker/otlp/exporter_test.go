package otlp

import (
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// receiver is an OTLP/HTTP collector on 127.0.0.1: it insists on protobuf at
// /v1/traces, accepts gzip, decodes with the official types, and answers with
// status instead when it is set.
type receiver struct {
	srv     *httptest.Server
	status  atomic.Int32
	block   chan struct{} // when set, exports wait for it to close
	mu      sync.Mutex
	exports []*coltrace.ExportTraceServiceRequest
	gzipped []bool
	headers []http.Header
	calls   atomic.Int32
}

func startReceiver(t *testing.T, block chan struct{}) *receiver {
	t.Helper()
	r := &receiver{block: block}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.calls.Add(1)
		if r.block != nil {
			<-r.block
		}
		if st := r.status.Load(); st != 0 {
			http.Error(w, "refused", int(st))
			return
		}
		if req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "want protobuf on /v1/traces", http.StatusBadRequest)
			return
		}
		var body io.Reader = req.Body
		gz := req.Header.Get("Content-Encoding") == "gzip"
		if gz {
			zr, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		b, err := io.ReadAll(body)
		var msg coltrace.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(b, &msg)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.exports = append(r.exports, &msg)
		r.gzipped = append(r.gzipped, gz)
		r.headers = append(r.headers, req.Header.Clone())
		r.mu.Unlock()
		out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// batches returns the span names of each export received.
func (r *receiver) batches() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out [][]string
	for _, e := range r.exports {
		var names []string
		for _, rs := range e.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					names = append(names, s.GetName())
				}
			}
		}
		out = append(out, names)
	}
	return out
}

func (r *receiver) url() string { return r.srv.URL + "/v1/traces" }

// finish sends n spans named name-0, name-1, ... through e.
func finish(e *Exporter, name string, n int) {
	for i := range n {
		s := e.NewSpan()
		s.TraceID, s.SpanID = TraceID{1}, SpanID{byte(i + 1)}
		s.Name = name + "-" + string(rune('a'+i%26))
		s.Start = time.Now()
		s.SetAttrs(String("k", "v"), Int("i", int64(i)), Bool("b", i%2 == 0))
		s.Finish(time.Now())
	}
}

func count(batches [][]string) int {
	n := 0
	for _, b := range batches {
		n += len(b)
	}
	return n
}

// TestExporterBatchTimeout: spans fewer than a batch go out once the first of them
// has waited the batch timeout, without a shutdown.
func TestExporterBatchTimeout(t *testing.T) {
	for _, gz := range []bool{false, true} {
		r := startReceiver(t, nil)
		e := NewExporter(ExporterOptions{URL: r.url(), BatchTimeout: 30 * time.Millisecond, Gzip: gz},
			Source{Resource: []Attr{String("service.name", "svc")}, Scope: "sc"})
		finish(e, "s", 3)
		deadline := time.Now().Add(5 * time.Second)
		for count(r.batches()) < 3 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if got := r.batches(); len(got) != 1 || len(got[0]) != 3 {
			t.Errorf("gzip %v: received %v, want one batch of 3 spans", gz, got)
		}
		r.mu.Lock()
		if r.gzipped[0] != gz {
			t.Errorf("gzip %v: request compressed %v", gz, r.gzipped[0])
		}
		res := r.exports[0].GetResourceSpans()[0]
		r.mu.Unlock()
		if got := res.GetResource().GetAttributes(); len(got) != 1 || got[0].GetKey() != "service.name" || got[0].GetValue().GetStringValue() != "svc" {
			t.Errorf("resource %v", got)
		}
		if got := res.GetScopeSpans()[0].GetScope().GetName(); got != "sc" {
			t.Errorf("scope %q, want sc", got)
		}
		if err := e.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := e.Stats(); got != (Stats{Exported: 3}) {
			t.Errorf("stats %+v, want 3 exported", got)
		}
	}
}

// TestExporterMaxBatch: a full batch goes out at once, and the rest are split into
// batches no larger than MaxBatch; Shutdown sends the remainder.
func TestExporterMaxBatch(t *testing.T) {
	r := startReceiver(t, nil)
	e := NewExporter(ExporterOptions{URL: r.url(), BatchTimeout: time.Hour, MaxBatch: 4}, Source{})
	finish(e, "s", 10)
	deadline := time.Now().Add(5 * time.Second)
	for count(r.batches()) < 8 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := r.batches(); len(got) != 2 || len(got[0]) != 4 || len(got[1]) != 4 {
		t.Fatalf("before shutdown received %v, want two full batches of 4", got)
	}
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := r.batches(); len(got) != 3 || len(got[2]) != 2 {
		t.Errorf("after shutdown received %v, want the last 2 spans in a third batch", got)
	}
}

// TestExporterQueueFull: while the collector hangs, spans beyond the queue are
// dropped and counted, and finishing a span never waits.
func TestExporterQueueFull(t *testing.T) {
	block := make(chan struct{})
	r := startReceiver(t, block)
	e := NewExporter(ExporterOptions{URL: r.url(), BatchTimeout: time.Millisecond, MaxBatch: 1, QueueSize: 2}, Source{})
	finish(e, "first", 1) // taken by the export goroutine, which then hangs in the POST
	deadline := time.Now().Add(5 * time.Second)
	for r.calls.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	began := time.Now()
	finish(e, "more", 10)
	if d := time.Since(began); d > time.Second {
		t.Errorf("finishing 10 spans took %v while the collector hung", d)
	}
	if got := e.Stats().Dropped; got != 8 {
		t.Errorf("dropped %d, want 8 (10 finished, queue of 2)", got)
	}
	close(block)
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := e.Stats(), (Stats{Exported: 3, Dropped: 8}); got != want {
		t.Errorf("stats %+v, want %+v", got, want)
	}
	if got := count(r.batches()); got != 3 {
		t.Errorf("collector received %d spans, want 3", got)
	}
}

// TestExporterFailures: a collector's refusal is counted, reported, returned by
// Shutdown; a permanent error is not retried, a 503 is, up to three tries.
func TestExporterFailures(t *testing.T) {
	tests := []struct {
		status    int
		wantCalls int32
	}{
		{http.StatusBadRequest, 1},
		{http.StatusServiceUnavailable, maxTries},
	}
	for _, tt := range tests {
		r := startReceiver(t, nil)
		r.status.Store(int32(tt.status))
		var reported []error
		e := NewExporter(ExporterOptions{URL: r.url(), BatchTimeout: time.Hour, OnError: func(err error) { reported = append(reported, err) }}, Source{})
		e.backoff = time.Millisecond
		finish(e, "s", 2)
		err := e.Shutdown(context.Background())
		if err == nil {
			t.Errorf("status %d: Shutdown returned no error", tt.status)
		}
		if len(reported) != 1 || reported[0] != err {
			t.Errorf("status %d: reported %v, want the one failure %v", tt.status, reported, err)
		}
		if got := r.calls.Load(); got != tt.wantCalls {
			t.Errorf("status %d: %d POSTs, want %d", tt.status, got, tt.wantCalls)
		}
		if got := e.Stats(); got != (Stats{Failed: 2}) {
			t.Errorf("status %d: stats %+v, want 2 failed", tt.status, got)
		}
	}
}

// TestExporterShutdownDeadline: when the collector hangs past Shutdown's deadline,
// Shutdown returns the deadline's error instead of waiting.
func TestExporterShutdownDeadline(t *testing.T) {
	block := make(chan struct{})
	r := startReceiver(t, block)
	defer close(block)
	e := NewExporter(ExporterOptions{URL: r.url(), BatchTimeout: time.Hour}, Source{})
	finish(e, "s", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	began := time.Now()
	err := e.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want the deadline", err)
	}
	if d := time.Since(began); d > 3*time.Second {
		t.Errorf("Shutdown took %v past a 100ms deadline", d)
	}
}

// TestExporterAfterShutdown: spans finished after Shutdown are dropped, and a
// second Shutdown is harmless; an exporter that never saw a span shuts down at once.
func TestExporterAfterShutdown(t *testing.T) {
	r := startReceiver(t, nil)
	e := NewExporter(ExporterOptions{URL: r.url()}, Source{})
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	finish(e, "late", 2)
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.Stats(); got != (Stats{Dropped: 2}) {
		t.Errorf("stats %+v, want 2 dropped", got)
	}
	if got := r.calls.Load(); got != 0 {
		t.Errorf("%d POSTs, want none", got)
	}
}

// TestSpanReuse: a span returned to the pool comes back empty, attributes and all.
func TestSpanReuse(t *testing.T) {
	e := NewExporter(ExporterOptions{URL: "http://127.0.0.1:1/v1/traces"}, Source{})
	s := e.NewSpan()
	s.Name, s.TraceState = "x", "a=b"
	s.SetAttrs(String("k", "v"))
	s.SetError("boom")
	e.release(s)
	for range 10 { // the pool may hand out a fresh span instead
		s := e.NewSpan()
		if s.Name != "" || s.TraceState != "" || len(s.Attrs) != 0 || s.Status != StatusUnset || s.StatusMessage != "" {
			t.Fatalf("reused span not reset: %+v", s)
		}
	}
}

func BenchmarkFinish(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) }))
	defer srv.Close()
	e := NewExporter(ExporterOptions{URL: srv.URL + "/v1/traces", BatchTimeout: 10 * time.Millisecond}, Source{})
	defer e.Shutdown(context.Background())
	b.ReportAllocs()
	for b.Loop() {
		s := e.NewSpan()
		s.TraceID, s.SpanID, s.Name = TraceID{1}, SpanID{1}, "llm.request chat"
		s.SetAttrs(String("llm_proxy.request_id", "req-1"), Int("http.response.status_code", 200))
		s.Finish(time.Now())
	}
}

// TestExporterHeaders: configured headers reach the collector with every export;
// they cannot replace the content type.
func TestExporterHeaders(t *testing.T) {
	r := startReceiver(t, nil)
	e := NewExporter(ExporterOptions{URL: r.url(), BatchTimeout: 10 * time.Millisecond,
		Headers: map[string]string{"X-Api-Key": "secret 1", "Content-Type": "text/plain"}}, Source{Scope: "s"})
	finish(e, "h", 2)
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.headers) == 0 {
		t.Fatal("no export arrived")
	}
	for _, h := range r.headers {
		if got := h.Get("X-Api-Key"); got != "secret 1" {
			t.Errorf("X-Api-Key = %q, want %q", got, "secret 1")
		}
		if got := h.Get("Content-Type"); got != "application/x-protobuf" {
			t.Errorf("Content-Type = %q", got)
		}
	}
}
