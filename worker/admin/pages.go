package admin

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"mime"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/store"
)

// The static folder always holds app.js and app.css; static/vendor is filled by
// scripts/build-ui.sh from node_modules (Alpine's CSP build and uPlot) and may be empty in
// a checkout, so the embed compiles either way.
//
//go:embed templates/*.html static
var assets embed.FS

// pageSet is one parsed template per page (each with the shared layout).
type pageSet struct {
	pages map[string]*template.Template
}

var pageNames = []string{"login", "password", "dashboard", "upstreams", "routes", "cache", "prices", "keys", "users", "logs", "log", "workers", "settings", "help", "error"}

var funcs = template.FuncMap{
	"ms": func(us int64) string { return strconv.FormatFloat(float64(us)/1000, 'f', 1, 64) },
	"pct": func(x float64) string {
		return strconv.FormatFloat(x*100, 'f', 1, 64) + "%"
	},
	"num": func(x float64) string {
		if x >= 100 {
			return strconv.FormatFloat(x, 'f', 0, 64)
		}
		return strconv.FormatFloat(x, 'f', 2, 64)
	},
	"ts":      func(ms int64) string { return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05") },
	"join":    strings.Join,
	"list":    func(v ...string) []string { return v },
	"inc":     func(i int) int { return i + 1 },
	"usd":     func(micro int64) string { return strconv.FormatFloat(float64(micro)/1e6, 'f', 6, 64) },
	"dollars": func(x float64) string { return "$" + strconv.FormatFloat(x, 'f', 2, 64) },
	"price":   func(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) },
	"bytes": func(n int64) string {
		switch {
		case n >= 1<<30:
			return strconv.FormatFloat(float64(n)/(1<<30), 'f', 1, 64) + " GiB"
		case n >= 1<<20:
			return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
		case n >= 1<<10:
			return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
		}
		return strconv.FormatInt(n, 10) + " B"
	},
	"statusClass": func(s int) string {
		switch {
		case s >= 500 || s == 0:
			return "bad"
		case s >= 400:
			return "warn"
		}
		return "ok"
	},
	// age is how long ago an RFC 3339 time was, for "checked 12s ago".
	"age": func(rfc string) string {
		t, err := time.Parse(time.RFC3339, rfc)
		if err != nil {
			return rfc
		}
		return time.Since(t).Round(time.Second).String() + " ago"
	},
	"secs": func(ms int64) string { return strconv.FormatFloat(float64(ms)/1000, 'f', 1, 64) + " s" },
	"deref": func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	},
	"jsonAttr": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
}

func loadPages() (*pageSet, error) {
	ps := &pageSet{pages: map[string]*template.Template{}}
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("admin: parse template %s: %w", name, err)
		}
		ps.pages[name] = t
	}
	return ps, nil
}

// navItem is one link of the top bar.
type navItem struct {
	Href, Label string
	Active      bool
}

// pageData is what every page template gets; Data is the page's own.
type pageData struct {
	Title   string
	User    *userJSON
	IsAdmin bool
	CSRF    string
	Version string
	Nav     []navItem
	Data    any
}

func (a *Admin) render(c *call, status int, name, title string, data any) {
	pd := pageData{Title: title, Version: a.version, Data: data}
	if c.signed {
		u := toUserJSON(c.user)
		pd.User = &u
		pd.IsAdmin = c.isAdmin()
		if c.session != nil {
			pd.CSRF = c.session.CSRFToken
		}
		if !c.user.MustChangePassword {
			items := []struct{ href, label string }{{"/dashboard", "Dashboard"}}
			if pd.IsAdmin {
				items = append(items, struct{ href, label string }{"/upstreams", "Upstreams"}, struct{ href, label string }{"/routes", "Routes"},
					struct{ href, label string }{"/cache", "Cache"})
			}
			items = append(items, struct{ href, label string }{"/keys", "API keys"}, struct{ href, label string }{"/logs", "Logs"})
			if pd.IsAdmin {
				items = append(items, struct{ href, label string }{"/prices", "Prices"}, struct{ href, label string }{"/users", "Users"},
					struct{ href, label string }{"/workers", "Workers"},
					struct{ href, label string }{"/settings", "Settings"})
			}
			items = append(items, struct{ href, label string }{"/help", "Help"})
			p := string(c.ctx.Path())
			for _, it := range items {
				pd.Nav = append(pd.Nav, navItem{Href: it.href, Label: it.label, Active: p == it.href || strings.HasPrefix(p, it.href+"/")})
			}
		}
	}
	var buf bytes.Buffer
	if err := a.pages.pages[name].Execute(&buf, pd); err != nil {
		a.logger.Error("render page", "page", name, "error", err)
		c.ctx.SetStatusCode(fasthttp.StatusInternalServerError)
		c.ctx.SetContentType("text/plain; charset=utf-8")
		c.ctx.SetBodyString("The page could not be rendered; see the server log.")
		return
	}
	c.ctx.SetStatusCode(status)
	c.ctx.SetContentType("text/html; charset=utf-8")
	c.ctx.SetBody(buf.Bytes())
}

