// Package cache is the response cache: exact-match tiers (L1 freecache in each worker, L2
// SQLite shared by all) and the semantic tier (L3: similar prompts, by embedding, in memory
// per worker, persisted in SQLite). Precision comes first: the exact key covers every
// answer-changing field, and a semantic hit must also pass the false-hit guard.
package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/llm-proxy/llm-proxy/routing/embed"
	"github.com/llm-proxy/llm-proxy/store"
)

// Modes of LLM_PROXY_CACHE_MODE (and of per-route and per-key overrides).
const (
	ModeOff      = "off"
	ModeExact    = "exact"
	ModeSemantic = "semantic" // exact first, then similar prompts
)

// Namespaces of LLM_PROXY_CACHE_NAMESPACE.
const (
	NamespaceKey    = "key"    // each API key owner has its own entries
	NamespaceShared = "shared" // every client shares entries
)

// Config is the cache part of the process configuration.
type Config struct {
	Mode                string        `envconfig:"CACHE_MODE" default:"off" desc:"default cache mode: off, exact or semantic (routes and keys may override)"`
	L1MB                int           `envconfig:"CACHE_L1_MB" default:"64" desc:"in-memory (L1) cache size per worker, in MiB"`
	L2MB                int           `envconfig:"CACHE_L2_MB" default:"1024" desc:"SQLite (L2) cache budget in MiB; the primary evicts above it"`
	TTL                 time.Duration `envconfig:"CACHE_TTL" default:"1h" desc:"default lifetime of a cached answer"`
	Namespace           string        `envconfig:"CACHE_NAMESPACE" default:"key" desc:"key: entries per API key owner; shared: one cache for every client"`
	SemanticThreshold   float64       `envconfig:"SEMANTIC_THRESHOLD" default:"0" desc:"cosine similarity for a semantic hit (0: the embedder's default, 0.80 for the lexical one)"`
	SemanticMaxMessages int           `envconfig:"CACHE_SEMANTIC_MAX_MESSAGES" default:"3" desc:"longest conversation the semantic cache considers"`
	SemanticCapacity    int           `envconfig:"CACHE_SEMANTIC_CAPACITY" default:"50000" desc:"most semantic entries kept in memory per worker"`
	PollInterval        time.Duration `envconfig:"CACHE_POLL_INTERVAL" default:"250ms" desc:"how often a worker checks for a purge (the cache generation)"`
	HitFlushInterval    time.Duration `envconfig:"CACHE_HIT_FLUSH_INTERVAL" default:"5s" desc:"how often a worker writes its hit counts to SQLite"`
	EvictBatch          int           `envconfig:"CACHE_EVICT_BATCH" default:"500" desc:"rows deleted per eviction transaction"`
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.Mode != ModeOff && c.Mode != ModeExact && c.Mode != ModeSemantic:
		return fmt.Errorf("cache: CACHE_MODE must be off, exact or semantic, got %q", c.Mode)
	case c.L1MB < 1:
		return fmt.Errorf("cache: CACHE_L1_MB must be at least 1, got %d", c.L1MB)
	case c.L2MB < 1:
		return fmt.Errorf("cache: CACHE_L2_MB must be at least 1, got %d", c.L2MB)
	case c.TTL < time.Second:
		return fmt.Errorf("cache: CACHE_TTL must be at least 1s, got %s", c.TTL)
	case c.Namespace != NamespaceKey && c.Namespace != NamespaceShared:
		return fmt.Errorf("cache: CACHE_NAMESPACE must be key or shared, got %q", c.Namespace)
	case c.SemanticThreshold < 0 || c.SemanticThreshold > 1:
		return fmt.Errorf("cache: SEMANTIC_THRESHOLD must be within [0, 1], got %v", c.SemanticThreshold)
	case c.SemanticMaxMessages < 1:
		return fmt.Errorf("cache: CACHE_SEMANTIC_MAX_MESSAGES must be at least 1, got %d", c.SemanticMaxMessages)
	case c.SemanticCapacity < 1:
		return fmt.Errorf("cache: CACHE_SEMANTIC_CAPACITY must be at least 1, got %d", c.SemanticCapacity)
	case c.PollInterval <= 0 || c.HitFlushInterval <= 0:
		return errors.New("cache: CACHE_POLL_INTERVAL and CACHE_HIT_FLUSH_INTERVAL must be positive")
	case c.EvictBatch < 1:
		return fmt.Errorf("cache: CACHE_EVICT_BATCH must be at least 1, got %d", c.EvictBatch)
	}
	return nil
}

