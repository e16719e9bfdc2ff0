package routing

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"

	"github.com/llm-proxy/llm-proxy/routing/embed"
)

// SemanticTarget is one destination of a semantic route: requests that resemble its
// example utterances go to Model.
type SemanticTarget struct {
	Name  string
	Model string
	// Threshold is the least top-k mean similarity for the target to win.
	Threshold  float32
	Utterances []string
}

// SemanticRoute sends a request to the target whose utterances it resembles most, among
// those whose threshold it reaches; otherwise to Default.
type SemanticRoute struct {
	Model   string
	Default string
	// TopK is how many of a target's closest utterances are averaged (<= 0: 3). Averaging
	// a few rather than taking the single closest keeps one odd example from capturing
	// requests that only share a word or two with it.
	TopK    int
	Targets []SemanticTarget
}

// DefaultTopK is the TopK of a route that sets none.
const DefaultTopK = 3

// SemanticRouter is a SemanticRoute with its utterances embedded, built once per table
// snapshot. Immutable and safe for concurrent use.
type SemanticRouter struct {
	route SemanticRoute
	embID string
	// vecs[i] are the utterance vectors of Targets[i]; th[i] its threshold.
	vecs [][][]float32
	th   []float32
}

// NewSemanticRouter embeds every utterance of r with emb.
func NewSemanticRouter(ctx context.Context, r SemanticRoute, emb embed.Embedder) (*SemanticRouter, error) {
	if emb == nil {
		return nil, errors.New("routing: semantic route needs an embedder")
	}
	if r.TopK <= 0 {
		r.TopK = DefaultTopK
	}
	s := &SemanticRouter{route: r, embID: emb.ID(), vecs: make([][][]float32, len(r.Targets))}
	for i, t := range r.Targets {
		s.th = append(s.th, t.Threshold)
		for _, u := range t.Utterances {
			v, err := emb.Embed(ctx, u, nil)
			if err != nil {
				return nil, fmt.Errorf("routing: semantic route %q: embed utterance of %q: %w", r.Model, t.Name, err)
			}
			s.vecs[i] = append(s.vecs[i], v)
		}
	}
	return s, nil
}

// Route returns the route the router was built from.
func (s *SemanticRouter) Route() SemanticRoute { return s.route }

// EmbedderID names the embedder of the utterance vectors; a query vector must come from it.
func (s *SemanticRouter) EmbedderID() string { return s.embID }

// Decision is the outcome of one semantic routing decision.
type Decision struct {
	// Target is the winning target's name; "" when the default won.
	Target string
	// Model is the public model the request goes to.
	Model string
	// Score is the winner's top-k mean similarity, or when the default won, the best
	// score of any target (how close the request came).
	Score float32
}

// String is the decision as recorded in the request record and the X-LLM-Proxy-Route
// header, e.g. "semantic:target=code model=gpt-4o score=0.871".
func (d Decision) String() string {
	b := make([]byte, 0, 64)
	b = append(b, "semantic:target="...)
	if d.Target == "" {
		b = append(b, "default"...)
	} else {
		b = append(b, d.Target...)
	}
	b = append(b, " model="...)
	b = append(b, d.Model...)
	b = append(b, " score="...)
	b = strconv.AppendFloat(b, float64(d.Score), 'f', 3, 32)
	return string(b)
}

// Scores writes each target's top-k mean similarity to vec into dst (reused when large
// enough) and returns it.
func (s *SemanticRouter) Scores(vec []float32, dst []float32) []float32 {
	if cap(dst) < len(s.vecs) {
		dst = make([]float32, len(s.vecs))
	}
	dst = dst[:len(s.vecs)]
	for i, uv := range s.vecs {
		dst[i] = TopKMean(vec, uv, s.route.TopK)
	}
	return dst
}

// Decide routes a request whose embedding is vec.
func (s *SemanticRouter) Decide(vec []float32) Decision {
	var buf [16]float32
	scores := s.Scores(vec, buf[:0])
	win, best := pick(scores, s.th)
	if win < 0 {
		return Decision{Model: s.route.Default, Score: best}
	}
	t := s.route.Targets[win]
	return Decision{Target: t.Name, Model: t.Model, Score: scores[win]}
}

