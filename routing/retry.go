package routing

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Outcome is what one upstream attempt came to.
type Outcome struct {
	// Status is the upstream's HTTP status; 0 when no response arrived.
	Status int
	// Transport is set when no response arrived: a dial, TLS or connection error.
	Transport bool
	// Timeout is set when the upstream did not answer (or send a first token) in time.
	Timeout bool
	// ClientGone is set when the client disconnected; nothing is retried for it.
	ClientGone bool
	// SentToClient is set once any byte of the answer reached the client.
	SentToClient bool
}

// Failed reports whether the outcome counts against the deployment's circuit:
// the upstream could not be reached, timed out or answered with a server error.
// A 429 is not a failure of the deployment (it cools down instead), and 4xx
// answers are the client's own errors.
func (o Outcome) Failed() bool {
	if o.ClientGone {
		return false
	}
	return o.Transport || o.Timeout || o.Status >= 500
}

// Retry decides whether another attempt (on another deployment, or a fallback
// model) may follow this outcome, and says why. All retry policy lives here:
//
//   - Never once a byte reached the client: the answer has begun, and a second
//     answer spliced onto the first would be wrong (a stream that breaks later is
//     ended with an error event instead).
//   - Never when the client is gone: nobody would read the answer.
//   - Connection errors and timeouts before an answer: the request may not have
//     been processed, and another deployment may well answer; providers bill
//     nothing for a request they never answered.
//   - 429 and 500/502/503/504: the provider is overloaded or failing right now,
//     which is what other deployments and fallback models are for.
//   - Never on other statuses: 400/401/403/404/413/422 and the like would fail the
//     same way anywhere, and retrying them only multiplies the error and its cost.
func Retry(o Outcome) (bool, string) {
	switch {
	case o.SentToClient:
		return false, "answer already started"
	case o.ClientGone:
		return false, "client gone"
	case o.Timeout:
		return true, "upstream timeout"
	case o.Transport:
		return true, "upstream unreachable"
	}
	switch o.Status {
	case 429:
		return true, "rate limited"
	case 500, 502, 503, 504:
		return true, "upstream server error"
	}
	return false, "not retryable"
}

// Backoff is the pause before retry number n (1 for the first retry): 50 ms
// doubling, capped at 1 s, with full jitter so retries from many requests do not
// arrive at the same moment.
func Backoff(n int) time.Duration {
	d := 50 * time.Millisecond
	for i := 1; i < n && d < time.Second; i++ {
		d *= 2
	}
	d = min(d, time.Second)
	return time.Duration(rand.Int64N(int64(d)) + 1)
}

// RetryBudget caps retries at a share of requests over a sliding window, so a
// failing provider is not hit with a multiple of the normal load (a retry storm).
// It always allows a minimum number of retries per window.
type RetryBudget struct {
	ratio  float64
	min    int
	window time.Duration

	mu       sync.Mutex
	start    int64 // monotonic ns when the current half-window began
	reqs     [2]int
	retries  [2]int
	nowIndex int
}

// NewRetryBudget allows retries up to ratio of the requests in window, and at
// least minimum per window.
func NewRetryBudget(ratio float64, minimum int, window time.Duration) *RetryBudget {
	return &RetryBudget{ratio: ratio, min: minimum, window: window}
}

// DefaultRetryBudget: retries at most 20% of requests over 10 s, minimum 3.
func DefaultRetryBudget() *RetryBudget { return NewRetryBudget(0.2, 3, 10*time.Second) }

// rotate keeps two half-window buckets: the current and the previous one.
func (b *RetryBudget) rotate(now int64) {
	half := int64(b.window / 2)
	for now-b.start >= half {
		if now-b.start >= 2*half {
			b.reqs, b.retries = [2]int{}, [2]int{}
			b.start = now
			return
		}
		b.nowIndex ^= 1
		b.reqs[b.nowIndex], b.retries[b.nowIndex] = 0, 0
		b.start += half
	}
}

// Request counts one client request.
func (b *RetryBudget) Request(now int64) {
	b.mu.Lock()
	b.rotate(now)
	b.reqs[b.nowIndex]++
	b.mu.Unlock()
}

// Allow takes one retry from the budget if it has room.
func (b *RetryBudget) Allow(now int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rotate(now)
	reqs := b.reqs[0] + b.reqs[1]
	retries := b.retries[0] + b.retries[1]
	if retries >= b.min && float64(retries+1) > b.ratio*float64(reqs) {
		return false
	}
	b.retries[b.nowIndex]++
	return true
}
