package embed

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func cosine(t *testing.T, e Embedder, a, b string) float32 {
	t.Helper()
	va, err := e.Embed(context.Background(), a, nil)
	if err != nil {
		t.Fatal(err)
	}
	vb, err := e.Embed(context.Background(), b, nil)
	if err != nil {
		t.Fatal(err)
	}
	return Dot(va, vb)
}

func norm(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

func TestLexicalVectors(t *testing.T) {
	var e Lexical
	for _, text := range []string{"How do I reverse a list in Python?", "x", "Ünïcödé ÄÖÜ straße",
		strings.Repeat("verylongword", 20) + " tail", "日本の首都はどこですか"} {
		v, err := e.Embed(context.Background(), text, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(v) != LexicalDim || e.Dim() != LexicalDim {
			t.Fatalf("len %d, Dim %d", len(v), e.Dim())
		}
		if n := norm(v); math.Abs(n-1) > 1e-5 {
			t.Errorf("%q: norm %v, want 1", text, n)
		}
	}
	for _, text := range []string{"", "  ?!  ...", "\n\t"} {
		v, _ := e.Embed(context.Background(), text, nil)
		if n := norm(v); n != 0 {
			t.Errorf("%q: norm %v, want 0 for a text without words", text, n)
		}
	}
}

func TestLexicalSimilarity(t *testing.T) {
	var e Lexical
	tests := []struct {
		a, b     string
		min, max float32
	}{
		{"What is the capital of France?", "What is the capital of France?", 0.9999, 1.0001},
		{"What is the capital of France?", "what is the CAPITAL of france", 0.9999, 1.0001},
		{"What is the capital of France?", "What's the capital city of France?", 0.75, 1},
		{"How do I reverse a list in Python?", "How can I reverse a Python list?", 0.6, 1},
		{"What is the capital of France?", "How do I bake sourdough bread at home?", -0.2, 0.2},
		{"Explain quantum entanglement simply", "Write a haiku about autumn leaves", -0.2, 0.2},
	}
	for _, tt := range tests {
		if got := cosine(t, e, tt.a, tt.b); got < tt.min || got > tt.max {
			t.Errorf("cos(%q, %q) = %.3f, want in [%.2f, %.2f]", tt.a, tt.b, got, tt.min, tt.max)
		}
	}
	// Word order shows through bigrams, weakly on purpose (paraphrases reorder words; the
	// cache's guard catches swapped directions): similar but not identical.
	if got := cosine(t, e, "convert python to java", "convert java to python"); got > 0.99 || got < 0.5 {
		t.Errorf("swapped order cosine = %.3f, want in [0.5, 0.99]", got)
	}
}

func TestLexicalReusesDst(t *testing.T) {
	var e Lexical
	buf := make([]float32, 0, LexicalDim)
	a, _ := e.Embed(context.Background(), "first prompt about cats", buf)
	first := append([]float32(nil), a...)
	b, _ := e.Embed(context.Background(), "second prompt about dogs", a)
	if &b[0] != &buf[:1][0] {
		t.Fatal("Embed did not reuse dst")
	}
	c, _ := e.Embed(context.Background(), "first prompt about cats", b)
	for i := range c {
		if c[i] != first[i] {
			t.Fatalf("dimension %d: %v after reuse, %v fresh (dst not cleared?)", i, c[i], first[i])
		}
	}
	allocs := testing.AllocsPerRun(100, func() {
		_, _ = e.Embed(context.Background(), "How do I reverse a list in Python without copying it?", buf)
	})
	if allocs > 1 {
		t.Errorf("Embed with a reused dst: %v allocs, want at most 1", allocs)
	}
}

func TestDotAndNormalize(t *testing.T) {
	a := []float32{1, 2, 3, 4, 5, 6, 7}
	b := []float32{7, 6, 5, 4, 3, 2, 1, 99}
	if got, want := Dot(a, b), float32(7+12+15+16+15+12+7); got != want {
		t.Errorf("Dot = %v, want %v", got, want)
	}
	v := []float32{3, 4}
	Normalize(v)
	if v[0] != 0.6 || v[1] != 0.8 {
		t.Errorf("Normalize = %v", v)
	}
	z := []float32{0, 0}
	Normalize(z)
	if z[0] != 0 || z[1] != 0 {
		t.Errorf("Normalize(zero) = %v", z)
	}
	if DefaultThreshold(Lexical{}) != (Lexical{}).DefaultThreshold() {
		t.Error("DefaultThreshold ignores the embedder's own value")
	}
}

// fakeEmbeddings serves /v1/embeddings with a vector derived from the input's length.
func fakeEmbeddings(t *testing.T, dim int, status int) (*httptest.Server, *[]map[string]any, *sync.Mutex) {
	t.Helper()
	var (
		mu   sync.Mutex
		seen []map[string]any
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/embeddings" || r.Method != http.MethodPost {
			http.NotFound(w, r)
			return
		}
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body["authorization"] = r.Header.Get("Authorization")
		mu.Lock()
		seen = append(seen, body)
		mu.Unlock()
		if status != http.StatusOK {
			w.WriteHeader(status)
			_, _ = w.Write([]byte(`{"error":{"message":"model not loaded"}}`))
			return
		}
		vec := make([]float32, dim)
		for i := range vec {
			vec[i] = float32(len(body["input"].(string)) + i)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"object": "list", "model": body["model"],
			"data": []map[string]any{{"object": "embedding", "index": 0, "embedding": vec}},
		})
	}))
	t.Cleanup(srv.Close)
	return srv, &seen, &mu
}

