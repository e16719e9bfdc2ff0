package routing

import (
	"fmt"
	"math"
	"strconv"
	"sync"
	"testing"
)

// newDeps builds one deployment per weight, all serving model, each on its own
// upstream named "u<i>".
func newDeps(model string, weights ...int) []*Deployment {
	deps := make([]*Deployment, len(weights))
	for i, w := range weights {
		deps[i] = &Deployment{
			Upstream:      &Upstream{ID: int64(i + 1), Name: "u" + strconv.Itoa(i), BaseURL: "http://127.0.0.1:1"},
			PublicModel:   model,
			UpstreamModel: model + "-up",
			Weight:        w,
		}
	}
	return deps
}

func upstreamName(d *Deployment) string { return d.Upstream.Name }

func TestLookupExactBeforeWildcard(t *testing.T) {
	exact := newDeps("gpt-4o", 1)
	exact[0].Upstream.Name = "exact"
	wild := newDeps(Wildcard, 1)
	wild[0].Upstream.Name = "wild"
	other := newDeps("mini", 1)
	other[0].Upstream.Name = "mini"
	// The wildcard comes first in the input: order must not matter.
	table := NewTable(append(append(wild, exact...), other...), Weighted)

	tests := []struct {
		model string
		want  string // upstream name; "" for no pool
	}{
		{"gpt-4o", "exact"},
		{"mini", "mini"},
		{"anything-else", "wild"},
		{"", "wild"},
		{"GPT-4O", "wild"}, // names are case-sensitive
	}
	for _, tt := range tests {
		p := table.Lookup(tt.model)
		if p == nil {
			t.Errorf("Lookup(%q) = nil, want upstream %q", tt.model, tt.want)
			continue
		}
		if got := upstreamName(p.Pick(0)); got != tt.want {
			t.Errorf("Lookup(%q).Pick = %q, want %q", tt.model, got, tt.want)
		}
	}

	noWild := NewTable(newDeps("gpt-4o", 1), Weighted)
	if p := noWild.Lookup("unknown"); p != nil {
		t.Errorf("Lookup(unknown) without a wildcard = %v, want nil", p)
	}
	if got, want := fmt.Sprint(table.Models()), "[gpt-4o mini]"; got != want {
		t.Errorf("Models() = %s, want %s (sorted, no wildcard)", got, want)
	}
}

func TestWeightedShares(t *testing.T) {
	weights := []int{5, 3, 2}
	p := NewTable(newDeps("m", weights...), Weighted).Lookup("m")
	const n = 10000
	counts := map[string]int{}
	for range n {
		counts[upstreamName(p.Pick(0))]++
	}
	total := 0
	for _, w := range weights {
		total += w
	}
	for i, w := range weights {
		name := "u" + strconv.Itoa(i)
		got := float64(counts[name]) / n
		want := float64(w) / float64(total)
		if math.Abs(got-want) > 0.02 {
			t.Errorf("share of %s (weight %d) = %.4f, want %.4f ± 0.02", name, w, got, want)
		}
	}
}

func TestWeightedNginxSequence(t *testing.T) {
	// nginx's documented smooth sequence for weights {a:5, b:1, c:1}.
	deps := newDeps("m", 5, 1, 1)
	for i, name := range []string{"a", "b", "c"} {
		deps[i].Upstream.Name = name
	}
	p := NewTable(deps, Weighted).Lookup("m")
	want := "a a b a c a a a a b a c a a"
	var got string
	for i := range 14 {
		if i > 0 {
			got += " "
		}
		got += upstreamName(p.Pick(0))
	}
	if got != want {
		t.Errorf("sequence = %q, want %q", got, want)
	}
}

func TestRoundRobinRotation(t *testing.T) {
	p := NewTable(newDeps("m", 1, 5, 1), RoundRobin).Lookup("m")
	for i := range 30 {
		got := upstreamName(p.Pick(0))
		want := "u" + strconv.Itoa(i%3)
		if got != want {
			t.Fatalf("pick %d = %s, want %s (strict rotation ignores weights)", i, got, want)
		}
	}
}

