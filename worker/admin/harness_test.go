package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/fasthttp/router"
	"github.com/hashicorp/go-hclog"
	"github.com/valyala/fasthttp"
	"zombiezen.com/go/sqlite"

	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/store/secret"
)

// cheapParams keep argon2id fast in tests; production uses argon2id.DefaultParams.
var cheapParams = &argon2id.Params{Memory: 1024, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}

// fakeSettings is a settings provider over a fixed list; LOG_LEVEL must be a level.
type fakeSettings struct{ st *store.Store }

func (f fakeSettings) List(ctx context.Context) ([]Setting, error) {
	rows, err := f.st.Settings(ctx)
	if err != nil {
		return nil, err
	}
	level := Setting{Name: "LOG_LEVEL", Value: "INFO", Default: "INFO", Source: "default"}
	if v, ok := rows["LOG_LEVEL"]; ok {
		level.Value, level.Source = v, "db"
	}
	return []Setting{level, {Name: "PORT", Value: "9000", Default: "8000", Source: "env", ReadOnly: true},
		{Name: "DATABASE_PATH", Value: "x.db", Default: "data/llm-proxy.db", Source: "default", ReadOnly: true}}, nil
}

func (f fakeSettings) Validate(_ context.Context, set map[string]string, _ []string) error {
	if v, ok := set["LOG_LEVEL"]; ok && v != "DEBUG" && v != "INFO" && v != "WARN" && v != "ERROR" {
		return errors.New(`LLM_PROXY_LOG_LEVEL="` + v + `" is invalid; accepted values: DEBUG, INFO, WARN or ERROR`)
	}
	return nil
}

// harness is an admin served on a real socket of 127.0.0.1 over a fresh database, with
// an admin (password already changed) and a plain user.
type harness struct {
	t      *testing.T
	st     *store.Store
	a      *Admin
	base   string
	dbPath string
	now    time.Time
}

const (
	adminPass = "admin-password-1"
	userPass  = "user-password-12"
)

func newHarness(t *testing.T) *harness { t.Helper(); return newHarnessWith(t, nil) }

// newHarnessWith is newHarness with the admin's Deps adjusted by edit (nil: none).
func newHarnessWith(t *testing.T, edit func(*Deps)) *harness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dir := t.TempDir()
	box, err := secret.New("admin-test-secret-0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(dir, "data", "db.sqlite")
	st, err := store.Open(ctx, store.Config{Path: dbPath, MaxOpenConns: 8, MaxIdleConns: 4}, box, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	deps := Deps{Store: st, Settings: fakeSettings{st}, SessionTTL: time.Hour, Version: "test", HashParams: cheapParams}
	if edit != nil {
		edit(&deps)
	}
	a, err := New(deps)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, st: st, a: a, dbPath: dbPath, now: time.Now()}
	for _, u := range []struct{ name, pass, role string }{{"root", adminPass, store.RoleAdmin}, {"alice", userPass, store.RoleUser}, {"bob", userPass, store.RoleUser}} {
		hash, err := HashPassword(u.pass, cheapParams)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.CreateUser(ctx, store.User{Username: u.name, PasswordHash: hash, Role: u.role}); err != nil {
			t.Fatal(err)
		}
	}
	r := router.New()
	a.Register(r)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: r.Handler}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	h.base = "http://" + ln.Addr().String()
	return h
}

// session is a signed-in browser: its cookie and CSRF token.
type session struct {
	cookie string
	csrf   string
}

// req describes one request; zero fields send nothing.
type req struct {
	method, path string
	body         any
	sess         *session
	csrf         *string // overrides sess.csrf; pointer to "" sends none
	origin       string
	bearer       string
	header       map[string]string
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// errCode returns the error's code and param.
func (r resp) errCode(t *testing.T) (code, param string) {
	t.Helper()
	var e struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Code    string  `json:"code"`
			Param   *string `json:"param"`
		} `json:"error"`
	}
	r.json(t, &e)
	if e.Error.Message == "" || e.Error.Type == "" {
		t.Errorf("error body %s lacks message or type", r.body)
	}
	if e.Error.Param != nil {
		param = *e.Error.Param
	}
	return e.Error.Code, param
}