// NamespaceFor returns the namespace of a request by the API key owner owner: owner under
// CACHE_NAMESPACE=key, "" (everyone) under shared.
func (c Config) NamespaceFor(owner string) string {
	if c.Namespace == NamespaceShared {
		return ""
	}
	return "key:" + owner
}

// Tier says where an answer came from; String is the X-LLM-Proxy-Cache header value.
type Tier uint8

const (
	TierMiss Tier = iota
	TierL1
	TierL2
	TierSemantic
	TierBypass // the request asked not to look up (Cache-Control) or the cache is off
)

func (t Tier) String() string {
	switch t {
	case TierL1:
		return "hit-l1"
	case TierL2:
		return "hit-l2"
	case TierSemantic:
		return "hit-semantic"
	case TierBypass:
		return "bypass"
	}
	return "miss"
}

// Cache is the tiered lookup of one process. Safe for concurrent use.
type Cache struct {
	cfg       Config
	st        *store.Store
	l1        *L1
	keys      *keyMemo
	emb       embed.Embedder // nil: no semantic tier
	ix        *Index
	threshold float32
	logger    hclog.Logger
	now       func() time.Time

	gen atomic.Int64 // cache generation this process's memory tiers reflect

	hitMu sync.Mutex
	hits  map[Key]int64
}

// maxPendingHits bounds the hit counts kept between flushes; past it, hits are dropped
// (they only order eviction).
const maxPendingHits = 100_000