// pick returns the index of the highest score that reaches its threshold (-1 when none
// does) and the highest score overall.
func pick(scores, thresholds []float32) (int, float32) {
	win, best := -1, float32(-2)
	for i, sc := range scores {
		if sc > best {
			best = sc
		}
		if sc >= thresholds[i] && (win < 0 || sc > scores[win]) {
			win = i
		}
	}
	return win, best
}

// TopKMean is the mean of the k highest dot products between vec and vecs (all of them
// when there are fewer than k); 0 when vecs is empty.
func TopKMean(vec []float32, vecs [][]float32, k int) float32 {
	if len(vecs) == 0 || k <= 0 {
		return 0
	}
	if k > len(vecs) {
		k = len(vecs)
	}
	// top holds the k best so far, ascending; k is small, so insertion beats a heap.
	var buf [8]float32
	top := buf[:0]
	if k > len(buf) {
		top = make([]float32, 0, k)
	}
	for _, v := range vecs {
		d := embed.Dot(vec, v)
		if len(top) < k {
			top = append(top, d)
			for j := len(top) - 1; j > 0 && top[j] < top[j-1]; j-- {
				top[j], top[j-1] = top[j-1], top[j]
			}
			continue
		}
		if d <= top[0] {
			continue
		}
		top[0] = d
		for j := 0; j+1 < len(top) && top[j] > top[j+1]; j++ {
			top[j], top[j+1] = top[j+1], top[j]
		}
	}
	var sum float32
	for _, d := range top {
		sum += d
	}
	return sum / float32(len(top))
}

// Labelled is one example for FitThresholds: a request's target scores and the index of
// the target it should go to (-1: the default).
type Labelled struct {
	Scores []float32
	Want   int
}

// Accuracy is the share of examples that thresholds route as labelled.
func Accuracy(ex []Labelled, thresholds []float32) float64 {
	if len(ex) == 0 {
		return 0
	}
	ok := 0
	for _, e := range ex {
		if got, _ := pick(e.Scores, thresholds); got == e.Want {
			ok++
		}
	}
	return float64(ok) / float64(len(ex))
}

// fitRounds bounds the coordinate-ascent passes of FitThresholds; it converges in two
// or three on real data.
const fitRounds = 8

// FitThresholds tunes per-target thresholds, starting from start, to route as many
// examples as labelled as possible. It is coordinate ascent: each target's threshold in
// turn is set to the best of the midpoints between consecutive observed scores (a
// midpoint keeps the widest margin on both sides), the others held fixed, until a pass
// changes nothing. Among equally accurate thresholds the one closest to the current value
// is kept, so a threshold moves only when that routes more examples correctly. It returns
// the thresholds and their accuracy; it never returns worse than start.
func FitThresholds(ex []Labelled, start []float32) ([]float32, float64) {
	th := append([]float32(nil), start...)
	acc := Accuracy(ex, th)
	for round := 0; round < fitRounds; round++ {
		changed := false
		for t := range th {
			cands := candidates(ex, t)
			bestT, bestAcc := th[t], acc
			orig := th[t]
			for _, c := range cands {
				th[t] = c
				a := Accuracy(ex, th)
				if a > bestAcc || (a == bestAcc && abs32(c-orig) < abs32(bestT-orig)) {
					bestT, bestAcc = c, a
				}
			}
			th[t] = bestT
			if bestT != orig {
				changed = true
			}
			acc = bestAcc
		}
		if !changed {
			break
		}
	}
	return th, acc
}

// candidates are the thresholds worth trying for target t: just below the lowest
// observed score, midpoints between consecutive distinct scores, and just above the
// highest (which disables the target).
func candidates(ex []Labelled, t int) []float32 {
	s := make([]float32, 0, len(ex))
	for _, e := range ex {
		s = append(s, e.Scores[t])
	}
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	out := make([]float32, 0, len(s)+1)
	if len(s) == 0 {
		return out
	}
	out = append(out, max(s[0]-0.01, -1))
	for i := 1; i < len(s); i++ {
		if s[i] > s[i-1] {
			out = append(out, (s[i]+s[i-1])/2)
		}
	}
	out = append(out, min(s[len(s)-1]+0.01, 1.01))
	return out
}

func abs32(x float32) float32 {
	if x < 0 {
		return -x
	}
	return x
}
