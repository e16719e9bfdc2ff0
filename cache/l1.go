package cache

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coocood/freecache"
)

// L1 is the per-process tier: freecache, so millions of entries cost the garbage collector
// nothing (the data lives in a few large byte slices, not in pointers). Entries larger than
// 1/1024 of its size are not kept (freecache's limit); they are still served from L2.
//
// The freecache is made on the first Set: a worker whose requests never use the cache
// (the default mode is off) keeps no L1. An untouched one would cost no resident
// memory, but the garbage collector counts it as live heap and would let that much
// real garbage pile up before each collection.
type L1 struct {
	size int
	once sync.Once
	fc   atomic.Pointer[freecache.Cache]
	// bufs recycles encode buffers: a Set copies the bytes into freecache at once.
	bufs sync.Pool
	// lastModel is the model name of the last GetAppend hit (see modelName).
	lastModel atomic.Pointer[string]
}

// minL1Bytes is freecache's own floor (512 KiB).
const minL1Bytes = 512 * 1024

// NewL1 returns an L1 of about mb mebibytes (at least 512 KiB).
func NewL1(mb int) *L1 {
	return &L1{size: max(mb*1024*1024, minL1Bytes), bufs: sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}}
}

// coarseClock is freecache's clock for every L1 in the process: a second counter
// updated once a second, instead of a clock read on every lookup. freecache keeps
// whole seconds anyway; entries carry their own millisecond expiry, which GetAppend
// checks against the caller's time.
var coarseClock = sync.OnceValue(func() freecache.Timer { return freecache.NewCachedTimer() })

// made returns the freecache, nil before the first Set.
func (l *L1) made() *freecache.Cache { return l.fc.Load() }

func (l *L1) make() *freecache.Cache {
	l.once.Do(func() { l.fc.Store(freecache.NewCacheCustomTimer(l.size, coarseClock())) })
	return l.fc.Load()
}

// Get returns the entry of k if present and fresh at now. The entry's Body is its own copy.
func (l *L1) Get(k Key, now time.Time) (Entry, bool) {
	fc := l.made()
	if fc == nil {
		return Entry{}, false
	}
	v, err := fc.Get(k[:])
	if err != nil {
		return Entry{}, false
	}
	e, err := decodeEntry(v)
	if err != nil || !e.Fresh(now) {
		return Entry{}, false
	}
	return e, true
}

// GetAppend is Get for the request path: it appends the body of k's entry, if
// present and fresh at now, to dst and returns the entry without Body and Namespace.
// The answer is copied once, from freecache's memory into dst, and a model name
// seen on the previous hit is reused rather than allocated again.
func (l *L1) GetAppend(k Key, now time.Time, dst []byte) (Entry, []byte, bool) {
	fc := l.made()
	if fc == nil {
		return Entry{}, dst, false
	}
	var e Entry
	ok := false
	nowMs := now.UnixMilli()
	_ = fc.GetFn(k[:], func(v []byte) error {
		h, body, err := decodeHeader(v)
		if err != nil || nowMs >= h.expires {
			return nil
		}
		e = Entry{Created: time.UnixMilli(h.created), Expires: time.UnixMilli(h.expires),
			PromptTokens: h.prompt, CompletionTokens: h.compl, Model: l.modelName(h.model)}
		dst = append(dst, body...)
		ok = true
		return nil
	})
	return e, dst, ok
}

// modelName returns b as a string, reusing the last one returned when it is equal
// (almost every hit names a model seen just before).
func (l *L1) modelName(b []byte) string {
	if p := l.lastModel.Load(); p != nil && *p == string(b) {
		return *p
	}
	s := string(b)
	l.lastModel.Store(&s)
	return s
}

// Set stores e under k until e.Expires (as seen at now). An entry already expired, or one
// too large for this cache, is not stored; the latter returns ErrTooLarge.
func (l *L1) Set(k Key, e Entry, now time.Time) error {
	ttl := e.Expires.Sub(now)
	if ttl <= 0 {
		return nil
	}
	secs := int((ttl + time.Second - 1) / time.Second) // freecache counts whole seconds; Get checks the exact time
	bp := l.bufs.Get().(*[]byte)
	buf := appendEntry((*bp)[:0], e)
	err := l.make().Set(k[:], buf, secs)
	if cap(buf) <= 1<<20 { // do not pin a rare huge buffer in the pool
		*bp = buf
		l.bufs.Put(bp)
	}
	if errors.Is(err, freecache.ErrLargeEntry) {
		return ErrTooLarge
	}
	if err != nil {
		return fmt.Errorf("cache: l1 set: %w", err)
	}
	return nil
}

// ErrTooLarge means an entry exceeds what L1 can hold; it is served from L2 instead.
var ErrTooLarge = errors.New("cache: entry too large for L1")

// Delete removes k; false if it was not there.
func (l *L1) Delete(k Key) bool {
	fc := l.made()
	return fc != nil && fc.Del(k[:])
}

// Clear drops every entry (a purge elsewhere bumped the cache generation).
func (l *L1) Clear() {
	if fc := l.made(); fc != nil {
		fc.Clear()
	}
}

// Len returns the number of entries, expired ones not yet overwritten included.
func (l *L1) Len() int64 {
	if fc := l.made(); fc != nil {
		return fc.EntryCount()
	}
	return 0
}
