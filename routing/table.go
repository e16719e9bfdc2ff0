// Package routing decides where a request goes: it maps a public model name to the
// deployments that serve it, picks one with the configured balancing strategy among
// those that are available (healthy, circuit closed, not cooling down after a 429,
// under their concurrency cap), and says whether a failed attempt may be retried.
// Tables are immutable snapshots built from the store; the worker swaps in a new
// one when upstreams or routes change, so a lookup takes no lock. Live state
// (health, circuits, in-flight counts) lives in a Book that outlives the tables.
package routing

import (
	"math"
	"sort"
	"sync"
)

// Upstream is one provider endpoint as the data path needs it.
type Upstream struct {
	ID       int64
	Name     string
	Provider string
	// BaseURL has no trailing slash; the endpoint path ("/chat/completions") is appended.
	BaseURL string
	// APIKey is sent upstream as a bearer token; empty sends none.
	APIKey string

	// state is shared by every table built from the same Book; nil in tables built
	// without one (always healthy).
	state *UpstreamState
	// bearer caches "Bearer " + APIKey.
	bearer string
}

// Bearer is the Authorization header value for the upstream's key.
func (u *Upstream) Bearer() string {
	if u.bearer == "" && u.APIKey != "" {
		u.bearer = "Bearer " + u.APIKey
	}
	return u.bearer
}

// Healthy reports the latest active health check (true until one fails).
func (u *Upstream) Healthy() bool { return u.state == nil || u.state.healthy.Load() }

// Deployment is one public model served by one upstream.
type Deployment struct {
	Upstream *Upstream
	// PublicModel is the name clients ask for; "*" matches any model name.
	PublicModel string
	// UpstreamModel replaces the model field sent upstream; empty keeps the client's.
	UpstreamModel string
	// Weight is the relative share under the weighted strategy (0 takes no traffic).
	Weight int
	// Priority is the tier: lower tiers are tried first.
	Priority int
	// MaxConcurrent caps requests in flight on the deployment across all workers;
	// 0 is unlimited.
	MaxConcurrent int

	// id is a stable hash of upstream name and upstream model, set by NewTable.
	id uint64
	// index is the position in its pool, for the attempt exclusion mask.
	index int
	state *DeploymentState
}

// Begin marks a request as in flight on d; the caller calls End when it finishes.
func (d *Deployment) Begin() { d.state.inflight.Add(1) }

// End marks a request on d as finished.
func (d *Deployment) End() { d.state.inflight.Add(-1) }

// InFlight reports the requests in flight on d, across every worker when the Book
// has shared counters.
func (d *Deployment) InFlight() int64 { return d.state.inflight.Load() }

// Index is d's position in its pool (bit index in an exclusion mask).
func (d *Deployment) Index() int { return d.index }

// State returns d's live state (circuit, cool-down).
func (d *Deployment) State() *DeploymentState { return d.state }

// Wildcard is the PublicModel of a deployment that accepts any model name.
const Wildcard = "*"

// Route configures one public model beyond its deployments.
type Route struct {
	// Strategy overrides the table's default strategy; "" keeps it.
	Strategy string
	// Fallbacks are public models tried in order after every deployment failed.
	Fallbacks []string
}

// Table maps public model names to pools of deployments.
type Table struct {
	pools    map[string]*Pool
	wildcard *Pool
	models   []string
}

// Option configures NewTable.
type Option func(*tableOptions)

type tableOptions struct {
	book   *Book
	routes map[string]Route
}

// WithBook makes the table's deployments share live state through book, which
// must outlive the table (the worker keeps one for its lifetime).
func WithBook(b *Book) Option { return func(o *tableOptions) { o.book = b } }

// WithRoutes sets per-model strategies and fallback chains.
func WithRoutes(r map[string]Route) Option { return func(o *tableOptions) { o.routes = r } }

// NewTable builds a table from deployments, balancing each model's pool with the
// named strategy (see Strategies; an unknown name falls back to weighted) unless a
// route overrides it.
func NewTable(deps []*Deployment, strategy string, opts ...Option) *Table {
	var o tableOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.book == nil {
		o.book = NewBook(nil)
	}
	t := &Table{pools: make(map[string]*Pool)}
	byModel := make(map[string][]*Deployment)
	for _, d := range deps {
		d.id = fnv64(d.Upstream.Name + "\x00" + d.UpstreamModel)
		d.Upstream.Bearer() // computed once per table, not per request (and not racily)
		if d.Upstream.state == nil {
			d.Upstream.state = o.book.upstream(d.Upstream.ID, d.Upstream.Name)
		}
		d.state = o.book.deployment(d.PublicModel, d.Upstream.Name, d.UpstreamModel)
		byModel[d.PublicModel] = append(byModel[d.PublicModel], d)
	}
	for m, ds := range byModel {
		r := o.routes[m]
		s := strategy
		if r.Strategy != "" {
			s = r.Strategy
		}
		p := newPool(m, ds, s, o.book)
		p.fallbacks = r.Fallbacks
		if m == Wildcard {
			t.wildcard = p
			continue
		}
		t.pools[m] = p
		t.models = append(t.models, m)
	}
	sort.Strings(t.models)
	return t
}

