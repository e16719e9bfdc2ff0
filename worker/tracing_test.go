package worker

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/llm-proxy/llm-proxy/routing"
	"github.com/llm-proxy/llm-proxy/store"
)

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

// TestTracingSpans drives the span hooks the request path calls, against the SDK's
// in-memory recorder: the request span continues the client's trace, each attempt is
// its child, the upstream request carries the attempt's traceparent, and the request
// span ends with the record's outcome.
func TestTracingSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tr := newTracingWith(rec, TraceConfig{OTelServiceName: "test", OTelSampleRatio: 1}, "v", 1)
	defer tr.shutdown(context.Background())

	var ctx fasthttp.RequestCtx
	ctx.Request.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	x := &exchange{started: time.Now()}
	x.rec.RequestID = "req-1"
	keepTraceparent(&ctx, x)
	tr.startRequest(&ctx, x, "chat")

	dep := &routing.Deployment{Upstream: &routing.Upstream{Name: "up-a", Provider: "openai"}}
	var upstreamTPs []string
	for _, status := range []int{503, 200} {
		a := &attempt{dep: dep, model: "m", cancel: func() {}}
		req := fasthttp.AcquireRequest()
		tr.startAttempt(x, a, req)
		upstreamTPs = append(upstreamTPs, string(req.Header.Peek("traceparent")))
		fasthttp.ReleaseRequest(req)
		a.outcome.Status = status
		x.rec.AttemptCount++
		endAttempt(a)
	}
	x.rec.Model, x.rec.Upstream, x.rec.Status = "gpt-4o", "up-a", 200
	x.rec.PromptTokens, x.rec.CompletionTokens, x.rec.Cache = 11, 7, "miss"
	tr.endRequest(x)
	if x.span != nil {
		t.Error("endRequest left the span on the exchange")
	}

	spans := rec.Ended()
	if len(spans) != 3 {
		t.Fatalf("%d spans ended, want 3 (2 attempts, 1 request)", len(spans))
	}
	root := spans[2]
	if got := root.SpanContext().TraceID().String(); got != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("request span trace id %s, want the client's", got)
	}
	if got := root.Parent().SpanID().String(); got != "00f067aa0ba902b7" {
		t.Errorf("request span parent %s, want the client's span", got)
	}
	attrs := map[attribute.Key]attribute.Value{}
	for _, kv := range root.Attributes() {
		attrs[kv.Key] = kv.Value
	}
	for k, want := range map[attribute.Key]string{
		"gen_ai.request.model":       "gpt-4o",
		"llm_proxy.upstream":         "up-a",
		"http.response.status_code":  "200",
		"gen_ai.usage.input_tokens":  "11",
		"gen_ai.usage.output_tokens": "7",
		"llm_proxy.cache":            "miss",
		"llm_proxy.attempts":         "2",
	} {
		if got := attrs[k].String(); got != want {
			t.Errorf("request span %s = %q, want %q", k, got, want)
		}
	}
	for i, a := range spans[:2] {
		if a.Parent().SpanID() != root.SpanContext().SpanID() {
			t.Errorf("attempt %d is not a child of the request span", i)
		}
		want := "00-4bf92f3577b34da6a3ce929d0e0e4736-" + a.SpanContext().SpanID().String() + "-01"
		if upstreamTPs[i] != want {
			t.Errorf("attempt %d sent traceparent %q, want %q", i, upstreamTPs[i], want)
		}
	}
	if spans[0].Status().Code.String() != "Error" || spans[1].Status().Code.String() == "Error" {
		t.Errorf("attempt statuses %v, %v: want the 503 an error, the 200 not", spans[0].Status(), spans[1].Status())
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
