package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// Secrets in the shapes the redaction must catch.
const (
	testClientKey    = "sk-4f1c2b9a7e6d5c3b2a1f0e9d8c7b6a5f"
	testAnthropicKey = "sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe"
	testGoogleKey    = "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"
	testJWT          = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl"
	testCookie       = "llmproxy_session=6b1f0c9e8d7a6b5c4d3e2f1a0b9c8d7e"
)

func TestRedactLine(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"authorization header", "Authorization: Bearer " + testClientKey + "\n", "Authorization: Bearer [REDACTED]\n"},
		{"authorization basic", "authorization: Basic dXNlcjpwYXNz path=/v1", "authorization: Basic [REDACTED] path=/v1"},
		{"authorization hclog quoted", `msg="upstream" authorization="Bearer ` + testClientKey + `" status=401`, `msg="upstream" authorization="[REDACTED]" status=401`},
		{"authorization json", `{"@message":"req","authorization":"Bearer ` + testJWT + `","x":1}`, `{"@message":"req","authorization":"[REDACTED]","x":1}`},
		{"x-api-key", "X-Api-Key: " + testAnthropicKey, "X-Api-Key: [REDACTED]"},
		{"x-api-key lower json", `{"x-api-key":"` + testAnthropicKey + `"}`, `{"x-api-key":"[REDACTED]"}`},
		{"api-key azure", "api-key=abcdef0123456789 deployment=gpt", "api-key=[REDACTED] deployment=gpt"},
		{"api_key in body", `{"api_key": "hunter2hunter2"}`, `{"api_key": "[REDACTED]"}`},
		{"cookie", "Cookie: " + testCookie + "; theme=dark\r\nHost: x", "Cookie: [REDACTED]\r\nHost: x"},
		{"set-cookie", `set-cookie="` + testCookie + `; Path=/; HttpOnly"`, `set-cookie="[REDACTED]"`},
		{"bearer alone", "token was bearer " + testJWT + " expired", "token was bearer [REDACTED] expired"},
		{"bare client key", "key " + testClientKey + " revoked", "key [REDACTED] revoked"},
		{"bare anthropic key", "upstream said: invalid x " + testAnthropicKey, "upstream said: invalid x [REDACTED]"},
		{"google key in url", "GET /v1beta/models?key=" + testGoogleKey + "&alt=sse", "GET /v1beta/models?key=[REDACTED]&alt=sse"},
		{
			"fasthttp parse error in worker json",
			`{"@level":"debug","@message":"error when reading request headers: cannot find http request method: buffer size=120, contents: \"GARBAGE\\r\\nAuthorization: Bearer ` + testClientKey + `\\r\\nCookie: ` + testCookie + `\\r\\n\""}`,
			`{"@level":"debug","@message":"error when reading request headers: cannot find http request method: buffer size=120, contents: \"GARBAGE\\r\\nAuthorization: Bearer [REDACTED]\\r\\nCookie: [REDACTED]\\r\\n\""}`,
		},
		{"key after quoted escapes", `contents: "GET / HTTP/1.1\r\n` + testClientKey + `\r\nX: Bearer a\x00` + testAnthropicKey + `\u0000` + testClientKey + `"`,
			`contents: "GET / HTTP/1.1\r\n[REDACTED]\r\nX: Bearer [REDACTED]\x00[REDACTED]\u0000[REDACTED]"`},
		{"escaped quoted json in json", `{"m":"{\"authorization\":\"Bearer ` + testClientKey + `\"}"}`, `{"m":"{\"authorization\":\"Bearer [REDACTED]\"}"}`},
		// Untouched: no secret, only words that contain a trigger.
		{"normal line", `2025-01-01T00:00:00.000Z [INFO]  llm-proxy.worker-0: request: path=/v1/chat/completions status=200 model=gpt-4o`, ""},
		{"task- word", "task-scheduler-running-for-a-long-while started", ""},
		{"short sk- prefix", "key prefix sk-4f1c2b9a… created", ""},
		{"authorization word", "authorization failed for key id=7", ""},
		{"cookie word", "session cookie missing", ""},
		{"empty header", "Authorization: \n", ""},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.want
			if want == "" {
				want = tt.in
			}
			got := string(redactLine([]byte(tt.in)))
			if got != want {
				t.Errorf("redactLine(%q)\n got  %q\n want %q", tt.in, got, want)
			}
			for _, s := range []string{testClientKey, testAnthropicKey, testGoogleKey, testJWT, testCookie} {
				if strings.Contains(got, s) {
					t.Errorf("redactLine(%q) kept secret %q", tt.in, s)
				}
			}
		})
	}
}