func (a *Admin) renderError(c *call, status int, msg string) {
	a.render(c, status, "error", "Error", msg)
}

func (a *Admin) pageFailed(c *call, err error) {
	a.logger.Error("admin page failed", "path", string(c.ctx.Path()), "error", err)
	a.renderError(c, fasthttp.StatusInternalServerError, "The server hit an internal error; see its log.")
}

func (a *Admin) root(c *call) {
	a.identify(c)
	switch {
	case !c.signed:
		redirect(c.ctx, "/login")
	case c.user.MustChangePassword:
		redirect(c.ctx, "/password")
	default:
		redirect(c.ctx, "/dashboard")
	}
}

// safeNext keeps a post-login redirect on this site.
func safeNext(next string) string {
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		return "/dashboard"
	}
	return next
}

func (a *Admin) loginPage(c *call) {
	a.identify(c)
	next := safeNext(string(c.ctx.QueryArgs().Peek("next")))
	if c.signed {
		redirect(c.ctx, next)
		return
	}
	a.render(c, fasthttp.StatusOK, "login", "Sign in", next)
}

func (a *Admin) passwordPage(c *call) {
	a.render(c, fasthttp.StatusOK, "password", "Change password", nil)
}

// dashboardData is the dashboard's model: the statistics and the JSON the charts read.
type dashboardData struct {
	Range  string
	Ranges []string
	Stats  statsJSON
}

func (a *Admin) dashboardPage(c *call) {
	r := string(c.ctx.QueryArgs().Peek("range"))
	if _, ok := statRanges[r]; !ok {
		r = "hour"
	}
	st, err := a.stats(c, r, 0)
	if err != nil {
		a.pageFailed(c, err)
		return
	}
	a.render(c, fasthttp.StatusOK, "dashboard", "Dashboard", dashboardData{Range: r, Ranges: []string{"hour", "day", "week"}, Stats: st})
}

type upstreamRow struct {
	upstreamJSON
	JSON      string // the row's upstream for the edit form
	Models    string
	Requests  int64
	ErrorRate float64
	P95Ms     float64
}

// upstreamsData is the upstreams page: one row per upstream, and whether the serving
// worker reports circuits (without it the circuit column says so).
type upstreamsData struct {
	Rows     []upstreamRow
	Circuits bool
}

func (a *Admin) upstreamsPage(c *call) {
	ups, err := a.st.ListUpstreams(c.std)
	if err != nil {
		a.pageFailed(c, err)
		return
	}
	st, err := a.stats(c, "hour", 0)
	if err != nil {
		a.pageFailed(c, err)
		return
	}
	views, err := a.upstreamViews(c, ups)
	if err != nil {
		a.pageFailed(c, err)
		return
	}
	byName := map[string]groupJSON{}
	for _, g := range st.ByUpstream {
		byName[g.Name] = g
	}
	d := upstreamsData{Rows: make([]upstreamRow, 0, len(ups)), Circuits: a.rt() != nil}
	for i, u := range ups {
		j := views[i]
		var models []string
		for _, d := range u.Deployments {
			m := d.PublicModel
			if d.UpstreamModel != "" && d.UpstreamModel != d.PublicModel {
				m += " → " + d.UpstreamModel
			}
			models = append(models, m)
		}
		g := byName[u.Name]
		b, err := json.Marshal(j)
		if err != nil {
			a.pageFailed(c, err)
			return
		}
		d.Rows = append(d.Rows, upstreamRow{upstreamJSON: j, JSON: string(b), Models: strings.Join(models, ", "), Requests: g.Requests, ErrorRate: g.ErrorRate, P95Ms: g.P95Ms})
	}
	a.render(c, fasthttp.StatusOK, "upstreams", "Upstreams", d)
}

