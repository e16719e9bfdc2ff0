package routing

import (
	"context"
	"math"
	"testing"

	"github.com/llm-proxy/llm-proxy/routing/embed"
)

func unit(xs ...float32) []float32 {
	v := append([]float32(nil), xs...)
	embed.Normalize(v)
	return v
}

func TestTopKMean(t *testing.T) {
	q := []float32{1, 0}
	vecs := [][]float32{{0.9, 0}, {0.1, 0}, {0.5, 0}, {0.7, 0}, {0.3, 0}}
	tests := []struct {
		name string
		vecs [][]float32
		k    int
		want float32
	}{
		{"k=1 is the nearest", vecs, 1, 0.9},
		{"k=3 averages the three nearest", vecs, 3, (0.9 + 0.7 + 0.5) / 3},
		{"k past the count averages all", vecs, 10, (0.9 + 0.1 + 0.5 + 0.7 + 0.3) / 5},
		{"empty is zero", nil, 3, 0},
		{"k=0 is zero", vecs, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := TopKMean(q, tt.vecs, tt.k); math.Abs(float64(got-tt.want)) > 1e-6 {
				t.Fatalf("TopKMean = %v, want %v", got, tt.want)
			}
		})
	}
}

// table is an embedder that maps known texts to fixed vectors.
type table map[string][]float32

func (table) ID() string { return "table" }
func (table) Dim() int   { return 2 }
func (tb table) Embed(_ context.Context, text string, _ []float32) ([]float32, error) {
	return tb[text], nil
}

func TestSemanticRouterDecide(t *testing.T) {
	emb := table{
		"code1": unit(1, 0), "code2": unit(0.95, 0.05), "code3": unit(0.9, 0.1),
		"chat1": unit(0, 1), "chat2": unit(0.05, 0.95),
	}
	r, err := NewSemanticRouter(context.Background(), SemanticRoute{
		Model: "auto", Default: "small",
		Targets: []SemanticTarget{
			{Name: "code", Model: "big", Threshold: 0.8, Utterances: []string{"code1", "code2", "code3"}},
			{Name: "chat", Model: "mid", Threshold: 0.95, Utterances: []string{"chat1", "chat2"}},
		},
	}, emb)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		q          []float32
		wantTarget string
		wantModel  string
	}{
		{"close to code", unit(1, 0.02), "code", "big"},
		{"close to chat", unit(0.02, 1), "chat", "mid"},
		{"between: chat below its higher threshold, code below its own", unit(1, 1), "", "small"},
		{"far from both", unit(-1, -1), "", "small"},
		// Near chat but not near enough for 0.95; code's score is low too: default.
		{"per-target threshold", unit(0.45, 1), "", "small"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := r.Decide(tt.q)
			if d.Target != tt.wantTarget || d.Model != tt.wantModel {
				t.Fatalf("Decide = %+v, want target %q model %q", d, tt.wantTarget, tt.wantModel)
			}
			scores := r.Scores(tt.q, nil)
			best := max(scores[0], scores[1])
			if d.Score != best {
				t.Fatalf("score %v, want the best target score %v", d.Score, best)
			}
		})
	}
}

func TestDecisionString(t *testing.T) {
	tests := []struct {
		d    Decision
		want string
	}{
		{Decision{Target: "code", Model: "gpt-4o", Score: 0.8712}, "semantic:target=code model=gpt-4o score=0.871"},
		{Decision{Model: "gpt-4o-mini", Score: 0.2}, "semantic:target=default model=gpt-4o-mini score=0.200"},
	}
	for _, tt := range tests {
		if got := tt.d.String(); got != tt.want {
			t.Errorf("String = %q, want %q", got, tt.want)
		}
	}
}

