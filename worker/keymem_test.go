package worker

import (
	"crypto/sha256"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/llm-proxy/llm-proxy/store"
)

func manyKeys(n int) []store.APIKey {
	keys := make([]store.APIKey, n)
	for i := range keys {
		keys[i] = store.APIKey{ID: int64(i + 1), Name: "bench-key-" + strconv.Itoa(i),
			Hash: sha256.Sum256([]byte(strconv.Itoa(i))), CreatedAt: time.Now()}
		if i%10 == 0 { // some keys with limits, models and an owner
			keys[i].Limits = store.KeyLimits{RPM: 60}
			keys[i].Models = []string{"gpt-4o"}
			keys[i].UserID = int64(i%7 + 1)
			keys[i].UserLimits = store.KeyLimits{TPM: 1000}
		}
	}
	return keys
}

// A worker holds every key: 100k keys must stay well inside the 30 MiB a worker
// may spend on them (issue bar), leaving room for the transient load.
func TestKeySnapshotMemory(t *testing.T) {
	keys := manyKeys(100_000)
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	s := newKeySnapshot(keys, testConfig())
	runtime.GC()
	runtime.ReadMemStats(&m1)
	live := int64(m1.HeapAlloc) - int64(m0.HeapAlloc)
	t.Logf("snapshot of %d keys: %d KiB live (%d bytes per key)", len(keys), live>>10, live/int64(len(keys)))
	if live > 16<<20 {
		t.Errorf("snapshot of 100k keys holds %d MiB, want under 16 MiB", live>>20)
	}
	// The entries are right, not just small.
	for _, i := range []int{0, 1, 99_999} {
		e := s.lookup(keys[i].Hash)
		if e == nil || e.id != keys[i].ID || (i%10 == 0) != (e.models != nil) || (i%10 == 0) != (e.userLimits != nil) {
			t.Errorf("key %d: entry %+v", i, e)
		}
	}
	runtime.KeepAlive(keys)
}

func BenchmarkKeySnapshot100k(b *testing.B) {
	keys := manyKeys(100_000)
	cfg := testConfig()
	b.ReportAllocs()
	for b.Loop() {
		newKeySnapshot(keys, cfg)
	}
}
