package admin

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/llm-proxy/llm-proxy/store"
)

func TestDefaultAdminMustChangePassword(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	created, err := EnsureFirstAdmin(ctx, h.st, "admin", "admin123")
	if err != nil || created {
		t.Fatalf("EnsureFirstAdmin with users present = %t, %v; want nothing created", created, err)
	}
	// A fresh database gets the default admin, flagged.
	hash, _ := HashPassword("admin123", cheapParams)
	if _, err := h.st.CreateUser(ctx, store.User{Username: "admin", PasswordHash: hash, Role: store.RoleAdmin, MustChangePassword: true}); err != nil {
		t.Fatal(err)
	}
	if def, err := DefaultPasswordInUse(ctx, h.st, "admin", "admin123"); err != nil || !def {
		t.Fatalf("DefaultPasswordInUse = %t, %v; want true", def, err)
	}
	r := h.do(req{method: "POST", path: "/api/auth/login", body: map[string]string{"username": "admin", "password": "admin123"}})
	var login struct {
		User struct {
			Username string `json:"username"`
		} `json:"user"`
		CSRF string `json:"csrf_token"`
		Must bool   `json:"must_change_password"`
	}
	r.json(t, &login)
	if r.status != 200 || !login.Must || login.CSRF == "" || login.User.Username != "admin" {
		t.Fatalf("login = %d %s", r.status, r.body)
	}
	s := sessionFrom(t, r)
	// Every admin action but the password change is refused with a message.
	for _, rq := range []req{{method: "GET", path: "/api/users"}, {method: "POST", path: "/api/apikeys", body: map[string]string{"name": "x"}}, {method: "GET", path: "/api/stats"}} {
		rq.sess = s
		got := h.do(rq)
		if code, _ := got.errCode(t); got.status != 403 || code != "password_change_required" {
			t.Errorf("%s %s while default: %d %s", rq.method, rq.path, got.status, got.body)
		}
	}
	if got := h.do(req{method: "GET", path: "/dashboard", sess: s}); got.status != 303 || got.header.Get("Location") != "/password" {
		t.Errorf("dashboard while default: %d -> %q", got.status, got.header.Get("Location"))
	}
	// Validation of the change.
	for _, tc := range []struct {
		name, current, next, param string
	}{
		{"too short", "admin123", "short-pw", "new"},
		{"wrong current", "nope", "a-long-enough-password", "current"},
		{"same", "admin123", "admin123", "new"},
	} {
		got := h.do(req{method: "POST", path: "/api/auth/password", sess: s, body: map[string]string{"current": tc.current, "new": tc.next}})
		if _, param := got.errCode(t); got.status != 400 || param != tc.param {
			t.Errorf("%s: %d param %q, want 400 %q (%s)", tc.name, got.status, param, tc.param, got.body)
		}
	}
	got := h.do(req{method: "POST", path: "/api/auth/password", sess: s, body: map[string]string{"current": "admin123", "new": "a-long-enough-password"}})
	if got.status != 200 {
		t.Fatalf("change: %d %s", got.status, got.body)
	}
	// The session rotated: the old cookie is dead, the new one works without the flag.
	fresh := sessionFrom(t, got)
	if fresh.cookie == s.cookie {
		t.Error("the session token did not rotate on password change")
	}
	if r := h.do(req{method: "GET", path: "/api/auth/me", sess: s}); r.status != 401 {
		t.Errorf("old session after password change: %d", r.status)
	}
	if r := h.do(req{method: "GET", path: "/api/users", sess: fresh}); r.status != 200 {
		t.Errorf("after change: %d %s", r.status, r.body)
	}
	if def, _ := DefaultPasswordInUse(ctx, h.st, "admin", "admin123"); def {
		t.Error("DefaultPasswordInUse still true after the change")
	}
}

