package admin

import (
	"context"
	"encoding/hex"
	"errors"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/routing"
	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/worker/limits"
)

// Routes, the response cache and model prices: admin only.

// healthJSON is an upstream's latest active probe.
type healthJSON struct {
	Healthy   bool    `json:"healthy"`
	CheckedAt string  `json:"checked_at"`
	LatencyMs float64 `json:"latency_ms"`
	Error     string  `json:"error,omitempty"`
	Failures  int     `json:"failures"` // consecutive failed probes
}

// routeDeploymentJSON is one upstream serving a route's model.
type routeDeploymentJSON struct {
	UpstreamID      int64       `json:"upstream_id"`
	Upstream        string      `json:"upstream"`
	UpstreamModel   string      `json:"upstream_model"` // "" for a wildcard deployment: the name is forwarded
	Weight          int         `json:"weight"`
	Priority        int         `json:"priority"`
	MaxConcurrent   int         `json:"max_concurrent"` // 0: unlimited
	UpstreamWeight  int         `json:"upstream_weight"`
	UpstreamEnabled bool        `json:"upstream_enabled"`
	Health          *healthJSON `json:"health"` // null until the primary has probed the upstream
}

// routeJSON is one public model: its route (strategy, fallbacks) if one is stored, and
// the deployments serving it.
type routeJSON struct {
	Model       string                `json:"model"`
	Configured  bool                  `json:"configured"` // a route is stored for the model
	Strategy    string                `json:"strategy"`   // "" uses the default strategy
	Fallbacks   []string              `json:"fallbacks"`
	UpdatedAt   *string               `json:"updated_at"`
	Deployments []routeDeploymentJSON `json:"deployments"`
	// Wildcard is true when no upstream lists the model itself, so the "*" deployments
	// (shown in Deployments) serve it.
	Wildcard bool `json:"wildcard"`
}

type routesAnswer struct {
	Data            []routeJSON `json:"data"`
	Strategies      []string    `json:"strategies"`
	DefaultStrategy string      `json:"default_strategy"` // LLM_PROXY_LOAD_BALANCE_STRATEGY, "" when unknown
}

// routeList joins the stored routes with the deployments of every upstream: one row per
// public model that has either, ordered by model; the "*" deployments are a row of their own.
func (a *Admin) routeList(c *call) (routesAnswer, error) {
	routes, err := a.st.Routes(c.std)
	if err != nil {
		return routesAnswer{}, err
	}
	ups, err := a.st.ListUpstreams(c.std)
	if err != nil {
		return routesAnswer{}, err
	}
	health, err := a.st.UpstreamHealths(c.std)
	if err != nil {
		return routesAnswer{}, err
	}
	rows := map[string]*routeJSON{}
	row := func(m string) *routeJSON {
		r, ok := rows[m]
		if !ok {
			r = &routeJSON{Model: m, Fallbacks: []string{}, Deployments: []routeDeploymentJSON{}}
			rows[m] = r
		}
		return r
	}
	var wildcard []routeDeploymentJSON
	for _, u := range ups {
		var hj *healthJSON
		if h, ok := health[u.ID]; ok {
			hj = toHealthJSON(h)
		}
		for _, d := range u.Deployments {
			rd := routeDeploymentJSON{UpstreamID: u.ID, Upstream: u.Name, UpstreamModel: d.UpstreamModel, Weight: d.Weight,
				Priority: d.Priority, MaxConcurrent: d.MaxConcurrent, UpstreamWeight: u.Weight, UpstreamEnabled: u.Enabled, Health: hj}
			if d.PublicModel == store.AnyModel {
				wildcard = append(wildcard, rd)
			}
			r := row(d.PublicModel)
			r.Deployments = append(r.Deployments, rd)
		}
	}
	for _, rt := range routes {
		r := row(rt.Model)
		r.Configured, r.Strategy, r.UpdatedAt = true, rt.Strategy, timePtr(rt.UpdatedAt)
		if rt.Fallbacks != nil {
			r.Fallbacks = rt.Fallbacks
		}
		if len(r.Deployments) == 0 && rt.Model != store.AnyModel && len(wildcard) > 0 {
			r.Deployments, r.Wildcard = wildcard, true
		}
	}
	out := routesAnswer{Data: make([]routeJSON, 0, len(rows)), Strategies: routing.Strategies}
	for _, r := range rows {
		out.Data = append(out.Data, *r)
	}
	sort.Slice(out.Data, func(i, j int) bool { return out.Data[i].Model < out.Data[j].Model })
	if a.settings != nil {
		if list, err := a.settings.List(c.std); err == nil {
			for _, s := range list {
				if s.Name == "LOAD_BALANCE_STRATEGY" {
					out.DefaultStrategy = s.Value
				}
			}
		}
	}
	return out, nil
}

