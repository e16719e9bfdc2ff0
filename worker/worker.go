// Package worker is one gateway process: a fasthttp server with the OpenAI-compatible
// /v1 API, the API-key and routing snapshots it serves from, and the request records
// it appends to its spool.
package worker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/router"
	"github.com/hashicorp/go-hclog"
	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/cache"
	"github.com/llm-proxy/llm-proxy/routing"
	"github.com/llm-proxy/llm-proxy/routing/provider/anthropic"
	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/store/spool"
	"github.com/llm-proxy/llm-proxy/worker/limits"
	"github.com/llm-proxy/llm-proxy/worker/metrics"
	"github.com/llm-proxy/llm-proxy/worker/upstream"
)

// Deps are the worker's collaborators, built by cmd/llm-proxy.
type Deps struct {
	Store *store.Store
	// Admin, when set, mounts the web admin pages and API (package worker/admin).
	Admin interface{ Register(r *router.Router) }
	// Spool receives one record per proxied request. Required.
	Spool *spool.Writer
	// Logger is the worker's logger; nil discards.
	Logger hclog.Logger
	// Slot is the supervisor's slot number of this process.
	Slot int
	// WorkerID identifies this process in the workers table and the spool name.
	WorkerID string
	// Version is reported by /api/health and sent upstream in User-Agent.
	Version string
	// Routing holds the balancing strategy.
	Routing routing.Config
	// Counters, when set, are shared by every worker process (store/shm), so
	// round_robin and least_connections count across workers; nil counts per process.
	Counters routing.CounterSource
	// Limiter enforces rate limits and budgets across workers; nil disables them.
	Limiter *limits.Limiter
	// Cache answers repeated (and, in semantic mode, similar) requests; nil: off.
	Cache *cache.Cache
	// Metrics counts whole-server totals in shared memory and serves /metrics.
	Metrics       *metrics.Metrics
	MetricsConfig metrics.Config
	// BodySpool receives the redacted request and response bodies when
	// LLM_PROXY_LOG_BODIES is on (bodylog.go); nil: bodies are never logged.
	BodySpool *spool.Writer
}

// Worker serves the gateway's HTTP API.
type Worker struct {
	cfg       Config
	deps      Deps
	logger    hclog.Logger
	server    *fasthttp.Server
	up        *upstream.Client
	userAgent string
	started   time.Time

	keys   atomic.Pointer[keySnapshot]
	routes atomic.Pointer[routing.Table]
	gens   store.Generations

	prices        atomic.Pointer[limits.PriceTable]
	cacheJobs     chan cacheJob
	cacheDropWarn throttle // "cache write queue full" warnings
	sem           semExt   // semantic routes and cache overrides (semroute.go)

	// tracing exports spans when LLM_PROXY_OTEL_ENDPOINT is set; nil: off.
	tracing *tracing

	// book holds live routing state (health, circuits, counters) across table
	// rebuilds; budget caps retries.
	book   *routing.Book
	budget *routing.RetryBudget

	// reqPrefix and reqSeq make request ids unique across processes and restarts
	// without a random read per request.
	reqPrefix string
	reqSeq    atomic.Uint64

	// draining is set by Shutdown: every response from then on says Connection: close.
	draining atomic.Bool

	// lnMu guards ln, the listener Serve was given (see Shutdown).
	lnMu sync.Mutex
	ln   net.Listener

	// served counts finished proxied requests; inFlight those still running.
	served   atomic.Uint64
	inFlight atomic.Int64

	// refreshInterval is how often Run polls the change counters (250 ms keeps a
	// CLI revoke under the 1 s promise).
	refreshInterval time.Duration
}