func TestSessionCookieAndLogout(t *testing.T) {
	h := newHarness(t)
	r := h.do(req{method: "POST", path: "/api/auth/login", body: map[string]string{"username": "root", "password": adminPass}})
	ck := r.header.Get("Set-Cookie")
	for _, want := range []string{"httponly", "samesite=strict", "path=/", "expires="} {
		if !strings.Contains(strings.ToLower(ck), want) {
			t.Errorf("cookie %q lacks %s", ck, want)
		}
	}
	if strings.Contains(strings.ToLower(ck), "secure") {
		t.Errorf("cookie over plain http is Secure: %q", ck)
	}
	s := sessionFrom(t, r)
	if len(s.cookie) < 22 { // 128 bits in base64
		t.Errorf("session token %q is shorter than 128 bits", s.cookie)
	}
	// Behind a local TLS-terminating proxy the cookie is Secure.
	r = h.do(req{method: "POST", path: "/api/auth/login", body: map[string]string{"username": "root", "password": adminPass},
		header: map[string]string{"X-Forwarded-Proto": "https"}})
	if ck := r.header.Get("Set-Cookie"); !strings.Contains(strings.ToLower(ck), "; secure") {
		t.Errorf("cookie behind https proxy is not Secure: %q", ck)
	}
	// Only the hash is stored.
	if _, _, err := h.st.SessionUser(context.Background(), [32]byte{}, time.Now()); err == nil {
		t.Error("zero hash found a session")
	}
	if r := h.do(req{method: "GET", path: "/api/auth/me", sess: s}); r.status != 200 {
		t.Fatalf("me: %d", r.status)
	}
	if r := h.do(req{method: "POST", path: "/api/auth/logout", sess: s}); r.status != 200 {
		t.Fatalf("logout: %d %s", r.status, r.body)
	}
	if r := h.do(req{method: "GET", path: "/api/auth/me", sess: s}); r.status != 401 {
		t.Errorf("me after logout: %d", r.status)
	}
}

func TestLoginSameAnswerAndRateLimit(t *testing.T) {
	h := newHarness(t)
	unknown := h.do(req{method: "POST", path: "/api/auth/login", body: map[string]string{"username": "nobody", "password": "whatever-password"}})
	wrong := h.do(req{method: "POST", path: "/api/auth/login", body: map[string]string{"username": "alice", "password": "whatever-password"}})
	if unknown.status != 401 || wrong.status != 401 || string(unknown.body) != string(wrong.body) {
		t.Errorf("unknown user %d %s vs wrong password %d %s: want the same 401", unknown.status, unknown.body, wrong.status, wrong.body)
	}
	if r := h.do(req{method: "POST", path: "/api/auth/login", body: map[string]string{"username": "alice"}}); r.status != 400 {
		t.Errorf("missing password: %d", r.status)
	}
	// Failures for one name end in 429 (with Retry-After), even with the right password.
	for i := 0; i < loginLimitUser-1; i++ {
		h.do(req{method: "POST", path: "/api/auth/login", body: map[string]string{"username": "bob", "password": "wrong-password"}})
	}
	r := h.do(req{method: "POST", path: "/api/auth/login", body: map[string]string{"username": "bob", "password": userPass}})
	if r.status != 200 {
		t.Fatalf("login below the limit: %d", r.status)
	}
	for i := 0; i < loginLimitUser; i++ {
		h.do(req{method: "POST", path: "/api/auth/login", body: map[string]string{"username": "bob", "password": "wrong-password"}})
	}
	r = h.do(req{method: "POST", path: "/api/auth/login", body: map[string]string{"username": "bob", "password": userPass}})
	if code, _ := r.errCode(t); r.status != 429 || code != "too_many_login_attempts" || r.header.Get("Retry-After") == "" {
		t.Errorf("after %d failures: %d %s (Retry-After %q)", loginLimitUser, r.status, r.body, r.header.Get("Retry-After"))
	}
	// Other names from the same address still work (the address limit is higher).
	h.login("alice", userPass)
}

// fillPath puts an id into the route's parameters.
func fillPath(p string) string {
	p = strings.ReplaceAll(p, "{id}", "1")
	p = strings.ReplaceAll(p, "{model:*}", "gpt-csrf")
	return strings.ReplaceAll(p, "{filepath:*}", "app.js")
}

