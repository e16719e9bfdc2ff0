// Package admin is the web admin and its JSON API: users and sessions, CSRF protection,
// client keys (with their limits and spend), admin API tokens, upstreams, routes, the
// response cache, model prices, request logs, settings, statistics and workers, plus the
// server-rendered pages (html/template with Alpine.js and uPlot from the embedded static
// folder). The worker mounts it with Register.
package admin

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/fasthttp/router"
	"github.com/hashicorp/go-hclog"
	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/routing/embed"
	"github.com/llm-proxy/llm-proxy/store"
)

// Setting is one configuration variable as the admin shows it.
type Setting struct {
	Name        string `json:"name"` // without the LLM_PROXY_ prefix, the settings table's key
	Value       string `json:"value"`
	Default     string `json:"default"`
	Source      string `json:"source"` // "env", "db" or "default"
	Description string `json:"description"`
	// ReadOnly is true when the environment overrides the variable (the environment wins,
	// so a stored value would do nothing) or when it can never come from the database.
	ReadOnly bool `json:"read_only"`
	Secret   bool `json:"secret,omitempty"` // Value is masked
}

// Settings gives the admin the live configuration; cmd/llm-proxy implements it, because
// only it knows every package's Config and the environment-over-database rule.
type Settings interface {
	// List resolves every variable from the environment, the settings table and defaults.
	List(ctx context.Context) ([]Setting, error)
	// Validate checks that the configuration with set applied (and del reverted to
	// defaults) is valid; the error names the first bad variable.
	Validate(ctx context.Context, set map[string]string, del []string) error
}

// Deps are the admin's collaborators.
type Deps struct {
	Store  *store.Store
	Logger hclog.Logger // nil discards
	// Settings backs /api/settings; nil answers 503 there.
	Settings Settings
	// SessionTTL is how long a login lasts (LLM_PROXY_SESSION_EXPIRE_HOURS). Required.
	SessionTTL time.Duration
	// Version is shown in the page footer.
	Version string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// HashParams are the argon2id parameters of new password hashes; nil means
	// PasswordParams. Tests pass cheaper ones.
	HashParams *argon2id.Params
	// UpstreamClient performs upstream connection tests; nil uses a plain client. The
	// test's own 5 s timeout applies either way.
	UpstreamClient *http.Client
	// Runtime is the serving worker's live state; nil until SetRuntime (the worker is
	// built after the admin). Without it the admin shows no circuit state.
	Runtime Runtime
	// AllowPrivateUpstreams is LLM_PROXY_ALLOW_PRIVATE_UPSTREAMS, the address policy that
	// upstream base URLs are checked against; "" reads it from Settings (when set) at each
	// check, else the default ("loopback").
	AllowPrivateUpstreams string
	// Embedder embeds prompts tried against semantic routes when no Runtime is set; nil
	// is the lexical embedder, the one workers use by default.
	Embedder embed.Embedder
}

// Login throttling: failures per username and per client address within the window.
const (
	loginWindow      = 15 * time.Minute
	loginLimitUser   = 10
	loginLimitIP     = 30
	minPasswordLen   = 12
	maxPasswordLen   = 1024 // argon2 takes any length; this only bounds the work per request
	sessionCookie    = "llm_proxy_session"
	upstreamTestTime = 5 * time.Second
	apiTimeout       = 5 * time.Second
)

// Admin serves the admin pages and API.
type Admin struct {
	st       *store.Store
	logger   hclog.Logger
	settings Settings
	ttl      time.Duration
	version  string
	now      func() time.Time
	params   *argon2id.Params
	client   *http.Client
	// dummyHash is compared against for unknown users, so a login for a name that does
	// not exist costs the same argon2id work as a wrong password. It is made at the
	// first login, not at start: argon2id's memory would otherwise stay in every idle
	// worker's RSS.
	dummyOnce sync.Once
	dummyHash string
	pages     *pageSet
	routes    []route
	runtime   atomic.Pointer[runtimeBox]
	allowPriv string
	emb       embed.Embedder
}

// PasswordParams are the argon2id parameters of new password hashes: OWASP's
// recommended minimum (19 MiB, 2 passes, 1 lane). argon2id.DefaultParams takes 64 MiB
// per hash, which a gateway worker would carry in its RSS after every login.
var PasswordParams = &argon2id.Params{Memory: 19 * 1024, Iterations: 2, Parallelism: 1, SaltLength: 16, KeyLength: 32}

// dummy returns the hash compared against for unknown user names.
func (a *Admin) dummy() string {
	a.dummyOnce.Do(func() {
		var pw [16]byte
		if _, err := rand.Read(pw[:]); err != nil {
			panic(fmt.Sprintf("admin: dummy password: %v", err)) // crypto/rand never fails on Linux
		}
		h, err := argon2id.CreateHash(string(pw[:]), a.params)
		if err != nil {
			panic(fmt.Sprintf("admin: dummy hash: %v", err))
		}
		a.dummyHash = h
	})
	return a.dummyHash
}

