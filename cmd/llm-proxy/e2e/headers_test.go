package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rawExchange writes raw to a new connection to the gateway and returns the status line of
// the answer, whether the gateway closed the connection after it (within the deadline),
// and how long the answer took.
func rawExchange(t *testing.T, g *gateway, raw string) (status string, closed bool, took time.Duration) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", g.addr(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	// A refusal may come while the request is still being written; the write error that
	// follows (connection reset) is not the test's concern, the answer is.
	go func() { _, _ = io.WriteString(conn, raw) }()
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	took = time.Since(start)
	if err != nil {
		return "", false, took
	}
	// Read the rest: EOF (or a reset, when the gateway closed with request bytes unread)
	// means the gateway closed the connection; a timeout means it kept it open.
	_, err = io.Copy(io.Discard, br)
	return strings.TrimSpace(line), err == nil || errors.Is(err, syscall.ECONNRESET), took
}

// TestHeaderHardening: header blocks that are too large or malformed are refused at the
// edge, quickly, with the connection closed, and nothing a client puts in a header can add
// a header to the request the upstream receives.
func TestHeaderHardening(t *testing.T) {
	mock := startMock(t)
	g := newGateway(t, nil)
	g.cli(t, "upstreams", "add", "--name", "mock", "--base-url", mock.baseURL(), "--api-key", "sk-upstream-"+randomHex(t, 16))
	_, key := g.createKey(t, "headers")
	g.start(t)

	t.Run("oversized_header_block", func(t *testing.T) {
		var b strings.Builder
		fmt.Fprintf(&b, "POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n", g.addr(), key)
		pad := strings.Repeat("p", 1000)
		for i := range 64 { // 64 KiB of headers
			fmt.Fprintf(&b, "X-Pad-%d: %s\r\n", i, pad)
		}
		fmt.Fprintf(&b, "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(hardChatBody), hardChatBody)
		status, closed, took := rawExchange(t, g, b.String())
		if !strings.HasPrefix(status, "HTTP/1.1 431") && !strings.HasPrefix(status, "HTTP/1.1 400") {
			t.Errorf("64 KiB header block: status %q, want 431 (or 400)", status)
		}
		if !strings.HasPrefix(status, "HTTP/1.1 431") {
			t.Logf("64 KiB header block answered %q; 431 Request Header Fields Too Large is the precise status", status)
		}
		if !closed {
			t.Errorf("64 KiB header block: the connection stayed open after %q", status)
		}
		if took > time.Second {
			t.Errorf("64 KiB header block: answered after %s, want under 1 s", took)
		}
		if _, err := g.health(ctxTimeout(t, requestTimeout), freshClient(requestTimeout)); err != nil {
			t.Errorf("gateway unhealthy after the oversized header block: %v", err)
		}
	})

	// Values no HTTP/1.1 header may carry (RFC 9110 §5.5, RFC 9112 §5.2): a bare LF (read as
	// a line end by lenient parsers, so the rest becomes a header of its own), a NUL, a bare
	// CR, and obs-fold (a continuation line). Each must be refused with 400, and none may
	// reach the upstream.
	bad := []struct{ name, header string }{
		{"bare_lf", "X-Conversation-ID: conv-lf\nInjected-Lf: yes\r\n"},
		{"nul", "X-Conversation-ID: conv\x00Injected-Nul: yes\r\n"},
		{"bare_cr", "X-Conversation-ID: conv-cr\rInjected-Cr: yes\r\n"},
		{"obs_fold", "X-Conversation-ID: conv-fold\r\n Injected-Fold: yes\r\n"},
	}
	for _, tt := range bad {
		t.Run("refuse_"+tt.name, func(t *testing.T) {
			model := "mock-" + tt.name
			body := strings.Replace(hardChatBody, "mock-1", model, 1)
			raw := fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s",
				g.addr(), key, tt.header, len(body), body)
			status, _, _ := rawExchange(t, g, raw)
			if !strings.HasPrefix(status, "HTTP/1.1 400") {
				t.Errorf("header %q: status %q, want 400", tt.header, status)
			}
			if r, ok := mock.waitRequest(t, 300*time.Millisecond, func(r mockRequest) bool { return r.Model == model }); ok {
				t.Errorf("header %q: the request reached the upstream with headers %v", tt.header, r.Headers)
			}
		})
	}

	// What the gateway does forward must never carry a line break into the upstream request,
	// whatever the client managed to put into a model name or a header value.
	t.Run("nothing_injected_upstream", func(t *testing.T) {
		ctx := ctxTimeout(t, requestTimeout)
		models := []string{"mock-1\r\nInjected-Model: yes", "mock-1\nInjected-Model: yes", `mock-1\r\nInjected-Model: yes`}
		for _, m := range models {
			body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hello"}]}`, m)
			status, _, err := post(ctx, g.client, g, "/v1/chat/completions", key, body)
			if err != nil {
				t.Fatalf("model %q: %v", m, err)
			}
			t.Logf("model %q: status %d", m, status)
		}
		marker := "conv-" + randomHex(t, 4)
		raw := fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nX-Conversation-ID: %s%%0d%%0aInjected-Encoded: yes\r\nContent-Length: %d\r\n\r\n%s",
			g.addr(), key, marker, len(hardChatBody), hardChatBody)
		status, _, _ := rawExchange(t, g, raw)
		t.Logf("percent-encoded CRLF in X-Conversation-ID: %s", status)

		reqs, err := mock.requests(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(reqs) == 0 {
			t.Fatal("the upstream received no request at all; the check below would prove nothing")
		}
		for _, r := range reqs {
			for k, v := range r.Headers {
				if strings.HasPrefix(strings.ToLower(k), "injected") {
					t.Errorf("upstream request %d (model %q) has injected header %q: %q", r.Seq, r.Model, k, v)
				}
				if strings.ContainsAny(k+v, "\r\n\x00") {
					t.Errorf("upstream request %d has a header with a control character: %q: %q", r.Seq, k, v)
				}
			}
		}
	})
}