type keysData struct {
	Keys    []keyJSON
	Users   []userJSON // admin: owners to create keys for
	IsAdmin bool       // may set limits
}

func (a *Admin) keysPage(c *call) {
	keys, err := a.keyList(c)
	if err != nil {
		a.pageFailed(c, err)
		return
	}
	d := keysData{IsAdmin: c.isAdmin()}
	for i := len(keys) - 1; i >= 0; i-- { // newest first
		d.Keys = append(d.Keys, keys[i])
	}
	if c.isAdmin() {
		users, err := a.st.ListUsers(c.std)
		if err != nil {
			a.pageFailed(c, err)
			return
		}
		for _, u := range users {
			d.Users = append(d.Users, toUserJSON(u))
		}
	}
	a.render(c, fasthttp.StatusOK, "keys", "API keys", d)
}

// routesData is the routes page: the routes and the semantic routes.
type routesData struct {
	routesAnswer
	Semantic []semanticRouteJSON
	Embedder string // id of the embedder prompts are tried with
}

func (a *Admin) routesPage(c *call) {
	d, err := a.routeList(c)
	if err != nil {
		a.pageFailed(c, err)
		return
	}
	sem, err := a.semanticRouteList(c)
	if err != nil {
		a.pageFailed(c, err)
		return
	}
	a.render(c, fasthttp.StatusOK, "routes", "Routes", routesData{routesAnswer: d, Semantic: sem, Embedder: a.embedder().ID()})
}

func (a *Admin) cachePage(c *call) {
	d, err := a.cacheStats(c)
	if err != nil {
		a.pageFailed(c, err)
		return
	}
	a.render(c, fasthttp.StatusOK, "cache", "Cache", d)
}

func (a *Admin) pricesPage(c *call) {
	d, err := a.priceList(c)
	if err != nil {
		a.pageFailed(c, err)
		return
	}
	a.render(c, fasthttp.StatusOK, "prices", "Prices", d)
}

type usersData struct {
	Users  []userOut // with models, limits and spend (api_users.go)
	Tokens []tokenJSON
	Self   int64
}

func (a *Admin) usersPage(c *call) {
	users, err := a.userList(c)
	if err != nil {
		a.pageFailed(c, err)
		return
	}
	toks, err := a.st.ListAdminTokens(c.std, 0)
	if err != nil {
		a.pageFailed(c, err)
		return
	}
	d := usersData{Self: c.user.ID, Users: users}
	for _, t := range toks {
		d.Tokens = append(d.Tokens, toTokenJSON(t))
	}
	a.render(c, fasthttp.StatusOK, "users", "Users", d)
}

type logsData struct {
	Logs      []store.RequestLog
	Filter    map[string]string
	Error     string
	NextQuery string
	Models    []string
	Upstreams []string
	KeyNames  map[int64]string
}