// New builds the admin.
func New(deps Deps) (*Admin, error) {
	if deps.Store == nil {
		return nil, errors.New("admin: store is required")
	}
	if deps.SessionTTL <= 0 {
		return nil, errors.New("admin: session lifetime must be positive")
	}
	a := &Admin{
		st: deps.Store, logger: deps.Logger, settings: deps.Settings, ttl: deps.SessionTTL,
		version: deps.Version, now: deps.Now, params: deps.HashParams, client: deps.UpstreamClient,
		allowPriv: deps.AllowPrivateUpstreams, emb: deps.Embedder,
	}
	if deps.Runtime != nil {
		a.SetRuntime(deps.Runtime)
	}
	if a.logger == nil {
		a.logger = hclog.NewNullLogger()
	}
	a.logger = a.logger.Named("admin")
	if a.now == nil {
		a.now = time.Now
	}
	if a.params == nil {
		a.params = PasswordParams
	}
	if a.client == nil {
		a.client = &http.Client{}
	}
	var err error
	if a.pages, err = loadPages(); err != nil {
		return nil, err
	}
	a.routes = a.routeTable()
	return a, nil
}

// HashPassword hashes a password with argon2id (params nil: the defaults). The supervisor
// uses it for the first admin.
func HashPassword(password string, params *argon2id.Params) (string, error) {
	if params == nil {
		params = PasswordParams
	}
	h, err := argon2id.CreateHash(password, params)
	if err != nil {
		return "", fmt.Errorf("admin: hash password: %w", err)
	}
	return h, nil
}

// EnsureFirstAdmin creates the first admin (username, password; must change it at first
// login) when there is no user. It reports whether it created one.
func EnsureFirstAdmin(ctx context.Context, st *store.Store, username, password string) (bool, error) {
	users, err := st.ListUsers(ctx)
	if err != nil {
		return false, err
	}
	if len(users) > 0 {
		return false, nil
	}
	h, err := HashPassword(password, nil)
	if err != nil {
		return false, err
	}
	return st.EnsureFirstAdmin(ctx, username, h)
}

// DefaultPasswordInUse reports whether username still logs in with password, i.e. the
// first admin's default was never changed (the supervisor warns about it at start).
func DefaultPasswordInUse(ctx context.Context, st *store.Store, username, password string) (bool, error) {
	u, err := st.UserByName(ctx, username)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	ok, err := argon2id.ComparePasswordAndHash(password, u.PasswordHash)
	if err != nil {
		return false, fmt.Errorf("admin: check default password: %w", err)
	}
	return ok, nil
}

// access is who may call a route.
type access int

const (
	public      access = iota // anyone; no session looked up
	signedIn                  // any signed-in user, even one who must change their password
	member                    // any role, once the password is changed
	adminOnly                 // role admin, once the password is changed
	anyIfSigned               // public, but the session (if any) is loaded (the help page)
)

// route is one entry of the route table. Register mounts exactly these, and the CSRF
// test walks the same table, so no mutating route can be added without its check.
type route struct {
	method string
	path   string
	access access
	page   bool // HTML: a refused request redirects to /login instead of answering JSON
	h      func(c *call)
}

// mutating reports whether the route changes state, so needs CSRF protection when the
// caller authenticated with the session cookie.
func (r route) mutating() bool {
	switch r.method {
	case fasthttp.MethodGet, fasthttp.MethodHead, fasthttp.MethodOptions:
		return false
	}
	return true
}

// Register mounts every admin page and API route on r.
func (a *Admin) Register(r *router.Router) {
	for _, rt := range a.routes {
		r.Handle(rt.method, rt.path, a.wrap(rt))
	}
}

