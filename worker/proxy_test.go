package worker

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/store/spool"
)

func TestBadRequests(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tests := []struct {
		name   string
		key    string
		body   string
		status int
		code   string
		msg    string // in the message
	}{
		{"invalid JSON", keyAll, `{"model":"gpt-4o",`, 400, "invalid_request", "not valid JSON"},
		{"empty body", keyAll, ``, 400, "invalid_request", "not valid JSON"},
		{"array body", keyAll, `[{"model":"gpt-4o"}]`, 400, "invalid_request", "JSON object"},
		{"string body", keyAll, `"gpt-4o"`, 400, "invalid_request", "JSON object"},
		{"missing model", keyAll, `{"messages":[]}`, 400, "invalid_request", "model"},
		{"model null", keyAll, `{"model":null}`, 400, "invalid_request", "model"},
		{"model not a string", keyAll, `{"model":4}`, 400, "invalid_request", "'model' must be a string"},
		{"stream not a bool", keyAll, `{"model":"gpt-4o","stream":"yes"}`, 400, "invalid_request", "'stream' must be a boolean"},
		{"model not in allow-list", keyLimited, `{"model":"alias","messages":[]}`, 403, "model_not_allowed", "alias"},
		{"unknown model not in allow-list", keyLimited, `{"model":"nope"}`, 403, "model_not_allowed", "nope"},
		{"unknown model", keyAll, `{"model":"no-such-model","messages":[]}`, 404, "model_not_found", "no-such-model"},
		{"allow-listed but unserved", keyLimited, `{"model":"not-served"}`, 404, "model_not_found", "not-served"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := h.chat(t, tt.key, tt.body)
			e := checkError(t, resp, body, tt.status, tt.code)
			if !strings.Contains(e.Error.Message, tt.msg) {
				t.Errorf("message %q does not mention %q", e.Error.Message, tt.msg)
			}
			if resp.Header.Get("X-Request-Id") == "" {
				t.Error("a recorded refusal carries no X-Request-Id")
			}
		})
	}
	if n := len(h.up.requests()); n != 0 {
		t.Errorf("the upstream received %d rejected requests, want 0", n)
	}
}

func TestBodyTooLarge(t *testing.T) {
	h := newHarness(t, harnessOptions{cfg: func(c *Config) { c.MaxBodyBytes = 4096 }})
	big := `{"model":"gpt-4o","messages":[{"role":"user","content":"` + strings.Repeat("x", 8192) + `"}]}`
	resp, body := h.chat(t, keyAll, big)
	e := checkError(t, resp, body, http.StatusRequestEntityTooLarge, "request_too_large")
	if !strings.Contains(e.Error.Message, "4096") {
		t.Errorf("message %q does not state the limit", e.Error.Message)
	}
	// Just under the limit still goes through.
	small := `{"model":"gpt-4o","messages":[{"role":"user","content":"` + strings.Repeat("x", 3900) + `"}]}`
	if resp, body := h.chat(t, keyAll, small); resp.StatusCode != http.StatusOK {
		t.Errorf("a %d-byte body with a 4096-byte limit: status %d (%s)", len(small), resp.StatusCode, body)
	}
}

func TestUnknownPathAndMethod(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	resp, body := h.do(t, http.MethodGet, "/v1/nope", keyAll, "")
	checkError(t, resp, body, http.StatusNotFound, "unknown_url")
	resp, body = h.do(t, http.MethodPost, "/v2/chat/completions", keyAll, okChat)
	checkError(t, resp, body, http.StatusNotFound, "unknown_url")
	resp, body = h.do(t, http.MethodGet, "/v1/chat/completions", keyAll, "")
	checkError(t, resp, body, http.StatusMethodNotAllowed, "method_not_allowed")
}

