package worker

import (
	"bytes"
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/cache"
)

// cacheStep is a request's cache state.
type cacheStep struct {
	on    bool // a successful answer is to be stored
	key   cache.Key
	ns    string
	model string
	// semantic: the request is eligible for L3; vec is its embedding.
	semantic bool
	sreq     cache.SemanticRequest
	vec      []float32
	asm      *cache.Assembler
	// ttl is the route's cache lifetime (0: the cache's default); pre is the embedding
	// semantic routing computed (semroute.go).
	ttl time.Duration
	pre preEmbedding
}

// cacheJob is an answer waiting to be written to the cache. Writes happen off the
// request path: no client waits on SQLite.
type cacheJob struct {
	key      cache.Key
	entry    cache.Entry
	semantic bool
	sreq     cache.SemanticRequest
	vec      []float32
}

// cacheJobQueue bounds answers waiting to be cached; past it they are dropped (a
// cache is allowed to miss).
const cacheJobQueue = 1024

// cacheLookup applies the cache to a request: it answers from the cache on a hit
// and returns true; otherwise it prepares x to store the answer. Cache-Control:
// no-cache skips the lookup but still stores; no-store does neither.
func (w *Worker) cacheLookup(ctx *fasthttp.RequestCtx, x *exchange, key *keyEntry, ep endpoint, body []byte) bool {
	c := w.deps.Cache
	if c == nil || ep.inbound {
		return false
	}
	mode, ttl := w.cacheOverride(c.Config().Mode, key.id, x)
	if mode == cache.ModeOff {
		return false
	}
	cc := ctx.Request.Header.Peek(fasthttp.HeaderCacheControl)
	if bytes.Contains(cc, []byte("no-store")) {
		x.rec.Cache = cache.TierBypass.String()
		ctx.Response.Header.Set("X-LLM-Proxy-Cache", x.rec.Cache)
		return false
	}
	var nsBuf [48]byte
	ns := appendNamespace(nsBuf[:0], c.Config(), key)
	k, err := c.Key(ns, ep.name, x.rec.Model, body)
	if err != nil {
		return false
	}
	lookup := !bytes.Contains(cc, []byte("no-cache"))
	if lookup {
		// The common hit: L1, no context, the body copied once into a pooled buffer.
		bp := hitBufs.Get().(*[]byte)
		e, hit, ok := c.GetL1Append(k, x.started, (*bp)[:0])
		if ok {
			x.rec.Cache = cache.TierL1.String()
			w.serveCachedBody(ctx, x, e, hit)
		}
		if cap(hit) <= 1<<20 {
			*bp = hit
			hitBufs.Put(bp)
		}
		if ok {
			return true
		}
	}
	nss := string(ns)
	st := &x.cache
	*st = cacheStep{on: true, key: k, ns: nss, model: x.rec.Model, ttl: ttl, pre: st.pre}
	if mode == cache.ModeSemantic && ep.name == endpointChat.name {
		if sr, ok := cache.PrepareSemantic(nss, x.rec.Model, body, c.Config().SemanticMaxMessages); ok {
			if vec, err := w.requestVector(x, sr.Text); err == nil {
				st.semantic, st.sreq, st.vec = true, sr, vec
			}
		}
	}
	x.rec.Cache = cache.TierMiss.String()
	if lookup {
		lctx, cancel := context.WithTimeout(context.Background(), time.Second)
		e, tier, ok := c.GetL2(lctx, k) // L1 was looked at above
		if !ok && st.semantic {
			var m cache.Match
			if e, m, ok = c.SemanticGet(lctx, st.sreq, st.vec); ok {
				tier = cache.TierSemantic
				if x.rec.Route != "" { // keep a semantic route's decision
					x.rec.Route += "; "
				}
				x.rec.Route += "semantic-cache score=" + strconv.FormatFloat(float64(m.Score), 'f', 3, 32)
			}
		}
		cancel()
		if ok {
			w.serveCached(ctx, x, e, tier)
			return true
		}
	}
	ctx.Response.Header.Set("X-LLM-Proxy-Cache", x.rec.Cache)
	return false
}

