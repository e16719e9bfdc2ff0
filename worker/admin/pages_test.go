package admin

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/store"
)

func checkSecurityHeaders(t *testing.T, path string, r resp) {
	t.Helper()
	csp := r.header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe") {
		t.Errorf("%s: CSP %q", path, csp)
	}
	for k, want := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"} {
		if got := r.header.Get(k); got != want {
			t.Errorf("%s: %s = %q, want %q", path, k, got, want)
		}
	}
}

func TestPagesRenderWithSecurityHeaders(t *testing.T) {
	h := newHarness(t)
	s := h.login("root", adminPass)
	ctx := context.Background()
	kid, _ := h.st.CreateOwnedAPIKey(ctx, store.APIKey{Name: "page-key", Hash: [32]byte{9}, Prefix: "sk-page…"}, h.userID("root"))
	insertLogs(t, h.dbPath, []store.RequestLog{{RequestID: "req-page-1", TsMs: time.Now().UnixMilli(), KeyID: kid, Model: "gpt-page", Upstream: "up-page", Status: 502, LatencyUs: 1500, ErrorClass: "upstream_error"}})
	h.rollup()
	if _, err := h.st.AddUpstream(ctx, store.Upstream{Name: "up-page", BaseURL: "http://127.0.0.1:1/v1", APIKey: "sk-secret-provider-key", Enabled: true, Weight: 1,
		Deployments: []store.Deployment{{PublicModel: "gpt-page", MaxConcurrent: 9}}}); err != nil {
		t.Fatal(err)
	}
	page, _ := h.st.QueryLogs(ctx, store.LogFilter{})
	for _, tc := range []struct {
		path string
		want []string
		not  []string
	}{
		{"/dashboard", []string{"Dashboard", `id="stats-data"`, "gpt-page", "up-page"}, []string{"<script>"}},
		{"/dashboard?range=week", []string{"Last week"}, nil},
		{"/upstreams", []string{"up-page", "sk-s…"}, []string{"sk-secret-provider-key"}},
		{"/keys", []string{"page-key", "sk-page…", "defaults", "$0.00", `id="new-rpm"`, `id="limits-form"`}, nil},
		{"/routes", []string{`id="routes-table"`, "up-page → gpt-page", "max 9", "round_robin", "not probed", `href="/routes" class="active"`}, nil},
		{"/cache", []string{`id="cache-entries"`, "The cache is empty", "Purge everything"}, nil},
		{"/prices", []string{`id="prices-table"`, "gpt-4o-mini", "built in"}, nil},
		{"/users", []string{"alice", "bob", "Admin API tokens"}, nil},
		{"/logs", []string{"gpt-page", "upstream_error"}, nil},
		{"/logs?status=5xx&model=gpt-page", []string{"gpt-page"}, nil},
		{"/logs/" + strconv.FormatInt(page.Logs[0].ID, 10), []string{"req-page-1", "Upstream attempts"}, nil},
		{"/workers", []string{"Primary"}, nil},
		{"/settings", []string{"LLM_PROXY_LOG_LEVEL", "read-only"}, nil},
		{"/help", []string{"/v1/chat/completions", "stream", "/v1/embeddings", "/api/apikeys", "X-CSRF-Token"}, nil},
		{"/password", []string{"Change password"}, nil},
	} {
		r := h.do(req{method: "GET", path: tc.path, sess: s})
		if r.status != 200 {
			t.Errorf("%s: %d %s", tc.path, r.status, r.body)
			continue
		}
		checkSecurityHeaders(t, tc.path, r)
		for _, w := range tc.want {
			if !strings.Contains(string(r.body), w) {
				t.Errorf("%s lacks %q", tc.path, w)
			}
		}
		for _, w := range tc.not {
			if strings.Contains(string(r.body), w) {
				t.Errorf("%s contains %q", tc.path, w)
			}
		}
		if strings.Contains(string(r.body), " style=") || strings.Contains(string(r.body), " onclick=") {
			t.Errorf("%s has an inline style or handler, which the CSP blocks", tc.path)
		}
	}
	// Public pages and assets.
	for _, p := range []string{"/login", "/static/app.js", "/static/app.css"} {
		r := h.do(req{method: "GET", path: p})
		if r.status != 200 {
			t.Errorf("%s: %d", p, r.status)
		}
		checkSecurityHeaders(t, p, r)
	}
	if r := h.do(req{method: "GET", path: "/static/../admin.go"}); r.status == 200 {
		t.Error("static served a file outside the static folder")
	}
	// A user gets a 403 page for admin pages.
	alice := h.login("alice", userPass)
	for _, p := range []string{"/users", "/routes", "/cache", "/prices"} {
		if r := h.do(req{method: "GET", path: p, sess: alice}); r.status != 403 {
			t.Errorf("alice on %s: %d", p, r.status)
		}
	}
	// Alice's key page shows limits but has no fields to change them; she may opt her
	// keys out of body logging.
	if r := h.do(req{method: "GET", path: "/keys", sess: alice}); r.status != 200 || strings.Contains(string(r.body), `id="new-rpm"`) ||
		strings.Contains(string(r.body), `id="edit-rpm"`) || strings.Contains(string(r.body), `href="/routes"`) ||
		!strings.Contains(string(r.body), `id="edit-log-bodies"`) {
		t.Errorf("alice's /keys: %d, shows limit fields or admin links, or no body-logging choice", r.status)
	}
	if r := h.do(req{method: "GET", path: "/logs/" + strconv.FormatInt(page.Logs[0].ID, 10), sess: alice}); r.status != 404 {
		t.Errorf("alice on root's log: %d", r.status)
	}
	// The login page sends a signed-in user on, and never to another site.
	if r := h.do(req{method: "GET", path: "/login?next=//evil.example/", sess: s}); r.header.Get("Location") != "/dashboard" {
		t.Errorf("open redirect: %q", r.header.Get("Location"))
	}
}

