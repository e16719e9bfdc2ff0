// Package shm is a memory-mapped file of named int64 counters shared by every process of
// one llm-proxy installation (the supervisor and all workers), the way nginx shares its
// upstream and limit_req zones. It holds what must be exact across workers: rate-limit
// windows, in-flight counts, round-robin positions, budget reservations.
//
// # Why atomics on a shared mapping are valid across processes
//
// Every process maps the same file with MAP_SHARED, so a given slot is the same physical
// page in all of them. On Linux amd64 and arm64 the sync/atomic operations compile to
// single hardware instructions (LOCK XADD / LOCK CMPXCHG on amd64; LDADDAL / CASAL or
// LDAXR/STLXR loops on arm64) on naturally aligned 8-byte words; cache coherence works on
// physical addresses, not on a process's virtual addresses, so these operations are atomic
// and sequentially consistent between processes exactly as between goroutines. Every word
// here is 8-byte aligned (the mapping is page-aligned and all offsets are multiples of 8).
// No Go pointer is ever stored in the mapping, so the garbage collector never looks at it.
//
// # Layout (version 1)
//
//	page 0:   header: magic, version, size, slot count, counters per slot, boot id,
//	          live-process mask, and the process table (MaxProcs entries)
//	page 1..: slots, each slotWords words: key, name length, name (diagnostics only),
//	          then SlotCounters int64 counters
//
// A slot is found by open addressing (linear probing) on a 64-bit FNV-1a hash of its name.
// An empty slot has key 0; a process claims one with a single CompareAndSwap of the key,
// so concurrent processes inserting the same name agree on one slot, and the counters are
// usable at once (they are zero in a fresh file). The hash is the slot's identity: two
// names with the same 64-bit hash share a slot (probability about n²/2⁶⁵, 3e-12 for 10,000
// names). Slots are never deleted.
//
// # Lifetime and crashes
//
// The file persists, so counters survive a worker restart, a rolling restart and a
// supervisor restart: a rate window is not reset by restarting the service. The file is
// recreated only when its header does not match (other version or layout) or when the
// machine has rebooted since it was written (the boot id differs), because after a power
// loss the page cache may never have reached the disk and the counters may be torn.
//
// Counters that must not leak when a process dies mid-request (in-flight requests, budget
// reservations) are Gauges: one column per process. Each process that uses gauges claims a
// row of the process table (pid plus its kernel start time, so a recycled pid is not
// mistaken for the dead process). A Gauge's value is the sum of the live processes'
// columns. Reap finds entries whose process is gone, zeroes their column in every gauge and
// frees the entry; zeroing is idempotent, so a reaper that itself dies half-way is simply
// repeated by the next one. The supervisor should call Reap when it reaps a worker; each
// process also calls it when the process table is full.
package shm

import (
	"bytes"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Config says where the shared file lives and how big a fresh one is.
type Config struct {
	// Path of the shared file, normally next to the database.
	Path string `envconfig:"SHM_PATH" default:"" desc:"memory-mapped file of counters shared by all processes: rate limits, in-flight counts, metrics (default: llm-proxy.shm next to the database file)"`
	// Size in bytes of a newly created file; an existing valid file keeps its own size.
	Size int `envconfig:"SHM_SIZE" default:"4194304" desc:"size in bytes of the shared counters file: each named slot (a rate-limited key, a metrics series, a deployment counter) takes 640 bytes, so the default 4 MiB holds about 6,500; every worker maps all of it"`
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.Path == "":
		return errors.New("shm: SHM_PATH is empty")
	case c.Size < MinSize || c.Size > MaxSize:
		return fmt.Errorf("shm: SHM_SIZE must be between %d and %d, got %d", MinSize, MaxSize, c.Size)
	}
	return nil
}

const (
	// SlotCounters is the number of int64 counters in every slot.
	SlotCounters = 72
	// MaxProcs is the number of processes that can use gauges at the same time.
	MaxProcs = 64
	// MinSize and MaxSize bound the file size.
	MinSize = 64 << 10
	MaxSize = 1 << 30

	magic     = 0x4d48535058504c4c // "LLPXPSHM" little-endian
	version   = 1
	pageSize  = 4096
	metaWords = 8 // key, name length, 6 words (48 bytes) of name
	nameBytes = 48
	slotWords = metaWords + SlotCounters
	slotBytes = slotWords * 8

	// header word offsets
	hMagic    = 0
	hVersion  = 1
	hSize     = 2
	hSlots    = 3
	hCounters = 4
	hBoot     = 5
	hMask     = 6
	hProcs    = 16 // process table: MaxProcs entries of procWords words
	procWords = 4  // pid, start time, reaper pid, unused

	kindPlain = 0
	kindGauge = 1
)