// serveCached answers from a cache entry: the stored body, or for a stream the
// same answer replayed as OpenAI chunks ending with [DONE]. The reported usage is
// the original's; the record says which tier answered and costs nothing.
func (w *Worker) serveCached(ctx *fasthttp.RequestCtx, x *exchange, e cache.Entry, tier cache.Tier) {
	x.rec.Cache = tier.String()
	w.serveCachedBody(ctx, x, e, e.Body)
}

// hitBufs holds the buffers L1 hits copy their answer into.
var hitBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// appendNamespace appends the cache namespace of key's owner (cache.Config.NamespaceFor)
// to dst, without the allocations of building it as a string.
func appendNamespace(dst []byte, cfg cache.Config, key *keyEntry) []byte {
	if cfg.Namespace == cache.NamespaceShared {
		return dst
	}
	dst = append(dst, "key:"...)
	if key.userID != 0 {
		return strconv.AppendInt(append(dst, "user:"...), key.userID, 10)
	}
	return strconv.AppendInt(append(dst, "key:"...), key.id, 10)
}

// serveCachedBody answers with a cached answer body; x.rec.Cache names the tier. body
// is copied into the response.
func (w *Worker) serveCachedBody(ctx *fasthttp.RequestCtx, x *exchange, e cache.Entry, body []byte) {
	x.cache.on = false
	x.rec.Status = fasthttp.StatusOK
	x.rec.PromptTokens, x.rec.CompletionTokens = e.PromptTokens, e.CompletionTokens
	x.rec.Upstream, x.rec.UpstreamModel = "", e.Model
	ctx.Response.Header.Set("X-LLM-Proxy-Cache", x.rec.Cache)
	ctx.SetStatusCode(fasthttp.StatusOK)
	if x.rec.Stream {
		out, err := cache.AppendSSE(ctx.Response.Body()[:0], body, x.req.IncludeUsage)
		if err == nil {
			ctx.Response.Header.SetContentType("text/event-stream")
			ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-cache")
			ctx.Response.SetBodyRaw(out)
			w.finish(x)
			return
		}
		// An entry that cannot be replayed is served as JSON rather than failed.
	}
	ctx.Response.Header.SetContentType("application/json")
	ctx.SetBody(body)
	w.finish(x)
}

// cacheStore queues a successful answer for the cache. body is copied.
func (w *Worker) cacheStore(x *exchange, body []byte) {
	st := &x.cache
	if !st.on || w.deps.Cache == nil {
		return
	}
	st.on = false
	job := cacheJob{
		key: st.key,
		entry: cache.Entry{
			Body: append([]byte(nil), body...), Model: st.model, Namespace: st.ns,
			PromptTokens: x.rec.PromptTokens, CompletionTokens: x.rec.CompletionTokens,
		},
		semantic: st.semantic, sreq: st.sreq, vec: st.vec,
	}
	if st.ttl > 0 {
		job.entry.Created = time.Now()
		job.entry.Expires = job.entry.Created.Add(st.ttl)
	}
	select {
	case w.cacheJobs <- job:
	default:
		w.cacheWriteDropped()
	}
}

// cacheWriteDropped counts an answer the full write queue turned away (a cache may miss,
// a request must not wait) and warns at most once a minute, so an L2 that cannot keep
// up is visible without a log line per request.
func (w *Worker) cacheWriteDropped() {
	if m := w.deps.Metrics; m != nil {
		m.CacheWriteDropped()
	}
	if w.cacheDropWarn.allow(time.Now(), time.Minute) {
		w.logger.Warn("cache write queue full: answers are served but not cached (llm_proxy_cache_writes_dropped_total counts them)",
			"queue", cap(w.cacheJobs))
	}
}

// runCacheWriter writes queued answers to the cache until ctx ends.
func (w *Worker) runCacheWriter(ctx context.Context) {
	c := w.deps.Cache
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-w.cacheJobs:
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			var err error
			if j.semantic {
				err = c.PutSemantic(wctx, j.key, j.entry, j.sreq, j.vec)
			} else {
				err = c.Put(wctx, j.key, j.entry)
			}
			cancel()
			if err != nil && ctx.Err() == nil {
				w.logger.Warn("cache write failed", "error", err)
			}
		}
	}
}