// New builds the tiers. emb may be nil when no semantic tier is wanted; clock may be nil
// (time.Now). It does not load the semantic index: call LoadSemantic.
func New(cfg Config, st *store.Store, emb embed.Embedder, logger hclog.Logger, clock func() time.Time) (*Cache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if st == nil {
		return nil, errors.New("cache: store is nil")
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if clock == nil {
		clock = time.Now
	}
	c := &Cache{cfg: cfg, st: st, l1: NewL1(cfg.L1MB), keys: newKeyMemo(), emb: emb, logger: logger.Named("cache"), now: clock,
		hits: make(map[Key]int64)}
	if emb != nil {
		c.threshold = float32(cfg.SemanticThreshold)
		if c.threshold == 0 {
			c.threshold = embed.DefaultThreshold(emb)
		}
		c.ix = NewIndex(emb.Dim(), cfg.SemanticCapacity)
	}
	return c, nil
}

// Config returns the configuration the cache was built with.
func (c *Cache) Config() Config { return c.cfg }

// Embedder returns the semantic tier's embedder (nil if none).
func (c *Cache) Embedder() embed.Embedder { return c.emb }

// Threshold returns the semantic similarity threshold in force.
func (c *Cache) Threshold() float32 { return c.threshold }

// L1 exposes the in-memory tier (for stats and tests).
func (c *Cache) L1() *L1 { return c.l1 }

// Index exposes the semantic index (nil without an embedder).
func (c *Cache) Index() *Index { return c.ix }

// Get looks key up in L1, then L2; an L2 hit fills L1. A store error is logged and counts
// as a miss: the cache must never fail a request the upstream could answer.
func (c *Cache) Get(ctx context.Context, key Key) (Entry, Tier, bool) {
	now := c.now()
	if e, ok := c.l1.Get(key, now); ok {
		c.countHit(key)
		return e, TierL1, true
	}
	return c.GetL2(ctx, key)
}

// GetL2 looks key up in L2 only (an L2 hit fills L1): what follows a GetL1Append miss.
func (c *Cache) GetL2(ctx context.Context, key Key) (Entry, Tier, bool) {
	now := c.now()
	row, ok, err := c.st.CacheGet(ctx, key[:], now)
	if err != nil {
		c.logStoreError("l2 get", err)
		return Entry{}, TierMiss, false
	}
	if !ok {
		return Entry{}, TierMiss, false
	}
	e := Entry{Body: row.Body, Model: row.Model, Namespace: row.Namespace, PromptTokens: row.PromptTokens,
		CompletionTokens: row.CompletionTokens, Created: row.CreatedAt, Expires: row.ExpiresAt}
	if err := c.l1.Set(key, e, now); err != nil && !errors.Is(err, ErrTooLarge) {
		c.logger.Warn("l1 fill failed", "error", err)
	}
	c.countHit(key)
	return e, TierL2, true
}

// Key is NewKey(string(namespace), endpoint, model, body), answered from a memo of recent
// bodies when this exact request was keyed before (see keyMemo).
func (c *Cache) Key(namespace []byte, endpoint, model string, body []byte) (Key, error) {
	return c.keys.key(namespace, endpoint, model, body)
}

// GetL1Append looks key up in L1 only and appends the answer's body to dst: the
// request path's first step, which needs no context and allocates nothing. The
// returned Entry has no Body (it is in the returned slice) and no Namespace. On a
// miss the caller goes on with GetL2. now is the request's time, which the caller has.
func (c *Cache) GetL1Append(key Key, now time.Time, dst []byte) (Entry, []byte, bool) {
	e, out, ok := c.l1.GetAppend(key, now, dst)
	if ok {
		c.countHit(key)
	}
	return e, out, ok
}

// Put stores e under key in both tiers. Created and Expires default to now and now + TTL.
// Call it only for successful, complete answers.
func (c *Cache) Put(ctx context.Context, key Key, e Entry) error {
	e = c.stamp(e)
	if err := c.l1.Set(key, e, c.now()); err != nil && !errors.Is(err, ErrTooLarge) {
		return err
	}
	return c.st.CachePut(ctx, store.CacheEntry{Key: key[:], Namespace: e.Namespace, Model: e.Model, Body: e.Body,
		PromptTokens: e.PromptTokens, CompletionTokens: e.CompletionTokens, CreatedAt: e.Created, ExpiresAt: e.Expires})
}

func (c *Cache) stamp(e Entry) Entry {
	if e.Created.IsZero() {
		e.Created = c.now()
	}
	if e.Expires.IsZero() {
		e.Expires = e.Created.Add(c.cfg.TTL)
	}
	return e
}

// Delete removes key from this process's L1 and from L2 (other workers' L1 copies live
// until their TTL; use Purge to reach them).
func (c *Cache) Delete(ctx context.Context, key Key) error {
	c.l1.Delete(key)
	_, err := c.st.CacheDelete(ctx, key[:])
	return err
}

// Purge deletes the L2 entries matching f, bumps the generation, and clears this
// process's memory tiers at once; other workers clear theirs on their next poll.
func (c *Cache) Purge(ctx context.Context, f store.CacheFilter) (int, error) {
	n, err := c.st.CachePurge(ctx, f)
	if err != nil {
		return 0, err
	}
	c.clearMemory()
	return n, nil
}

func (c *Cache) clearMemory() {
	c.l1.Clear()
	if c.ix != nil {
		c.ix.Clear()
	}
}

// Embed embeds text with the semantic tier's embedder into dst. One embedding per request
// serves both semantic routing and this tier.
func (c *Cache) Embed(ctx context.Context, text string, dst []float32) ([]float32, error) {
	if c.emb == nil {
		return nil, errors.New("cache: no embedder")
	}
	return c.emb.Embed(ctx, text, dst)
}

// SemanticGet looks for a cached answer to a similar prompt in req's scope. vec is the
// embedding of req.Text. A candidate whose exact entry is gone is dropped from the index.
func (c *Cache) SemanticGet(ctx context.Context, req SemanticRequest, vec []float32) (Entry, Match, bool) {
	if c.ix == nil {
		return Entry{}, Match{}, false
	}
	now := c.now()
	m, ok := c.ix.Search(req.Scope, vec, NewGuard(req.Text), c.threshold, now)
	if !ok {
		return Entry{}, Match{}, false
	}
	e, _, ok := c.Get(ctx, m.Key)
	if !ok {
		c.ix.Remove(req.Scope, m.Key)
		return Entry{}, Match{}, false
	}
	return e, m, true
}

// PutSemantic stores e under key (as Put) and its prompt vector in the semantic tier.
func (c *Cache) PutSemantic(ctx context.Context, key Key, e Entry, req SemanticRequest, vec []float32) error {
	if c.ix == nil {
		return errors.New("cache: no embedder")
	}
	if len(vec) != c.ix.Dim() {
		return fmt.Errorf("cache: vector has dimension %d, want %d", len(vec), c.ix.Dim())
	}
	e = c.stamp(e)
	if err := c.Put(ctx, key, e); err != nil {
		return err
	}
	if err := c.st.SemanticPut(ctx, store.SemanticEntry{Key: key[:], Namespace: e.Namespace, Scope: req.Scope[:],
		Model: e.Model, Embedder: c.emb.ID(), Vector: vec, Text: req.Text, CreatedAt: e.Created, ExpiresAt: e.Expires}); err != nil {
		return err
	}
	c.ix.Add(req.Scope, key, vec, req.Text, e.Expires)
	return nil
}

// LoadSemantic fills the index from SQLite (the newest entries first, up to its capacity)
// and returns how many it loaded. Call it once at start.
func (c *Cache) LoadSemantic(ctx context.Context) (int, error) {
	if c.ix == nil {
		return 0, nil
	}
	n := 0
	err := c.st.SemanticLoad(ctx, c.emb.ID(), c.emb.Dim(), c.now(), c.cfg.SemanticCapacity, func(e store.SemanticEntry) error {
		var sc Scope
		var k Key
		if len(e.Scope) != len(sc) || len(e.Key) != len(k) {
			return nil
		}
		copy(sc[:], e.Scope)
		copy(k[:], e.Key)
		c.ix.Add(sc, k, e.Vector, e.Text, e.ExpiresAt)
		n++
		return nil
	})
	return n, err
}

// Evict is the primary's duty: expired entries, then the least recently hit until L2 is
// within CACHE_L2_MB. epoch fences it (store.ErrFenced when the lease moved on).
func (c *Cache) Evict(ctx context.Context, epoch int64) (int, error) {
	return c.st.CacheEvict(ctx, epoch, c.now(), int64(c.cfg.L2MB)<<20, c.cfg.EvictBatch)
}

func (c *Cache) countHit(key Key) {
	c.hitMu.Lock()
	if len(c.hits) < maxPendingHits {
		c.hits[key]++
	}
	c.hitMu.Unlock()
}

// FlushHits writes the hit counts gathered since the last flush.
func (c *Cache) FlushHits(ctx context.Context) error {
	c.hitMu.Lock()
	pending := c.hits
	c.hits = make(map[Key]int64, len(pending))
	c.hitMu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	m := make(map[string]int64, len(pending))
	for k, n := range pending {
		m[string(k[:])] = n
	}
	return c.st.CacheTouch(ctx, m, c.now())
}

// SyncGeneration reads the cache generation and, if a purge bumped it since the last call,
// clears this process's memory tiers. It reports whether it cleared them.
func (c *Cache) SyncGeneration(ctx context.Context) (bool, error) {
	gen, err := c.st.CacheGeneration(ctx)
	if err != nil {
		return false, err
	}
	if old := c.gen.Swap(gen); old != gen {
		c.clearMemory()
		return true, nil
	}
	return false, nil
}

// Run keeps this process's tiers in step with the others until ctx ends: it polls the
// generation every PollInterval (so a purge anywhere empties this L1 within about that
// long), and every HitFlushInterval writes the hit counts and prunes expired vectors. It
// returns nil when ctx ends, after a last flush.
func (c *Cache) Run(ctx context.Context) error {
	if _, err := c.SyncGeneration(ctx); err != nil {
		c.logStoreError("read generation", err)
	}
	poll := time.NewTicker(c.cfg.PollInterval)
	defer poll.Stop()
	flush := time.NewTicker(c.cfg.HitFlushInterval)
	defer flush.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			if err := c.FlushHits(fctx); err != nil {
				c.logStoreError("flush hits", err)
			}
			cancel()
			return nil
		case <-poll.C:
			if cleared, err := c.SyncGeneration(ctx); err != nil {
				c.logStoreError("read generation", err)
			} else if cleared {
				c.logger.Debug("cache generation changed, memory tiers cleared", "generation", c.gen.Load())
			}
		case <-flush.C:
			if err := c.FlushHits(ctx); err != nil {
				c.logStoreError("flush hits", err)
			}
			if c.ix != nil {
				c.ix.Prune(c.now())
			}
		}
	}
}

// logStoreError logs a store failure the cache absorbed: lock contention and deadlines
// are expected under load and stay below WARN.
func (c *Cache) logStoreError(op string, err error) {
	if store.IsTransient(err) || errors.Is(err, context.Canceled) {
		c.logger.Debug("cache store call failed", "op", op, "error", err)
		return
	}
	c.logger.Warn("cache store call failed", "op", op, "error", err)
}