var noRedirect = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func (h *harness) do(r req) resp {
	h.t.Helper()
	var body io.Reader
	if r.body != nil {
		b, err := json.Marshal(r.body)
		if err != nil {
			h.t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	hr, err := http.NewRequest(r.method, h.base+r.path, body)
	if err != nil {
		h.t.Fatal(err)
	}
	if r.body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	if r.sess != nil {
		hr.Header.Set("Cookie", sessionCookie+"="+r.sess.cookie)
		if r.csrf == nil {
			hr.Header.Set("X-CSRF-Token", r.sess.csrf)
		}
	}
	if r.csrf != nil && *r.csrf != "" {
		hr.Header.Set("X-CSRF-Token", *r.csrf)
	}
	if r.origin != "" {
		hr.Header.Set("Origin", r.origin)
	}
	if r.bearer != "" {
		hr.Header.Set("Authorization", "Bearer "+r.bearer)
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	res, err := noRedirect.Do(hr)
	if err != nil {
		h.t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

// login signs in and returns the session; it fails the test unless the answer is 200.
func (h *harness) login(user, pass string) *session {
	h.t.Helper()
	r := h.do(req{method: "POST", path: "/api/auth/login", body: map[string]string{"username": user, "password": pass}})
	if r.status != http.StatusOK {
		h.t.Fatalf("login %s: %d %s", user, r.status, r.body)
	}
	return sessionFrom(h.t, r)
}

func sessionFrom(t *testing.T, r resp) *session {
	t.Helper()
	var out struct {
		CSRF string `json:"csrf_token"`
	}
	r.json(t, &out)
	for _, c := range r.header.Values("Set-Cookie") {
		if v, ok := strings.CutPrefix(c, sessionCookie+"="); ok {
			v, _, _ = strings.Cut(v, ";")
			if v != "" {
				return &session{cookie: v, csrf: out.CSRF}
			}
		}
	}
	t.Fatalf("no session cookie in %v", r.header.Values("Set-Cookie"))
	return nil
}

func (h *harness) userID(name string) int64 {
	h.t.Helper()
	u, err := h.st.UserByName(context.Background(), name)
	if err != nil {
		h.t.Fatal(err)
	}
	return u.ID
}

// insertLogs bulk-inserts request rows straight into the database file (tests only: the
// product writes request_logs through the spool ingest).
func insertLogs(tb testing.TB, dbPath string, rows []store.RequestLog) {
	tb.Helper()
	conn, err := sqlite.OpenConn(dbPath, sqlite.OpenReadWrite)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	conn.SetBlockOnBusy()
	if err := execSQL(conn, "BEGIN IMMEDIATE"); err != nil {
		tb.Fatal(err)
	}
	stmt := conn.Prep(`INSERT INTO request_logs(request_id, ts_ms, worker, key_id, endpoint, model, upstream,
upstream_model, status, stream, latency_us, ttfb_us, prompt_tokens, completion_tokens, error_class)
VALUES (?1, ?2, 0, ?3, 'chat', ?4, ?5, ?4, ?6, 0, ?7, 0, ?8, ?9, ?10)`)
	for _, r := range rows {
		stmt.BindText(1, r.RequestID)
		stmt.BindInt64(2, r.TsMs)
		if r.KeyID == 0 {
			stmt.BindNull(3)
		} else {
			stmt.BindInt64(3, r.KeyID)
		}
		stmt.BindText(4, r.Model)
		stmt.BindText(5, r.Upstream)
		stmt.BindInt64(6, int64(r.Status))
		stmt.BindInt64(7, r.LatencyUs)
		stmt.BindInt64(8, r.PromptTokens)
		stmt.BindInt64(9, r.CompletionTokens)
		stmt.BindText(10, r.ErrorClass)
		if _, err := stmt.Step(); err != nil {
			tb.Fatal(err)
		}
		if err := stmt.Reset(); err != nil {
			tb.Fatal(err)
		}
	}
	if err := execSQL(conn, "COMMIT"); err != nil {
		tb.Fatal(err)
	}
}

func execSQL(conn *sqlite.Conn, q string) error {
	stmt, _, err := conn.PrepareTransient(q)
	if err != nil {
		return err
	}
	defer stmt.Finalize()
	_, err = stmt.Step()
	return err
}

// rollup takes the lease and folds every request row into the statistics.
func (h *harness) rollup() {
	h.t.Helper()
	ctx := context.Background()
	l, err := h.st.Lease(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	epoch := l.Epoch
	if l.Holder == "" {
		nl, won, err := h.st.TryAcquire(ctx, "test", 1, l.RenewSeq, time.Now())
		if err != nil || !won {
			h.t.Fatalf("TryAcquire: %t %v", won, err)
		}
		epoch = nl.Epoch
	}
	if _, err := h.st.RollupStats(ctx, epoch, 1000, time.Now()); err != nil {
		h.t.Fatal(err)
	}
}

func strp(s string) *string { return &s }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