func TestPassThrough(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	// Odd spacing, raw and escaped unicode, nested objects, unknown fields and an
	// inner "model" key: all must reach the upstream byte for byte.
	client := "{ \"model\" :  \"alias\" ,\n" +
		"  \"messages\":[{\"role\":\"user\",\"content\":\"héllo \\u00e9 \\\"quoted\\\" 🙂 \\n line\"}],\n" +
		"\t\"nested\": {\"a\": [1, 2.50, 1e3, {\"b\": null}], \"model\": \"inner-not-touched\"},\n" +
		"  \"x_unknown_field\"   : true , \"temperature\":0.25}  "
	upstreamBody := `{"id":"chatcmpl-x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok ✓"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}`
	h.up.set(upstreamBehavior{body: upstreamBody, header: http.Header{"Openai-Processing-Ms": {"42"}}})

	resp, body := h.chat(t, keyAll, client, "Cookie", "session=secret", "X-Conversation-ID", "conv-1")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200: %s", resp.StatusCode, body)
	}
	got := h.up.last(t)
	want := strings.Replace(client, `"alias"`, `"real-model"`, 1)
	if string(got.Body) != want {
		t.Errorf("upstream body =\n%s\nwant\n%s", got.Body, want)
	}
	if got.Path != "/v1/chat/completions" || got.Method != http.MethodPost {
		t.Errorf("upstream request = %s %s, want POST /v1/chat/completions", got.Method, got.Path)
	}
	if a := got.Header.Values("Authorization"); !slices.Equal(a, []string{"Bearer upstream-key"}) {
		t.Errorf("upstream Authorization = %q, want only the upstream's key", a)
	}
	if c := got.Header.Get("Cookie"); c != "" {
		t.Errorf("the client's Cookie reached the upstream: %q", c)
	}
	for name, vs := range got.Header {
		for _, v := range vs {
			if strings.Contains(v, keyAll) {
				t.Errorf("the client's key reached the upstream in %s", name)
			}
		}
	}
	if string(body) != upstreamBody {
		t.Errorf("client body =\n%s\nwant the upstream's\n%s", body, upstreamBody)
	}
	if v := resp.Header.Get("X-LLM-Proxy-Upstream"); v != "fake" {
		t.Errorf("X-LLM-Proxy-Upstream = %q, want fake", v)
	}
	if v := resp.Header.Get("X-Request-Id"); !strings.HasPrefix(v, "req_") {
		t.Errorf("X-Request-Id = %q, want a gateway request id", v)
	}
	if v := resp.Header.Get("Openai-Processing-Ms"); v != "42" {
		t.Errorf("upstream header Openai-Processing-Ms = %q, want 42", v)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want the upstream's application/json", ct)
	}
}

func TestPassThroughEndpoints(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tests := []struct {
		path, body, upstreamPath string
	}{
		{"/v1/chat/completions", `{"model":"gpt-4o","messages":[]}`, "/v1/chat/completions"},
		{"/v1/completions", `{"model":"gpt-4o","prompt":"hi"}`, "/v1/completions"},
		{"/v1/embeddings", `{"model":"text-embedding-3-small","input":"hi"}`, "/v1/embeddings"},
		// Embeddings do not stream, whatever the body says: no stream_options added.
		{"/v1/embeddings", `{"model":"text-embedding-3-small","input":"hi","stream":true}`, "/v1/embeddings"},
	}
	for _, tt := range tests {
		resp, body := h.do(t, http.MethodPost, tt.path, keyAll, tt.body)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d: %s", tt.path, resp.StatusCode, body)
			continue
		}
		got := h.up.last(t)
		if got.Path != tt.upstreamPath || string(got.Body) != tt.body {
			t.Errorf("%s: upstream got %s %s, want %s %s", tt.path, got.Path, got.Body, tt.upstreamPath, tt.body)
		}
	}
}

// TestUpstreamRequestIDNotDuplicated: OpenAI answers with its own x-request-id.
// The client must see one X-Request-Id, the gateway's (the one in the request
// record), not two conflicting values; the provider's stays available.
func TestUpstreamRequestIDNotDuplicated(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.up.set(upstreamBehavior{header: http.Header{"X-Request-Id": {"req_from_upstream"}}})
	resp, body := h.chat(t, keyAll, okChat)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	ids := resp.Header.Values("X-Request-Id")
	if len(ids) != 1 || !strings.HasPrefix(ids[0], "req_") || ids[0] == "req_from_upstream" {
		t.Errorf("X-Request-Id values = %q, want exactly the gateway's id", ids)
	}
	if v := resp.Header.Get("X-Upstream-Request-Id"); v != "req_from_upstream" {
		t.Errorf("X-Upstream-Request-Id = %q, want the provider's id", v)
	}
}

func TestUpstreamErrorPassThrough(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	errBody := `{"error":{"message":"Rate limit reached for gpt-4o","type":"requests","param":null,"code":"rate_limit_exceeded"}}`
	h.up.set(upstreamBehavior{kind: "status", status: http.StatusTooManyRequests, body: errBody,
		header: http.Header{"Retry-After": {"7"}, "X-Ratelimit-Remaining-Requests": {"0"}}})
	for _, stream := range []bool{false, true} {
		body := okChat
		if stream {
			body = `{"model":"gpt-4o","stream":true,"messages":[]}`
		}
		resp, got := h.chat(t, keyAll, body)
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Errorf("stream=%v: status %d, want 429", stream, resp.StatusCode)
		}
		if string(got) != errBody {
			t.Errorf("stream=%v: body %s, want the upstream's %s", stream, got, errBody)
		}
		if v := resp.Header.Get("Retry-After"); v != "7" {
			t.Errorf("stream=%v: Retry-After = %q, want 7", stream, v)
		}
		if v := resp.Header.Get("X-Ratelimit-Remaining-Requests"); v != "0" {
			t.Errorf("stream=%v: X-Ratelimit-Remaining-Requests = %q, want 0", stream, v)
		}
		rec := h.recordByID(t, resp.Header.Get("X-Request-Id"))
		if rec.Status != 429 || rec.ErrorClass != classUpstream || rec.Stream != stream {
			t.Errorf("stream=%v: record status=%d class=%q stream=%v, want 429 %q %v", stream, rec.Status, rec.ErrorClass, rec.Stream, classUpstream, stream)
		}
	}
}

