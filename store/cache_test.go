package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

func cacheKey(i int) []byte {
	k := make([]byte, 16)
	k[0], k[1], k[15] = 0xAB, byte(i>>8), byte(i)
	return k
}

func putEntry(t *testing.T, s *Store, key []byte, ns, model string, body string, created, expires time.Time) {
	t.Helper()
	err := s.CachePut(testContext(t), CacheEntry{Key: key, Namespace: ns, Model: model, Body: []byte(body),
		PromptTokens: 11, CompletionTokens: 22, CreatedAt: created, ExpiresAt: expires})
	if err != nil {
		t.Fatal(err)
	}
}

func cacheKeys(t *testing.T, s *Store, keys [][]byte, now time.Time) []int {
	t.Helper()
	var present []int
	for i, k := range keys {
		_, ok, err := s.CacheGet(testContext(t), k, now)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			present = append(present, i)
		}
	}
	return present
}

func TestCachePutGet(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	now := time.Unix(1_700_000_000, 0)
	key := cacheKey(1)
	putEntry(t, s, key, "ns1", "gpt-4o", `{"id":"a"}`, now, now.Add(time.Hour))

	got, ok, err := s.CacheGet(ctx, key, now.Add(time.Minute))
	if err != nil || !ok {
		t.Fatalf("CacheGet = %v, %v", ok, err)
	}
	if string(got.Body) != `{"id":"a"}` || got.Model != "gpt-4o" || got.Namespace != "ns1" ||
		got.PromptTokens != 11 || got.CompletionTokens != 22 || !got.CreatedAt.Equal(now) ||
		!got.ExpiresAt.Equal(now.Add(time.Hour)) || !bytes.Equal(got.Key, key) {
		t.Fatalf("CacheGet = %+v", got)
	}
	if _, ok, _ := s.CacheGet(ctx, key, now.Add(time.Hour)); ok {
		t.Fatal("entry is served at its expiry time")
	}
	if _, ok, _ := s.CacheGet(ctx, cacheKey(2), now); ok {
		t.Fatal("unknown key hit")
	}

	// Replacing keeps one row and the new body; the totals follow.
	putEntry(t, s, key, "ns1", "gpt-4o", `{"id":"bb"}`, now, now.Add(time.Hour))
	got, _, _ = s.CacheGet(ctx, key, now)
	if string(got.Body) != `{"id":"bb"}` {
		t.Fatalf("body after replace = %s", got.Body)
	}
	st, err := s.CacheStats(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(len(`{"id":"bb"}`) + 16 + cacheRowOverhead); st.Entries != 1 || st.Bytes != want {
		t.Fatalf("stats = %+v, want 1 entry of %d bytes", st, want)
	}
	if err := s.CachePut(ctx, CacheEntry{}); err == nil {
		t.Fatal("empty key accepted")
	}
}

func TestCacheTouchAndStats(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	now := time.Unix(1_700_000_000, 0)
	putEntry(t, s, cacheKey(1), "", "m", "x", now, now.Add(time.Hour))
	putEntry(t, s, cacheKey(2), "", "m", "y", now, now.Add(time.Second))
	if err := s.CacheTouch(ctx, map[string]int64{string(cacheKey(1)): 3, string(cacheKey(9)): 1}, now.Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	got, _, _ := s.CacheGet(ctx, cacheKey(1), now)
	if got.Hits != 3 || !got.LastHitAt.Equal(now.Add(10*time.Second)) {
		t.Fatalf("after touch: hits %d last hit %v", got.Hits, got.LastHitAt)
	}
	st, err := s.CacheStats(ctx, now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if st.Entries != 2 || st.Hits != 3 || st.Expired != 1 || st.Generation != 0 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestCachePurge(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name    string
		filter  CacheFilter
		deleted int
		left    []int
	}{
		{"key prefix", CacheFilter{KeyPrefix: "ab00"}, 2, []int{2, 3}},
		{"odd lower-case prefix", CacheFilter{KeyPrefix: "ab0"}, 4, nil},
		{"model", CacheFilter{Model: "m2"}, 1, []int{0, 1, 3}},
		{"namespace and model", CacheFilter{Namespace: "a", Model: "m1"}, 2, []int{2, 3}},
		{"no match", CacheFilter{KeyPrefix: "ff"}, 0, []int{0, 1, 2, 3}},
		{"all", CacheFilter{All: true}, 4, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTestStore(t, testConfig(t), nil)
			ctx := testContext(t)
			keys := [][]byte{cacheKey(1), cacheKey(2), cacheKey(0x100), cacheKey(0x200)}
			putEntry(t, s, keys[0], "a", "m1", "x", now, now.Add(time.Hour))
			putEntry(t, s, keys[1], "a", "m1", "x", now, now.Add(time.Hour))
			putEntry(t, s, keys[2], "b", "m2", "x", now, now.Add(time.Hour))
			putEntry(t, s, keys[3], "b", "m1", "x", now, now.Add(time.Hour))
			gen0, _ := s.CacheGeneration(ctx)
			n, err := s.CachePurge(ctx, tt.filter)
			if err != nil {
				t.Fatal(err)
			}
			if n != tt.deleted {
				t.Errorf("deleted %d, want %d", n, tt.deleted)
			}
			if got := cacheKeys(t, s, keys, now); !slices.Equal(got, tt.left) {
				t.Errorf("left %v, want %v", got, tt.left)
			}
			if gen, _ := s.CacheGeneration(ctx); gen != gen0+1 {
				t.Errorf("generation %d, want %d", gen, gen0+1)
			}
		})
	}
}

func TestCachePurgeRejectsBadFilters(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	now := time.Unix(1_700_000_000, 0)
	putEntry(t, s, cacheKey(1), "", "m", "x", now, now.Add(time.Hour))
	for _, f := range []CacheFilter{{}, {KeyPrefix: "xyz"}, {KeyPrefix: "ab' OR 1=1 --"}} {
		if _, err := s.CachePurge(ctx, f); err == nil {
			t.Errorf("CachePurge(%+v) accepted", f)
		}
	}
	if got := cacheKeys(t, s, [][]byte{cacheKey(1)}, now); len(got) != 1 {
		t.Fatal("a rejected purge deleted the entry")
	}
	if gen, _ := s.CacheGeneration(ctx); gen != 0 {
		t.Fatalf("a rejected purge bumped the generation to %d", gen)
	}
}

func takeLease(t *testing.T, s *Store) int64 {
	t.Helper()
	l, won, err := s.TryAcquire(testContext(t), "w1", 1, 0, time.Now())
	if err != nil || !won {
		t.Fatalf("TryAcquire = %v, %v", won, err)
	}
	return l.Epoch
}

func TestCacheEvict(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	epoch := takeLease(t, s)
	now := time.Unix(1_700_000_000, 0)
	body := string(bytes.Repeat([]byte("b"), 1000-16-cacheRowOverhead)) // charged 1000 bytes each
	var keys [][]byte
	for i := range 10 {
		keys = append(keys, cacheKey(i))
		exp := now.Add(time.Hour)
		if i < 3 {
			exp = now.Add(-time.Second) // 0, 1, 2 expired
		}
		putEntry(t, s, keys[i], "", "m", body, now.Add(time.Duration(i)*time.Second), exp)
	}
	// Entry 3 is the oldest live one, but a recent hit makes it the warmest.
	if err := s.CacheTouch(ctx, map[string]int64{string(keys[3]): 1}, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}

	if _, err := s.CacheEvict(ctx, epoch+1, now, 0, 2); !errors.Is(err, ErrFenced) {
		t.Fatalf("evict with a stale epoch: err = %v, want ErrFenced", err)
	}
	if got := cacheKeys(t, s, keys, now.Add(-time.Hour)); len(got) != 10 {
		t.Fatalf("a fenced evict deleted rows: %v left", got)
	}

	// Budget 4500 bytes: the 3 expired go first, then the coldest 3 of the 7 live ones.
	n, err := s.CacheEvict(ctx, epoch, now, 4500, 2)
	if err != nil {
		t.Fatal(err)
	}
	if n != 6 {
		t.Errorf("evicted %d, want 6", n)
	}
	if got, want := cacheKeys(t, s, keys, now.Add(-time.Hour)), []int{3, 7, 8, 9}; !slices.Equal(got, want) {
		t.Errorf("left %v, want %v", got, want)
	}
	st, _ := s.CacheStats(ctx, now)
	if st.Bytes != 4000 || st.Entries != 4 {
		t.Errorf("stats after evict = %+v", st)
	}
	if n, err := s.CacheEvict(ctx, epoch, now, 4500, 2); err != nil || n != 0 {
		t.Errorf("second evict = %d, %v; want 0, nil", n, err)
	}
}

func vec(vals ...float32) []float32 { return vals }

func TestSemanticEntries(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	now := time.Unix(1_700_000_000, 0)
	for i := range 4 {
		putEntry(t, s, cacheKey(i), "ns", "m", "body", now, now.Add(time.Hour))
	}
	put := func(i int, emb string, v []float32, created, expires time.Time) {
		t.Helper()
		err := s.SemanticPut(ctx, SemanticEntry{Key: cacheKey(i), Namespace: "ns", Scope: []byte{1, 2},
			Model: "m", Embedder: emb, Vector: v, Text: fmt.Sprintf("q%d", i), CreatedAt: created, ExpiresAt: expires})
		if err != nil {
			t.Fatal(err)
		}
	}
	put(0, "lex", vec(1, 0, 0), now, now.Add(time.Hour))
	put(1, "lex", vec(0, 1, 0), now.Add(time.Second), now.Add(time.Hour))
	put(2, "lex", vec(0, 0, 1), now.Add(2*time.Second), now.Add(time.Second)) // expires soon
	put(3, "other", vec(1, 1, 1), now, now.Add(time.Hour))
	put(1, "lex", vec(0, -1, 0), now.Add(3*time.Second), now.Add(time.Hour)) // replaces
	put(0, "lex2d", vec(1, 0), now, now.Add(time.Hour))

	if err := s.SemanticPut(ctx, SemanticEntry{Key: cacheKey(99), Embedder: "lex", Vector: vec(1, 0, 0),
		CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err == nil {
		t.Error("a vector without its exact entry was stored")
	}

	load := func(limit int, at time.Time) []string {
		t.Helper()
		var got []string
		err := s.SemanticLoad(ctx, "lex", 3, at, limit, func(e SemanticEntry) error {
			got = append(got, fmt.Sprintf("%s:%v", e.Text, e.Vector))
			if !bytes.Equal(e.Scope, []byte{1, 2}) || e.Model != "m" || e.Namespace != "ns" {
				t.Errorf("loaded %+v", e)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got, want := load(0, now), []string{"q1:[0 -1 0]", "q2:[0 0 1]", "q0:[1 0 0]"}; !slices.Equal(got, want) {
		t.Errorf("load = %v, want %v", got, want)
	}
	if got, want := load(1, now), []string{"q1:[0 -1 0]"}; !slices.Equal(got, want) {
		t.Errorf("load limit 1 = %v, want %v", got, want)
	}
	if got, want := load(0, now.Add(time.Minute)), []string{"q1:[0 -1 0]", "q0:[1 0 0]"}; !slices.Equal(got, want) {
		t.Errorf("load after expiry = %v, want %v", got, want)
	}

	// Replacing the exact entry keeps its vector; deleting or purging it removes the vector.
	putEntry(t, s, cacheKey(0), "ns", "m", "body2", now, now.Add(time.Hour))
	if got := load(0, now); len(got) != 3 {
		t.Errorf("after replacing an entry, load = %v", got)
	}
	if ok, err := s.CacheDelete(ctx, cacheKey(0)); err != nil || !ok {
		t.Fatalf("CacheDelete = %v, %v", ok, err)
	}
	if ok, _ := s.CacheDelete(ctx, cacheKey(0)); ok {
		t.Error("second delete reported a row")
	}
	if got, want := load(0, now), []string{"q1:[0 -1 0]", "q2:[0 0 1]"}; !slices.Equal(got, want) {
		t.Errorf("after delete, load = %v, want %v", got, want)
	}
	if _, err := s.CachePurge(ctx, CacheFilter{All: true}); err != nil {
		t.Fatal(err)
	}
	st, _ := s.CacheStats(ctx, now)
	if st.SemanticEntries != 0 || st.Entries != 0 || st.Bytes != 0 {
		t.Errorf("after purge all, stats = %+v", st)
	}

	stop := errors.New("stop")
	putEntry(t, s, cacheKey(0), "ns", "m", "body", now, now.Add(time.Hour))
	put(0, "lex", vec(1, 0, 0), now, now.Add(time.Hour))
	if err := s.SemanticLoad(ctx, "lex", 3, now, 0, func(SemanticEntry) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("SemanticLoad err = %v, want the callback's", err)
	}
}

func BenchmarkCacheGet(b *testing.B) {
	cfg := Config{Path: b.TempDir() + "/c.db", MaxOpenConns: 4, MaxIdleConns: 2}
	ctx := context.Background()
	s, err := Open(ctx, cfg, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	body := bytes.Repeat([]byte("x"), 1500)
	if err := s.CachePut(ctx, CacheEntry{Key: cacheKey(1), Model: "m", Body: body, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok, err := s.CacheGet(ctx, cacheKey(1), now); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}