// Lookup returns the pool serving model: an exact match first, else the wildcard
// pool, else nil.
func (t *Table) Lookup(model string) *Pool {
	if p, ok := t.pools[model]; ok {
		return p
	}
	return t.wildcard
}

// Models lists the public model names with an exact deployment, sorted.
func (t *Table) Models() []string { return t.models }

// maxPool is the most deployments one model may have: attempt exclusion is a
// 64-bit mask.
const maxPool = 64

// Pool is the set of deployments serving one public model.
type Pool struct {
	model string
	deps  []*Deployment
	// live are the deployments with a positive weight (all of them when none has):
	// a weight of 0 drains a deployment under every strategy.
	live []*Deployment
	// tiers holds live deployments grouped by priority, lowest first.
	tiers     [][]*Deployment
	strategy  string
	fallbacks []string

	robin Counter // shared rotation for round_robin and tie-breaking

	// mu guards the smooth weighted round-robin scores (per process: its shares hold
	// in each worker, hence in their sum).
	mu      sync.Mutex
	current []int

	sticky *stickyMap
}

func newPool(model string, deps []*Deployment, strategy string, book *Book) *Pool {
	if len(deps) > maxPool {
		deps = deps[:maxPool]
	}
	p := &Pool{
		model:    model,
		deps:     deps,
		strategy: strategy,
		current:  make([]int, len(deps)),
		robin:    book.counter("rr:" + model),
		sticky:   book.stickyFor(model),
	}
	for i, d := range deps {
		d.index = i
		if d.Weight > 0 {
			p.live = append(p.live, d)
		}
	}
	if len(p.live) == 0 {
		p.live = deps
	}
	byPrio := make(map[int][]*Deployment)
	var prios []int
	for _, d := range p.live {
		if _, ok := byPrio[d.Priority]; !ok {
			prios = append(prios, d.Priority)
		}
		byPrio[d.Priority] = append(byPrio[d.Priority], d)
	}
	sort.Ints(prios)
	for _, pr := range prios {
		p.tiers = append(p.tiers, byPrio[pr])
	}
	return p
}

// Model is the public model name the pool serves ("*" for the wildcard pool).
func (p *Pool) Model() string { return p.model }

// Fallbacks are the public models to try after this pool's deployments failed.
func (p *Pool) Fallbacks() []string { return p.fallbacks }

// Deployments returns the pool's deployments; callers must not modify the slice.
func (p *Pool) Deployments() []*Deployment { return p.deps }

// Pick chooses a deployment ignoring availability, for callers that do not track
// attempts. convKey identifies the conversation for conversation_hash (0 when
// unknown, which falls back to weighted).
func (p *Pool) Pick(convKey uint64) *Deployment {
	if len(p.deps) == 1 {
		return p.deps[0]
	}
	return p.choose(p.live, convKey)
}

// Next chooses the deployment for the next attempt: the strategy's choice among
// the available deployments of the lowest priority tier that has any, skipping
// those whose bit is set in exclude (already tried). now is a monotonic clock
// reading (Book.Now). It returns nil when nothing is left to try.
//
// Passive checks never eject more than half of a tier: when more deployments have
// an open circuit than that, open circuits are ignored for the choice.
func (p *Pool) Next(convKey uint64, now int64, exclude uint64) *Deployment {
	var buf [maxPool]*Deployment
	for _, tier := range p.tiers {
		open := 0
		for _, d := range tier {
			if d.state.circuitOpen(now) {
				open++
			}
		}
		ignoreCircuit := open*2 > len(tier)
		cands := buf[:0]
		for _, d := range tier {
			if exclude&(1<<uint(d.index)) != 0 || !d.Upstream.Healthy() || !d.available(now, ignoreCircuit) {
				continue
			}
			cands = append(cands, d)
		}
		if len(cands) == 0 {
			continue
		}
		for len(cands) > 0 {
			d := p.choose(cands, convKey)
			if ignoreCircuit || d.state.admit(now) {
				return d
			}
			// A concurrent request took d's half-open probe slot: choose among the rest.
			for i, c := range cands {
				if c == d {
					cands = append(cands[:i], cands[i+1:]...)
					break
				}
			}
		}
	}
	return nil
}

// available reports whether d may take a request now.
func (d *Deployment) available(now int64, ignoreCircuit bool) bool {
	s := d.state
	if now < s.coolUntil.Load() {
		return false
	}
	if d.MaxConcurrent > 0 && s.inflight.Load() >= int64(d.MaxConcurrent) {
		return false
	}
	return ignoreCircuit || s.mayAdmit(now)
}