// New builds a worker and loads its first key and routing snapshots, so it
// serves correctly from its first request.
func New(ctx context.Context, cfg Config, deps Deps) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	if deps.Store == nil || deps.Spool == nil {
		return nil, errors.New("worker: store and spool are required")
	}
	if deps.Logger == nil {
		deps.Logger = hclog.NewNullLogger()
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("worker: request id prefix: %w", err)
	}
	w := &Worker{
		cfg:             cfg,
		deps:            deps,
		logger:          deps.Logger,
		started:         time.Now(),
		reqPrefix:       "req_" + hex.EncodeToString(rnd[:]) + "_",
		refreshInterval: 250 * time.Millisecond,
	}
	w.up = upstream.New(cfg.Config)
	w.userAgent = "llm-proxy/" + deps.Version
	w.book = routing.NewBook(deps.Counters)
	w.cacheJobs = make(chan cacheJob, cacheJobQueue)
	tr, err := newTracing(cfg.TraceConfig, deps.Version, deps.Slot, w.logger)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	w.tracing = tr
	w.budget = routing.NewRetryBudget(float64(cfg.RetryBudgetPercent)/100, cfg.RetryBudgetMin, 10*time.Second)
	if err := w.refresh(ctx, true); err != nil {
		return nil, err
	}
	w.server = &fasthttp.Server{
		Handler:            w.closeWhenDraining(w.router().Handler),
		Name:               "llm-proxy",
		ReadTimeout:        cfg.ReadTimeout,
		IdleTimeout:        cfg.IdleTimeout,
		MaxRequestBodySize: cfg.MaxBodyBytes,
		// fasthttp reads the whole header block into its read buffer, so the
		// buffer size is the header limit (431 beyond it).
		ReadBufferSize: cfg.MaxHeaderBytes,
		MaxConnsPerIP:  cfg.MaxConnsPerIP,
		// No WriteTimeout: a server-wide write deadline would cut long streams.
		NoDefaultServerHeader:         true,
		NoDefaultDate:                 false,
		DisableHeaderNamesNormalizing: false,
		CloseOnShutdown:               true,
		ErrorHandler:                  w.serverError,
		Logger:                        fasthttpLogger{w.logger.Named("http")},
	}
	return w, nil
}

func (w *Worker) router() *router.Router {
	r := router.New()
	r.POST("/v1/chat/completions", w.proxy(endpointChat))
	r.POST("/v1/completions", w.proxy(endpointCompletions))
	r.POST("/v1/embeddings", w.proxy(endpointEmbeddings))
	r.POST("/v1/messages", w.messages)
	r.GET("/v1/models", w.models)
	r.GET("/api/health", w.health)
	if w.deps.Metrics != nil {
		r.GET(w.deps.MetricsConfig.Path, w.deps.Metrics.Handler(w.deps.MetricsConfig.Token))
	}
	if w.deps.Admin != nil { // the admin serves /api/workers itself, behind admin sign-in
		w.deps.Admin.Register(r)
	} else {
		r.GET("/api/workers", w.workers)
	}
	r.NotFound = func(ctx *fasthttp.RequestCtx) {
		writeError(ctx, fasthttp.StatusNotFound, "invalid_request_error", "unknown_url",
			"Unknown request URL: "+string(ctx.Method())+" "+string(ctx.Path()))
	}
	r.MethodNotAllowed = func(ctx *fasthttp.RequestCtx) {
		writeError(ctx, fasthttp.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed",
			"Method "+string(ctx.Method())+" is not allowed for "+string(ctx.Path()))
	}
	r.PanicHandler = func(ctx *fasthttp.RequestCtx, v any) {
		w.logger.Error("handler panic", "path", string(ctx.Path()), "panic", fmt.Sprint(v))
		writeError(ctx, fasthttp.StatusInternalServerError, "server_error", "internal_error", "The gateway hit an internal error.")
	}
	return r
}

// serverError answers errors fasthttp detects before a handler runs (body too
// large, malformed request line, read timeouts) in OpenAI's error shape.
func (w *Worker) serverError(ctx *fasthttp.RequestCtx, err error) {
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		drainBody(ctx.Conn(), int64(ctx.Request.Header.ContentLength()))
		writeError(ctx, fasthttp.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large",
			fmt.Sprintf("The request body exceeds the limit of %d bytes.", w.cfg.MaxBodyBytes))
	case isSmallBuffer(err):
		writeError(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, "invalid_request_error", "headers_too_large",
			fmt.Sprintf("The request headers exceed the limit of %d bytes.", w.cfg.MaxHeaderBytes))
	default:
		var netErr net.Error
		if errors.As(err, &netErr) && netErr.Timeout() {
			writeError(ctx, fasthttp.StatusRequestTimeout, "invalid_request_error", "request_timeout", "Timed out reading the request.")
			return
		}
		writeError(ctx, fasthttp.StatusBadRequest, "invalid_request_error", "bad_request", "Malformed HTTP request.")
	}
	ctx.SetConnectionClose()
}

func isSmallBuffer(err error) bool {
	var sb *fasthttp.ErrSmallBuffer
	return errors.As(err, &sb)
}

// Serve accepts connections on ln until Shutdown.
func (w *Worker) Serve(ln net.Listener) error {
	w.lnMu.Lock()
	if w.draining.Load() {
		w.lnMu.Unlock()
		return nil
	}
	w.ln = ln
	w.lnMu.Unlock()
	if err := w.server.Serve(yieldListener{ln}); err != nil && !w.draining.Load() {
		return fmt.Errorf("worker: serve: %w", err)
	}
	return nil
}

