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

func keyOf(i int) Key {
	var k Key
	k[0], k[1], k[2] = byte(i>>16), byte(i>>8), byte(i)
	return k
}

// outcome is one query's best candidate, with and without the guard, searched at the
// lowest threshold of the sweep: the answer at a higher threshold t is the same candidate
// if its score reaches t, else a miss (a candidate ranked lower never passes where a
// higher one failed), so one search per query serves the whole sweep.
type outcome struct {
	want           Key // zero for hard negatives: any hit is false
	guarded, raw   Match
	okGuard, okRaw bool
	kind           string
}

const sweepFloor = 0.70

func runQueries(t testing.TB, e embed.Embedder, pairs []paraphrasePair, hard []hardNegative) (para, neg []outcome, rank1 float64) {
	t.Helper()
	now := time.Unix(1_700_000_000, 0)
	exp := now.Add(time.Hour)
	var pool Scope
	ix := NewIndex(e.Dim(), len(pairs)+len(hard)+1)
	noGuard := NewIndex(e.Dim(), len(pairs)+len(hard)+1) // same vectors, empty guards
	for i, p := range pairs {
		v, _ := e.Embed(context.Background(), p.Origin, nil)
		ix.Add(pool, keyOf(i), v, p.Origin, exp)
		noGuard.Add(pool, keyOf(i), v, "", exp)
	}
	top1 := 0
	for i, p := range pairs {
		v, _ := e.Embed(context.Background(), p.Similar, nil)
		o := outcome{want: keyOf(i)}
		o.guarded, o.okGuard = ix.Search(pool, v, NewGuard(p.Similar), sweepFloor, now)
		o.raw, o.okRaw = noGuard.Search(pool, v, Guard{}, sweepFloor, now)
		if best, ok := noGuard.Search(pool, v, Guard{}, -2, now); ok && best.Key == keyOf(i) {
			top1++
		}
		para = append(para, o)
	}
	for i, h := range hard {
		// One scope per pair: the first prompt is the only candidate, so any hit is false.
		var sc Scope
		sc[0], sc[1], sc[2] = 0xFF, byte(i>>8), byte(i)
		va, _ := e.Embed(context.Background(), h.A, nil)
		ix.Add(sc, keyOf(i), va, h.A, exp)
		noGuard.Add(sc, keyOf(i), va, "", exp)
		vb, _ := e.Embed(context.Background(), h.B, nil)
		o := outcome{kind: h.Kind}
		o.guarded, o.okGuard = ix.Search(sc, vb, NewGuard(h.B), sweepFloor, now)
		o.raw, o.okRaw = noGuard.Search(sc, vb, Guard{}, sweepFloor, now)
		neg = append(neg, o)
	}
	return para, neg, float64(top1) / float64(len(pairs))
}

type evalResult struct {
	paraRecall float64 // the right origin returned
	paraWrong  int     // another origin returned
	hardHits   int
	hardByKind map[string]int
	precision  float64
}

func score(para, neg []outcome, threshold float32, guard bool) evalResult {
	r := evalResult{hardByKind: map[string]int{}}
	pick := func(o outcome) (Match, bool) {
		if guard {
			return o.guarded, o.okGuard && o.guarded.Score >= threshold
		}
		return o.raw, o.okRaw && o.raw.Score >= threshold
	}
	correct := 0
	for _, o := range para {
		if m, ok := pick(o); ok {
			if m.Key == o.want {
				correct++
			} else {
				r.paraWrong++
			}
		}
	}
	for _, o := range neg {
		if _, ok := pick(o); ok {
			r.hardHits++
			r.hardByKind[o.kind]++
		}
	}
	r.paraRecall = float64(correct) / float64(len(para))
	if fp := r.paraWrong + r.hardHits; correct+fp > 0 {
		r.precision = float64(correct) / float64(correct+fp)
	}
	return r
}

func TestEvalSemantic(t *testing.T) {
	pairs := loadParaphrases(t)
	hard := loadHardNegatives(t)
	var e embed.Lexical
	def := embed.DefaultThreshold(e)
	para, neg, r1 := runQueries(t, e, pairs, hard)

	t.Logf("EVAL embedder=%s dim=%d paraphrase_pairs=%d hard_negatives=%d", e.ID(), e.Dim(), len(pairs), len(hard))
	t.Logf("EVAL paraphrase rank-1 accuracy (pool of %d, no threshold, no guard): %.1f%%", len(pairs), 100*r1)
	t.Logf("EVAL threshold  guard  para_recall  para_other_hits  hard_false_hits  hard_false_hit_rate  precision")
	for _, th := range []float32{0.95, 0.90, 0.85, 0.80, 0.75, 0.70} {
		for _, guard := range []bool{true, false} {
			r := score(para, neg, th, guard)
			mark := ""
			if th == def && guard {
				mark = "  <- default"
			}
			t.Logf("EVAL %.2f       %-5v  %6.1f%%      %4d             %4d             %5.1f%%               %5.1f%%%s",
				th, guard, 100*r.paraRecall, r.paraWrong, r.hardHits, 100*float64(r.hardHits)/float64(len(neg)), 100*r.precision, mark)
		}
	}

	r := score(para, neg, def, true)
	rate := float64(r.hardHits) / float64(len(neg))
	var kinds []string
	for k, n := range r.hardByKind {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, n))
	}
	t.Logf("EVAL default threshold %.2f: paraphrase recall %.1f%%, hard-negative false-hit rate %.2f%% (%d/%d %s), precision %.1f%%",
		def, 100*r.paraRecall, 100*rate, r.hardHits, len(neg), strings.Join(kinds, " "), 100*r.precision)
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