func (a *Admin) logsPage(c *call) {
	args := c.ctx.QueryArgs()
	var v validation
	f := a.logFilter(c, args, &v)
	d := logsData{Filter: map[string]string{}, KeyNames: map[int64]string{}}
	for _, k := range []string{"from", "to", "key_id", "user_id", "model", "upstream", "status", "cache", "error"} {
		d.Filter[k] = string(args.Peek(k))
	}
	if !v.ok() {
		d.Error = v.firstMsg
		f = store.LogFilter{UserID: c.scopeUser()}
	}
	if f.Limit == 0 {
		f.Limit = 50
	}
	page, err := a.st.QueryLogs(c.std, f)
	if err != nil {
		a.pageFailed(c, err)
		return
	}
	d.Logs = page.Logs
	if page.NextCursor != 0 {
		q := url.Values{}
		for k, val := range d.Filter {
			if val != "" {
				q.Set(k, val)
			}
		}
		q.Set("cursor", strconv.FormatInt(page.NextCursor, 10))
		d.NextQuery = q.Encode()
	}
	if d.Models, d.Upstreams, err = a.st.LogFacets(c.std); err != nil {
		a.pageFailed(c, err)
		return
	}
	keys, err := a.st.OwnedKeys(c.std, c.scopeUser())
	if err != nil {
		a.pageFailed(c, err)
		return
	}
	for _, k := range keys {
		d.KeyNames[k.ID] = k.Name
	}
	a.render(c, fasthttp.StatusOK, "logs", "Request logs", d)
}

type logDetail struct {
	Log      store.RequestLog
	KeyName  string
	JSON     logJSON
	Attempts []attemptJSON
}

// attemptJSON is one upstream attempt of a request (migrations/0005).
type attemptJSON struct {
	Upstream  string `json:"upstream"`
	Model     string `json:"model"`
	Status    int    `json:"status"`
	Error     string `json:"error"`
	LatencyUs int64  `json:"latency_us"`
}

func (a *Admin) logPage(c *call) {
	s, _ := c.ctx.UserValue("id").(string)
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		a.renderError(c, fasthttp.StatusNotFound, "No such request log.")
		return
	}
	l, err := a.st.RequestLog(c.std, id)
	if errors.Is(err, store.ErrNotFound) {
		a.renderError(c, fasthttp.StatusNotFound, "No such request log.")
		return
	}
	if err != nil {
		a.pageFailed(c, err)
		return
	}
	d := logDetail{Log: l, JSON: toLogJSON(l)}
	// A malformed attempts column shows as none rather than failing the page.
	_ = json.Unmarshal([]byte(l.Attempts), &d.Attempts)
	if l.KeyID != 0 {
		if k, err := a.st.OwnedKey(c.std, l.KeyID); err == nil {
			if !c.isAdmin() && k.UserID != c.user.ID {
				a.renderError(c, fasthttp.StatusNotFound, "No such request log.")
				return
			}
			d.KeyName = k.Name
		}
	} else if !c.isAdmin() {
		a.renderError(c, fasthttp.StatusNotFound, "No such request log.")
		return
	}
	a.render(c, fasthttp.StatusOK, "log", "Request "+l.RequestID, d)
}

func (a *Admin) workersPage(c *call) {
	w, err := a.workers(c.std)
	if err != nil {
		a.pageFailed(c, err)
		return
	}
	a.render(c, fasthttp.StatusOK, "workers", "Workers", w)
}

func (a *Admin) settingsPage(c *call) {
	var list []Setting
	if a.settings != nil {
		var err error
		if list, err = a.settings.List(c.std); err != nil {
			a.pageFailed(c, err)
			return
		}
	}
	a.render(c, fasthttp.StatusOK, "settings", "Settings", list)
}

func (a *Admin) helpPage(c *call) {
	base := "http://" + string(c.ctx.Host())
	if isHTTPS(c.ctx) {
		base = "https://" + string(c.ctx.Host())
	}
	a.render(c, fasthttp.StatusOK, "help", "API help", base)
}

// static serves the embedded static folder. Files are immutable per build, but their
// names are not versioned, so browsers revalidate after an hour.
func (a *Admin) static(c *call) {
	p, _ := c.ctx.UserValue("filepath").(string)
	p = path.Clean("/" + p)
	b, err := fs.ReadFile(assets, "static"+p)
	if err != nil {
		c.ctx.SetStatusCode(fasthttp.StatusNotFound)
		c.ctx.SetContentType("text/plain; charset=utf-8")
		c.ctx.SetBodyString("not found")
		return
	}
	ct := mime.TypeByExtension(path.Ext(p))
	if ct == "" {
		ct = "application/octet-stream"
	}
	c.ctx.SetContentType(ct)
	c.ctx.Response.Header.Set("Cache-Control", "public, max-age=3600")
	c.ctx.SetBody(b)
}
