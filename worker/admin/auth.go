package admin

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/store"
)

// userJSON is a user as the API shows it; never the hash.
type userJSON struct {
	ID                 int64  `json:"id"`
	Username           string `json:"username"`
	Role               string `json:"role"`
	MustChangePassword bool   `json:"must_change_password"`
	Disabled           bool   `json:"disabled"`
	CreatedAt          string `json:"created_at"`
}

func toUserJSON(u store.User) userJSON {
	return userJSON{ID: u.ID, Username: u.Username, Role: u.Role, MustChangePassword: u.MustChangePassword,
		Disabled: u.Disabled, CreatedAt: u.CreatedAt.UTC().Format(time.RFC3339)}
}

// sessionJSON answers login and /me.
type sessionJSON struct {
	User               userJSON `json:"user"`
	CSRFToken          string   `json:"csrf_token,omitempty"` // "" for admin API tokens, which need none
	MustChangePassword bool     `json:"must_change_password"`
}

// randomToken returns n random bytes, URL-safe base64 encoded.
func randomToken(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

const msgBadLogin = "Invalid username or password."

func (a *Admin) login(c *call) {
	var req struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	if !c.decode(&req) {
		return
	}
	var v validation
	if strings.TrimSpace(req.Username) == "" {
		v.add("username", "username is required.")
	}
	if req.Password == "" {
		v.add("password", "password is required.")
	} else if len(req.Password) > maxPasswordLen {
		v.add("password", "password is too long.")
	}
	if !v.ok() {
		c.invalid(&v)
		return
	}
	now := a.now()
	scopes := []string{"ip:" + clientIP(c.ctx), "user:" + strings.ToLower(strings.TrimSpace(req.Username))}
	// Each scope has its own limit: check the address and the name separately.
	for i, limit := range []int{loginLimitIP, loginLimitUser} {
		ok, wait, err := a.st.LoginAllowed(c.std, scopes[i:i+1], limit, loginWindow, now)
		if err != nil {
			c.internal(err, a.logger)
			return
		}
		if !ok {
			c.ctx.Response.Header.Set("Retry-After", strconv.Itoa(int(wait.Seconds()+0.999)))
			c.fail(fasthttp.StatusTooManyRequests, "rate_limit_error", "too_many_login_attempts", "",
				"Too many failed sign-in attempts; try again in "+wait.Round(time.Second).String()+".")
			return
		}
	}
	u, err := a.st.UserByName(c.std, strings.TrimSpace(req.Username))
	hash := u.PasswordHash
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			c.internal(err, a.logger)
			return
		}
		// Same work for an unknown name as for a wrong password: no timing tells them apart.
		hash = a.dummy()
	}
	match, cmpErr := argon2id.ComparePasswordAndHash(req.Password, hash)
	if err != nil || cmpErr != nil || !match || u.Disabled {
		if cmpErr != nil {
			a.logger.Warn("stored password hash is unreadable", "user", u.Username, "error", cmpErr)
		}
		if err := a.st.RecordLoginFailure(c.std, scopes, loginWindow, now); err != nil {
			a.logger.Warn("record login failure", "error", err)
		}
		c.fail(fasthttp.StatusUnauthorized, "authentication_error", "invalid_credentials", "", msgBadLogin)
		return
	}
	if err := a.st.ClearLoginFailures(c.std, scopes[1:]); err != nil {
		a.logger.Warn("clear login failures", "error", err)
	}
	// Rotation: a login always starts a new session; a session cookie the browser already
	// had (maybe planted) is ended.
	if old := c.ctx.Request.Header.Cookie(sessionCookie); len(old) > 0 {
		_ = a.st.DeleteSession(c.std, sha256.Sum256(old))
	}
	sess, ok := a.startSession(c, u)
	if !ok {
		return
	}
	a.logger.Info("signed in", "user", u.Username, "ip", scopes[0][3:])
	c.json(fasthttp.StatusOK, sessionJSON{User: toUserJSON(u), CSRFToken: sess.CSRFToken, MustChangePassword: u.MustChangePassword})
}