// TestCSRFOnEveryMutatingRoute walks the route table Register mounts, so a mutating route
// added later is covered without editing this test.
func TestCSRFOnEveryMutatingRoute(t *testing.T) {
	h := newHarness(t)
	s := h.login("root", adminPass)
	other := h.login("alice", userPass)
	n := 0
	for _, rt := range h.a.routes {
		if !rt.mutating() {
			continue
		}
		if rt.access == public {
			// Login has no session yet: only the same-origin check applies.
			r := h.do(req{method: rt.method, path: fillPath(rt.path), origin: "http://evil.example", body: map[string]string{}})
			if code, _ := r.errCode(t); r.status != 403 || code != "cross_origin" {
				t.Errorf("%s %s cross-origin: %d %s", rt.method, rt.path, r.status, r.body)
			}
			continue
		}
		n++
		for _, tc := range []struct {
			name   string
			csrf   *string
			origin string
			code   string
		}{
			{"missing token", strp(""), "", "csrf_invalid"},
			{"wrong token", strp("not-the-token"), "", "csrf_invalid"},
			{"other session's token", strp(other.csrf), "", "csrf_invalid"},
			{"cross-origin with the right token", nil, "http://evil.example", "cross_origin"},
		} {
			r := h.do(req{method: rt.method, path: fillPath(rt.path), sess: s, csrf: tc.csrf, origin: tc.origin, body: map[string]string{}})
			if code, _ := r.errCode(t); r.status != 403 || code != tc.code {
				t.Errorf("%s %s, %s: %d %s; want 403 %s", rt.method, rt.path, tc.name, r.status, r.body, tc.code)
			}
		}
		// With the right token and origin the request gets past CSRF.
		r := h.do(req{method: rt.method, path: fillPath(rt.path), sess: s, origin: h.base, body: map[string]string{}})
		if r.status == 403 {
			t.Errorf("%s %s with a valid token: 403 %s", rt.method, rt.path, r.body)
		}
		if rt.path == "/api/auth/logout" || rt.path == "/api/auth/password" {
			s = h.login("root", adminPass) // those end or may end the session
		}
	}
	if n < 21 {
		t.Errorf("only %d mutating routes checked; the table has more", n)
	}
}

func TestAuthRequiredEverywhere(t *testing.T) {
	h := newHarness(t)
	for _, rt := range h.a.routes {
		if rt.access == public || rt.access == anyIfSigned {
			continue
		}
		r := h.do(req{method: rt.method, path: fillPath(rt.path), body: map[string]string{}})
		switch {
		case rt.page && (r.status != 303 || !strings.HasPrefix(r.header.Get("Location"), "/login")):
			t.Errorf("page %s without a session: %d -> %q", rt.path, r.status, r.header.Get("Location"))
		case !rt.page && r.status != 401:
			t.Errorf("%s %s without credentials: %d %s", rt.method, rt.path, r.status, r.body)
		}
		if r := h.do(req{method: rt.method, path: fillPath(rt.path), bearer: "lpa-not-a-token", body: map[string]string{}}); !rt.page && r.status != 401 {
			t.Errorf("%s %s with a bad token: %d", rt.method, rt.path, r.status)
		}
	}
}