func (a *Admin) listRoutes(c *call) {
	out, err := a.routeList(c)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	c.json(fasthttp.StatusOK, out)
}

// pathModel reads the {model} catch-all parameter (model names may hold '/').
func (c *call) pathModel(v *validation) string {
	m, _ := c.ctx.UserValue("model").(string)
	m = strings.TrimSpace(m)
	if !validModelName(m) {
		v.add("model", "The model in the path must be one public model name: 1 to 200 characters, no comma, not \"*\".")
	}
	return m
}

func validModelName(m string) bool {
	return m != "" && len(m) <= 200 && m != store.AnyModel && !strings.Contains(m, ",")
}

const maxFallbacks = 10

func (a *Admin) putRoute(c *call) {
	var v validation
	model := c.pathModel(&v)
	var req struct {
		Strategy  string   `json:"strategy"` // "" or "default": the default strategy
		Fallbacks []string `json:"fallbacks"`
	}
	if !v.ok() {
		c.invalid(&v)
		return
	}
	if !c.decode(&req) {
		return
	}
	r := store.Route{Model: model, Strategy: strings.TrimSpace(req.Strategy)}
	if r.Strategy == "default" {
		r.Strategy = ""
	}
	if r.Strategy != "" && !slices.Contains(routing.Strategies, r.Strategy) {
		v.add("strategy", "strategy must be one of "+strings.Join(routing.Strategies, ", ")+", or empty for the default.")
	}
	seen := map[string]bool{}
	for _, f := range req.Fallbacks {
		f = strings.TrimSpace(f)
		switch {
		case f == "":
			continue
		case f == model:
			v.add("fallbacks", "A model cannot fall back to itself ("+f+").")
		case !validModelName(f):
			v.add("fallbacks", "Fallbacks are public model names (no comma, not \"*\", at most 200 characters): "+f)
		case seen[f]:
			v.add("fallbacks", f+" is listed twice.")
		}
		seen[f] = true
		r.Fallbacks = append(r.Fallbacks, f)
	}
	if len(r.Fallbacks) > maxFallbacks {
		v.add("fallbacks", "At most 10 fallbacks.")
	}
	if !v.ok() {
		c.invalid(&v)
		return
	}
	if err := a.st.PutRoute(c.std, r); err != nil {
		c.internal(err, a.logger)
		return
	}
	a.logger.Info("route saved", "model", model, "strategy", r.Strategy, "fallbacks", strings.Join(r.Fallbacks, ","), "by", c.user.Username)
	out, err := a.routeList(c)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	for _, rj := range out.Data {
		if rj.Model == model {
			c.json(fasthttp.StatusOK, rj)
			return
		}
	}
	c.notFound("Route") // deleted between the write and the read
}

func (a *Admin) deleteRoute(c *call) { a.deleteByModel(c, "Route", a.st.DeleteRoute) }

