package worker

import (
	"sync/atomic"
	"time"
)

// throttle lets one event through per interval, whichever goroutine asks: a warning
// that could repeat per request is logged at most once a minute this way.
type throttle struct{ last atomic.Int64 } // unix nanoseconds of the last event let through

func (t *throttle) allow(now time.Time, every time.Duration) bool {
	n := now.UnixNano()
	last := t.last.Load()
	return n-last >= int64(every) && t.last.CompareAndSwap(last, n)
}