func TestRoleChecks(t *testing.T) {
	h := newHarness(t)
	admin := h.login("root", adminPass)
	alice := h.login("alice", userPass)
	bob := h.login("bob", userPass)
	// Admin-only routes refuse a user.
	for _, rt := range h.a.routes {
		if rt.access != adminOnly {
			continue
		}
		r := h.do(req{method: rt.method, path: fillPath(rt.path), sess: alice, body: map[string]string{}})
		if r.status != 403 {
			t.Errorf("user on %s %s: %d %s", rt.method, rt.path, r.status, r.body)
		}
	}
	// Each user makes a key; each sees only their own, the admin sees both.
	mk := func(s *session, name string) int64 {
		r := h.do(req{method: "POST", path: "/api/apikeys", sess: s, body: map[string]any{"name": name}})
		var out struct {
			Key    string `json:"key"`
			APIKey struct {
				ID int64 `json:"id"`
			} `json:"api_key"`
		}
		r.json(t, &out)
		if r.status != 201 || !strings.HasPrefix(out.Key, "sk-") {
			t.Fatalf("create key: %d %s", r.status, r.body)
		}
		return out.APIKey.ID
	}
	aliceKey, bobKey := mk(alice, "alice-key"), mk(bob, "bob-key")
	count := func(s *session) int {
		var out struct {
			Data []keyJSON `json:"data"`
		}
		h.do(req{method: "GET", path: "/api/apikeys", sess: s}).json(t, &out)
		return len(out.Data)
	}
	if got := [3]int{count(alice), count(bob), count(admin)}; got != [3]int{1, 1, 2} {
		t.Errorf("keys seen by alice, bob, admin = %v, want [1 1 2]", got)
	}
	if r := h.do(req{method: "DELETE", path: "/api/apikeys/" + itoa(bobKey), sess: alice}); r.status != 404 {
		t.Errorf("alice revoking bob's key: %d", r.status)
	}
	if r := h.do(req{method: "PUT", path: "/api/apikeys/" + itoa(bobKey), sess: alice, body: map[string]any{"enabled": false}}); r.status != 404 {
		t.Errorf("alice disabling bob's key: %d", r.status)
	}
	if r := h.do(req{method: "POST", path: "/api/apikeys", sess: alice, body: map[string]any{"name": "x", "user_id": h.userID("bob")}}); r.status != 400 {
		t.Errorf("alice creating a key for bob: %d", r.status)
	}
	// Logs: alice sees her key's rows only, even when asking for bob's.
	now := time.Now()
	insertLogs(t, h.dbPath, []store.RequestLog{
		{RequestID: "a1", TsMs: now.UnixMilli(), KeyID: aliceKey, Model: "m", Upstream: "u", Status: 200},
		{RequestID: "b1", TsMs: now.UnixMilli(), KeyID: bobKey, Model: "m", Upstream: "u", Status: 200},
	})
	logIDs := func(s *session, q string) string {
		var out struct {
			Data []logJSON `json:"data"`
		}
		r := h.do(req{method: "GET", path: "/api/logs" + q, sess: s})
		r.json(t, &out)
		var ids []string
		for _, l := range out.Data {
			ids = append(ids, l.RequestID)
		}
		return strings.Join(ids, ",")
	}
	for _, tc := range []struct {
		name string
		s    *session
		q    string
		want string
	}{
		{"alice", alice, "", "a1"},
		{"alice asks for bob", alice, "?user_id=" + itoa(h.userID("bob")), "a1"},
		{"alice asks for bob's key", alice, "?key_id=" + itoa(bobKey), ""},
		{"admin", admin, "", "b1,a1"},
		{"admin filters bob", admin, "?user_id=" + itoa(h.userID("bob")), "b1"},
	} {
		if got := logIDs(tc.s, tc.q); got != tc.want {
			t.Errorf("%s: logs %q, want %q", tc.name, got, tc.want)
		}
	}
	// Stats are scoped the same way.
	h.rollup()
	var st statsJSON
	h.do(req{method: "GET", path: "/api/stats", sess: alice}).json(t, &st)
	if st.Totals.Requests != 1 {
		t.Errorf("alice's stats count %d requests, want 1", st.Totals.Requests)
	}
	h.do(req{method: "GET", path: "/api/stats?range=day", sess: admin}).json(t, &st)
	if st.Totals.Requests != 2 || len(st.Series) != 24 {
		t.Errorf("admin's day stats: %d requests in %d points, want 2 in 24", st.Totals.Requests, len(st.Series))
	}
	// Alice clears her logs: bob's stay.
	if r := h.do(req{method: "DELETE", path: "/api/logs?all=true", sess: alice}); r.status != 200 {
		t.Fatalf("alice clears: %d %s", r.status, r.body)
	}
	if got := logIDs(admin, ""); got != "b1" {
		t.Errorf("after alice cleared: %q, want b1", got)
	}
}

func TestAdminTokenNeedsNoCSRF(t *testing.T) {
	h := newHarness(t)
	s := h.login("root", adminPass)
	r := h.do(req{method: "POST", path: "/api/tokens", sess: s, body: map[string]string{"name": "ci"}})
	var out struct {
		Token string `json:"token"`
	}
	r.json(t, &out)
	if r.status != 201 || !strings.HasPrefix(out.Token, "lpa-") {
		t.Fatalf("create token: %d %s", r.status, r.body)
	}
	r = h.do(req{method: "POST", path: "/api/apikeys", bearer: out.Token, body: map[string]any{"name": "from-ci"}})
	if r.status != 201 {
		t.Errorf("create key with the admin token: %d %s", r.status, r.body)
	}
	if r := h.do(req{method: "GET", path: "/api/auth/me", bearer: out.Token}); r.status != 200 || strings.Contains(string(r.body), "csrf_token") {
		t.Errorf("me with the token: %d %s", r.status, r.body)
	}
	// A client key is not an admin token.
	var key struct {
		Key string `json:"key"`
	}
	h.do(req{method: "POST", path: "/api/apikeys", sess: s, body: map[string]any{"name": "client"}}).json(t, &key)
	if r := h.do(req{method: "GET", path: "/api/users", bearer: key.Key}); r.status != 401 {
		t.Errorf("client key on the admin API: %d", r.status)
	}
}