// deleteByModel answers the DELETE of a row keyed by a public model name (a
// route, a semantic route); what names it in messages and the log.
func (a *Admin) deleteByModel(c *call, what string, del func(context.Context, string) error) {
	var v validation
	model := c.pathModel(&v)
	if !v.ok() {
		c.invalid(&v)
		return
	}
	err := del(c.std, model)
	switch {
	case errors.Is(err, store.ErrNotFound):
		c.notFound(what)
	case err != nil:
		c.internal(err, a.logger)
	default:
		a.logger.Info(strings.ToLower(what)+" removed", "model", model, "by", c.user.Username)
		c.json(fasthttp.StatusOK, map[string]any{"model": model, "deleted": true})
	}
}

// Cache.

type cacheModelJSON struct {
	Model   string `json:"model"`
	Entries int64  `json:"entries"`
	Bytes   int64  `json:"bytes"`
	Hits    int64  `json:"hits"`
	Expired int64  `json:"expired"`
}

type cacheJSON struct {
	Entries         int64            `json:"entries"`
	Bytes           int64            `json:"bytes"` // charged size: bodies, keys and a per-row overhead
	Hits            int64            `json:"hits"`  // hits on the entries still present
	Expired         int64            `json:"expired"`
	SemanticEntries int64            `json:"semantic_entries"`
	Generation      int64            `json:"generation"` // bumped by every purge; workers clear their memory tiers on it
	Models          []cacheModelJSON `json:"models"`
}

func (a *Admin) cacheStats(c *call) (cacheJSON, error) {
	now := a.now()
	st, err := a.st.CacheStats(c.std, now)
	if err != nil {
		return cacheJSON{}, err
	}
	per, err := a.st.CacheStatsByModel(c.std, now)
	if err != nil {
		return cacheJSON{}, err
	}
	out := cacheJSON{Entries: st.Entries, Bytes: st.Bytes, Hits: st.Hits, Expired: st.Expired, SemanticEntries: st.SemanticEntries,
		Generation: st.Generation, Models: make([]cacheModelJSON, 0, len(per))}
	for _, m := range per {
		out.Models = append(out.Models, cacheModelJSON(m))
	}
	return out, nil
}

func (a *Admin) getCache(c *call) {
	out, err := a.cacheStats(c)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	c.json(fasthttp.StatusOK, out)
}

// purgeCache deletes what exactly one of all, model or key_prefix selects.
func (a *Admin) purgeCache(c *call) {
	var req struct {
		All       bool   `json:"all"`
		Model     string `json:"model"`
		KeyPrefix string `json:"key_prefix"`
	}
	if !c.decode(&req) {
		return
	}
	var v validation
	f := store.CacheFilter{All: req.All, Model: strings.TrimSpace(req.Model), KeyPrefix: strings.TrimSpace(req.KeyPrefix)}
	set := 0
	for _, on := range []bool{f.All, f.Model != "", f.KeyPrefix != ""} {
		if on {
			set++
		}
	}
	if set != 1 {
		v.add("all", "Send exactly one of all (true), model or key_prefix.")
	}
	if f.KeyPrefix != "" {
		p := f.KeyPrefix
		if len(p)%2 == 1 {
			p += "0"
		}
		if _, err := hex.DecodeString(p); err != nil || len(f.KeyPrefix) > 64 {
			v.add("key_prefix", "key_prefix must be up to 64 hexadecimal digits of a cache key.")
		}
	}
	if !v.ok() {
		c.invalid(&v)
		return
	}
	n, err := a.st.CachePurge(c.std, f)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	a.logger.Info("cache purged", "all", f.All, "model", f.Model, "key_prefix", f.KeyPrefix, "deleted", n, "by", c.user.Username)
	c.json(fasthttp.StatusOK, map[string]any{"deleted": n})
}

// Prices.

type priceJSON struct {
	Model         string  `json:"model"`
	InputPerMTok  float64 `json:"input_per_mtok"` // USD per million tokens
	OutputPerMTok float64 `json:"output_per_mtok"`
	Source        string  `json:"source"` // "default" (built in) or "override" (stored)
	// Default is the built-in price the override replaces; null when there is none.
	Default   *defaultPriceJSON `json:"default"`
	UpdatedAt *string           `json:"updated_at"`
}

