package cache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/llm-proxy/llm-proxy/routing/embed"
)

func TestGuardAgrees(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"What is the capital of France?", "what's the capital city of France", true},
		{"What is the capital of France?", "What is the capital of Spain?", false},
		{"What is the capital?", "What is the capital of France?", false},
		{"How do I reverse a list in Python?", "How can I reverse a Python list?", true},
		{"How do I reverse a list in Python?", "How do I reverse a list in Java?", false},
		{"How do I reverse a list in Go?", "How do I reverse a list in Rust?", false},
		{"What is 12 times 7?", "What is 12 times 8?", false},
		{"What is 12 times 7?", "what's 12 times 7", true},
		{"Which foods are high in protein?", "Which foods are not high in protein?", false},
		{"Why doesn't my code compile?", "Why does my code not compile?", true},
		{"Cook rice with a rice cooker", "Cook rice without a rice cooker", false},
		{"Convert 10 miles to kilometers", "Convert 10 kilometers to miles", false},
		{"Convert 10 miles to kilometers", "How many kilometers are 10 miles?", true},
		{"Translate this from English to French", "Translate this from French to English", false},
		{"Translate 'hello' into French", "Translate 'hello' into German", false},
		{"What is the largest planet?", "What is the biggest planet?", true},
		{"What is the largest planet?", "What is the smallest planet?", false},
		{"How many grams in a pound?", "How many ounces in a pound?", false},
		{"Is C++ faster than C#?", "Is C# faster than C++?", true},
		{"Explain Python 3.12 changes", "Explain Python 3.11 changes", false},
		{"Diffusers is a library for PyTorch.", "PyTorch has diffusers.", true},
		{"What happened in July 1969?", "What happened in June 1969?", false},
	}
	for _, tt := range tests {
		ga, gb := NewGuard(tt.a), NewGuard(tt.b)
		if got := ga.Agrees(gb); got != tt.want {
			t.Errorf("Agrees(%q %v, %q %v) = %v, want %v", tt.a, ga.Tokens(), tt.b, gb.Tokens(), got, tt.want)
		}
		if ga.Agrees(gb) != gb.Agrees(ga) {
			t.Errorf("Agrees is not symmetric for %q, %q", tt.a, tt.b)
		}
	}
}

func TestPrepareSemantic(t *testing.T) {
	const sys = `{"role":"system","content":"Be brief."}`
	eligible := []struct {
		body, text string
	}{
		{`{"model":"m","messages":[{"role":"user","content":"What is Go?"}]}`, "What is Go?"},
		{`{"model":"m","messages":[` + sys + `,{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}`, "a\nb"},
		{`{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},{"role":"user","content":"What is Go?"}]}`, "What is Go?"},
	}
	for _, tt := range eligible {
		r, ok := PrepareSemantic("ns", "m", []byte(tt.body), 0)
		if !ok || r.Text != tt.text {
			t.Errorf("PrepareSemantic(%s) = %q, %v; want %q, true", tt.body, r.Text, ok, tt.text)
		}
	}
	ineligible := []string{
		`{"messages":[]}`,
		`not json`,
		`{"messages":[` + sys + `,{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"}]}`,
		`{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}`,
		`{"messages":[{"role":"user","content":"weather?"}],"tools":[{"type":"function","function":{"name":"w"}}]}`,
		`{"messages":[{"role":"user","content":"a"}],"functions":[{"name":"f"}]}`,
		`{"messages":[{"role":"assistant","tool_calls":[{"id":"1"}]},{"role":"tool","tool_call_id":"1","content":"x"},{"role":"user","content":"a"}]}`,
		`{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`,
		`{"messages":[{"role":"user","content":"   "}]}`,
	}
	for _, body := range ineligible {
		if _, ok := PrepareSemantic("ns", "m", []byte(body), 3); ok {
			t.Errorf("PrepareSemantic(%s) eligible", body)
		}
	}
	if _, ok := PrepareSemantic("ns", "m", []byte(`{"messages":[`+sys+`,{"role":"user","content":"a"}]}`), 1); ok {
		t.Error("maxMessages 1 let two messages through")
	}

	// Scope: the same for another user message, different for anything else.
	scope := func(ns, model, body string) Scope {
		r, ok := PrepareSemantic(ns, model, []byte(body), 3)
		if !ok {
			t.Fatalf("ineligible: %s", body)
		}
		return r.Scope
	}
	base := scope("ns", "m", `{"messages":[`+sys+`,{"role":"user","content":"q1"}],"temperature":0}`)
	if got := scope("ns", "m", `{"stream":true,"temperature":0,"messages":[`+sys+`,{"role":"user","content":"another question"}]}`); got != base {
		t.Error("scope depends on the last user message or on stream")
	}
	for _, other := range []Scope{
		scope("ns2", "m", `{"messages":[`+sys+`,{"role":"user","content":"q1"}],"temperature":0}`),
		scope("ns", "m2", `{"messages":[`+sys+`,{"role":"user","content":"q1"}],"temperature":0}`),
		scope("ns", "m", `{"messages":[{"role":"system","content":"Be verbose."},{"role":"user","content":"q1"}],"temperature":0}`),
		scope("ns", "m", `{"messages":[`+sys+`,{"role":"user","content":"q1"}],"temperature":1}`),
		scope("ns", "m", `{"messages":[{"role":"user","content":"q1"}],"temperature":0}`),
	} {
		if other == base {
			t.Error("scope ignores namespace, model, system prompt or parameters")
		}
	}
}