// drainGrace is how long Shutdown keeps serving, with Connection: close on every
// response, before it closes the listener and the idle keep-alive connections.
const drainGrace = time.Second

// closeWhenDraining ends the keep-alive of every connection that is answered once the
// drain has begun. Set after the handler: error answers reset the response headers.
func (w *Worker) closeWhenDraining(h fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if badHeaderFraming(ctx.Request.Header.RawHeaders()) {
			// fasthttp accepts these; a proxy in front or behind may read the same
			// bytes as different headers (request smuggling), so refuse them.
			writeError(ctx, fasthttp.StatusBadRequest, "invalid_request_error", "bad_header",
				"Malformed request headers: a bare LF or a folded (continuation) header line.")
			ctx.SetConnectionClose()
			return
		}
		h(ctx)
		if w.draining.Load() {
			ctx.SetConnectionClose()
		}
	}
}

// badHeaderFraming reports a header block with a line ending that is not CRLF
// (a bare LF) or an obs-fold continuation line (RFC 9112 sections 2.2 and 5.2).
func badHeaderFraming(raw []byte) bool {
	for i := bytes.IndexByte(raw, '\n'); i >= 0; {
		if i == 0 || raw[i-1] != '\r' {
			return true
		}
		if i+1 < len(raw) && (raw[i+1] == ' ' || raw[i+1] == '\t') {
			return true
		}
		j := bytes.IndexByte(raw[i+1:], '\n')
		if j < 0 {
			break
		}
		i += j + 1
	}
	return false
}

// Shutdown stops accepting connections and waits for in-flight requests and open
// streams to finish, up to ctx's deadline.
//
// Closing an idle keep-alive connection races with a request the client is sending on it
// at that moment: the request arrives at a closed socket, the kernel answers with a reset,
// and the client cannot tell whether it was processed (net/http does not retry a POST).
// So for drainGrace the worker keeps serving and answers every request with
// Connection: close: busy clients get their answer and reconnect, to the worker that
// replaces this one on the same socket, before any connection is closed under them. Only
// connections idle for the whole grace are closed unasked, the same race as IdleTimeout.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.draining.Store(true)
	// The grace ends early once no connection is open: nothing can race then.
	grace := time.NewTimer(drainGrace)
	defer grace.Stop()
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
wait:
	for w.server.GetOpenConnectionsCount() > 0 {
		select {
		case <-ctx.Done():
			break wait
		case <-grace.C:
			break wait
		case <-poll.C:
		}
	}
	err := w.server.ShutdownWithContext(ctx)
	// fasthttp's Shutdown does nothing when Serve has not registered its listener
	// yet (a stop right at start-up); closing it here makes Serve return anyway.
	w.lnMu.Lock()
	if w.ln != nil {
		_ = w.ln.Close()
	}
	w.lnMu.Unlock()
	if err != nil {
		return fmt.Errorf("worker: shutdown: %w", err)
	}
	return nil
}

// Run keeps the key and routing snapshots current until ctx ends.
func (w *Worker) Run(ctx context.Context) error {
	if w.deps.Cache != nil {
		done := make(chan struct{})
		defer func() { <-done }()
		go func() { defer close(done); w.runCacheWriter(ctx) }()
	}
	defer func() {
		// Export the spans still buffered; the HTTP server has drained by now.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := w.tracing.shutdown(ctx); err != nil {
			w.logger.Warn("flush traces", "error", err)
		}
	}()
	t := time.NewTicker(w.refreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := w.refresh(ctx, false); err != nil && ctx.Err() == nil {
				w.logger.Warn("refresh snapshots", "error", err)
			}
		}
	}
}

// bigKeyTable is the key count from which a reload returns its garbage to the OS.
const bigKeyTable = 10_000