type defaultPriceJSON struct {
	InputPerMTok  float64 `json:"input_per_mtok"`
	OutputPerMTok float64 `json:"output_per_mtok"`
}

func (a *Admin) priceList(c *call) ([]priceJSON, error) {
	stored, err := a.st.Prices(c.std)
	if err != nil {
		return nil, err
	}
	rows := map[string]priceJSON{}
	for m, p := range limits.DefaultPrices {
		rows[m] = priceJSON{Model: m, InputPerMTok: p.InputPerMTok, OutputPerMTok: p.OutputPerMTok, Source: "default"}
	}
	for _, p := range stored {
		r := priceJSON{Model: p.Model, InputPerMTok: p.InputPerMTok, OutputPerMTok: p.OutputPerMTok, Source: "override", UpdatedAt: timePtr(p.UpdatedAt)}
		if d, ok := limits.DefaultPrices[p.Model]; ok {
			r.Default = &defaultPriceJSON{InputPerMTok: d.InputPerMTok, OutputPerMTok: d.OutputPerMTok}
		}
		rows[p.Model] = r
	}
	out := make([]priceJSON, 0, len(rows))
	for _, r := range rows {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Model < out[j].Model })
	return out, nil
}

func (a *Admin) listPrices(c *call) {
	out, err := a.priceList(c)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	c.json(fasthttp.StatusOK, map[string]any{"data": out})
}

// maxPricePerMTok bounds a price far above any real one, so a typo is caught.
const maxPricePerMTok = 10_000

func (a *Admin) putPrice(c *call) {
	var v validation
	model := c.pathModel(&v)
	if !v.ok() {
		c.invalid(&v)
		return
	}
	var req struct {
		InputPerMTok  *float64 `json:"input_per_mtok"`
		OutputPerMTok *float64 `json:"output_per_mtok"`
	}
	if !c.decode(&req) {
		return
	}
	for _, f := range []struct {
		name string
		p    *float64
	}{{"input_per_mtok", req.InputPerMTok}, {"output_per_mtok", req.OutputPerMTok}} {
		if f.p == nil || *f.p < 0 || *f.p > maxPricePerMTok || math.IsNaN(*f.p) {
			v.add(f.name, f.name+" is required: USD per million tokens, from 0 to 10000.")
		}
	}
	if !v.ok() {
		c.invalid(&v)
		return
	}
	if err := a.st.SetPrice(c.std, model, *req.InputPerMTok, *req.OutputPerMTok); err != nil {
		c.internal(err, a.logger)
		return
	}
	a.logger.Info("price set", "model", model, "input_per_mtok", *req.InputPerMTok, "output_per_mtok", *req.OutputPerMTok, "by", c.user.Username)
	a.answerPrice(c, model)
}

func (a *Admin) answerPrice(c *call, model string) {
	list, err := a.priceList(c)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	for _, p := range list {
		if p.Model == model {
			c.json(fasthttp.StatusOK, p)
			return
		}
	}
	c.json(fasthttp.StatusOK, map[string]any{"model": model, "deleted": true})
}

// deletePrice removes a stored price: the built-in default (if any) applies again.
func (a *Admin) deletePrice(c *call) {
	var v validation
	model := c.pathModel(&v)
	if !v.ok() {
		c.invalid(&v)
		return
	}
	stored, err := a.st.Prices(c.std)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	if !slices.ContainsFunc(stored, func(p store.Price) bool { return p.Model == model }) {
		c.notFound("Stored price")
		return
	}
	if err := a.st.DeletePrice(c.std, model); err != nil {
		c.internal(err, a.logger)
		return
	}
	a.logger.Info("price removed", "model", model, "by", c.user.Username)
	a.answerPrice(c, model)
}
