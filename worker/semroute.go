package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/routing"
	"github.com/llm-proxy/llm-proxy/routing/embed"
	"github.com/llm-proxy/llm-proxy/store"
)

// semExt holds what the worker serves beyond the key and routing snapshots: semantic
// routers (with their utterances embedded) and the per-route and per-key cache overrides.
type semExt struct {
	snap atomic.Pointer[semSnapshot]
	// loaded generations; touched only by refresh, which never runs concurrently.
	keysGen, upGen int64
	loaded         bool
}

// semSnapshot is immutable once stored.
type semSnapshot struct {
	routers    map[string]*routing.SemanticRouter
	routeCache map[string]store.RouteCache
	keyCache   map[int64]string
}

// preEmbedding is the request's embedding computed by semantic routing, kept so the
// semantic cache reuses it instead of embedding the same text again.
type preEmbedding struct {
	text string
	vec  []float32
	// model is the model the client asked for when a semantic route rewrote it.
	model string
}

// fallbackEmbedder serves semantic routing when the cache has no embedder of its own.
var fallbackEmbedder embed.Embedder = embed.Lexical{}

// embedder is the one embedder of this worker: the cache's when it has one, so a vector
// computed for routing also serves the semantic cache.
func (w *Worker) embedder() embed.Embedder {
	if c := w.deps.Cache; c != nil && c.Embedder() != nil {
		return c.Embedder()
	}
	return fallbackEmbedder
}

// refreshSemantic reloads the overrides and semantic routers whose change counter moved
// (all of them when force). Utterances are embedded here, once per change, not per request.
func (w *Worker) refreshSemantic(ctx context.Context, g store.Generations, force bool) error {
	e := &w.sem
	old := e.snap.Load()
	next := &semSnapshot{}
	if old != nil {
		*next = *old
	}
	reloadKeys := force || !e.loaded || g.Keys != e.keysGen
	reloadRoutes := force || !e.loaded || g.Upstreams != e.upGen
	if !reloadKeys && !reloadRoutes {
		return nil
	}
	if reloadKeys {
		km, err := w.deps.Store.APIKeyCacheModes(ctx)
		if err != nil {
			return fmt.Errorf("worker: load key cache modes: %w", err)
		}
		next.keyCache = km
	}
	if reloadRoutes {
		rc, err := w.deps.Store.RouteCaches(ctx)
		if err != nil {
			return fmt.Errorf("worker: load route cache overrides: %w", err)
		}
		srs, err := w.deps.Store.SemanticRoutes(ctx)
		if err != nil {
			return fmt.Errorf("worker: load semantic routes: %w", err)
		}
		routers := make(map[string]*routing.SemanticRouter, len(srs))
		emb := w.embedder()
		for _, sr := range srs {
			r, err := routing.NewSemanticRouter(ctx, semanticRoute(sr), emb)
			if err != nil {
				// One route whose utterances cannot be embedded (a remote embedder down)
				// must not keep the others, or the rest of the refresh, from loading.
				w.logger.Warn("semantic route not loaded; its requests go to the default model",
					"model", sr.Model, "error", err)
				routers[sr.Model] = defaultOnly(sr)
				continue
			}
			routers[sr.Model] = r
		}
		next.routeCache, next.routers = rc, routers
	}
	e.snap.Store(next)
	e.keysGen, e.upGen, e.loaded = g.Keys, g.Upstreams, true
	return nil
}

// semanticRoute converts a stored route.
func semanticRoute(sr store.SemanticRoute) routing.SemanticRoute {
	r := routing.SemanticRoute{Model: sr.Model, Default: sr.Default, TopK: sr.TopK}
	for _, t := range sr.Targets {
		r.Targets = append(r.Targets, routing.SemanticTarget{Name: t.Name, Model: t.Model,
			Threshold: float32(t.Threshold), Utterances: t.Utterances})
	}
	return r
}

// defaultOnly is a router with no targets: everything goes to the default model.
func defaultOnly(sr store.SemanticRoute) *routing.SemanticRouter {
	r, _ := routing.NewSemanticRouter(context.Background(),
		routing.SemanticRoute{Model: sr.Model, Default: sr.Default, TopK: sr.TopK}, fallbackEmbedder)
	return r
}

// routeSemantic applies a semantic route to the request, if its model names one: the
// request's model becomes the chosen target's (or the route's default), and the decision
// goes into the record and the X-LLM-Proxy-Route header. The embedding is kept in x for
// the semantic cache.
func (w *Worker) routeSemantic(ctx *fasthttp.RequestCtx, x *exchange, ep endpoint, body []byte) {
	snap := w.sem.snap.Load()
	if snap == nil || len(snap.routers) == 0 {
		return
	}
	r := snap.routers[x.rec.Model]
	if r == nil {
		return
	}
	x.cache.pre.model = x.rec.Model
	d := routing.Decision{Model: r.Route().Default}
	if ep.name == endpointChat.name || ep.inbound {
		if text, ok := lastUserText(body); ok {
			vec, err := w.embedder().Embed(context.Background(), text, nil)
			if err == nil {
				x.cache.pre.text, x.cache.pre.vec = text, vec
				d = r.Decide(vec)
			} else {
				w.logger.Debug("semantic route: embedding failed; default model used", "request_id", x.rec.RequestID, "error", err)
			}
		}
	}
	x.rec.Model = d.Model
	x.rec.Route = d.String()
	ctx.Response.Header.Set("X-LLM-Proxy-Route", x.rec.Route)
}

// requestVector returns the embedding of text, reusing the one semantic routing
// computed for this request when it embedded the same text.
func (w *Worker) requestVector(x *exchange, text string) ([]float32, error) {
	if p := &x.cache.pre; p.vec != nil && p.text == text {
		return p.vec, nil
	}
	return w.deps.Cache.Embed(context.Background(), text, nil)
}

// cacheOverride resolves the request's cache mode (key override, then the route's, then
// global) and the route's TTL (0: the cache's default).
func (w *Worker) cacheOverride(global string, keyID int64, x *exchange) (string, time.Duration) {
	snap := w.sem.snap.Load()
	if snap == nil {
		return global, 0
	}
	routeModel := x.rec.Model
	if x.cache.pre.model != "" {
		routeModel = x.cache.pre.model
	}
	rc, ok := snap.routeCache[routeModel]
	if !ok && routeModel != x.rec.Model {
		rc = snap.routeCache[x.rec.Model]
	}
	mode := global
	if rc.Mode != "" {
		mode = rc.Mode
	}
	if m, ok := snap.keyCache[keyID]; ok && m != "" {
		mode = m
	}
	return mode, rc.TTL
}

// lastUserText returns the text of the last user message of a chat request: a string, or
// its text parts joined by newlines.
func lastUserText(body []byte) (string, bool) {
	var req struct {
		Messages []struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return "", false
	}
	for i := len(req.Messages) - 1; i >= 0; i-- {
		m := req.Messages[i]
		if m.Role != "user" {
			continue
		}
		var s string
		if err := json.Unmarshal(m.Content, &s); err == nil {
			return s, strings.TrimSpace(s) != ""
		}
		var parts []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}
		if err := json.Unmarshal(m.Content, &parts); err != nil {
			return "", false
		}
		var texts []string
		for _, p := range parts {
			if p.Type == "text" && p.Text != "" {
				texts = append(texts, p.Text)
			}
		}
		s = strings.Join(texts, "\n")
		return s, s != ""
	}
	return "", false
}
