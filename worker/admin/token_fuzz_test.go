package admin

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/router"
	"github.com/hashicorp/go-hclog"
	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/store/secret"
)

// tokenPlaceholder in a seed is replaced by the real session cookie or CSRF token, so the
// fuzzer mutates around the one value that must be accepted.
const tokenPlaceholder = "{TOKEN}"

// fuzzAdmin is an admin on a real SQLite file with one signed-in session, driven through
// its router in memory (no socket per input, so the fuzzer runs thousands of inputs a second).
type fuzzAdmin struct {
	handler fasthttp.RequestHandler
	cookie  string
	csrf    string
}

func newFuzzAdmin(f *testing.F) *fuzzAdmin {
	f.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	box, err := secret.New("admin-fuzz-secret-0123456789abcdef")
	if err != nil {
		f.Fatal(err)
	}
	st, err := store.Open(ctx, store.Config{Path: filepath.Join(f.TempDir(), "db.sqlite"), MaxOpenConns: 8, MaxIdleConns: 4}, box, hclog.NewNullLogger())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	if _, err := st.Migrate(ctx); err != nil {
		f.Fatal(err)
	}
	a, err := New(Deps{Store: st, Settings: fakeSettings{st}, SessionTTL: time.Hour, Version: "test", HashParams: cheapParams})
	if err != nil {
		f.Fatal(err)
	}
	hash, err := HashPassword(adminPass, cheapParams)
	if err != nil {
		f.Fatal(err)
	}
	if _, err := st.CreateUser(ctx, store.User{Username: "root", PasswordHash: hash, Role: store.RoleAdmin}); err != nil {
		f.Fatal(err)
	}
	r := router.New()
	a.Register(r)
	fa := &fuzzAdmin{handler: r.Handler}

	login := fa.serve("POST", "/api/auth/login", func(h *fasthttp.RequestHeader) {
		h.SetContentType("application/json")
	}, `{"username":"root","password":"`+adminPass+`"}`)
	if login.StatusCode() != fasthttp.StatusOK {
		f.Fatalf("login: %d %s", login.StatusCode(), login.Body())
	}
	var out struct {
		CSRF string `json:"csrf_token"`
	}
	if err := json.Unmarshal(login.Body(), &out); err != nil || out.CSRF == "" {
		f.Fatalf("login body %s: %v", login.Body(), err)
	}
	fa.csrf = out.CSRF
	for k, v := range login.Header.Cookies() {
		var ck fasthttp.Cookie
		if string(k) == sessionCookie && ck.ParseBytes(v) == nil {
			fa.cookie = string(ck.Value())
		}
	}
	if fa.cookie == "" {
		f.Fatal("login set no session cookie")
	}
	return fa
}

// serve runs one request through the admin's router and returns the response.
func (fa *fuzzAdmin) serve(method, path string, header func(*fasthttp.RequestHeader), body string) *fasthttp.Response {
	var ctx fasthttp.RequestCtx
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI(path)
	req.Header.SetHost("127.0.0.1")
	if header != nil {
		header(&req.Header)
	}
	req.SetBodyString(body)
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
	fa.handler(&ctx)
	return &ctx.Response
}

// FuzzSessionToken: whatever Cookie header arrives, the admin does not panic, and it
// signs the caller in exactly when the session cookie's value is the real token.
func FuzzSessionToken(f *testing.F) {
	fa := newFuzzAdmin(f)
	for _, seed := range []string{
		sessionCookie + "=" + tokenPlaceholder,
		"theme=dark; " + sessionCookie + "=" + tokenPlaceholder + "; x=y",
		sessionCookie + "=" + tokenPlaceholder + "x",
		sessionCookie + "=\"" + tokenPlaceholder + "\"",
		sessionCookie + "= " + tokenPlaceholder,
		sessionCookie + "=",
		sessionCookie,
		"",
		"=; ;=;;",
		sessionCookie + "=" + strings.Repeat("A", 4096),
		sessionCookie + "=%00%ff\x00\xff",
		sessionCookie + "=a; " + sessionCookie + "=" + tokenPlaceholder,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		header := strings.ReplaceAll(raw, tokenPlaceholder, fa.cookie)
		var parsed string
		resp := fa.serve("GET", "/api/auth/me", func(h *fasthttp.RequestHeader) {
			h.Set("Cookie", header)
			parsed = string(h.Cookie(sessionCookie))
		}, "")
		signedIn := resp.StatusCode() == fasthttp.StatusOK
		if signedIn && parsed != fa.cookie {
			t.Fatalf("Cookie %q (session value %q) signed in; only the real token may", header, parsed)
		}
		if !signedIn && parsed == fa.cookie {
			t.Fatalf("Cookie %q carries the real token but got %d %s", header, resp.StatusCode(), resp.Body())
		}
		if !signedIn && resp.StatusCode() != fasthttp.StatusUnauthorized {
			t.Fatalf("Cookie %q: status %d, want 200 or 401", header, resp.StatusCode())
		}
	})
}

// FuzzCSRFToken: for a signed-in session, a cookie-authenticated change passes the CSRF
// check exactly when X-CSRF-Token is the session's token, and no value panics. The change
// is a password change with an empty body, which fails validation (400) once past the check,
// so the session survives every input.
func FuzzCSRFToken(f *testing.F) {
	fa := newFuzzAdmin(f)
	for _, seed := range []string{
		tokenPlaceholder,
		tokenPlaceholder + " ",
		" " + tokenPlaceholder,
		tokenPlaceholder[:3],
		"{token}",
		"",
		"\x00",
		strings.Repeat("0", 64),
		tokenPlaceholder + tokenPlaceholder,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		value := strings.ReplaceAll(raw, tokenPlaceholder, fa.csrf)
		var sent string
		resp := fa.serve("POST", "/api/auth/password", func(h *fasthttp.RequestHeader) {
			h.Set("Cookie", sessionCookie+"="+fa.cookie)
			h.SetContentType("application/json")
			h.Set("X-CSRF-Token", value)
			sent = string(h.Peek("X-CSRF-Token"))
		}, `{}`)
		passed := !strings.Contains(string(resp.Body()), `"csrf_invalid"`)
		if passed && sent != fa.csrf {
			t.Fatalf("X-CSRF-Token %q (sent as %q) passed the CSRF check: %d %s", value, sent, resp.StatusCode(), resp.Body())
		}
		if !passed && sent == fa.csrf {
			t.Fatalf("the real CSRF token was refused: %d %s", resp.StatusCode(), resp.Body())
		}
		if passed && resp.StatusCode() != fasthttp.StatusBadRequest {
			t.Fatalf("X-CSRF-Token %q: status %d %s, want 400 (validation) past the check", value, resp.StatusCode(), resp.Body())
		}
		if !passed && resp.StatusCode() != fasthttp.StatusForbidden {
			t.Fatalf("X-CSRF-Token %q: status %d, want 403", value, resp.StatusCode())
		}
	})
}
