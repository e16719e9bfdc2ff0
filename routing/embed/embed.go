// Package embed turns text into vectors for the semantic cache and semantic routing. One
// interface covers the built-in lexical embedder (pure Go, no model file, no network) and
// remote OpenAI-compatible /v1/embeddings endpoints; every vector an embedder returns is
// L2-normalised, so cosine similarity is a plain dot product.
package embed

import (
	"context"
	"math"
)

// Embedder maps text to an L2-normalised vector of Dim() float32s.
//
// ID names the embedder and everything that changes its vectors (model, version): vectors
// with different IDs are never compared, and cached vectors record it. Embed appends into
// dst[:0] when it has the capacity, so a caller reusing dst allocates nothing; it returns
// the vector. It is safe for concurrent use.
type Embedder interface {
	ID() string
	Dim() int
	Embed(ctx context.Context, text string, dst []float32) ([]float32, error)
}

// thresholder is implemented by embedders that know a good cosine threshold for "the same
// question": similarity scales differ a lot between embedders (a lexical 0.9 is a close
// paraphrase; for many neural models 0.9 is merely "same topic").
type thresholder interface {
	DefaultThreshold() float32
}

// fallbackThreshold is used for embedders that state no default.
const fallbackThreshold = 0.95

// DefaultThreshold returns e's default similarity threshold for a semantic cache hit.
func DefaultThreshold(e Embedder) float32 {
	if t, ok := e.(thresholder); ok {
		return t.DefaultThreshold()
	}
	return fallbackThreshold
}

// Dot returns the dot product of a and b (the cosine when both are normalised). b must be
// at least as long as a. Four independent accumulators let the CPU overlap the
// multiply-adds instead of waiting on one running sum.
func Dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// Normalize scales v to unit length in place; a zero vector stays zero.
func Normalize(v []float32) {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	if s == 0 {
		return
	}
	inv := float32(1 / math.Sqrt(s))
	for i := range v {
		v[i] *= inv
	}
}