func TestValidationErrors(t *testing.T) {
	h := newHarness(t)
	s := h.login("root", adminPass)
	for _, tc := range []struct {
		method, path string
		body         any
		param        string
	}{
		{"POST", "/api/users", map[string]any{"username": "carol", "password": "short"}, "password"},
		{"POST", "/api/users", map[string]any{"username": "", "password": "long-enough-pass"}, "username"},
		{"POST", "/api/users", map[string]any{"username": "carol", "password": "long-enough-pass", "role": "root"}, "role"},
		{"POST", "/api/users", map[string]any{"username": "alice", "password": "long-enough-pass"}, "username"},
		{"POST", "/api/users", map[string]any{"username": "carol", "pasword": "typo"}, "pasword"},
		{"POST", "/api/users", map[string]any{"username": 5}, "username"},
		{"PUT", "/api/users/x", map[string]any{}, "id"},
		{"POST", "/api/apikeys", map[string]any{"name": ""}, "name"},
		{"POST", "/api/apikeys", map[string]any{"name": "k", "expires_at": "tomorrow"}, "expires_at"},
		{"POST", "/api/apikeys", map[string]any{"name": "k", "expires_at": "2001-01-01"}, "expires_at"},
		{"POST", "/api/apikeys", map[string]any{"name": "k", "models": []string{"a,b"}}, "models"},
		{"POST", "/api/upstreams", map[string]any{"name": "u", "base_url": "ftp://x"}, "base_url"},
		{"POST", "/api/upstreams", map[string]any{"name": "bad name", "base_url": "http://x"}, "name"},
		{"POST", "/api/upstreams", map[string]any{"name": "u", "base_url": "http://x", "weight": -1}, "weight"},
		{"PUT", "/api/settings", map[string]any{"settings": map[string]any{"LOG_LEVEL": "LOUD"}}, "LOG_LEVEL"},
		{"PUT", "/api/settings", map[string]any{"settings": map[string]any{"PORT": "1"}}, "PORT"},
		{"PUT", "/api/settings", map[string]any{"settings": map[string]any{"NOPE": "1"}}, "NOPE"},
		{"GET", "/api/logs?status=abc", nil, "status"},
		{"GET", "/api/logs?from=2026-01-02&to=2026-01-01", nil, "to"},
		{"DELETE", "/api/logs", nil, "from"},
		{"GET", "/api/stats?range=year", nil, "range"},
	} {
		r := h.do(req{method: tc.method, path: tc.path, sess: s, body: tc.body})
		if _, param := r.errCode(t); r.status != 400 || param != tc.param {
			t.Errorf("%s %s %v: %d param %q, want 400 %q (%s)", tc.method, tc.path, tc.body, r.status, param, tc.param, r.body)
		}
	}
	// Nothing half-written: the refused user does not exist.
	if _, err := h.st.UserByName(context.Background(), "carol"); err == nil {
		t.Error("a refused user was stored")
	}
}