func TestSemanticRouterLexical(t *testing.T) {
	r, err := NewSemanticRouter(context.Background(), SemanticRoute{
		Model: "auto", Default: "cheap",
		Targets: []SemanticTarget{
			{Name: "code", Model: "coder", Threshold: 0.2, Utterances: []string{
				"write a python function that sorts a list",
				"fix this bug in my go code",
				"how do I reverse a string in javascript",
				"explain this stack trace from my java program",
			}},
			{Name: "billing", Model: "support", Threshold: 0.2, Utterances: []string{
				"I was charged twice on my credit card",
				"how do I get a refund for my subscription",
				"update the billing address on my invoice",
			}},
		},
	}, embed.Lexical{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ q, want string }{
		{"write a python function that reverses a list", "coder"},
		{"I want a refund, I was charged twice for my subscription", "support"},
		{"what is the capital of France", "cheap"},
	}
	for _, tt := range tests {
		v, _ := embed.Lexical{}.Embed(context.Background(), tt.q, nil)
		if d := r.Decide(v); d.Model != tt.want {
			t.Errorf("Decide(%q) = %+v, want model %q", tt.q, d, tt.want)
		}
	}
}

func TestFitThresholds(t *testing.T) {
	// Two targets. Examples of target 0 score 0.6-0.7 on it; examples that belong to the
	// default score up to 0.5 on target 0; target 1's positives score 0.9, its negatives 0.85.
	ex := []Labelled{
		{Scores: []float32{0.70, 0.1}, Want: 0},
		{Scores: []float32{0.60, 0.2}, Want: 0},
		{Scores: []float32{0.65, 0.1}, Want: 0},
		{Scores: []float32{0.50, 0.1}, Want: -1},
		{Scores: []float32{0.40, 0.2}, Want: -1},
		{Scores: []float32{0.20, 0.90}, Want: 1},
		{Scores: []float32{0.10, 0.92}, Want: 1},
		{Scores: []float32{0.10, 0.85}, Want: -1},
	}
	start := []float32{0.8, 0.8}
	before := Accuracy(ex, start)
	th, after := FitThresholds(ex, start)
	// At 0.8 target 0 never wins (its three are wrong) and target 1 takes its two
	// positives and one default example (wrong): 4 of 8.
	if before != 0.5 {
		t.Fatalf("accuracy before = %v, want 0.5", before)
	}
	if after != 1 {
		t.Fatalf("accuracy after = %v (thresholds %v), want 1", after, th)
	}
	if th[0] <= 0.5 || th[0] > 0.6 || th[1] <= 0.85 || th[1] > 0.9 {
		t.Fatalf("thresholds %v, want target 0 in (0.5, 0.6] and target 1 in (0.85, 0.9]", th)
	}
	if Accuracy(ex, th) != after {
		t.Fatalf("reported accuracy %v differs from Accuracy %v", after, Accuracy(ex, th))
	}
}

func TestFitThresholdsNeverWorse(t *testing.T) {
	// Contradictory labels: nothing separates them; fitting must not lose accuracy.
	ex := []Labelled{
		{Scores: []float32{0.7}, Want: 0},
		{Scores: []float32{0.7}, Want: -1},
		{Scores: []float32{0.9}, Want: 0},
	}
	start := []float32{0.8}
	before := Accuracy(ex, start)
	_, after := FitThresholds(ex, start)
	if after < before {
		t.Fatalf("accuracy fell from %v to %v", before, after)
	}
	if after != 2.0/3 {
		t.Fatalf("accuracy after = %v, want 2/3", after)
	}
}

func BenchmarkSemanticDecide(b *testing.B) {
	var targets []SemanticTarget
	for i := 0; i < 5; i++ {
		var utt []string
		for j := 0; j < 20; j++ {
			utt = append(utt, "example utterance number "+string(rune('a'+i))+" about topic "+string(rune('a'+j)))
		}
		targets = append(targets, SemanticTarget{Name: string(rune('a' + i)), Model: "m", Threshold: 0.5, Utterances: utt})
	}
	r, err := NewSemanticRouter(context.Background(), SemanticRoute{Model: "auto", Default: "d", Targets: targets}, embed.Lexical{})
	if err != nil {
		b.Fatal(err)
	}
	v, _ := embed.Lexical{}.Embed(context.Background(), "an example utterance about topic c", nil)
	b.ReportAllocs()
	for b.Loop() {
		r.Decide(v)
	}
}
