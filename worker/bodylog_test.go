package worker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/store/spool"
)

func TestRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"api_key": "abc123"}`, `{"api_key": "[REDACTED]"}`},
		{`{"x-api-key":"k","Authorization":"Bearer zz"}`, `{"x-api-key":"[REDACTED]","Authorization":"[REDACTED]"}`},
		{`{"content":"{\"password\": \"hunter2\"}"}`, `{"content":"{\"password\": \"[REDACTED]\"}"}`},
		{`use sk-proj-abcdefgh1234 now`, `use sk-[REDACTED] now`},
		{`admin lpa-0123456789abcdef`, `admin lpa-[REDACTED]`},
		{`Authorization: Bearer eyJhbGciOi.x_y-z`, `Authorization: Bearer [REDACTED]`},
		{`x-api-key: secretvalue, next`, `x-api-key: [REDACTED], next`},
		{`gemini AIzaSyA1234567890abcdefghijk`, `gemini [REDACTED]`},
		{`ask about sky-blue and sk-short`, `ask about sky-blue and sk-short`}, // nothing key-like
		{`{"model":"gpt-4o","max_tokens":5}`, `{"model":"gpt-4o","max_tokens":5}`},
	}
	for _, tt := range tests {
		if got := string(redact([]byte(tt.in))); got != tt.want {
			t.Errorf("redact(%q)\n got %q\nwant %q", tt.in, got, tt.want)
		}
	}
}

func TestAppendCapped(t *testing.T) {
	tests := []struct {
		dst, b  string
		limit   int
		want    string
		wantCut bool
	}{
		{"", "hello", 10, "hello", false},
		{"", "hello", 3, "hel", true},
		{"ab", "cdef", 4, "abcd", true},
		{"abcd", "e", 4, "abcd", true},
		{"abcd", "", 4, "abcd", false},
		{"", "x", 0, "", true},
	}
	for _, tt := range tests {
		got, cut := appendCapped([]byte(tt.dst), []byte(tt.b), tt.limit)
		if string(got) != tt.want || cut != tt.wantCut {
			t.Errorf("appendCapped(%q, %q, %d) = %q, %v; want %q, %v", tt.dst, tt.b, tt.limit, got, cut, tt.want, tt.wantCut)
		}
	}
}

// TestBodyLogCapture: the worker's capture hooks, its body spool and the primary's
// ingest together: bodies are truncated at LOG_BODY_MAX_BYTES, credentials redacted,
// and a key that opted out writes nothing.
func TestBodyLogCapture(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	dir := t.TempDir()
	sp, err := spool.Create(dir, "w9", 0)
	if err != nil {
		t.Fatal(err)
	}
	w := &Worker{cfg: Config{BodyLogConfig: BodyLogConfig{LogBodies: true, LogBodyMaxBytes: 64}},
		deps: Deps{BodySpool: sp}, logger: h.w.logger}

	x := &exchange{}
	x.rec.RequestID, x.rec.TsMs, x.rec.KeyID = "req-body-1", 1700000000000, h.keyIDs["all"]
	w.captureRequest(x, &keyEntry{}, []byte(`{"api_key":"abcdef","messages":[{"content":"Bearer tok.en-1 please"}]}`+strings.Repeat("z", 100)))
	w.captureResponse(x, []byte(`{"answer":"sk-abcdefghijklmnop"}`))
	w.writeBodies(x)

	y := &exchange{}
	y.rec.RequestID = "req-body-2"
	w.captureRequest(y, &keyEntry{noBodies: true}, []byte(`secret`))
	w.captureResponse(y, []byte(`answer`))
	w.writeBodies(y)
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := h.st.IngestBodySpools(ctx, dir, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if res.Rows != 1 || res.Deleted != 1 {
		t.Errorf("ingest %+v, want 1 row and the sealed file deleted", res)
	}
	got, ok, err := h.st.RequestBody(ctx, "req-body-1")
	if err != nil || !ok {
		t.Fatalf("RequestBody: ok %v, %v", ok, err)
	}
	want := store.BodyRecord{
		RequestID: "req-body-1", TsMs: 1700000000000, KeyID: h.keyIDs["all"],
		Request:          `{"api_key":"[REDACTED]","messages":[{"content":"Bearer [REDACTED] plea`,
		Response:         `{"answer":"sk-[REDACTED]"}`,
		RequestTruncated: true,
	}
	if got != want {
		t.Errorf("stored bodies\n got %+v\nwant %+v", got, want)
	}
	if strings.Contains(got.Request, "abcdef") || strings.Contains(got.Request, "tok.en-1") {
		t.Errorf("secret left in %q", got.Request)
	}
	if _, ok, _ := h.st.RequestBody(ctx, "req-body-2"); ok {
		t.Error("the opted-out key's bodies were stored")
	}
}
