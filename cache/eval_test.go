package cache

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llm-proxy/llm-proxy/routing/embed"
)

// The evaluation of the semantic tier with the default (lexical) embedder. Run it with
//
//	go test ./cache -run Eval -v
//
// and copy the EVAL lines. It fails if the false-hit rate on the hard negatives exceeds 1%
// at the default threshold.

type paraphrasePair struct {
	Origin  string `json:"origin"`
	Similar string `json:"similar"`
}

// sharedDataDir finds shared/data next to the repository root: the repository is the
// nearest directory above the working directory that holds go.mod.
func sharedDataDir(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("evaluation: no go.mod above the working directory; cannot locate the repository root")
		}
		dir = parent
	}
	data := filepath.Join(dir, "..", "shared", "data")
	if _, err := os.Stat(data); err != nil {
		t.Fatalf("evaluation: shared data directory %s is missing (the paraphrase pairs live there, next to the repository): %v", data, err)
	}
	return data
}

func loadParaphrases(t testing.TB) []paraphrasePair {
	t.Helper()
	path := filepath.Join(sharedDataDir(t), "paraphrase-pairs.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("evaluation: read %s: %v", path, err)
	}
	var pairs []paraphrasePair
	if err := json.Unmarshal(raw, &pairs); err != nil {
		t.Fatalf("evaluation: decode %s: %v", path, err)
	}
	if len(pairs) < 900 {
		t.Fatalf("evaluation: %s has %d pairs, expected about 999", path, len(pairs))
	}
	return pairs
}

func embedAll(t testing.TB, e embed.Embedder, texts []string) [][]float32 {
	t.Helper()
	out := make([][]float32, len(texts))
	for i, s := range texts {
		v, err := e.Embed(context.Background(), s, nil)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = v
	}
	return out
}

func keyOf(i int) Key {
	var k Key
	k[0], k[1], k[2] = byte(i>>16), byte(i>>8), byte(i)
	return k
}

type evalResult struct {
	threshold              float32
	paraRecall             float64 // the right origin returned
	paraWrong              int     // another origin returned
	hardHits               int
	hardN                  int
	precision, overallRcll float64
	hardByKind             map[string]int
}

func evaluate(t testing.TB, e embed.Embedder, pairs []paraphrasePair, hard []hardNegative, threshold float32, useGuard bool) evalResult {
	t.Helper()
	now := time.Unix(1_700_000_000, 0)
	exp := now.Add(time.Hour)
	var scope Scope
	origins := make([]string, len(pairs))
	for i, p := range pairs {
		origins[i] = p.Origin
	}
	ix := NewIndex(e.Dim(), len(pairs)+1)
	for i, v := range embedAll(t, e, origins) {
		ix.Add(scope, keyOf(i), v, origins[i], exp)
	}
	res := evalResult{threshold: threshold, hardN: len(hard), hardByKind: map[string]int{}}
	correct := 0
	for i, p := range pairs {
		v, _ := e.Embed(context.Background(), p.Similar, nil)
		g := NewGuard(p.Similar)
		if !useGuard {
			g = Guard{}
			ix.mu.Lock()
			for j := range ix.scopes[scope].items {
				ix.scopes[scope].items[j].guard = Guard{}
			}
			ix.mu.Unlock()
		}
		m, ok := ix.Search(scope, v, g, threshold, now)
		switch {
		case ok && m.Key == keyOf(i):
			correct++
		case ok:
			res.paraWrong++
		}
	}
	res.paraRecall = float64(correct) / float64(len(pairs))
	for i, h := range hard {
		var sc Scope
		sc[0], sc[1] = byte(i>>8), byte(i)
		va, _ := e.Embed(context.Background(), h.A, nil)
		ix.Add(sc, keyOf(i), va, h.A, exp)
		vb, _ := e.Embed(context.Background(), h.B, nil)
		g := NewGuard(h.B)
		if !useGuard {
			g = Guard{}
			ix.mu.Lock()
			ix.scopes[sc].items[0].guard = Guard{}
			ix.mu.Unlock()
		}
		if _, ok := ix.Search(sc, vb, g, threshold, now); ok {
			res.hardHits++
			res.hardByKind[h.Kind]++
		}
	}
	fp := res.paraWrong + res.hardHits
	if correct+fp > 0 {
		res.precision = float64(correct) / float64(correct+fp)
	}
	res.overallRcll = res.paraRecall
	return res
}