func TestLeastConnections(t *testing.T) {
	deps := newDeps("m", 1, 1, 1)
	p := NewTable(deps, LeastConnections).Lookup("m")

	deps[0].Begin()
	deps[0].Begin()
	deps[1].Begin()
	for i := range 10 {
		if got := p.Pick(0); got != deps[2] {
			t.Fatalf("pick %d with in-flight {2,1,0} = %s, want u2", i, upstreamName(got))
		}
	}
	for range 3 {
		deps[2].Begin()
	}
	// In-flight {2,1,3}: u1 has the fewest.
	for i := range 10 {
		if got := p.Pick(0); got != deps[1] {
			t.Fatalf("pick %d with in-flight {2,1,3} = %s, want u1", i, upstreamName(got))
		}
	}
	deps[0].End()
	deps[0].End()
	if got := deps[0].InFlight(); got != 0 {
		t.Errorf("InFlight after two Begin/End pairs = %d, want 0", got)
	}
	if got := p.Pick(0); got != deps[0] {
		t.Errorf("pick with in-flight {0,1,3} = %s, want u0", upstreamName(got))
	}

	// Ties are spread, not all sent to the first deployment.
	tied := newDeps("t", 1, 1, 1, 1)
	tp := NewTable(tied, LeastConnections).Lookup("t")
	seen := map[string]int{}
	for range 400 {
		seen[upstreamName(tp.Pick(0))]++
	}
	for _, d := range tied {
		if c := seen[d.Upstream.Name]; c < 50 {
			t.Errorf("tied deployment %s got %d of 400 picks, want a fair share", d.Upstream.Name, c)
		}
	}
}

func TestConversationHashAffinity(t *testing.T) {
	p := NewTable(newDeps("m", 1, 1, 1, 1), ConversationHash).Lookup("m")
	home := map[uint64]*Deployment{}
	per := map[string]int{}
	for i := range 1000 {
		k := ConversationKey([]byte("conversation-" + strconv.Itoa(i)))
		d := p.Pick(k)
		home[k] = d
		per[upstreamName(d)]++
	}
	for i := range 3 {
		for k, d := range home {
			if got := p.Pick(k); got != d {
				t.Fatalf("round %d: key %x moved from %s to %s", i, k, upstreamName(d), upstreamName(got))
			}
		}
	}
	for name, c := range per {
		if c < 150 || c > 350 {
			t.Errorf("deployment %s holds %d of 1000 conversations, want about 250", name, c)
		}
	}
}

func TestConversationHashRemoval(t *testing.T) {
	p4 := NewTable(newDeps("m", 1, 1, 1, 1), ConversationHash).Lookup("m")
	// The same upstreams minus u2, built fresh as a reload would.
	three := newDeps("m", 1, 1, 1, 1)
	three = append(three[:2], three[3])
	p3 := NewTable(three, ConversationHash).Lookup("m")

	moved, wronglyMoved := 0, 0
	const n = 1000
	for i := range n {
		k := ConversationKey([]byte("user-" + strconv.Itoa(i)))
		before, after := upstreamName(p4.Pick(k)), upstreamName(p3.Pick(k))
		if before != after {
			moved++
			if before != "u2" {
				wronglyMoved++
			}
		}
	}
	if share := float64(moved) / n; share < 0.15 || share > 0.35 {
		t.Errorf("removing 1 of 4 deployments moved %.1f%% of conversations, want 15-35%%", share*100)
	}
	if wronglyMoved != 0 {
		t.Errorf("%d conversations not on the removed deployment moved, want 0", wronglyMoved)
	}
}

func TestConversationHashZeroKeyFallsBackToWeighted(t *testing.T) {
	deps := newDeps("m", 5, 1, 1)
	for i, name := range []string{"a", "b", "c"} {
		deps[i].Upstream.Name = name
	}
	p := NewTable(deps, ConversationHash).Lookup("m")
	var got string
	for range 7 {
		got += upstreamName(p.Pick(0))
	}
	if want := "aabacaa"; got != want {
		t.Errorf("picks with key 0 = %q, want the smooth weighted sequence %q", got, want)
	}
}

func TestPickSkipsZeroWeight(t *testing.T) {
	// An upstream set to weight 0 is drained (store: "0 takes no traffic"), whatever
	// the strategy.
	for _, strategy := range Strategies {
		t.Run(strategy, func(t *testing.T) {
			deps := newDeps("m", 1, 0, 1)
			p := NewTable(deps, strategy).Lookup("m")
			for i := range 300 {
				if got := p.Pick(ConversationKey([]byte(strconv.Itoa(i)))); got == deps[1] {
					t.Fatalf("pick %d chose the weight-0 deployment", i)
				}
			}
		})
	}
}

func TestSingleDeployment(t *testing.T) {
	for _, strategy := range Strategies {
		deps := newDeps("m", 3)
		p := NewTable(deps, strategy).Lookup("m")
		for k := range uint64(5) {
			if got := p.Pick(k); got != deps[0] {
				t.Errorf("%s: Pick(%d) = %v, want the only deployment", strategy, k, got)
			}
		}
	}
}