func (a *Admin) routeTable() []route {
	return []route{
		// Auth.
		{method: "POST", path: "/api/auth/login", access: public, h: a.login},
		{method: "GET", path: "/api/auth/me", access: signedIn, h: a.me},
		{method: "POST", path: "/api/auth/password", access: signedIn, h: a.changePassword},
		{method: "POST", path: "/api/auth/logout", access: signedIn, h: a.logout},
		// Users.
		{method: "GET", path: "/api/users", access: adminOnly, h: a.listUsers},
		{method: "POST", path: "/api/users", access: adminOnly, h: a.createUser},
		{method: "PUT", path: "/api/users/{id}", access: adminOnly, h: a.updateUser},
		{method: "DELETE", path: "/api/users/{id}", access: adminOnly, h: a.deleteUser},
		// Client API keys (a user sees their own).
		{method: "GET", path: "/api/apikeys", access: member, h: a.listKeys},
		{method: "POST", path: "/api/apikeys", access: member, h: a.createKey},
		{method: "PUT", path: "/api/apikeys/{id}", access: member, h: a.updateKey},
		{method: "DELETE", path: "/api/apikeys/{id}", access: member, h: a.revokeKey},
		// Admin API tokens.
		{method: "GET", path: "/api/tokens", access: adminOnly, h: a.listTokens},
		{method: "POST", path: "/api/tokens", access: adminOnly, h: a.createToken},
		{method: "DELETE", path: "/api/tokens/{id}", access: adminOnly, h: a.deleteToken},
		// Request logs (a user sees their own).
		{method: "GET", path: "/api/logs", access: member, h: a.listLogs},
		{method: "GET", path: "/api/logs/{id}", access: member, h: a.getLog},
		{method: "DELETE", path: "/api/logs", access: member, h: a.deleteLogs},
		// Upstreams.
		{method: "GET", path: "/api/upstreams", access: adminOnly, h: a.listUpstreams},
		{method: "POST", path: "/api/upstreams", access: adminOnly, h: a.createUpstream},
		{method: "PUT", path: "/api/upstreams/{id}", access: adminOnly, h: a.updateUpstream},
		{method: "DELETE", path: "/api/upstreams/{id}", access: adminOnly, h: a.deleteUpstream},
		{method: "POST", path: "/api/upstreams/{id}/test", access: adminOnly, h: a.testUpstream},
		// Semantic routes; trying a prompt may call a remote embedder, so it is a POST
		// (CSRF-checked) like every other call that costs something.
		{method: "GET", path: "/api/semantic-routes", access: adminOnly, h: a.listSemanticRoutes},
		{method: "PUT", path: "/api/semantic-routes/{model:*}", access: adminOnly, h: a.putSemanticRoute},
		{method: "DELETE", path: "/api/semantic-routes/{model:*}", access: adminOnly, h: a.deleteSemanticRoute},
		{method: "POST", path: "/api/semantic-try", access: adminOnly, h: a.trySemantic},
		// Routes, cache and prices.
		{method: "GET", path: "/api/routes", access: adminOnly, h: a.listRoutes},
		{method: "PUT", path: "/api/routes/{model:*}", access: adminOnly, h: a.putRoute},
		{method: "DELETE", path: "/api/routes/{model:*}", access: adminOnly, h: a.deleteRoute},
		{method: "GET", path: "/api/cache", access: adminOnly, h: a.getCache},
		{method: "POST", path: "/api/cache/purge", access: adminOnly, h: a.purgeCache},
		{method: "GET", path: "/api/prices", access: adminOnly, h: a.listPrices},
		{method: "PUT", path: "/api/prices/{model:*}", access: adminOnly, h: a.putPrice},
		{method: "DELETE", path: "/api/prices/{model:*}", access: adminOnly, h: a.deletePrice},
		// Settings, statistics, workers.
		{method: "GET", path: "/api/settings", access: adminOnly, h: a.getSettings},
		{method: "PUT", path: "/api/settings", access: adminOnly, h: a.putSettings},
		{method: "GET", path: "/api/stats", access: member, h: a.getStats},
		{method: "GET", path: "/api/workers", access: adminOnly, h: a.getWorkers},
		// Pages.
		{method: "GET", path: "/", access: public, page: true, h: a.root},
		{method: "GET", path: "/login", access: public, page: true, h: a.loginPage},
		{method: "GET", path: "/password", access: signedIn, page: true, h: a.passwordPage},
		{method: "GET", path: "/dashboard", access: member, page: true, h: a.dashboardPage},
		{method: "GET", path: "/upstreams", access: adminOnly, page: true, h: a.upstreamsPage},
		{method: "GET", path: "/routes", access: adminOnly, page: true, h: a.routesPage},
		{method: "GET", path: "/cache", access: adminOnly, page: true, h: a.cachePage},
		{method: "GET", path: "/prices", access: adminOnly, page: true, h: a.pricesPage},
		{method: "GET", path: "/keys", access: member, page: true, h: a.keysPage},
		{method: "GET", path: "/users", access: adminOnly, page: true, h: a.usersPage},
		{method: "GET", path: "/logs", access: member, page: true, h: a.logsPage},
		{method: "GET", path: "/logs/{id}", access: member, page: true, h: a.logPage},
		{method: "GET", path: "/workers", access: adminOnly, page: true, h: a.workersPage},
		{method: "GET", path: "/settings", access: adminOnly, page: true, h: a.settingsPage},
		{method: "GET", path: "/help", access: anyIfSigned, page: true, h: a.helpPage},
		{method: "GET", path: "/static/{filepath:*}", access: public, h: a.static},
	}
}
