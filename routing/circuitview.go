package routing

import (
	"sort"
	"time"
)

// Circuit states as DeploymentCircuit reports them.
const (
	CircuitClosed   = "closed"
	CircuitOpen     = "open"
	CircuitHalfOpen = "half-open" // the cool-down passed: the next request probes the deployment
)

// DeploymentCircuit is one deployment's passive state as one worker sees it: circuits
// and 429 cool-downs live in each worker's memory, so another worker may see another
// state for the same deployment.
type DeploymentCircuit struct {
	PublicModel   string
	UpstreamID    int64
	Upstream      string
	UpstreamModel string
	State         string        // CircuitClosed, CircuitOpen or CircuitHalfOpen
	RetryIn       time.Duration // open: until a probe request is let through; else 0
	CoolingFor    time.Duration // left of a 429 Retry-After cool-down; 0 when none
	InFlight      int64
}

// Circuits reports every deployment of the table at now (the book's clock, Book.Now),
// ordered by upstream, then public model. It reads atomics only: it takes no probe
// slot and changes no state.
func (t *Table) Circuits(now int64) []DeploymentCircuit {
	var out []DeploymentCircuit
	add := func(p *Pool) {
		if p == nil {
			return
		}
		for _, d := range p.deps {
			s := d.state
			c := DeploymentCircuit{PublicModel: d.PublicModel, UpstreamID: d.Upstream.ID, Upstream: d.Upstream.Name,
				UpstreamModel: d.UpstreamModel, State: CircuitClosed, InFlight: s.inflight.Load()}
			if until := s.openUntil.Load(); until != 0 {
				if now < until {
					c.State, c.RetryIn = CircuitOpen, time.Duration(until-now)
				} else {
					c.State = CircuitHalfOpen
				}
			}
			if cool := s.coolUntil.Load(); now < cool {
				c.CoolingFor = time.Duration(cool - now)
			}
			out = append(out, c)
		}
	}
	for _, m := range t.models {
		add(t.pools[m])
	}
	add(t.wildcard)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].UpstreamID != out[j].UpstreamID {
			return out[i].UpstreamID < out[j].UpstreamID
		}
		return out[i].PublicModel < out[j].PublicModel
	})
	return out
}