// rank1 is the share of paraphrases whose most similar origin (no threshold, no guard) is
// their own.
func rank1(t testing.TB, e embed.Embedder, pairs []paraphrasePair) float64 {
	origins := make([]string, len(pairs))
	similars := make([]string, len(pairs))
	for i, p := range pairs {
		origins[i], similars[i] = p.Origin, p.Similar
	}
	ov := embedAll(t, e, origins)
	sv := embedAll(t, e, similars)
	hit := 0
	for i, q := range sv {
		best, bestScore := -1, float32(-2)
		for j, o := range ov {
			if s := embed.Dot(q, o); s > bestScore {
				best, bestScore = j, s
			}
		}
		if best == i {
			hit++
		}
	}
	return float64(hit) / float64(len(pairs))
}

func TestEvalSemantic(t *testing.T) {
	pairs := loadParaphrases(t)
	hard := loadHardNegatives(t)
	var e embed.Lexical
	def := embed.DefaultThreshold(e)

	r1 := rank1(t, e, pairs)
	t.Logf("EVAL embedder=%s dim=%d paraphrase_pairs=%d hard_negatives=%d", e.ID(), e.Dim(), len(pairs), len(hard))
	t.Logf("EVAL paraphrase rank-1 accuracy (pool of %d, no threshold, no guard): %.1f%%", len(pairs), 100*r1)
	t.Logf("EVAL threshold  guard  para_recall  para_wrong_hits  hard_false_hits  hard_false_hit_rate  precision")
	for _, th := range []float32{0.95, 0.90, 0.85, 0.80, 0.75, 0.70} {
		for _, guard := range []bool{true, false} {
			r := evaluate(t, e, pairs, hard, th, guard)
			mark := ""
			if th == def && guard {
				mark = "  <- default"
			}
			t.Logf("EVAL %.2f       %-5v  %6.1f%%      %4d             %4d             %5.1f%%               %5.1f%%%s",
				th, guard, 100*r.paraRecall, r.paraWrong, r.hardHits, 100*float64(r.hardHits)/float64(r.hardN), 100*r.precision, mark)
		}
	}

	r := evaluate(t, e, pairs, hard, def, true)
	rate := float64(r.hardHits) / float64(r.hardN)
	var kinds []string
	for k, n := range r.hardByKind {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, n))
	}
	t.Logf("EVAL default threshold %.2f: paraphrase recall %.1f%%, hard-negative false-hit rate %.2f%% (%d/%d; %s), precision %.1f%%",
		def, 100*r.paraRecall, 100*rate, r.hardHits, r.hardN, strings.Join(kinds, " "), 100*r.precision)
	if rate > 0.01 {
		t.Errorf("false-hit rate on the hard negatives at the default threshold %.2f is %.2f%%, above 1%%", def, 100*rate)
	}
	// Paraphrase queries that hit another origin are counted against precision above, but
	// they are not asserted on: the data set repeats near-identical origins ("The
	// `load_dataset` function loads a dataset from the Hub." appears twice), and such a hit
	// is the right answer. Keep them rare all the same.
	if float64(r.paraWrong) > 0.02*float64(len(pairs)) {
		t.Errorf("%d paraphrase queries hit another prompt at the default threshold, more than 2%%", r.paraWrong)
	}
	if r.paraRecall < 0.20 {
		t.Errorf("paraphrase recall at the default threshold is %.1f%%, below the 20%% this embedder reached when tuned", 100*r.paraRecall)
	}
}