// choose applies the strategy to cands (non-empty).
func (p *Pool) choose(cands []*Deployment, convKey uint64) *Deployment {
	if len(cands) == 1 {
		return cands[0]
	}
	switch p.strategy {
	case RoundRobin:
		n := uint64(p.robin.Add(1) - 1)
		return cands[n%uint64(len(cands))]
	case LeastConnections:
		return p.leastConnections(cands)
	case ConversationHash:
		if convKey != 0 {
			return p.conversation(cands, convKey)
		}
	}
	return p.smoothWeighted(cands)
}

// smoothWeighted is nginx's smooth weighted round-robin over cands: each pick adds
// every candidate's weight to its current score, takes the highest, and subtracts
// the candidates' total from the winner. It spreads picks evenly instead of in
// bursts, and like nginx it skips unavailable peers without disturbing the others.
func (p *Pool) smoothWeighted(cands []*Deployment) *Deployment {
	total := 0
	for _, d := range cands {
		total += d.Weight
	}
	if total == 0 {
		return cands[0]
	}
	p.mu.Lock()
	var best *Deployment
	for _, d := range cands {
		p.current[d.index] += d.Weight
		if best == nil || p.current[d.index] > p.current[best.index] {
			best = d
		}
	}
	p.current[best.index] -= total
	p.mu.Unlock()
	return best
}

func (p *Pool) leastConnections(cands []*Deployment) *Deployment {
	// Start the scan at a rotating offset so ties do not all go to the first deployment.
	start := int(uint64(p.robin.Add(1)) % uint64(len(cands)))
	best := cands[start]
	bestN := best.InFlight()
	for i := 1; i < len(cands); i++ {
		d := cands[(start+i)%len(cands)]
		if n := d.InFlight(); n < bestN {
			best, bestN = d, n
		}
	}
	return best
}

// conversation keeps a conversation on one deployment. Its home is the rendezvous
// choice over all live deployments, the same in every worker; when the home is not
// available the conversation moves to the rendezvous choice among the candidates
// and stays there (sticky), so the new provider's prompt cache keeps hitting even
// after the old home recovers.
func (p *Pool) conversation(cands []*Deployment, key uint64) *Deployment {
	if id, ok := p.sticky.get(key); ok {
		for _, d := range cands {
			if d.id == id {
				return d
			}
		}
	}
	home := p.rendezvous(p.live, key)
	for _, d := range cands {
		if d == home {
			return d
		}
	}
	d := p.rendezvous(cands, key)
	p.sticky.put(key, d.id)
	return d
}

// rendezvous picks the deployment with the highest weighted hash score for the
// key (highest random weight hashing): removing one of N deployments moves only
// the conversations that lived on it.
func (p *Pool) rendezvous(cands []*Deployment, key uint64) *Deployment {
	uniform := true
	for _, d := range cands[1:] {
		if d.Weight != cands[0].Weight {
			uniform = false
			break
		}
	}
	if uniform {
		// Equal weights: -w/ln(u) grows with u, so the highest hash wins.
		var best *Deployment
		var bestH uint64
		for _, d := range cands {
			if h := mix64(key ^ d.id); best == nil || h > bestH {
				best, bestH = d, h
			}
		}
		return best
	}
	var best *Deployment
	bestScore := math.Inf(-1)
	for _, d := range cands {
		if d.Weight == 0 {
			continue
		}
		// The hash must be the same in every worker process, so no per-process seed.
		h := mix64(key ^ d.id)
		// Map the hash to (0,1) and weight it: score = -w / ln(u).
		u := (float64(h>>11) + 0.5) / (1 << 53)
		score := float64(d.Weight) / negLog(u)
		if score > bestScore {
			best, bestScore = d, score
		}
	}
	if best == nil {
		return cands[0]
	}
	return best
}

// negLog approximates -ln(u) for u in (0,1) to about 1e-5, strictly decreasing in
// u like the real one, so rendezvous choices keep their order and their weighted
// shares; it costs one division and a few multiplications instead of math.Log, which
// made a 16-deployment conversation_hash pick cost about 450 ns.
func negLog(u float64) float64 {
	bits := math.Float64bits(u)
	exp := float64(int64(bits>>52&0x7ff) - 1023)
	m := math.Float64frombits(bits&^(0x7ff<<52) | 1023<<52) // mantissa in [1, 2)
	// ln(m) = 2 artanh(t) with t = (m-1)/(m+1) <= 1/3: four terms of the series.
	t := (m - 1) / (m + 1)
	t2 := t * t
	lnm := 2 * t * (1 + t2*(1.0/3+t2*(1.0/5+t2*(1.0/7))))
	return -(exp*math.Ln2 + lnm)
}

func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix64 is the splitmix64 finaliser: it spreads every input bit over the output.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// ConversationKey hashes a conversation identifier (an X-Conversation-ID header or
// the request's "user") for conversation_hash; it is never 0.
func ConversationKey(id []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range id {
		h ^= uint64(c)
		h *= 1099511628211
	}
	if h == 0 {
		h = 1
	}
	return h
}
