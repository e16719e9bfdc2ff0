package cache

import (
	"sync"
	"time"
)

// Index is the in-memory semantic tier of one worker: per scope, the normalised vectors of
// cached prompts, searched by brute-force cosine. Brute force is exact and, with the
// lexical embedder's sparse vectors, scans 10,000 entries in well under 2 ms; past ~20k
// entries per scope an approximate index (HNSW) would pay off.
//
// Vectors with at most a third of their dimensions non-zero (the lexical embedder's, for
// prompts of up to a few dozen words) are kept sparse: indices and values. Dense vectors
// (neural embedders) are kept as they are. The total number of entries is bounded; when
// full, the oldest entry goes.
type Index struct {
	dim      int
	capacity int

	mu     sync.RWMutex
	scopes map[Scope]*scopeSet
	n      int
	seq    uint64
	fifo   []fifoItem // insertion order, for the capacity bound; stale items are skipped
	head   int
}

type fifoItem struct {
	scope Scope
	id    uint64
}

type scopeSet struct {
	items []item
}

type item struct {
	id      uint64
	key     Key
	guard   Guard
	expires int64 // unix seconds
	idx     []uint16
	val     []float32
	dense   []float32 // nil when sparse
}

// Match is a semantic hit candidate: the exact entry's key and the similarity.
type Match struct {
	Key   Key
	Score float32
}

// NewIndex returns an index of dim-dimensional vectors holding at most capacity entries.
func NewIndex(dim, capacity int) *Index {
	return &Index{dim: dim, capacity: max(capacity, 1), scopes: make(map[Scope]*scopeSet)}
}

// Len returns the number of entries.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.n
}

// Dim returns the vector dimension.
func (ix *Index) Dim() int { return ix.dim }

// Add stores vec (normalised, len Dim) for key in scope with text's guard, replacing an
// earlier vector of the same key. vec is copied.
func (ix *Index) Add(scope Scope, key Key, vec []float32, text string, expires time.Time) {
	if len(vec) != ix.dim {
		return
	}
	it := item{key: key, guard: NewGuard(text), expires: expires.Unix()}
	nnz := 0
	for _, x := range vec {
		if x != 0 {
			nnz++
		}
	}
	if ix.dim <= 1<<16 && nnz*3 <= ix.dim {
		it.idx = make([]uint16, 0, nnz)
		it.val = make([]float32, 0, nnz)
		for i, x := range vec {
			if x != 0 {
				it.idx = append(it.idx, uint16(i))
				it.val = append(it.val, x)
			}
		}
	} else {
		it.dense = append([]float32(nil), vec...)
	}

	ix.mu.Lock()
	defer ix.mu.Unlock()
	s := ix.scopes[scope]
	if s == nil {
		s = &scopeSet{}
		ix.scopes[scope] = s
	}
	for i := range s.items {
		if s.items[i].key == key {
			it.id = s.items[i].id
			s.items[i] = it
			return
		}
	}
	for ix.n >= ix.capacity && ix.evictOldestLocked() {
	}
	ix.seq++
	it.id = ix.seq
	s.items = append(s.items, it)
	ix.n++
	ix.fifo = append(ix.fifo, fifoItem{scope, it.id})
}

// evictOldestLocked removes the oldest live entry; false if there is none.
func (ix *Index) evictOldestLocked() bool {
	for ix.head < len(ix.fifo) {
		f := ix.fifo[ix.head]
		ix.fifo[ix.head] = fifoItem{}
		ix.head++
		if ix.head > 1024 && ix.head*2 > len(ix.fifo) {
			ix.fifo = append(ix.fifo[:0], ix.fifo[ix.head:]...)
			ix.head = 0
		}
		if ix.removeLocked(f.scope, func(it *item) bool { return it.id == f.id }) > 0 {
			return true
		}
	}
	return false
}

// removeLocked deletes the items of scope matching fn and returns how many.
func (ix *Index) removeLocked(scope Scope, fn func(*item) bool) int {
	s := ix.scopes[scope]
	if s == nil {
		return 0
	}
	removed := 0
	for i := 0; i < len(s.items); {
		if fn(&s.items[i]) {
			last := len(s.items) - 1
			s.items[i] = s.items[last]
			s.items[last] = item{}
			s.items = s.items[:last]
			removed++
			continue
		}
		i++
	}
	ix.n -= removed
	if len(s.items) == 0 {
		delete(ix.scopes, scope)
	}
	return removed
}

// Remove deletes key's vector from scope (its exact entry is gone).
func (ix *Index) Remove(scope Scope, key Key) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.removeLocked(scope, func(it *item) bool { return it.key == key })
}

// Prune deletes entries expired at now and returns how many.
func (ix *Index) Prune(now time.Time) int {
	t := now.Unix()
	ix.mu.Lock()
	defer ix.mu.Unlock()
	total := 0
	for sc := range ix.scopes {
		total += ix.removeLocked(sc, func(it *item) bool { return it.expires <= t })
	}
	return total
}

// Clear drops everything (the cache generation changed).
func (ix *Index) Clear() {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.scopes = make(map[Scope]*scopeSet)
	ix.n, ix.fifo, ix.head = 0, nil, 0
}

// topK is how many candidates above the threshold Search keeps for the guard: the best
// vector may ask about another entity while the second best is the true paraphrase.
const topK = 8

// Search returns the most similar unexpired entry of scope whose similarity to vec is at
// least threshold and whose guard agrees with guard.
func (ix *Index) Search(scope Scope, vec []float32, guard Guard, threshold float32, now time.Time) (Match, bool) {
	if len(vec) != ix.dim {
		return Match{}, false
	}
	t := now.Unix()
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	s := ix.scopes[scope]
	if s == nil {
		return Match{}, false
	}
	var (
		top  [topK]int
		tops [topK]float32
		k    int
	)
	for i := range s.items {
		it := &s.items[i]
		var score float32
		if it.dense != nil {
			score = dot(vec, it.dense)
		} else {
			score = sparseDot(vec, it.idx, it.val)
		}
		if score < threshold || it.expires <= t {
			continue
		}
		// Insert into the small sorted top list.
		if k < topK {
			k++
		} else if score <= tops[k-1] {
			continue
		}
		j := k - 1
		for j > 0 && tops[j-1] < score {
			top[j], tops[j] = top[j-1], tops[j-1]
			j--
		}
		top[j], tops[j] = i, score
	}
	for j := range k {
		it := &s.items[top[j]]
		if it.guard.Agrees(guard) {
			return Match{Key: it.key, Score: tops[j]}, true
		}
	}
	return Match{}, false
}

// dot is the dense dot product with four accumulators, so the multiply-adds of
// neighbouring elements do not wait on each other.
func dot(a, b []float32) float32 {
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

// sparseDot is the dot product of dense q with the sparse vector (idx, val), 4-way
// unrolled like dot.
func sparseDot(q []float32, idx []uint16, val []float32) float32 {
	val = val[:len(idx)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(idx); i += 4 {
		s0 += q[idx[i]] * val[i]
		s1 += q[idx[i+1]] * val[i+1]
		s2 += q[idx[i+2]] * val[i+2]
		s3 += q[idx[i+3]] * val[i+3]
	}
	for ; i < len(idx); i++ {
		s0 += q[idx[i]] * val[i]
	}
	return (s0 + s1) + (s2 + s3)
}
