package e2e

import (
	"compress/gzip"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
	"zombiezen.com/go/sqlite"
)

// otlpReceiver is an OTLP/HTTP trace collector on 127.0.0.1 that keeps every span.
type otlpReceiver struct {
	srv   *httptest.Server
	mu    sync.Mutex
	spans []*tracepb.Span
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	r := &otlpReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "want protobuf on /v1/traces", http.StatusBadRequest)
			return
		}
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
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
		for _, rs := range msg.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				r.spans = append(r.spans, ss.GetSpans()...)
			}
		}
		r.mu.Unlock()
		out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// waitSpans returns the spans of traceID once want of them arrived (or what is there
// after recordTimeout).
func (r *otlpReceiver) waitSpans(traceID []byte, want int) []*tracepb.Span {
	deadline := time.Now().Add(recordTimeout)
	for {
		r.mu.Lock()
		var got []*tracepb.Span
		for _, s := range r.spans {
			if string(s.GetTraceId()) == string(traceID) {
				got = append(got, s)
			}
		}
		r.mu.Unlock()
		if len(got) >= want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func spanAttr(s *tracepb.Span, key string) *commonpb.AnyValue {
	for _, kv := range s.GetAttributes() {
		if kv.GetKey() == key {
			return kv.GetValue()
		}
	}
	return nil
}

// TestTracingAndBodyLog: with LLM_PROXY_OTEL_ENDPOINT set, a request that the first
// upstream fails (503) and the second answers is exported over OTLP/HTTP as one
// request span, child of the client's traceparent, with two attempt spans under it;
// each upstream received a traceparent of the same trace naming its attempt span.
// With LLM_PROXY_LOG_BODIES on, the request's bodies reach request_bodies with the
// secret in the prompt redacted, and a key that opted out has none.
func TestTracingAndBodyLog(t *testing.T) {
	otlp := startOTLPReceiver(t)
	mock := startMock(t, "--reply", reply(4))
	g := newGateway(t, map[string]string{
		"LLM_PROXY_OTEL_ENDPOINT":      otlp.srv.URL,
		"LLM_PROXY_OTEL_BATCH_TIMEOUT": "100ms",
		"LLM_PROXY_LOG_BODIES":         "true",
		"LLM_PROXY_RETRY_BUDGET_MIN":   "100",
	})
	g.cli(t, "upstreams", "add", "--name", "mock-a", "--base-url", mock.baseURL())
	g.cli(t, "upstreams", "add", "--name", "mock-b", "--base-url", mock.baseURL())
	_, key := g.createKey(t, "traced")
	quietID, quietKey := g.createKey(t, "quiet")
	g.exec(t, "UPDATE api_keys SET log_bodies = 0 WHERE id = :id", map[string]any{":id": quietID})
	g.start(t)

	const clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	const clientSpan = "00f067aa0ba902b7"
	secret := "sk-proj-" + strings.Repeat("A1b2", 8)
	prompt := "tell me about " + secret + " " + marker(t)
	model := "mock-1@fail_first=1"
	req, err := http.NewRequest(http.MethodPost, g.baseURL()+"/chat/completions",
		strings.NewReader(limitChatBody(model, prompt, 16)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-"+clientTrace+"-"+clientSpan+"-01")
	resp, err := g.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-LLM-Proxy-Attempts") != "2" {
		t.Fatalf("status %d, attempts %q, want 200 after 2 attempts: %s", resp.StatusCode, resp.Header.Get("X-LLM-Proxy-Attempts"), body)
	}
	requestID := resp.Header.Get("X-Request-Id")

	// Upstream side: both attempts carried a traceparent of the client's trace.
	var upstreamParents []string
	for _, r := range mustRequests(t, mock) {
		if !strings.Contains(r.Body, marker2(prompt)) {
			continue
		}
		tp := r.Headers["Traceparent"]
		if tp == "" {
			tp = r.Headers["traceparent"]
		}
		parts := strings.Split(tp, "-")
		if len(parts) != 4 || parts[1] != clientTrace || parts[2] == clientSpan {
			t.Errorf("upstream traceparent %q: want trace %s with the attempt's own span id", tp, clientTrace)
			continue
		}
		upstreamParents = append(upstreamParents, parts[2])
	}
	if len(upstreamParents) != 2 {
		t.Fatalf("upstream received %d attempts with a traceparent, want 2", len(upstreamParents))
	}

	// Collector side: one request span and two attempt spans.
	tid, _ := hex.DecodeString(clientTrace)
	spans := otlp.waitSpans(tid, 3)
	var reqSpan *tracepb.Span
	var attempts []*tracepb.Span
	for _, s := range spans {
		switch {
		case strings.HasPrefix(s.GetName(), "llm.request"):
			reqSpan = s
		case strings.HasPrefix(s.GetName(), "llm.attempt"):
			attempts = append(attempts, s)
		}
	}
	if reqSpan == nil || len(attempts) != 2 {
		t.Fatalf("spans of the trace: %d (request span %v, %d attempts), want 1 request and 2 attempts", len(spans), reqSpan != nil, len(attempts))
	}
	if got := hex.EncodeToString(reqSpan.GetParentSpanId()); got != clientSpan {
		t.Errorf("request span parent = %s, want the client's span %s", got, clientSpan)
	}
	for name, want := range map[string]any{
		"gen_ai.request.model":       model,
		"http.response.status_code":  int64(200),
		"llm_proxy.attempts":         int64(2),
		"llm_proxy.request_id":       requestID,
		"gen_ai.usage.output_tokens": int64(4),
		"gen_ai.usage.input_tokens":  nil, // present, any value
		"llm_proxy.upstream":         nil,
		"llm_proxy.cache":            nil,
	} {
		v := spanAttr(reqSpan, name)
		switch w := want.(type) {
		case nil:
			if v == nil {
				t.Errorf("request span has no attribute %s", name)
			}
		case string:
			if v.GetStringValue() != w {
				t.Errorf("request span %s = %v, want %q", name, v, w)
			}
		case int64:
			if v.GetIntValue() != w {
				t.Errorf("request span %s = %v, want %d", name, v, w)
			}
		}
	}
	statuses := map[int64]bool{}
	for _, a := range attempts {
		if string(a.GetParentSpanId()) != string(reqSpan.GetSpanId()) {
			t.Errorf("attempt span %s is not a child of the request span", a.GetName())
		}
		statuses[spanAttr(a, "http.response.status_code").GetIntValue()] = true
		found := false
		for _, p := range upstreamParents {
			found = found || p == hex.EncodeToString(a.GetSpanId())
		}
		if !found {
			t.Errorf("attempt span %x is not the parent named in any upstream traceparent %v", a.GetSpanId(), upstreamParents)
		}
	}
	if !statuses[503] || !statuses[200] {
		t.Errorf("attempt statuses %v, want a 503 and a 200", statuses)
	}

	// Bodies: logged and redacted for the first key, absent for the opted-out one.
	quietResp, err := postChat(ctxTimeout(t, requestTimeout), g.client, g, quietKey, limitChatBody("mock-1", "quiet "+marker(t), 4))
	if err != nil || quietResp.status != http.StatusOK {
		t.Fatalf("quiet key: %v status %d", err, quietResp.status)
	}
	var reqBody, respBody string
	deadline := time.Now().Add(recordTimeout)
	for reqBody == "" && time.Now().Before(deadline) {
		g.query(t, "SELECT request, response FROM request_bodies WHERE request_id = :id", map[string]any{":id": requestID},
			func(s *sqlite.Stmt) { reqBody, respBody = s.ColumnText(0), s.ColumnText(1) })
		time.Sleep(50 * time.Millisecond)
	}
	if reqBody == "" {
		t.Fatalf("no request_bodies row for %s", requestID)
	}
	if strings.Contains(reqBody, secret) || !strings.Contains(reqBody, "sk-[REDACTED]") || !strings.Contains(reqBody, marker2(prompt)) {
		t.Errorf("logged request body %q: want the prompt with the key redacted", reqBody)
	}
	if !strings.Contains(respBody, reply(4)) {
		t.Errorf("logged response body %q does not hold the answer %q", respBody, reply(4))
	}
	// The quiet key's request was recorded after the first one; once its request_logs
	// row is in, its bodies would be too.
	g.waitLogRow(t, quietResp.header.Get("X-Request-Id"))
	time.Sleep(1500 * time.Millisecond) // one more body ingest pass
	var quietRows int
	g.query(t, "SELECT COUNT(*) FROM request_bodies WHERE request_id = :id", map[string]any{":id": quietResp.header.Get("X-Request-Id")},
		func(s *sqlite.Stmt) { quietRows = s.ColumnInt(0) })
	if quietRows != 0 {
		t.Errorf("the opted-out key's bodies were logged (%d rows)", quietRows)
	}
}

// marker2 is the part of a prompt after the secret: the test's unique marker.
func marker2(prompt string) string { return prompt[strings.LastIndexByte(prompt, ' ')+1:] }

func mustRequests(t *testing.T, m *mockServer) []mockRequest {
	t.Helper()
	reqs, err := m.requests(ctxTimeout(t, requestTimeout))
	if err != nil {
		t.Fatal(err)
	}
	return reqs
}