// startSession creates a session for u and sets its cookie.
func (a *Admin) startSession(c *call, u store.User) (store.Session, bool) {
	token, err := randomToken(32) // 256 bits
	if err != nil {
		c.internal(err, a.logger)
		return store.Session{}, false
	}
	csrf, err := randomToken(32)
	if err != nil {
		c.internal(err, a.logger)
		return store.Session{}, false
	}
	now := a.now()
	sess := store.Session{
		TokenHash: sha256.Sum256([]byte(token)), UserID: u.ID, CSRFToken: csrf, CreatedAt: now,
		ExpiresAt: now.Add(a.ttl), IP: clientIP(c.ctx), UserAgent: truncate(string(c.ctx.UserAgent()), 200),
	}
	if err := a.st.CreateSession(c.std, sess); err != nil {
		c.internal(err, a.logger)
		return store.Session{}, false
	}
	a.setCookie(c, token, sess.ExpiresAt)
	c.session = &sess
	return sess, true
}

func (a *Admin) setCookie(c *call, value string, expires time.Time) {
	ck := fasthttp.AcquireCookie()
	defer fasthttp.ReleaseCookie(ck)
	ck.SetKey(sessionCookie)
	ck.SetValue(value)
	ck.SetPath("/")
	ck.SetHTTPOnly(true)
	ck.SetSameSite(fasthttp.CookieSameSiteStrictMode)
	ck.SetSecure(isHTTPS(c.ctx))
	if value == "" {
		ck.SetExpire(fasthttp.CookieExpireDelete)
	} else {
		ck.SetExpire(expires)
	}
	c.ctx.Response.Header.SetCookie(ck)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func (a *Admin) me(c *call) {
	out := sessionJSON{User: toUserJSON(c.user), MustChangePassword: c.user.MustChangePassword}
	if c.session != nil {
		out.CSRFToken = c.session.CSRFToken
	}
	c.json(fasthttp.StatusOK, out)
}

// checkNewPassword validates a new password for field.
func checkNewPassword(v *validation, field, pw string) {
	switch {
	case len([]rune(pw)) < minPasswordLen:
		v.add(field, "The password must be at least "+strconv.Itoa(minPasswordLen)+" characters long.")
	case len(pw) > maxPasswordLen:
		v.add(field, "The password is too long.")
	}
}

func (a *Admin) changePassword(c *call) {
	var req struct {
		Current string `json:"current"`
		New     string `json:"new"`
	}
	if !c.decode(&req) {
		return
	}
	var v validation
	if req.Current == "" {
		v.add("current", "current is required.")
	}
	checkNewPassword(&v, "new", req.New)
	if req.New != "" && req.New == req.Current {
		v.add("new", "The new password must differ from the current one.")
	}
	if !v.ok() {
		c.invalid(&v)
		return
	}
	match, err := argon2id.ComparePasswordAndHash(req.Current, c.user.PasswordHash)
	if err != nil || !match {
		v.add("current", "The current password is wrong.")
		c.invalid(&v)
		return
	}
	hash, err := HashPassword(req.New, a.params)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	no := false
	// Every session of the user ends, this one included; a new one is started below, so
	// the browser that changed the password stays signed in with a fresh token.
	u, err := a.st.UpdateUser(c.std, c.user.ID, store.UserUpdate{PasswordHash: &hash, MustChangePassword: &no}, nil)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	out := sessionJSON{User: toUserJSON(u)}
	if c.session != nil {
		sess, ok := a.startSession(c, u)
		if !ok {
			return
		}
		out.CSRFToken = sess.CSRFToken
	}
	a.logger.Info("password changed", "user", u.Username)
	c.json(fasthttp.StatusOK, out)
}

func (a *Admin) logout(c *call) {
	if c.session != nil {
		if err := a.st.DeleteSession(c.std, c.session.TokenHash); err != nil {
			c.internal(err, a.logger)
			return
		}
		a.setCookie(c, "", time.Time{})
	}
	c.json(fasthttp.StatusOK, map[string]bool{"ok": true})
}