// TestLogRedaction: a key sent in Authorization, x-api-key, a cookie, a malformed request
// that fasthttp quotes in its parse error, and a header with a NUL never shows up in the
// log files or the supervisor's stderr, with logging at DEBUG.
func TestLogRedaction(t *testing.T) {
	mock := startMock(t)
	g := newGateway(t, map[string]string{"LLM_PROXY_LOG_LEVEL": "DEBUG"})
	providerKey := "sk-provider-" + randomHex(t, 16)
	g.cli(t, "upstreams", "add", "--name", "mock", "--base-url", mock.baseURL(), "--api-key", providerKey)
	_, key := g.createKey(t, "redaction")
	g.start(t)
	// A key that is valid in shape but unknown: the 401 path must not log it either.
	unknown := "sk-" + randomHex(t, 24)

	ctx := ctxTimeout(t, requestTimeout)
	for _, k := range []string{key, unknown} {
		if _, _, err := post(ctx, g.client, g, "/v1/chat/completions", k, hardChatBody); err != nil {
			t.Fatalf("chat: %v", err)
		}
	}
	raws := []string{
		// x-api-key on the Anthropic route, and a cookie, on a well-formed request.
		fmt.Sprintf("POST /v1/messages HTTP/1.1\r\nHost: %s\r\nx-api-key: %s\r\nanthropic-version: 2023-06-01\r\nCookie: llmproxy_session=%s; other=%s\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", g.addr(), key, key, unknown),
		// A malformed request line: fasthttp's parse error quotes the buffer.
		fmt.Sprintf("GARBAGE-%s\r\nAuthorization: Bearer %s\r\n\r\n", key, key),
		// A header fasthttp refuses, carrying the key.
		fmt.Sprintf("GET /v1/models HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\x00%s\r\n\r\n", g.addr(), key, unknown),
		// No colon: an invalid header line that is the key itself.
		fmt.Sprintf("GET /v1/models HTTP/1.1\r\nHost: %s\r\n%s\r\n\r\n", g.addr(), key),
	}
	for _, raw := range raws {
		status, _, _ := rawExchange(t, g, raw)
		t.Logf("%.30q… → %q", raw, status)
	}
	// Stopping the gateway flushes every worker's last lines through the supervisor.
	g.stop(t)

	var files []string
	_ = filepath.Walk(g.logDir, func(path string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			files = append(files, path)
		}
		return nil
	})
	files = append(files, g.errPath)
	secrets := map[string]string{
		"client key": key, "client key body": strings.TrimPrefix(key, "sk-"),
		"unknown key": unknown, "provider key": providerKey,
	}
	var lines int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Errorf("read %s: %v", f, err)
			continue
		}
		lines += bytes.Count(b, []byte("\n"))
		for what, s := range secrets {
			if n := bytes.Count(b, []byte(s)); n > 0 {
				t.Errorf("%s found %d times in %s", what, n, f)
			}
		}
	}
	if lines == 0 {
		t.Errorf("searched %v: no log lines at all, so the search proves nothing", files)
	}
	t.Logf("searched %d files (%d lines) for 4 secrets", len(files), lines)
}
