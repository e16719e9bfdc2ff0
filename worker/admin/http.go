package admin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/store"
)

// call is one request as the handlers see it: the identity the middleware resolved.
type call struct {
	ctx *fasthttp.RequestCtx
	// std is the context for store calls. The RequestCtx itself must not be one:
	// contexts derived from it read the request from another goroutine while
	// fasthttp may be recycling it (a data race under -race).
	std     context.Context
	user    store.User
	signed  bool           // user is set
	session *store.Session // nil when authenticated by an admin API token
}

func (c *call) isAdmin() bool { return c.signed && c.user.Role == store.RoleAdmin }

// scopeUser is the user whose data a "user" role may see: themselves; 0 for an admin.
func (c *call) scopeUser() int64 {
	if c.isAdmin() {
		return 0
	}
	return c.user.ID
}

// Security headers of every admin response. The CSP allows only this origin's files: no
// inline script or style and no eval (Alpine's CSP build needs none).
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

func setSecurityHeaders(ctx *fasthttp.RequestCtx) {
	h := &ctx.Response.Header
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}

// Messages of the refusals the middleware answers.
const (
	msgSignIn       = "Sign in first: send the session cookie from POST /api/auth/login, or an admin API token as 'Authorization: Bearer lpa-...'."
	msgMustChange   = "The password of this account must be changed before anything else (it is the default, or an administrator set it). Change it with POST /api/auth/password."
	msgAdminOnly    = "This needs the admin role."
	msgCSRF         = "Missing or invalid CSRF token: send the csrf_token from /api/auth/login or /api/auth/me in the X-CSRF-Token header."
	msgCrossOrigin  = "Cross-origin request refused: the admin API accepts cookie-authenticated changes only from its own pages."
	msgBadAuthToken = "Invalid or expired admin API token."
)

// wrap applies the route's access rule, the CSRF check and the security headers.
func (a *Admin) wrap(rt route) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		setSecurityHeaders(ctx)
		if rt.path != "/static/{filepath:*}" {
			ctx.Response.Header.Set("Cache-Control", "no-store")
		}
		std, cancel := context.WithCancel(context.Background())
		defer cancel()
		c := &call{ctx: ctx, std: std}
		if rt.access == public {
			if rt.mutating() && !sameOrigin(ctx) {
				c.fail(fasthttp.StatusForbidden, "permission_error", "cross_origin", "", msgCrossOrigin)
				return
			}
			rt.h(c)
			return
		}
		badToken := a.identify(c)
		if rt.access == anyIfSigned {
			rt.h(c)
			return
		}
		if !c.signed {
			switch {
			case rt.page:
				redirect(ctx, "/login?next="+url.QueryEscape(string(ctx.RequestURI())))
			case badToken:
				c.fail(fasthttp.StatusUnauthorized, "authentication_error", "invalid_admin_token", "", msgBadAuthToken)
			default:
				c.fail(fasthttp.StatusUnauthorized, "authentication_error", "not_signed_in", "", msgSignIn)
			}
			return
		}
		if rt.mutating() && c.session != nil {
			if !sameOrigin(ctx) {
				c.fail(fasthttp.StatusForbidden, "permission_error", "cross_origin", "", msgCrossOrigin)
				return
			}
			got := ctx.Request.Header.Peek("X-CSRF-Token")
			if len(got) == 0 || subtle.ConstantTimeCompare(got, []byte(c.session.CSRFToken)) != 1 {
				c.fail(fasthttp.StatusForbidden, "permission_error", "csrf_invalid", "", msgCSRF)
				return
			}
		}
		if rt.access >= member && c.user.MustChangePassword {
			if rt.page {
				redirect(ctx, "/password")
				return
			}
			c.fail(fasthttp.StatusForbidden, "permission_error", "password_change_required", "", msgMustChange)
			return
		}
		if rt.access == adminOnly && c.user.Role != store.RoleAdmin {
			if rt.page {
				a.renderError(c, fasthttp.StatusForbidden, msgAdminOnly)
				return
			}
			c.fail(fasthttp.StatusForbidden, "permission_error", "admin_only", "", msgAdminOnly)
			return
		}
		rt.h(c)
	}
}

// identify loads the caller from an admin API token or the session cookie. It reports
// whether an Authorization header was sent but not accepted.
func (a *Admin) identify(c *call) (badToken bool) {
	now := a.now()
	if auth := c.ctx.Request.Header.Peek(fasthttp.HeaderAuthorization); len(auth) > 0 {
		tok, ok := bytes.CutPrefix(auth, []byte("Bearer "))
		tok = bytes.TrimSpace(tok)
		if !ok || !bytes.HasPrefix(tok, []byte(adminTokenPrefix)) {
			return true
		}
		_, u, err := a.st.AdminTokenUser(c.std, sha256.Sum256(tok), now)
		if err != nil {
			if !errors.Is(err, store.ErrNotFound) {
				a.logger.Warn("admin token lookup failed", "error", err)
			}
			return true
		}
		c.user, c.signed = u, true
		return false
	}
	cookie := c.ctx.Request.Header.Cookie(sessionCookie)
	if len(cookie) == 0 {
		return false
	}
	sess, u, err := a.st.SessionUser(c.std, sha256.Sum256(cookie), now)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			a.logger.Warn("session lookup failed", "error", err)
		}
		return false
	}
	c.user, c.signed, c.session = u, true, &sess
	return false
}