// TestRedactLineKeepsJSON: a worker's JSON line stays parseable after redaction, so the
// supervisor still re-emits it at its own level.
func TestRedactLineKeepsJSON(t *testing.T) {
	var buf bytes.Buffer
	l := hclog.New(&hclog.LoggerOptions{Output: redactingWriter{next: &buf}, JSONFormat: true})
	l.Warn("upstream refused", "authorization", "Bearer "+testClientKey, "body", `{"error":"bad key `+testAnthropicKey+`"}`,
		"raw", "GET / HTTP/1.1\r\nX-Api-Key: "+testGoogleKey+"\r\n")
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("redacted line is not JSON: %v\n%s", err, buf.Bytes())
	}
	if m["@level"] != "warn" || m["authorization"] != redacted {
		t.Errorf("got level %v authorization %v, want warn and %q", m["@level"], m["authorization"], redacted)
	}
	for _, s := range []string{testClientKey, testAnthropicKey, testGoogleKey} {
		if bytes.Contains(buf.Bytes(), []byte(s)) {
			t.Errorf("JSON line kept %q: %s", s, buf.Bytes())
		}
	}
}

// TestRootLoggerRedacts: the supervisor's logger scrubs all three outputs (stderr, the
// full log, the error log).
func TestRootLoggerRedacts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "logs")
	var stderr bytes.Buffer // written only by this goroutine's log calls
	logger, closeLogs, err := newRootLogger("DEBUG", dir, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	logger.Named("worker-0").Error("upstream answered 401", "authorization", "Bearer "+testClientKey, "cookie", testCookie)
	logger.Info("plain " + testGoogleKey)
	if err := closeLogs(); err != nil {
		t.Fatal(err)
	}
	all, _ := os.ReadFile(filepath.Join(dir, logFileAll))
	errs, _ := os.ReadFile(filepath.Join(dir, logFileError))
	for name, b := range map[string][]byte{"stderr": stderr.Bytes(), logFileAll: all, logFileError: errs} {
		if !bytes.Contains(b, []byte(redacted)) {
			t.Errorf("%s has no %s:\n%s", name, redacted, b)
		}
		for _, s := range []string{testClientKey, testCookie, testGoogleKey} {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s kept %q:\n%s", name, s, b)
			}
		}
	}
}

// TestWorkerLoggerRedacts: a worker's JSON lines on stderr are scrubbed before the
// supervisor ever reads them.
func TestWorkerLoggerRedacts(t *testing.T) {
	var buf bytes.Buffer
	l := newWorkerLogger("DEBUG", 3, &buf)
	l.Debug(fmt.Sprintf("error when reading request headers: contents: %q", "BAD\r\nx-api-key: "+testAnthropicKey+"\r\n"))
	if bytes.Contains(buf.Bytes(), []byte(testAnthropicKey)) || !bytes.Contains(buf.Bytes(), []byte(redacted)) {
		t.Errorf("worker line not redacted: %s", buf.Bytes())
	}
}

// BenchmarkRedactLine: the fast path (nothing to redact) is what nearly every line
// takes; it must not allocate.
func BenchmarkRedactLine(b *testing.B) {
	lines := map[string][]byte{
		"clean":  []byte(`2025-06-01T12:00:00.000Z [INFO]  llm-proxy.worker-1: request served: path=/v1/chat/completions status=200 model=gpt-4o-mini deployment=openai/gpt-4o-mini duration_ms=412 tokens=1234 cache=miss worker_slot=1 pid=4242` + "\n"),
		"secret": []byte(`2025-06-01T12:00:00.000Z [WARN]  llm-proxy.worker-1: upstream refused: authorization="Bearer ` + testClientKey + `" status=401 worker_slot=1 pid=4242` + "\n"),
	}
	for name, line := range lines {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(line)))
			for b.Loop() {
				redactLine(line)
			}
		})
	}
}