func TestUpstreamUnreachable(t *testing.T) {
	// A port that was just free: nothing listens there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/v1"
	ln.Close()
	h := newHarness(t, harnessOptions{upstreams: func(*fakeUpstream) []store.Upstream {
		return []store.Upstream{{Name: "down", BaseURL: closed, Weight: 1, Enabled: true,
			Deployments: []store.Deployment{{PublicModel: "gpt-4o", UpstreamModel: "gpt-4o", Weight: 1}}}}
	}})
	start := time.Now()
	resp, body := h.chat(t, keyAll, okChat)
	checkError(t, resp, body, http.StatusBadGateway, "upstream_unreachable")
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("502 took %v", d)
	}
	rec := h.recordByID(t, resp.Header.Get("X-Request-Id"))
	if rec.Status != 502 || rec.ErrorClass != classUnreachable || rec.Upstream != "down" {
		t.Errorf("record = %+v, want status 502, class %q, upstream down", rec, classUnreachable)
	}
}

func TestUpstreamTimeout(t *testing.T) {
	h := newHarness(t, harnessOptions{cfg: func(c *Config) { c.ResponseHeaderTimeout = 300 * time.Millisecond }})
	h.up.set(upstreamBehavior{kind: "hang"})
	start := time.Now()
	resp, body := h.chat(t, keyAll, okChat)
	took := time.Since(start)
	checkError(t, resp, body, http.StatusGatewayTimeout, "upstream_timeout")
	if took < 300*time.Millisecond || took > 1500*time.Millisecond {
		t.Errorf("504 after %v, want just after the 300 ms timeout", took)
	}
	if _, ok := h.up.waitCancelled(t, time.Second); !ok {
		t.Error("the upstream request was not closed after the timeout")
	}
	rec := h.recordByID(t, resp.Header.Get("X-Request-Id"))
	if rec.Status != 504 || rec.ErrorClass != classTimeout {
		t.Errorf("record status=%d class=%q, want 504 %q", rec.Status, rec.ErrorClass, classTimeout)
	}
}

func TestClientDisconnectBeforeFirstByte(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.up.set(upstreamBehavior{kind: "hang"})
	conn := h.rawRequest(t, "/v1/chat/completions", keyAll, okChat)
	h.up.waitReceived(t)
	time.Sleep(200 * time.Millisecond)
	closedAt := time.Now()
	conn.Close()
	at, ok := h.up.waitCancelled(t, 2*time.Second)
	if !ok {
		t.Fatal("the upstream request was never cancelled after the client left")
	}
	if d := at.Sub(closedAt); d > time.Second {
		t.Errorf("upstream cancelled %v after the client left, want < 1 s", d)
	}
	rec := h.waitRecord(t, func(r spool.Record) bool { return r.ErrorClass == classClientClosed })
	if rec.Status != statusClientClosed || rec.Model != "gpt-4o" || rec.Upstream != "fake" {
		t.Errorf("record = %+v, want status 499 for gpt-4o on fake", rec)
	}
}

func TestModelsList(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tests := []struct {
		key  string
		want []string
	}{
		{keyAll, []string{"alias", "gpt-4o", "text-embedding-3-small"}},
		{keyLimited, []string{"gpt-4o"}}, // "not-served" is allowed but nothing serves it
	}
	for _, tt := range tests {
		resp, body := h.do(t, http.MethodGet, "/v1/models", tt.key, "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		var list struct {
			Object string `json:"object"`
			Data   []struct {
				ID      string `json:"id"`
				Object  string `json:"object"`
				OwnedBy string `json:"owned_by"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &list); err != nil {
			t.Fatalf("models body: %v: %s", err, body)
		}
		var ids []string
		for _, m := range list.Data {
			ids = append(ids, m.ID)
			if m.Object != "model" || m.OwnedBy == "" {
				t.Errorf("model entry %+v lacks object/owned_by", m)
			}
		}
		if list.Object != "list" || !slices.Equal(ids, tt.want) {
			t.Errorf("models for %s = %s %q, want list %q", tt.key[:12], list.Object, ids, tt.want)
		}
	}
}

func TestHealth(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	resp, body := h.do(t, http.MethodGet, "/api/health", "", "")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("health: status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var got struct {
		Status   string   `json:"status"`
		Version  string   `json:"version"`
		WorkerID string   `json:"worker_id"`
		Slot     *int     `json:"worker_slot"`
		PID      int      `json:"pid"`
		Uptime   *float64 `json:"uptime_seconds"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("health body: %v: %s", err, body)
	}
	if got.Status != "ok" || got.Version != "test-version" || got.WorkerID != "w1" || got.Slot == nil || *got.Slot != 3 ||
		got.PID != os.Getpid() || got.Uptime == nil || *got.Uptime < 0 || *got.Uptime > 60 {
		t.Errorf("health = %s", body)
	}
}