// ErrFull is returned when every slot (or every process-table row) is taken.
var ErrFull = errors.New("shm: table full")

// Region is one process's mapping of the shared file. It is safe for concurrent use.
type Region struct {
	path   string
	mem    []byte
	hdr    *[pageSize / 8]int64
	base   unsafe.Pointer // first slot
	nslots uint64
	pid    int

	mu     sync.Mutex
	proc   int // process-table row, -1 until joined
	closed bool
}

// Open maps the file at path, creating it with size bytes when it is missing, invalid,
// or was written before the machine last booted. Every process of an installation opens
// the same path; an existing valid file is used at its own size whatever size says.
func Open(path string, size int) (*Region, error) {
	if size < MinSize || size > MaxSize {
		return nil, fmt.Errorf("shm: size must be between %d and %d, got %d", MinSize, MaxSize, size)
	}
	size = (size + pageSize - 1) &^ (pageSize - 1)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("shm: create directory: %w", err)
	}
	// A separate lock file serialises validation and creation: the data file itself may be
	// replaced by rename, and a lock on a replaced inode would protect nothing.
	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("shm: open lock: %w", err)
	}
	defer lock.Close()
	if err := lockFile(lock); err != nil {
		return nil, fmt.Errorf("shm: lock: %w", err)
	}
	defer unlockFile(lock) //nolint:errcheck // closing the fd unlocks anyway

	boot := bootID()
	mem, err := mapExisting(path, boot)
	if err != nil {
		return nil, err
	}
	if mem == nil {
		if mem, err = create(path, size, boot); err != nil {
			return nil, err
		}
	}
	r := &Region{path: path, mem: mem, pid: os.Getpid(), proc: -1}
	r.hdr = (*[pageSize / 8]int64)(unsafe.Pointer(&mem[0]))
	r.base = unsafe.Pointer(&mem[pageSize])
	r.nslots = uint64(r.hdr[hSlots])
	return r, nil
}

// mapExisting maps path if it holds a valid region of this boot; nil, nil means "create".
func mapExisting(path string, boot int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("shm: open: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("shm: stat: %w", err)
	}
	if fi.Size() < MinSize || fi.Size() > MaxSize || fi.Size()%pageSize != 0 {
		return nil, nil
	}
	mem, err := mapFile(f, int(fi.Size()))
	if err != nil {
		return nil, fmt.Errorf("shm: mmap: %w", err)
	}
	h := (*[pageSize / 8]int64)(unsafe.Pointer(&mem[0]))
	want := uint64(fi.Size()-pageSize) / slotBytes
	if uint64(h[hMagic]) != magic || h[hVersion] != version || h[hSize] != fi.Size() ||
		uint64(h[hSlots]) != want || h[hCounters] != SlotCounters || h[hBoot] != boot {
		_ = unmapFile(mem)
		return nil, nil
	}
	return mem, nil
}

// bootID identifies the current boot, so a file written before a reboot is recreated.
func bootID() int64 {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return 0
	}
	return int64(hashName(string(bytes.TrimSpace(b))) >> 1)
}

// Close releases this process's process-table row (zeroing its gauge columns) and unmaps
// the file. Handles obtained from the region must not be used afterwards.
func (r *Region) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	if r.proc >= 0 {
		r.release(r.proc)
		r.proc = -1
	}
	if err := unmapFile(r.mem); err != nil {
		return fmt.Errorf("shm: munmap: %w", err)
	}
	return nil
}

// Path returns the file path.
func (r *Region) Path() string { return r.path }

// Capacity returns the number of slots in the file.
func (r *Region) Capacity() int { return int(r.nslots) }

// Used counts the slots in use (a full scan; for diagnostics).
func (r *Region) Used() int {
	n := 0
	for i := uint64(0); i < r.nslots; i++ {
		if atomic.LoadInt64(r.slotWord(i, 0)) != 0 {
			n++
		}
	}
	return n
}

func (r *Region) slotWord(i uint64, w int) *int64 {
	return (*int64)(unsafe.Add(r.base, i*slotBytes+uint64(w)*8))
}

func (r *Region) counters(i uint64) *[SlotCounters]int64 {
	return (*[SlotCounters]int64)(unsafe.Add(r.base, i*slotBytes+metaWords*8))
}