func TestUsersAPI(t *testing.T) {
	h := newHarness(t)
	s := h.login("root", adminPass)
	r := h.do(req{method: "POST", path: "/api/users", sess: s, body: map[string]any{"username": "carol", "password": "carol-password-1", "role": "user"}})
	var u userJSON
	r.json(t, &u)
	if r.status != 201 || !u.MustChangePassword || u.Role != "user" {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	carol := h.login("carol", "carol-password-1")
	if r := h.do(req{method: "GET", path: "/api/apikeys", sess: carol}); r.status != 403 {
		t.Errorf("carol before changing the admin-set password: %d", r.status)
	}
	r = h.do(req{method: "PUT", path: "/api/users/" + itoa(u.ID), sess: s, body: map[string]any{"disabled": true}})
	if r.status != 200 {
		t.Fatalf("disable: %d %s", r.status, r.body)
	}
	if r := h.do(req{method: "GET", path: "/api/auth/me", sess: carol}); r.status != 401 {
		t.Errorf("disabled user's session: %d", r.status)
	}
	if r := h.do(req{method: "DELETE", path: "/api/users/" + itoa(h.userID("root")), sess: s}); r.status != 409 {
		t.Errorf("self delete: %d", r.status)
	}
	if r := h.do(req{method: "PUT", path: "/api/users/" + itoa(h.userID("root")), sess: s, body: map[string]any{"role": "user"}}); r.status != 409 {
		t.Errorf("demoting the last admin: %d %s", r.status, r.body)
	}
	if r := h.do(req{method: "DELETE", path: "/api/users/" + itoa(u.ID), sess: s}); r.status != 200 {
		t.Errorf("delete: %d", r.status)
	}
	if r := h.do(req{method: "DELETE", path: "/api/users/" + itoa(u.ID), sess: s}); r.status != 404 {
		t.Errorf("delete again: %d", r.status)
	}
	var list struct {
		Data []userJSON `json:"data"`
	}
	h.do(req{method: "GET", path: "/api/users", sess: s}).json(t, &list)
	if len(list.Data) != 3 || strings.Contains(string(h.do(req{method: "GET", path: "/api/users", sess: s}).body), "argon2") {
		t.Errorf("users list: %+v", list.Data)
	}
}

func TestKeysAPI(t *testing.T) {
	h := newHarness(t)
	s := h.login("root", adminPass)
	r := h.do(req{method: "POST", path: "/api/apikeys", sess: s, body: map[string]any{"name": "app", "models": []string{"gpt-4o", " gpt-4o "}, "expires_at": "2099-01-01"}})
	var created struct {
		Key    string  `json:"key"`
		APIKey keyJSON `json:"api_key"`
	}
	r.json(t, &created)
	if r.status != 201 || len(created.APIKey.Models) != 1 || created.APIKey.ExpiresAt == nil || created.APIKey.State != "active" {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	if strings.Contains(string(h.do(req{method: "GET", path: "/api/apikeys", sess: s}).body), created.Key) {
		t.Error("the listing shows the full key")
	}
	id := itoa(created.APIKey.ID)
	var k keyJSON
	r = h.do(req{method: "PUT", path: "/api/apikeys/" + id, sess: s, body: map[string]any{"name": "app2", "models": []string{}, "expires_at": "", "enabled": false}})
	r.json(t, &k)
	if r.status != 200 || k.Name != "app2" || len(k.Models) != 0 || k.ExpiresAt != nil || k.State != "disabled" || k.Enabled {
		t.Errorf("update: %d %s", r.status, r.body)
	}
	h.do(req{method: "PUT", path: "/api/apikeys/" + id, sess: s, body: map[string]any{"enabled": true}}).json(t, &k)
	if k.State != "active" {
		t.Errorf("re-enable: %+v", k)
	}
	h.do(req{method: "DELETE", path: "/api/apikeys/" + id, sess: s}).json(t, &k)
	if k.State != "revoked" || k.RevokedAt == nil {
		t.Errorf("revoke: %+v", k)
	}
	if r := h.do(req{method: "PUT", path: "/api/apikeys/" + id, sess: s, body: map[string]any{"enabled": true}}); r.status != 400 {
		t.Errorf("re-enable a revoked key: %d", r.status)
	}
	if r := h.do(req{method: "DELETE", path: "/api/apikeys/999", sess: s}); r.status != 404 {
		t.Errorf("revoke missing: %d", r.status)
	}
	// Tokens: list and delete.
	h.do(req{method: "POST", path: "/api/tokens", sess: s, body: map[string]any{"name": "t"}})
	var toks struct {
		Data []tokenJSON `json:"data"`
	}
	h.do(req{method: "GET", path: "/api/tokens", sess: s}).json(t, &toks)
	if len(toks.Data) != 1 {
		t.Fatalf("tokens: %+v", toks)
	}
	if r := h.do(req{method: "DELETE", path: "/api/tokens/" + itoa(toks.Data[0].ID), sess: s}); r.status != 200 {
		t.Errorf("delete token: %d", r.status)
	}
}

func TestUpstreamsAPI(t *testing.T) {
	h := newHarness(t)
	s := h.login("root", adminPass)
	var sawKey string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawKey = r.Header.Get("Authorization")
		if r.URL.Path != "/v1/models" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"object":"list","data":[{"id":"mock-1"},{"id":"mock-2"}]}`))
	}))
	defer up.Close()
	r := h.do(req{method: "POST", path: "/api/upstreams", sess: s, body: map[string]any{
		"name": "mock", "base_url": up.URL + "/v1/", "api_key": "sk-provider-secret-123456", "models": []string{"mock-1"}}})
	var u upstreamJSON
	r.json(t, &u)
	if r.status != 201 || u.BaseURL != up.URL+"/v1" || !u.HasAPIKey || strings.Contains(string(r.body), "provider-secret") || len(u.Deployments) != 1 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	if r := h.do(req{method: "POST", path: "/api/upstreams", sess: s, body: map[string]any{"name": "mock", "base_url": up.URL}}); r.status != 400 {
		t.Errorf("duplicate name: %d", r.status)
	}
	id := itoa(u.ID)
	var res testResult
	h.do(req{method: "POST", path: "/api/upstreams/" + id + "/test", sess: s}).json(t, &res)
	if !res.OK || res.Status != 200 || len(res.Models) != 2 || sawKey != "Bearer sk-provider-secret-123456" {
		t.Errorf("test: %+v (auth %q)", res, sawKey)
	}
	// An edit without api_key keeps the stored key; enabled=false disables.
	r = h.do(req{method: "PUT", path: "/api/upstreams/" + id, sess: s, body: map[string]any{"name": "mock2", "base_url": up.URL + "/v1", "enabled": false}})
	r.json(t, &u)
	if r.status != 200 || u.Name != "mock2" || u.Enabled || !u.HasAPIKey || u.Deployments[0].PublicModel != "*" {
		t.Errorf("update: %d %s", r.status, r.body)
	}
	// A broken base URL reports the failure, not a server error.
	h.do(req{method: "PUT", path: "/api/upstreams/" + id, sess: s, body: map[string]any{"name": "mock2", "base_url": up.URL + "/nope"}})
	h.do(req{method: "POST", path: "/api/upstreams/" + id + "/test", sess: s}).json(t, &res)
	if res.OK || res.Status != 404 || res.Error == "" {
		t.Errorf("test of a bad URL: %+v", res)
	}
	if r := h.do(req{method: "DELETE", path: "/api/upstreams/" + id, sess: s}); r.status != 200 {
		t.Errorf("delete: %d", r.status)
	}
	if r := h.do(req{method: "POST", path: "/api/upstreams/" + id + "/test", sess: s}); r.status != 404 {
		t.Errorf("test deleted: %d", r.status)
	}
}

func TestSettingsAndWorkersAPI(t *testing.T) {
	h := newHarness(t)
	s := h.login("root", adminPass)
	var out struct {
		Data []Setting `json:"data"`
	}
	r := h.do(req{method: "PUT", path: "/api/settings", sess: s, body: map[string]any{"settings": map[string]any{"LOG_LEVEL": "DEBUG"}}})
	r.json(t, &out)
	if r.status != 200 || out.Data[0].Value != "DEBUG" || out.Data[0].Source != "db" {
		t.Fatalf("put: %d %s", r.status, r.body)
	}
	h.do(req{method: "PUT", path: "/api/settings", sess: s, body: map[string]any{"settings": map[string]any{"LOG_LEVEL": nil}}}).json(t, &out)
	if out.Data[0].Source != "default" {
		t.Errorf("reset: %+v", out.Data[0])
	}
	if err := h.st.Heartbeat(context.Background(), store.WorkerRow{ID: "0-1-1", PID: 1, StartedAt: time.Now(), BeatAt: time.Now(), Version: "v"}); err != nil {
		t.Fatal(err)
	}
	var w workersJSON
	h.do(req{method: "GET", path: "/api/workers", sess: s}).json(t, &w)
	if len(w.Workers) != 1 || w.Workers[0].ID != "0-1-1" {
		t.Errorf("workers: %+v", w)
	}
}