func vecOf(t testing.TB, text string) []float32 {
	v, err := embed.Lexical{}.Embed(context.Background(), text, nil)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestIndexSearch(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	ix := NewIndex(embed.LexicalDim, 100)
	var s1, s2 Scope
	s2[0] = 1
	add := func(sc Scope, i int, text string, exp time.Duration) {
		ix.Add(sc, keyOf(i), vecOf(t, text), text, now.Add(exp))
	}
	add(s1, 1, "What is the capital of Spain?", time.Hour)
	add(s1, 2, "What is the capital of France?", time.Hour)
	add(s1, 3, "How do I bake sourdough bread?", time.Hour)
	add(s2, 4, "What is the capital of Italy?", time.Hour)
	add(s1, 5, "What is the capital of Italy?", -time.Second) // expired

	search := func(sc Scope, q string) (int, bool) {
		m, ok := ix.Search(sc, vecOf(t, q), NewGuard(q), 0.8, now)
		return int(m.Key[2]), ok
	}
	tests := []struct {
		scope Scope
		q     string
		want  int
		ok    bool
	}{
		{s1, "What's the capital of France?", 2, true}, // Spain is as close by vector; the guard picks France
		{s1, "what is the capital of spain", 1, true},
		{s1, "What is the capital of Italy?", 0, false}, // only expired or in another scope
		{s2, "What is the capital of Italy?", 4, true},
		{s1, "How do I bake sourdough bread at home in winter with rye?", 0, false}, // below threshold
		{Scope{9}, "What is the capital of France?", 0, false},
	}
	for _, tt := range tests {
		got, ok := search(tt.scope, tt.q)
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("Search(%q) = %d, %v; want %d, %v", tt.q, got, ok, tt.want, tt.ok)
		}
	}
	if ix.Len() != 5 {
		t.Errorf("Len = %d", ix.Len())
	}
	if n := ix.Prune(now); n != 1 || ix.Len() != 4 {
		t.Errorf("Prune = %d, Len %d", n, ix.Len())
	}
	ix.Remove(s1, keyOf(2))
	if _, ok := search(s1, "What is the capital of France?"); ok {
		t.Error("removed entry still found")
	}
	add(s1, 1, "What is the capital of Spain today?", time.Hour) // replaces key 1
	if ix.Len() != 3 {
		t.Errorf("Len after replace = %d, want 3", ix.Len())
	}
	ix.Clear()
	if _, ok := search(s2, "What is the capital of Italy?"); ok || ix.Len() != 0 {
		t.Error("Clear left entries")
	}
	// Wrong dimensions are ignored, not panics.
	ix.Add(s1, keyOf(1), []float32{1}, "x", now.Add(time.Hour))
	if _, ok := ix.Search(s1, []float32{1}, Guard{}, 0, now); ok || ix.Len() != 0 {
		t.Error("a vector of the wrong dimension was used")
	}
}