// hashName is 64-bit FNV-1a: stable across processes and builds, unlike hash/maphash.
func hashName(name string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= 1099511628211
	}
	return h
}

// find returns the index of the slot for name and kind, claiming an empty one if needed.
func (r *Region) find(name string, kind int64) (uint64, error) {
	key := int64(hashName(name)&^1) | kind
	if key == 0 {
		key = 2
	}
	start := uint64(key) % r.nslots
	for n := uint64(0); n < r.nslots; n++ {
		i := (start + n) % r.nslots
		kw := r.slotWord(i, 0)
		k := atomic.LoadInt64(kw)
		if k == 0 {
			if !atomic.CompareAndSwapInt64(kw, 0, key) {
				k = atomic.LoadInt64(kw) // another process took it: maybe for this very name
			} else {
				r.writeName(i, name)
				return i, nil
			}
		}
		if k == key {
			return i, nil
		}
	}
	return 0, fmt.Errorf("shm: slot %q: %w", name, ErrFull)
}

// writeName records the name for diagnostics; only the claimer writes it, once.
func (r *Region) writeName(i uint64, name string) {
	n := min(len(name), nameBytes)
	dst := unsafe.Slice((*byte)(unsafe.Pointer(r.slotWord(i, 2))), nameBytes)
	copy(dst, name[:n])
	atomic.StoreInt64(r.slotWord(i, 1), int64(n))
}

// Names returns the (possibly truncated) names of the slots in use, for diagnostics.
func (r *Region) Names() []string {
	var out []string
	for i := uint64(0); i < r.nslots; i++ {
		if atomic.LoadInt64(r.slotWord(i, 0)) == 0 {
			continue
		}
		n := atomic.LoadInt64(r.slotWord(i, 1))
		src := unsafe.Slice((*byte)(unsafe.Pointer(r.slotWord(i, 2))), nameBytes)
		out = append(out, string(src[:n]))
	}
	return out
}

// Slot is a handle on SlotCounters plain counters shared by all processes. Handles are
// cheap to keep: they hold a pointer into the mapping and no lock.
type Slot struct {
	c *[SlotCounters]int64
}

// Slot returns the plain slot called name, creating it (zeroed) on first use by any
// process. Plain slots and gauges live in separate namespaces.
func (r *Region) Slot(name string) (*Slot, error) {
	i, err := r.find(name, kindPlain)
	if err != nil {
		return nil, err
	}
	return &Slot{c: r.counters(i)}, nil
}

// Add adds delta to counter i and returns the new value.
func (s *Slot) Add(i int, delta int64) int64 { return atomic.AddInt64(&s.c[i], delta) }

// Load returns counter i.
func (s *Slot) Load(i int) int64 { return atomic.LoadInt64(&s.c[i]) }

// Store sets counter i.
func (s *Slot) Store(i int, v int64) { atomic.StoreInt64(&s.c[i], v) }

// CompareAndSwap sets counter i to new if it holds old.
func (s *Slot) CompareAndSwap(i int, old, new int64) bool {
	return atomic.CompareAndSwapInt64(&s.c[i], old, new)
}

// Counter returns counter i of s as a single counter (Add returns the new total), the
// shape a round-robin position needs.
func (s *Slot) Counter(i int) SlotCounter { return SlotCounter{p: &s.c[i]} }

// SlotCounter is one counter of a Slot.
type SlotCounter struct{ p *int64 }

// Add adds delta and returns the new value.
func (c SlotCounter) Add(delta int64) int64 { return atomic.AddInt64(c.p, delta) }

// Load returns the value.
func (c SlotCounter) Load() int64 { return atomic.LoadInt64(c.p) }

// Gauge is a crash-safe shared count, such as requests in flight: each process adds to
// its own column and the value is the sum over live processes, so the share of a process
// that dies is dropped by Reap instead of leaking forever.
type Gauge struct {
	r   *Region
	c   *[SlotCounters]int64
	own *int64
}

// Gauge returns the gauge called name, joining the process table on first use.
func (r *Region) Gauge(name string) (*Gauge, error) {
	p, err := r.Join()
	if err != nil {
		return nil, err
	}
	i, err := r.find(name, kindGauge)
	if err != nil {
		return nil, err
	}
	c := r.counters(i)
	return &Gauge{r: r, c: c, own: &c[p]}, nil
}

// Add adds delta to this process's share and returns it (not the total).
func (g *Gauge) Add(delta int64) int64 { return atomic.AddInt64(g.own, delta) }

