package metrics

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/llm-proxy/llm-proxy/store/shm"
)

// Every labelled series is one shm slot. Its name is a fixed prefix per family and a
// hash of its label text ("m|r|0123456789abcdef"), short enough that Region.Names
// returns it whole, which is how a scraping process discovers series that other
// processes created. The label text itself lives in the slot's last words, because slot
// names are truncated to 48 bytes and model names alone can be longer.
//
// Words of a request series slot (family 'r'):
//
//	0        requests
//	1, 2     prompt, completion tokens
//	3        cost, micro-USD
//	4        latency sum, µs
//	5..20    latency buckets (len(latencyBounds)+1, the last is +Inf), not cumulative
//	21       time-to-first-token sum, µs
//	22..34   TTFB buckets (len(ttfbBounds)+1), not cumulative
//	36       label text length (0: not yet written)
//	37..71   label text
//
// Other families use word 0 for their value and the same label text words.
const (
	wRequests   = 0
	wPrompt     = 1
	wCompletion = 2
	wCost       = 3
	wLatSum     = 4
	wLatBuckets = 5
	wTTFBSum    = wLatBuckets + len(latencyBoundsUs) + 1
	wTTFBBucket = wTTFBSum + 1
	wTextLen    = 36
	wText       = 37
	textBytes   = (shm.SlotCounters - wText) * 8
)

// Bucket upper bounds in microseconds. Latency spans cache hits (milliseconds) to long
// generations (minutes); TTFB is what a user waits before the first token.
var (
	latencyBoundsUs = [...]int64{5e3, 10e3, 25e3, 50e3, 100e3, 250e3, 500e3, 1e6, 2.5e6, 5e6, 10e6, 30e6, 60e6, 120e6, 300e6}
	ttfbBoundsUs    = [...]int64{10e3, 25e3, 50e3, 100e3, 250e3, 500e3, 1e6, 2.5e6, 5e6, 10e6, 30e6, 60e6}
)

// The layout must fit the slot; a compile error here means it does not.
var _ [wTextLen - (wTTFBBucket + len(ttfbBoundsUs) + 1)]struct{}

// labelCaps bound each label's stored bytes so that any tuple fits the text words:
// 4 length bytes + 40 + 128 + 64 + 16 + the decimal int (at most 20 bytes) ≤ textBytes.
var labelCaps = [4]int{40, 128, 64, 16}

var _ [textBytes - (4 + 40 + 128 + 64 + 16 + 20)]struct{}

// labelKey is a series' labels: up to four strings and an integer (the HTTP status for
// requests). It is comparable, so it keys the per-process handle cache directly and a
// lookup hashes it without allocating.
type labelKey struct {
	s [4]string
	n int64
}

// text encodes k as stored in a slot: each string as one length byte and its (capped)
// bytes, then the integer in decimal.
func (k *labelKey) text() []byte {
	b := make([]byte, 0, textBytes)
	for i, s := range k.s {
		s = s[:min(len(s), labelCaps[i])]
		b = append(b, byte(len(s)))
		b = append(b, s...)
	}
	return strconv.AppendInt(b, k.n, 10)
}

// parseText decodes text; ok is false for text this version did not write.
func parseText(b []byte) (k labelKey, ok bool) {
	for i := range k.s {
		if len(b) == 0 || int(b[0]) > len(b)-1 {
			return k, false
		}
		n := int(b[0])
		k.s[i] = strings.ToValidUTF8(string(b[1:1+n]), "\uFFFD")
		b = b[1+n:]
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return k, false
	}
	k.n = n
	return k, true
}

// fnv64 is 64-bit FNV-1a, stable across processes and builds.
func fnv64(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

func slotName(family byte, text []byte, salt int) string {
	name := fmt.Sprintf("m|%c|%016x", family, fnv64(text))
	if salt > 0 {
		name += "|" + strconv.Itoa(salt)
	}
	return name
}

// readText returns the label text stored in s, or nil while none is written.
func readText(s *shm.Slot) []byte {
	n := s.Load(wTextLen)
	if n <= 0 || n > textBytes {
		return nil
	}
	b := make([]byte, (n+7)&^7)
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], uint64(s.Load(wText+i/8)))
	}
	return b[:n]
}

// claim makes s the series for text: it writes the text and publishes its length. Every
// process that gets the same name writes the same bytes, so concurrent claims of one
// series are harmless; counts are only added after some claim has published the length,
// so a scraper never sees counts without labels. It returns created when this call
// published the length, and ok false when s already holds other text (a 64-bit hash
// collision of two label tuples: the caller tries the next name).
func claim(s *shm.Slot, text []byte) (created, ok bool) {
	if n := s.Load(wTextLen); n != 0 {
		return false, string(readText(s)) == string(text)
	}
	var w [textBytes]byte
	copy(w[:], text)
	for i := 0; i < (len(text)+7)/8; i++ {
		s.Store(wText+i, int64(binary.LittleEndian.Uint64(w[i*8:])))
	}
	if s.CompareAndSwap(wTextLen, 0, int64(len(text))) {
		return true, true
	}
	return false, string(readText(s)) == string(text)
}

// family is one kind of labelled series with this process's cache of slot handles.
// Readers take the current immutable map without a lock; a new series copies it
// (series are created rarely and bounded in number).
type family struct {
	id    byte
	cache atomic.Pointer[map[labelKey]*shm.Slot]
	mu    sync.Mutex
}

func newFamily(id byte) *family {
	f := &family{id: id}
	m := map[labelKey]*shm.Slot{}
	f.cache.Store(&m)
	return f
}

// get returns the cached handle for k, or nil.
func (f *family) get(k labelKey) *shm.Slot { return (*f.cache.Load())[k] }

// open finds or creates the slot of k in region. cacheIt false leaves the per-process
// cache alone (for keys that are redirected elsewhere). created reports whether this
// call created the series in the shared file; name is the slot's name.
func (f *family) open(region *shm.Region, k labelKey, cacheIt bool) (name string, s *shm.Slot, created bool, err error) {
	text := k.text()
	for salt := 0; salt < 4; salt++ {
		name = slotName(f.id, text, salt)
		s, err = region.Slot(name)
		if err != nil {
			return "", nil, false, fmt.Errorf("metrics: series: %w", err)
		}
		var ok bool
		if created, ok = claim(s, text); ok {
			break
		}
		s = nil
	}
	if s == nil {
		return "", nil, false, fmt.Errorf("metrics: series %q: four hash collisions", text)
	}
	if cacheIt {
		f.mu.Lock()
		old := *f.cache.Load()
		m := make(map[labelKey]*shm.Slot, len(old)+1)
		for key, v := range old {
			m[key] = v
		}
		m[k] = s
		f.cache.Store(&m)
		f.mu.Unlock()
	}
	return name, s, created, nil
}