// BenchmarkPages renders each page server-side over LLM_PROXY_BENCH_ROWS request rows
// (default 1,000,000) rolled up as the primary would. The handlers are called directly
// on a RequestCtx, so the figure is the server's work without the network.
func BenchmarkPages(b *testing.B) {
	rows := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("LLM_PROXY_BENCH_ROWS")); err == nil && v > 0 {
		rows = v
	}
	h := newHarness(&testing.T{})
	b.Cleanup(func() { h.st.Close() })
	ctx := context.Background()
	now := time.Now()
	uid := h.userID("root")
	for i := 0; i < 20; i++ {
		if _, err := h.st.CreateOwnedAPIKey(ctx, store.APIKey{Name: "k" + strconv.Itoa(i), Hash: [32]byte{byte(i), 1}, Prefix: "sk-" + strconv.Itoa(i)}, uid); err != nil {
			b.Fatal(err)
		}
	}
	for _, u := range []string{"up-0", "up-1", "up-2", "up-3"} {
		if _, err := h.st.AddUpstream(ctx, store.Upstream{Name: u, BaseURL: "http://127.0.0.1:1/v1", Enabled: true, Weight: 1}); err != nil {
			b.Fatal(err)
		}
	}
	span := int64(7 * 24 * time.Hour / time.Millisecond)
	start := now.UnixMilli() - span
	const chunk = 100_000
	t0 := time.Now()
	for i := 0; i < rows; i += chunk {
		batch := make([]store.RequestLog, 0, chunk)
		for j := i; j < min(i+chunk, rows); j++ {
			r := store.RequestLog{RequestID: "r" + strconv.Itoa(j), TsMs: start + span*int64(j)/int64(rows), KeyID: int64(j%20 + 1),
				Model: "model-" + strconv.Itoa(j%8), Upstream: "up-" + strconv.Itoa(j%4), Status: 200,
				LatencyUs: int64(50_000 + (j*7919)%2_000_000), PromptTokens: 20, CompletionTokens: int64(j % 300)}
			if j%50 == 0 {
				r.Status, r.ErrorClass = 502, "upstream_error"
			}
			batch = append(batch, r)
		}
		insertLogs(b, h.dbPath, batch)
	}
	insert := time.Since(t0)
	t0 = time.Now()
	h.t = &testing.T{}
	h.rollup()
	b.Logf("%d rows: insert %s, roll-up %s", rows, insert.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	u, err := h.st.User(ctx, uid)
	if err != nil {
		b.Fatal(err)
	}
	handlers := map[string]route{}
	for _, rt := range h.a.routes {
		if rt.page && rt.method == "GET" {
			handlers[rt.path] = rt
		}
	}
	lastLog, _ := h.st.QueryLogs(ctx, store.LogFilter{Limit: 1})
	for _, p := range []struct{ name, route, query, id string }{
		{"dashboard-hour", "/dashboard", "range=hour", ""},
		{"dashboard-day", "/dashboard", "range=day", ""},
		{"dashboard-week", "/dashboard", "range=week", ""},
		{"upstreams", "/upstreams", "", ""},
		{"routes", "/routes", "", ""},
		{"cache", "/cache", "", ""},
		{"prices", "/prices", "", ""},
		{"keys", "/keys", "", ""},
		{"users", "/users", "", ""},
		{"logs", "/logs", "", ""},
		{"logs-filtered", "/logs", "model=model-3&status=200", ""},
		{"logs-rare-filter", "/logs", "model=model-3&status=5xx", ""},
		{"log-detail", "/logs/{id}", "", strconv.FormatInt(lastLog.Logs[0].ID, 10)},
		{"workers", "/workers", "", ""},
		{"settings", "/settings", "", ""},
		{"help", "/help", "", ""},
	} {
		rt := handlers[p.route]
		b.Run(p.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var hr fasthttp.Request
				hr.SetRequestURI(p.route + "?" + p.query)
				var rc fasthttp.RequestCtx
				rc.Init(&hr, nil, nil) // a server-less context, as fasthttp's own tests make
				if p.id != "" {
					rc.SetUserValue("id", p.id)
				}
				c := &call{ctx: &rc, user: u, signed: true, session: &store.Session{CSRFToken: "x"}}
				rt.h(c)
				if rc.Response.StatusCode() != 200 {
					b.Fatalf("%s: status %d: %s", p.name, rc.Response.StatusCode(), rc.Response.Body())
				}
			}
		})
	}
}
