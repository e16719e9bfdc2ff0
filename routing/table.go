// Package routing decides where a request goes: it maps a public model name to the
// deployments that serve it and picks one with the configured balancing strategy.
// Tables are immutable snapshots built from the store; the worker swaps in a new
// one when upstreams change, so a lookup takes no lock.
package routing

import (
	"math"
	"sort"
	"sync"
	"sync/atomic"
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
}

// Deployment is one public model served by one upstream.
type Deployment struct {
	Upstream *Upstream
	// PublicModel is the name clients ask for; "*" matches any model name.
	PublicModel string
	// UpstreamModel replaces the model field sent upstream; empty keeps the client's.
	UpstreamModel string
	// Weight is the relative share under the weighted strategy (0 takes no traffic).
	Weight int

	// id is a stable hash of upstream name and upstream model, set by NewTable.
	id uint64

	// inflight counts this process's requests in flight on the deployment, for
	// least_connections. It must not be copied.
	inflight atomic.Int64
}

// Begin marks a request as in flight on d; the caller calls End when it finishes.
func (d *Deployment) Begin() { d.inflight.Add(1) }

// End marks a request on d as finished.
func (d *Deployment) End() { d.inflight.Add(-1) }

// InFlight reports the requests currently in flight on d in this process.
func (d *Deployment) InFlight() int64 { return d.inflight.Load() }

// Wildcard is the PublicModel of a deployment that accepts any model name.
const Wildcard = "*"

// Table maps public model names to pools of deployments.
type Table struct {
	pools    map[string]*Pool
	wildcard *Pool
	models   []string
}

// NewTable builds a table from deployments, balancing each model's pool with the
// named strategy (see Strategies; an unknown name falls back to weighted).
func NewTable(deps []*Deployment, strategy string) *Table {
	t := &Table{pools: make(map[string]*Pool)}
	byModel := make(map[string][]*Deployment)
	for _, d := range deps {
		d.id = fnv64(d.Upstream.Name + "\x00" + d.UpstreamModel)
		byModel[d.PublicModel] = append(byModel[d.PublicModel], d)
	}
	for m, ds := range byModel {
		p := newPool(ds, strategy)
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

// Pool is the set of deployments serving one public model.
type Pool struct {
	deps []*Deployment
	// live are the deployments with a positive weight (all of them when none has):
	// a weight of 0 drains a deployment under every strategy.
	live []*Deployment
	// uniform reports equal positive weights, where rendezvous needs no logarithm.
	uniform  bool
	strategy string

	robin atomic.Uint64

	// mu guards the smooth weighted round-robin state.
	mu      sync.Mutex
	current []int
	total   int
}

func newPool(deps []*Deployment, strategy string) *Pool {
	p := &Pool{deps: deps, strategy: strategy, current: make([]int, len(deps)), uniform: true}
	for _, d := range deps {
		p.total += d.Weight
		if d.Weight > 0 {
			if len(p.live) > 0 && d.Weight != p.live[0].Weight {
				p.uniform = false
			}
			p.live = append(p.live, d)
		}
	}
	if len(p.live) == 0 {
		p.live = deps
	}
	return p
}

// Deployments returns the pool's deployments; callers must not modify the slice.
func (p *Pool) Deployments() []*Deployment { return p.deps }

// Pick chooses a deployment. convKey identifies the conversation for
// conversation_hash (0 when unknown, which falls back to weighted).
func (p *Pool) Pick(convKey uint64) *Deployment {
	if len(p.deps) == 1 {
		return p.deps[0]
	}
	switch p.strategy {
	case RoundRobin:
		n := p.robin.Add(1) - 1
		return p.live[n%uint64(len(p.live))]
	case LeastConnections:
		return p.leastConnections()
	case ConversationHash:
		if convKey != 0 {
			return p.rendezvous(convKey)
		}
	}
	return p.smoothWeighted()
}

// smoothWeighted is nginx's smooth weighted round-robin: each pick adds every
// deployment's weight to its current score, takes the highest, and subtracts the
// total from the winner. It spreads picks evenly instead of in bursts.
func (p *Pool) smoothWeighted() *Deployment {
	if p.total == 0 {
		return p.deps[0]
	}
	p.mu.Lock()
	best := -1
	for i, d := range p.deps {
		p.current[i] += d.Weight
		if best < 0 || p.current[i] > p.current[best] {
			best = i
		}
	}
	p.current[best] -= p.total
	p.mu.Unlock()
	return p.deps[best]
}

func (p *Pool) leastConnections() *Deployment {
	// Start the scan at a rotating offset so ties do not all go to the first deployment.
	live := p.live
	start := int(p.robin.Add(1) % uint64(len(live)))
	best := live[start]
	for i := 1; i < len(live); i++ {
		d := live[(start+i)%len(live)]
		if d.InFlight() < best.InFlight() {
			best = d
		}
	}
	return best
}

// rendezvous picks the deployment with the highest weighted hash score for the
// key (highest random weight hashing): removing one of N deployments moves only
// the conversations that lived on it.
func (p *Pool) rendezvous(key uint64) *Deployment {
	if p.uniform {
		// Equal weights: -w/ln(u) grows with u, so the highest hash wins.
		var best *Deployment
		var bestH uint64
		for _, d := range p.live {
			if h := mix64(key ^ d.id); best == nil || h > bestH {
				best, bestH = d, h
			}
		}
		return best
	}
	var best *Deployment
	bestScore := math.Inf(-1)
	for _, d := range p.deps {
		if d.Weight == 0 {
			continue
		}
		// The hash must be the same in every worker process, so no per-process seed.
		h := mix64(key ^ d.id)
		// Map the hash to (0,1) and weight it: score = -w / ln(u).
		u := (float64(h>>11) + 0.5) / (1 << 53)
		score := -float64(d.Weight) / math.Log(u)
		if score > bestScore {
			best, bestScore = d, score
		}
	}
	if best == nil {
		return p.deps[0]
	}
	return best
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