// refresh reloads the snapshots whose change counter moved (all of them when force).
func (w *Worker) refresh(ctx context.Context, force bool) error {
	g, err := w.deps.Store.Generations(ctx)
	if err != nil {
		return fmt.Errorf("worker: read change counters: %w", err)
	}
	if force || g.Keys != w.gens.Keys {
		keys, err := w.deps.Store.ListAPIKeys(ctx)
		if err != nil {
			return fmt.Errorf("worker: load keys: %w", err)
		}
		snap := newKeySnapshot(keys, w.cfg)
		if err := w.loadKeyExtras(ctx, snap); err != nil {
			return err
		}
		w.keys.Store(snap)
		w.gens.Keys = g.Keys
		n := len(keys)
		if n >= bigKeyTable {
			// Loading a big key table allocates several times the snapshot it
			// leaves (rows, strings); hand that back to the OS now rather than
			// carry it as resident memory until the scavenger gets to it.
			keys = nil
			debug.FreeOSMemory()
		}
		if !force {
			w.logger.Debug("api keys reloaded", "count", n)
		}
	}
	if force || g.Prices != w.gens.Prices {
		rows, err := w.deps.Store.Prices(ctx)
		if err != nil {
			return fmt.Errorf("worker: load prices: %w", err)
		}
		w.prices.Store(newPriceTable(rows))
		w.gens.Prices = g.Prices
	}
	if force || g.Health != w.gens.Health {
		hs, err := w.deps.Store.UpstreamHealths(ctx)
		if err != nil {
			return fmt.Errorf("worker: load upstream health: %w", err)
		}
		for id, h := range hs {
			w.book.SetHealthy(id, h.Healthy)
		}
		if w.deps.Metrics != nil {
			if ups, err := w.deps.Store.ListUpstreams(ctx); err == nil {
				for _, u := range ups {
					h, ok := hs[u.ID]
					w.deps.Metrics.SetUpstreamHealth(u.Name, !ok || h.Healthy)
				}
			}
		}
		w.gens.Health = g.Health
	}
	if force || g.Upstreams != w.gens.Upstreams {
		ups, err := w.deps.Store.ListUpstreams(ctx)
		if err != nil {
			return fmt.Errorf("worker: load upstreams: %w", err)
		}
		routes, err := w.deps.Store.Routes(ctx)
		if err != nil {
			return fmt.Errorf("worker: load routes: %w", err)
		}
		w.routes.Store(buildTable(ups, routes, w.deps.Routing.Strategy, w.book))
		w.gens.Upstreams = g.Upstreams
		if !force {
			w.logger.Debug("routing table reloaded", "upstreams", len(ups))
		}
	}
	if err := w.refreshSemantic(ctx, g, force); err != nil {
		return err
	}
	w.gens.Settings = g.Settings
	return nil
}

func buildTable(ups []store.Upstream, routes []store.Route, strategy string, book *routing.Book) *routing.Table {
	var deps []*routing.Deployment
	for _, u := range ups {
		if !u.Enabled {
			continue
		}
		ru := &routing.Upstream{
			ID:       u.ID,
			Name:     u.Name,
			Provider: u.Provider,
			BaseURL:  strings.TrimRight(u.BaseURL, "/"),
			APIKey:   u.APIKey,
		}
		for _, d := range u.Deployments {
			weight := d.Weight
			deps = append(deps, &routing.Deployment{
				Upstream:      ru,
				PublicModel:   d.PublicModel,
				UpstreamModel: d.UpstreamModel,
				Weight:        weight * max(u.Weight, 0),
				Priority:      d.Priority,
				MaxConcurrent: d.MaxConcurrent,
			})
		}
	}
	rs := make(map[string]routing.Route, len(routes))
	for _, r := range routes {
		rs[r.Model] = routing.Route{Strategy: r.Strategy, Fallbacks: r.Fallbacks}
	}
	return routing.NewTable(deps, strategy, routing.WithBook(book), routing.WithRoutes(rs))
}

func (w *Worker) health(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("application/json")
	buf := make([]byte, 0, 256)
	buf = append(buf, `{"status":"ok","version":`...)
	buf = appendJSONString(buf, w.deps.Version)
	buf = append(buf, `,"worker_id":`...)
	buf = appendJSONString(buf, w.deps.WorkerID)
	buf = fmt.Appendf(buf, `,"worker_slot":%d,"pid":%d,"uptime_seconds":%.3f}`,
		w.deps.Slot, os.Getpid(), time.Since(w.started).Seconds())
	ctx.SetBody(buf)
}

// fasthttpLogger adapts hclog to fasthttp's Logger.
type fasthttpLogger struct{ l hclog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) { f.l.Debug(fmt.Sprintf(format, args...)) }

// Stats is the small JSON snapshot stored in this worker's heartbeat row and
// shown by `llm-proxy status`.
func (w *Worker) Stats() string {
	return fmt.Sprintf(`{"requests":%d,"in_flight":%d}`, w.served.Load(), w.inFlight.Load())
}

// messages serves Anthropic's Messages API: the same routing, limits and records as
// chat, with every error answered in Anthropic's error shape.
func (w *Worker) messages(ctx *fasthttp.RequestCtx) {
	w.serveProxy(ctx, endpointMessages)
	if st := ctx.Response.StatusCode(); st >= 400 && !ctx.Response.IsBodyStream() {
		ctx.Response.SetBody(anthropic.ErrorBody(st, ctx.Response.Body()))
	}
}