func TestOpenAIClient(t *testing.T) {
	srv, seen, mu := fakeEmbeddings(t, 4, http.StatusOK)
	c, err := NewOpenAIClient(OpenAIConfig{BaseURL: srv.URL + "/v1/", APIKey: "sk-test", Model: "nomic-embed-text"})
	if err != nil {
		t.Fatal(err)
	}
	if c.ID() != "openai:nomic-embed-text" || c.Dim() != 0 || c.DefaultThreshold() != 0.92 {
		t.Fatalf("ID %q Dim %d threshold %v", c.ID(), c.Dim(), c.DefaultThreshold())
	}
	v, err := c.Embed(context.Background(), "abc", make([]float32, 0, 8))
	if err != nil {
		t.Fatal(err)
	}
	if c.Dim() != 4 || len(v) != 4 || math.Abs(norm(v)-1) > 1e-6 {
		t.Fatalf("vector %v, Dim %d", v, c.Dim())
	}
	// The answer was [3 4 5 6]; normalised, the ratios remain.
	if got := v[1] / v[0]; math.Abs(float64(got)-4.0/3) > 1e-5 {
		t.Errorf("vector %v does not keep the answer's direction", v)
	}
	mu.Lock()
	got := (*seen)[0]
	mu.Unlock()
	if got["model"] != "nomic-embed-text" || got["input"] != "abc" || got["encoding_format"] != "float" ||
		got["authorization"] != "Bearer sk-test" {
		t.Errorf("request = %v", got)
	}
}

func TestOpenAIClientErrors(t *testing.T) {
	srv4, _, _ := fakeEmbeddings(t, 4, http.StatusOK)
	srv503, _, _ := fakeEmbeddings(t, 4, http.StatusServiceUnavailable)
	stop := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(stop) }) // runs first: Close waits for handlers

	tests := []struct {
		name    string
		cfg     OpenAIConfig
		wantErr string
	}{
		{"wrong dimension", OpenAIConfig{BaseURL: srv4.URL + "/v1", Model: "m", Dim: 8}, "dimension 4, want 8"},
		{"upstream error", OpenAIConfig{BaseURL: srv503.URL + "/v1", Model: "m"}, "status 503: {\"error\":{\"message\":\"model not loaded\"}}"},
		{"not found", OpenAIConfig{BaseURL: srv4.URL, Model: "m"}, "status 404"},
		{"timeout", OpenAIConfig{BaseURL: hang.URL + "/v1", Model: "m", Timeout: 50 * time.Millisecond}, "deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewOpenAIClient(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Embed(context.Background(), "hello", nil)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
	for _, cfg := range []OpenAIConfig{{BaseURL: "ftp://x", Model: "m"}, {BaseURL: "http://127.0.0.1:1"}, {BaseURL: "http://127.0.0.1:1", Model: "m", Dim: -1}} {
		if _, err := NewOpenAIClient(cfg); err == nil {
			t.Errorf("NewOpenAIClient(%+v) accepted", cfg)
		}
	}
}

const prompt50 = `I am building a small web service in Go that proxies requests to several language
model providers. How should I structure the retry logic so that a request is retried on a
different upstream when the first one times out, without sending duplicate charges to the
customer or losing the streaming response that already started?`

func BenchmarkLexicalEmbed50Words(b *testing.B) {
	if n := len(strings.Fields(prompt50)); n < 50 || n > 60 {
		b.Fatalf("prompt has %d words", n)
	}
	var e Lexical
	dst := make([]float32, 0, LexicalDim)
	b.ReportAllocs()
	for b.Loop() {
		dst, _ = e.Embed(context.Background(), prompt50, dst)
	}
}

func BenchmarkDot1024(b *testing.B) {
	var e Lexical
	x, _ := e.Embed(context.Background(), "one prompt", nil)
	y, _ := e.Embed(context.Background(), "another prompt", nil)
	b.ReportAllocs()
	var s float32
	for b.Loop() {
		s += Dot(x, y)
	}
	_ = s
}