// sameOrigin accepts a request whose Origin (when sent) is this host, and whose
// Sec-Fetch-Site (when sent) is same-origin or none (typed by the user). Clients that send
// neither (curl, SDKs) pass: for them the CSRF token is the protection.
func sameOrigin(ctx *fasthttp.RequestCtx) bool {
	if site := string(ctx.Request.Header.Peek("Sec-Fetch-Site")); site != "" && site != "same-origin" && site != "none" {
		return false
	}
	origin := string(ctx.Request.Header.Peek("Origin"))
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	return strings.EqualFold(u.Host, string(ctx.Host()))
}

// isHTTPS reports whether the client reached us over TLS: directly, or through a proxy on
// this machine that says so in X-Forwarded-Proto. Only a loopback peer is trusted with the
// header, since anyone else could send it.
func isHTTPS(ctx *fasthttp.RequestCtx) bool {
	if ctx.IsTLS() {
		return true
	}
	return ctx.RemoteIP().IsLoopback() && strings.EqualFold(string(ctx.Request.Header.Peek("X-Forwarded-Proto")), "https")
}

// clientIP is the address login throttling counts against: the peer, or for a loopback
// peer (a local reverse proxy) the last address it appended to X-Forwarded-For.
func clientIP(ctx *fasthttp.RequestCtx) string {
	ip := ctx.RemoteIP()
	if ip.IsLoopback() {
		if xff := string(ctx.Request.Header.Peek("X-Forwarded-For")); xff != "" {
			parts := strings.Split(xff, ",")
			if p := net.ParseIP(strings.TrimSpace(parts[len(parts)-1])); p != nil {
				return p.String()
			}
		}
	}
	return ip.String()
}

func redirect(ctx *fasthttp.RequestCtx, to string) {
	ctx.Response.Header.Set("Location", to)
	ctx.SetStatusCode(fasthttp.StatusSeeOther)
}

// apiError is OpenAI's error object; Fields adds every invalid field's message.
type apiError struct {
	Message string            `json:"message"`
	Type    string            `json:"type"`
	Param   *string           `json:"param"`
	Code    string            `json:"code"`
	Fields  map[string]string `json:"fields,omitempty"`
}

func (c *call) fail(status int, typ, code, param, msg string) {
	e := apiError{Message: msg, Type: typ, Code: code}
	if param != "" {
		e.Param = &param
	}
	c.json(status, map[string]apiError{"error": e})
}

// invalid answers 400 for the fields in errs (field → message); the first, in the order
// the handler checked them, is the error's param and message.
func (c *call) invalid(v *validation) {
	e := apiError{Message: v.firstMsg, Type: "invalid_request_error", Code: "invalid_value", Fields: v.fields}
	p := v.first
	e.Param = &p
	c.json(fasthttp.StatusBadRequest, map[string]apiError{"error": e})
}

func (c *call) notFound(what string) {
	c.fail(fasthttp.StatusNotFound, "not_found_error", "not_found", "", what+" not found.")
}

func (c *call) internal(err error, logger interface{ Error(string, ...any) }) {
	logger.Error("admin request failed", "method", string(c.ctx.Method()), "path", string(c.ctx.Path()), "error", err)
	c.fail(fasthttp.StatusInternalServerError, "server_error", "internal_error", "", "The server hit an internal error; see its log.")
}

func (c *call) json(status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(`{"error":{"message":"encode response","type":"server_error","param":null,"code":"internal_error"}}`)
		status = fasthttp.StatusInternalServerError
	}
	c.ctx.SetStatusCode(status)
	c.ctx.SetContentType("application/json")
	c.ctx.SetBody(b)
}

// decode reads the JSON body into v, refusing unknown fields, so a typo is a 400 rather
// than a silently ignored setting.
func (c *call) decode(v any) bool {
	dec := json.NewDecoder(bytes.NewReader(c.ctx.PostBody()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		param := ""
		msg := "The request body must be a JSON object: " + err.Error()
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			param = te.Field
			msg = fmt.Sprintf("%s must be a JSON %s.", te.Field, jsonKind(te.Type.Kind().String()))
		} else if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			param = strings.Trim(f, `"`)
			msg = "Unknown field " + f + "."
		}
		c.fail(fasthttp.StatusBadRequest, "invalid_request_error", "invalid_json", param, msg)
		return false
	}
	return true
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "slice", "array":
		return "array"
	case "map", "struct":
		return "object"
	}
	return "number"
}

// pathID parses the {id} route parameter.
func (c *call) pathID() (int64, bool) {
	s, _ := c.ctx.UserValue("id").(string)
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		c.fail(fasthttp.StatusBadRequest, "invalid_request_error", "invalid_value", "id", "The id in the path must be a positive whole number.")
		return 0, false
	}
	return id, true
}

// validation collects field errors in the order they are checked.
type validation struct {
	fields   map[string]string
	first    string
	firstMsg string
}

func (v *validation) add(field, msg string) {
	if v.fields == nil {
		v.fields = map[string]string{}
	}
	if _, dup := v.fields[field]; dup {
		return
	}
	if v.first == "" {
		v.first, v.firstMsg = field, msg
	}
	v.fields[field] = msg
}

func (v *validation) ok() bool { return len(v.fields) == 0 }