// Load returns the sum over live processes. It reads one word per live process.
func (g *Gauge) Load() int64 {
	var sum int64
	for m := uint64(atomic.LoadInt64(&g.r.hdr[hMask])); m != 0; m &= m - 1 {
		sum += atomic.LoadInt64(&g.c[bits.TrailingZeros64(m)])
	}
	return sum
}

// AddIfAtMost adds delta to this process's share if the total stays at most limit, and
// reports whether it did and the total it saw.
//
// It adds first and checks after, then undoes the add if the total is over: of any set
// of concurrent adders, the one whose add comes last sees every other add in its sum, so
// the admitted adds never take the total over limit (no lock, no lost update, and a
// crash between add and undo is cleaned by Reap). Adders that overlap at the very limit
// may all see the others' tentative adds and back off; they then retry a few times while
// the total without them leaves room, so a spurious refusal needs sustained contention.
func (g *Gauge) AddIfAtMost(delta, limit int64) (int64, bool) {
	for attempt := 0; ; attempt++ {
		atomic.AddInt64(g.own, delta)
		total := g.Load()
		if total <= limit {
			return total, true
		}
		atomic.AddInt64(g.own, -delta)
		now := g.Load()
		if attempt == 3 || now+delta > limit {
			return now, false
		}
		runtime.Gosched()
	}
}

// Join claims a process-table row for this region (once) and returns its index. Gauge
// calls it; the supervisor, which only reaps, never needs to.
func (r *Region) Join() (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return -1, errors.New("shm: region closed")
	}
	if r.proc >= 0 {
		return r.proc, nil
	}
	start := procStart(r.pid)
	for attempt := 0; attempt < 2; attempt++ {
		for p := 0; p < MaxProcs; p++ {
			e := r.procEntry(p)
			if !atomic.CompareAndSwapInt64(&e[0], 0, int64(r.pid)) {
				continue
			}
			atomic.StoreInt64(&e[1], start)
			// No zeroing here: a row becomes free (pid 0) only after release or Reap
			// has zeroed its column (the pid is cleared last), so a free row is clean.
			// Scanning every slot would also fault the whole file into each worker's RSS.
			atomic.OrInt64(&r.hdr[hMask], int64(1)<<p)
			r.proc = p
			return p, nil
		}
		r.Reap()
	}
	return -1, fmt.Errorf("shm: process table: %w", ErrFull)
}

func (r *Region) procEntry(p int) *[procWords]int64 {
	return (*[procWords]int64)(unsafe.Pointer(&r.hdr[hProcs+p*procWords]))
}

// release zeroes a row's gauge columns and frees it. The mask bit goes first so no
// reader sums a column while it is being cleared; the pid goes last so nobody claims the
// row before it is clean.
func (r *Region) release(p int) {
	e := r.procEntry(p)
	atomic.AndInt64(&r.hdr[hMask], ^(int64(1) << p))
	r.zeroColumn(p)
	atomic.StoreInt64(&e[1], 0)
	atomic.StoreInt64(&e[2], 0)
	atomic.StoreInt64(&e[0], 0)
}

func (r *Region) zeroColumn(p int) {
	for i := uint64(0); i < r.nslots; i++ {
		k := atomic.LoadInt64(r.slotWord(i, 0))
		if k != 0 && k&1 == kindGauge {
			atomic.StoreInt64(&r.counters(i)[p], 0)
		}
	}
}

// Reap frees the process-table rows of processes that no longer exist and drops their
// share of every gauge. It returns how many rows it freed. It is safe to call from any
// process at any time; the supervisor calls it after reaping a worker.
func (r *Region) Reap() int {
	n := 0
	me := int64(os.Getpid())
	for p := 0; p < MaxProcs; p++ {
		e := r.procEntry(p)
		pid := atomic.LoadInt64(&e[0])
		if pid == 0 || alive(pid, atomic.LoadInt64(&e[1])) {
			continue
		}
		// Take the row for reaping; a row whose reaper died is taken over.
		reaper := atomic.LoadInt64(&e[2])
		if reaper != 0 && reaper != me && alive(reaper, 0) {
			continue
		}
		if !atomic.CompareAndSwapInt64(&e[2], reaper, me) {
			continue
		}
		if atomic.LoadInt64(&e[0]) != pid { // freed and re-claimed meanwhile
			atomic.CompareAndSwapInt64(&e[2], me, 0)
			continue
		}
		r.release(p)
		n++
	}
	return n
}
