package limits

import (
	"time"

	"github.com/llm-proxy/llm-proxy/store/shm"
)

// A window counts units (requests or tokens) per second over the last 60 s in one shm
// slot, shared by every worker process.
//
// Layout: counter 0 is the head, the bucket of the newest second; counters 1..64 are a
// ring of archived buckets, second x at 1 + x%64. Every word packs (second, count) as
// second<<32 | count, so a word left over from an older lap of the ring is recognised by
// its second and ignored; nothing ever has to be cleared.
//
// Admission at second s charges the head and is allowed when the head plus the archived
// buckets of seconds s-60 .. s-1 plus the cost is at most the limit. Only the head is
// changed by an admission, with one CompareAndSwap: that CAS is the linearisation point,
// and it fails if anything was admitted since the head was read, so two processes can
// never both take the last unit. When the clock has moved past the head's second, the
// head is first copied to its ring slot and then replaced by an empty head for the new
// second (copy first, so a reader never sees the old second in neither place).
//
// Why no 60-second span ever holds more than the limit: heads only move forward, so the
// admissions are stamped with non-decreasing seconds in CAS order. Take any 61 consecutive
// seconds [a, a+60] and the last admission stamped inside them, at second s <= a+60. Every
// earlier admission stamped in [a, s] was already in the head or the ring when that last
// CAS succeeded, and its check summed seconds s-60 .. s ⊇ [a, s]; so the span holds at most
// the limit. A request's stamp is the floor of its clock reading (or a slightly newer head
// second written by another process), so any 60 s interval [u, u+60) of admission times
// falls within the 61 stamped seconds floor(u) .. floor(u)+60, and holds at most the
// limit too. The price of 1 s buckets is that a unit leaves the window between 60 and 61 s
// after it was counted, never earlier; there is no refill on top of a burst.
//
// Settling (TPM) adds the difference between actual and estimated tokens to the bucket the
// reservation was charged to: the head by CAS if it is still that second, else the ring
// word if it still holds that second, else nothing (the bucket has left the window). A
// process preempted between reading the head and archiving it can write back a count from
// before a downward settlement; that only over-counts, never lets more through.
type window struct {
	s *shm.Slot
}

const (
	ringLen    = 64
	spanSec    = 60 // seconds before the current one that still count
	maxCount   = 1<<32 - 1
	headIndex  = 0
	ringOffset = 1
)

func pack(sec uint32, n int64) int64 { return int64(uint64(sec)<<32 | uint64(n)) }
func secOf(w int64) uint32           { return uint32(uint64(w) >> 32) }
func countOf(w int64) int64          { return int64(uint32(w)) }

func clampCount(n int64) int64 { return min(max(n, 0), maxCount) }

// quota is what a window check reports for headers.
type quota struct {
	used  int64         // units in the window after this call
	retry time.Duration // on refusal: until cost fits; 0 when it never can
	reset time.Duration // until the window is empty again
}

// admit charges cost at now (unix ns) if it fits under limit; it returns the second
// charged (for settle) and the window state.
func (w window) admit(now, cost, limit int64) (sec uint32, ok bool, q quota) {
	nowSec := uint32(now / int64(time.Second))
	for {
		h := w.s.Load(headIndex)
		sec = max(nowSec, secOf(h)) // another process's clock may have just ticked over
		if secOf(h) < sec {
			w.archive(h)
			if !w.s.CompareAndSwap(headIndex, h, pack(sec, 0)) {
				continue
			}
			h = pack(sec, 0)
		}
		sum := countOf(h)
		for x := sec - spanSec; x != sec; x++ {
			if r := w.s.Load(ringOffset + int(x%ringLen)); secOf(r) == x {
				sum += countOf(r)
			}
		}
		if sum+cost > limit {
			return sec, false, w.refusal(now, sec, countOf(h), sum, cost, limit)
		}
		if w.s.CompareAndSwap(headIndex, h, pack(sec, clampCount(countOf(h)+cost))) {
			q.used = sum + cost
			if q.used > 0 {
				q.reset = until(now, sec+spanSec+1)
			}
			return sec, true, q
		}
	}
}

// archive copies head word h to its ring slot unless the slot already holds that second
// with at least that count (a concurrent archiver got there first).
func (w window) archive(h int64) {
	hs := secOf(h)
	i := ringOffset + int(hs%ringLen)
	for {
		r := w.s.Load(i)
		if rs := secOf(r); rs > hs || rs == hs && countOf(r) >= countOf(h) {
			return
		}
		if w.s.CompareAndSwap(i, r, h) {
			return
		}
	}
}

// refusal computes Retry-After: the oldest buckets leave the window one second at a time,
// and the caller may retry once enough of them have left for cost to fit.
func (w window) refusal(now int64, sec uint32, head, sum, cost, limit int64) quota {
	q := quota{used: sum}
	if sum > 0 {
		q.reset = until(now, sec+spanSec+1)
	}
	if cost > limit {
		return q
	}
	need := sum + cost - limit
	for x := sec - spanSec; x != sec; x++ {
		if r := w.s.Load(ringOffset + int(x%ringLen)); secOf(r) == x {
			need -= countOf(r)
		}
		if need <= 0 {
			q.retry = until(now, x+spanSec+1)
			return q
		}
	}
	q.retry = until(now, sec+spanSec+1) // only the head's own units are left to expire
	return q
}

// load reports the window's state at now without charging anything.
func (w window) load(now int64) (used int64, reset time.Duration) {
	nowSec := uint32(now / int64(time.Second))
	h := w.s.Load(headIndex)
	sec := max(nowSec, secOf(h))
	newest := uint32(0)
	if secOf(h) >= sec-spanSec && countOf(h) > 0 {
		used, newest = countOf(h), secOf(h)
	}
	for x := sec - spanSec; x != sec; x++ {
		if r := w.s.Load(ringOffset + int(x%ringLen)); secOf(r) == x && countOf(r) > 0 && x != secOf(h) {
			used += countOf(r)
			newest = max(newest, x)
		}
	}
	if used > 0 {
		reset = until(now, newest+spanSec+1)
	}
	return used, reset
}

// settle adds delta to the bucket of second sec, if it is still in the window.
func (w window) settle(sec uint32, delta int64) {
	if delta == 0 {
		return
	}
	for {
		h := w.s.Load(headIndex)
		if secOf(h) == sec {
			if w.s.CompareAndSwap(headIndex, h, pack(sec, clampCount(countOf(h)+delta))) {
				return
			}
			continue
		}
		if secOf(h) < sec {
			return // cannot happen for a second this window charged
		}
		break // archived: the head was copied to the ring before it moved on
	}
	i := ringOffset + int(sec%ringLen)
	for {
		r := w.s.Load(i)
		if secOf(r) != sec {
			return // out of the window already
		}
		if w.s.CompareAndSwap(i, r, pack(sec, clampCount(countOf(r)+delta))) {
			return
		}
	}
}

func until(now int64, sec uint32) time.Duration {
	return max(time.Duration(int64(sec)*int64(time.Second)-now), 0)
}