func TestPickConcurrent(t *testing.T) {
	// Run under -race: Pick is called from every request goroutine.
	for _, strategy := range Strategies {
		p := NewTable(newDeps("m", 3, 2, 1), strategy).Lookup("m")
		var wg sync.WaitGroup
		counts := make([]int, 8)
		for g := range 8 {
			wg.Go(func() {
				for i := range 600 {
					d := p.Pick(uint64(i + 1))
					d.Begin()
					d.End()
					counts[g]++
				}
			})
		}
		wg.Wait()
		for g, c := range counts {
			if c != 600 {
				t.Errorf("%s: goroutine %d made %d picks, want 600", strategy, g, c)
			}
		}
		for _, d := range p.Deployments() {
			if d.InFlight() != 0 {
				t.Errorf("%s: %s in flight = %d after balanced Begin/End, want 0", strategy, d.Upstream.Name, d.InFlight())
			}
		}
	}
}

func TestConversationKeyNeverZero(t *testing.T) {
	inputs := [][]byte{nil, {}, []byte("a"), []byte("user-1"), {0}, {0, 0, 0, 0}}
	for i := range 20000 {
		inputs = append(inputs, []byte("k"+strconv.Itoa(i)))
	}
	seen := map[uint64]bool{}
	for _, in := range inputs {
		k := ConversationKey(in)
		if k == 0 {
			t.Fatalf("ConversationKey(%q) = 0", in)
		}
		seen[k] = true
	}
	if got, want := ConversationKey([]byte("user-1")), ConversationKey([]byte("user-1")); got != want {
		t.Errorf("ConversationKey is not deterministic: %x != %x", got, want)
	}
	if len(seen) < len(inputs)-2 { // nil and {} hash alike
		t.Errorf("%d distinct keys for %d inputs", len(seen), len(inputs))
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Strategy: Weighted, HealthCheckInterval: 60, HealthCheckTimeout: 10}
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr bool
	}{
		{"defaults", func(*Config) {}, false},
		{"every strategy", func(c *Config) { c.Strategy = ConversationHash }, false},
		{"unknown strategy", func(c *Config) { c.Strategy = "fastest" }, true},
		{"zero interval", func(c *Config) { c.HealthCheckInterval = 0 }, true},
		{"zero timeout", func(c *Config) { c.HealthCheckTimeout = 0 }, true},
	}
	for _, tt := range tests {
		c := ok
		tt.mutate(&c)
		if err := c.Validate(); (err != nil) != tt.wantErr {
			t.Errorf("%s: Validate() = %v, wantErr %v", tt.name, err, tt.wantErr)
		}
	}
}

func BenchmarkPick(b *testing.B) {
	weights := make([]int, 16)
	for i := range weights {
		weights[i] = i%4 + 1
	}
	equal := make([]int, 16)
	for i := range equal {
		equal[i] = 1
	}
	cases := []struct {
		name, strategy string
		weights        []int
	}{
		{RoundRobin, RoundRobin, weights},
		{Weighted, Weighted, weights},
		{LeastConnections, LeastConnections, weights},
		{ConversationHash, ConversationHash, weights},
		{ConversationHash + "_equal_weights", ConversationHash, equal},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			p := NewTable(newDeps("m", c.weights...), c.strategy).Lookup("m")
			key := ConversationKey([]byte("conversation-42"))
			b.ReportAllocs()
			for b.Loop() {
				if p.Pick(key) == nil {
					b.Fatal("nil pick")
				}
			}
		})
	}
}

// BenchmarkNext is the selection the request path runs: availability (health,
// circuit, cool-down, concurrency cap) filtered, tiered, then the strategy.
func BenchmarkNext(b *testing.B) {
	weights := make([]int, 16)
	for i := range weights {
		weights[i] = i%4 + 1
	}
	for _, s := range []string{RoundRobin, Weighted, LeastConnections, ConversationHash} {
		b.Run(s, func(b *testing.B) {
			book := NewBook(nil)
			p := NewTable(newDeps("m", weights...), s, WithBook(book)).Lookup("m")
			key := ConversationKey([]byte("conversation-42"))
			now := book.Now()
			b.ReportAllocs()
			for b.Loop() {
				if p.Next(key, now, 0) == nil {
					b.Fatal("nil pick")
				}
			}
		})
	}
}