func TestIndexCapacityAndDense(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	ix := NewIndex(4, 3)
	var a, b Scope
	b[0] = 1
	vecs := [][]float32{{1, 0, 0, 0}, {0, 1, 0, 0}, {0.6, 0.8, 0, 0}, {0.5, 0.5, 0.5, 0.5}}
	ix.Add(a, keyOf(0), vecs[0], "", now.Add(time.Hour))
	ix.Add(b, keyOf(1), vecs[1], "", now.Add(time.Hour))
	ix.Add(a, keyOf(2), vecs[2], "", now.Add(time.Hour))
	ix.Add(b, keyOf(3), vecs[3], "", now.Add(time.Hour)) // evicts key 0, the oldest
	if ix.Len() != 3 {
		t.Fatalf("Len = %d, want 3", ix.Len())
	}
	if _, ok := ix.Search(a, vecs[0], Guard{}, 0.99, now); ok {
		t.Error("the oldest entry survived the capacity bound")
	}
	m, ok := ix.Search(b, vecs[3], Guard{}, 0.99, now)
	if !ok || m.Key != keyOf(3) || m.Score < 0.999 {
		t.Errorf("dense search = %+v, %v", m, ok)
	}
	m, ok = ix.Search(a, []float32{0.6, 0.8, 0, 0}, Guard{}, 0.5, now)
	if !ok || m.Key != keyOf(2) {
		t.Errorf("search = %+v, %v", m, ok)
	}
	// Churn far past the capacity keeps the bound and the FIFO short.
	for i := range 5000 {
		ix.Add(a, keyOf(10+i), vecs[i%4], "", now.Add(time.Hour))
	}
	if ix.Len() != 3 || len(ix.fifo)-ix.head > 3+1024 {
		t.Errorf("after churn: Len %d, fifo %d", ix.Len(), len(ix.fifo)-ix.head)
	}
}

func TestDotKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 3, 4, 7, 1024} {
		a, b := make([]float32, n), make([]float32, n)
		var idx []uint16
		var val []float32
		var want float64
		for i := range a {
			a[i], b[i] = r.Float32()-0.5, r.Float32()-0.5
			want += float64(a[i]) * float64(b[i])
			idx, val = append(idx, uint16(i)), append(val, b[i])
		}
		if got := dot(a, b); abs(float64(got)-want) > 1e-4 {
			t.Errorf("dot n=%d: %v, want %v", n, got, want)
		}
		if got := sparseDot(a, idx, val); abs(float64(got)-want) > 1e-4 {
			t.Errorf("sparseDot n=%d: %v, want %v", n, got, want)
		}
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// BenchmarkSemanticSearch10k searches one scope of 10,000 lexical vectors of realistic
// prompts (the bar: under 2 ms).
func BenchmarkSemanticSearch10k(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	words := []string{"how", "do", "I", "configure", "deploy", "a", "service", "with", "retries", "timeouts",
		"database", "index", "query", "slow", "fast", "memory", "leak", "goroutine", "channel", "buffer", "stream",
		"JSON", "parse", "encode", "cache", "eviction", "policy", "token", "budget", "model", "prompt", "latency",
		"throughput", "kubernetes", "docker", "image", "build", "test", "flaky", "error", "handling", "panic",
		"recover", "context", "cancel", "deadline", "http", "client", "server", "proxy", "load", "balancer"}
	now := time.Now()
	ix := NewIndex(embed.LexicalDim, 20000)
	var sc Scope
	var e embed.Lexical
	var buf []float32
	for i := range 10000 {
		n := 8 + r.IntN(25)
		q := ""
		for range n {
			q += words[r.IntN(len(words))] + " "
		}
		q += fmt.Sprint(i)
		buf, _ = e.Embed(context.Background(), q, buf)
		ix.Add(sc, keyOf(i), buf, q, now.Add(time.Hour))
	}
	q := "How do I configure retries and timeouts for a proxy service with a load balancer in kubernetes?"
	qv := vecOf(b, q)
	g := NewGuard(q)
	b.ReportAllocs()
	for b.Loop() {
		ix.Search(sc, qv, g, 0.8, now)
	}
}

func TestSlicesHelper(t *testing.T) {
	// Guard.Tokens is sorted and stable.
	g := NewGuard("Convert 10 miles to kilometers in Python, not Java")
	if !slices.IsSorted(g.Tokens()) || len(g.Tokens()) == 0 {
		t.Errorf("Tokens = %v", g.Tokens())
	}
}
