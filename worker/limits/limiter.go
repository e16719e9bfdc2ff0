// Package limits enforces per-key and per-user rate limits (requests and tokens per
// minute), concurrency caps and spend budgets, exactly across all worker processes of the
// machine. All live state is in the shared memory region of store/shm, so a limit of N
// holds for N, not N × workers, and survives worker restarts; spend is also written to
// SQLite (store.AddSpend) so it survives losing that file.
//
// The worker calls Admit before the upstream call and Finish after it. Both are lock-free
// and allocation-free once a subject has been seen.
package limits

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/llm-proxy/llm-proxy/store/shm"
)

// SubjectKind says whose limits a subject carries.
type SubjectKind uint8

const (
	// KindKey is a client API key.
	KindKey SubjectKind = 'k'
	// KindUser is a user owning keys; user limits apply to all the user's keys together.
	KindUser SubjectKind = 'u'
)

// Subject is who a limit applies to. The zero value is invalid.
type Subject struct {
	Kind SubjectKind
	ID   int64
}

// Key returns the subject of API key id.
func Key(id int64) Subject { return Subject{KindKey, id} }

// User returns the subject of user id.
func User(id int64) Subject { return Subject{KindUser, id} }

// String is the subject's name in the spend ledger: "key:42", "user:7".
func (s Subject) String() string {
	switch s.Kind {
	case KindKey:
		return "key:" + strconv.FormatInt(s.ID, 10)
	case KindUser:
		return "user:" + strconv.FormatInt(s.ID, 10)
	}
	return "invalid:" + strconv.FormatInt(s.ID, 10)
}

// Limits are one subject's limits; a zero field means "no limit".
type Limits struct {
	RPM         int64  // requests admitted in any 60 s
	TPM         int64  // tokens (estimated at admission, settled to actual) in any 60 s
	MaxParallel int64  // requests in flight at once
	BudgetMicro int64  // spend per BudgetPeriod, micro-USD
	BudgetTok   int64  // tokens per BudgetPeriod
	Period      Period // of both budgets; PeriodTotal when unset
}

func (l *Limits) none() bool {
	return l.RPM <= 0 && l.TPM <= 0 && l.MaxParallel <= 0 && l.BudgetMicro <= 0 && l.BudgetTok <= 0
}

// Estimate is what a request is expected to cost, known before the upstream call:
// prompt tokens + max_tokens, and their price. Over-estimating is safe (the difference
// is handed back by Finish); under-estimating lets a budget overrun by the difference.
type Estimate struct {
	Tokens int64
	Micro  int64
}

// Reason says which limit refused a request.
type Reason uint8

const (
	ReasonNone        Reason = iota // admitted
	ReasonRPM                       // requests per minute
	ReasonTPM                       // tokens per minute
	ReasonParallel                  // too many in flight
	ReasonBudget                    // spend budget of the period exhausted
	ReasonTokenBudget               // token budget of the period exhausted
	ReasonTooLarge                  // the estimate alone exceeds the TPM limit: it never fits
)

var reasonText = [...]string{"", "requests per minute", "tokens per minute", "parallel requests", "budget", "token budget", "request larger than the tokens-per-minute limit"}

func (r Reason) String() string { return reasonText[r] }

// Quota is one window's state for the x-ratelimit-* headers. Limit 0: not limited.
type Quota struct {
	Limit     int64
	Remaining int64
	Reset     time.Duration // until the window is empty again
}

// Decision is Admit's answer.
type Decision struct {
	Allowed    bool
	Reason     Reason
	By         Subject       // on refusal: whose limit refused (AdmitPair: the key or its owner)
	RetryAfter time.Duration // on refusal; 0 when waiting will not help (ReasonTooLarge)
	Requests   Quota
	Tokens     Quota
}

// Ticket is what Finish needs to release an admitted request. It is a value: keep it on
// the request's stack. Finishing a zero or already finished Ticket does nothing.
type Ticket struct {
	hold           // the subject of Admit; the key of AdmitPair
	owner     hold // AdmitPair's second subject (the key's user); zero otherwise
	estTokens int64
	estMicro  int64
}

// hold is what one subject of a ticket has charged.
type hold struct {
	st     *subjectState
	tpmSec uint32
	rpmSec uint32
	period Period
	flags  uint8
}

const (
	tkTPM uint8 = 1 << iota
	tkParallel
	tkBudgetMicro
	tkBudgetTok
	tkRPM
	tkLive
)

// Limiter is the worker's view of every subject's limits. Safe for concurrent use.
type Limiter struct {
	region *shm.Region
	clock  func() time.Time
	logger hclog.Logger

	mu       sync.Mutex // serialises creating subject states
	subjects atomic.Pointer[map[Subject]*subjectState]
	pending  pendingSpend
	failOpen atomic.Int64
}

// New returns a Limiter on region. clock may be nil (time.Now).
func New(region *shm.Region, clock func() time.Time, logger hclog.Logger) *Limiter {
	if clock == nil {
		clock = time.Now
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	l := &Limiter{region: region, clock: clock, logger: logger.Named("limits")}
	m := make(map[Subject]*subjectState)
	l.subjects.Store(&m)
	l.pending.m = make(map[pendingKey]*pendingEntry)
	return l
}

// subjectState holds the shm handles of one subject; created once, then read-only.
type subjectState struct {
	subject  Subject
	rpm      window
	tpm      window
	parallel *shm.Gauge
	resMicro *shm.Gauge // micro-USD reserved by requests in flight
	resTok   *shm.Gauge // tokens reserved by requests in flight
	spend    *shm.Slot  // settled spend of the current period (see budget.go)
}

func (l *Limiter) state(s Subject) (*subjectState, error) {
	if st := (*l.subjects.Load())[s]; st != nil {
		return st, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	old := *l.subjects.Load()
	if st := old[s]; st != nil {
		return st, nil
	}
	// All of a subject's slots are created together on first sight (5 slots, 3.2 KB);
	// the hot path then never branches on "not created yet".
	name := s.String()
	st := &subjectState{subject: s}
	var err error
	var rpm, tpm *shm.Slot
	if rpm, err = l.region.Slot("rpm:" + name); err == nil {
		st.rpm = window{rpm}
		if tpm, err = l.region.Slot("tpm:" + name); err == nil {
			st.tpm = window{tpm}
			if st.parallel, err = l.region.Gauge("par:" + name); err == nil {
				if st.resMicro, err = l.region.Gauge("res-usd:" + name); err == nil {
					if st.resTok, err = l.region.Gauge("res-tok:" + name); err == nil {
						st.spend, err = l.region.Slot("spend:" + name)
					}
				}
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("limits: state of %s: %w", name, err)
	}
	m := make(map[Subject]*subjectState, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[s] = st
	l.subjects.Store(&m)
	return st, nil
}

// Admit checks and charges every limit of subject for one request estimated at est.
// On refusal nothing stays charged. The checks run cheapest-to-undo first: budgets and
// parallelism (gauges), then tokens, then requests, so a request refused by TPM does not
// use up one of the key's requests.
//
// If the shared table is full the request is admitted (fail open) and counted in
// FailOpen: refusing every request of new keys because of a sizing mistake would be the
// worse outage. Size SHM_SIZE for the number of keys with limits (5 slots each).
func (l *Limiter) Admit(subject Subject, lim Limits, est Estimate) (Ticket, Decision) {
	t := Ticket{estTokens: max(est.Tokens, 0), estMicro: max(est.Micro, 0)}
	d := l.admit(&t.hold, subject, lim, t.estTokens, t.estMicro)
	if !d.Allowed {
		return Ticket{}, d
	}
	return t, d
}

// AdmitPair admits one request against a key's limits and then against its owner's
// (shared by all the owner's keys); the ticket settles both. When the owner refuses,
// everything the key charged is handed back, its request count included, so a refused
// request neither holds a reservation nor uses up one of the key's requests; for the
// instant it was counted it can only have refused others, never admitted too many. On
// success the quotas are the tighter (smaller remaining) of the two subjects'.
func (l *Limiter) AdmitPair(key Subject, keyLim Limits, owner Subject, ownerLim Limits, est Estimate) (Ticket, Decision) {
	t := Ticket{estTokens: max(est.Tokens, 0), estMicro: max(est.Micro, 0)}
	d := l.admit(&t.hold, key, keyLim, t.estTokens, t.estMicro)
	if !d.Allowed {
		return Ticket{}, d
	}
	od := l.admit(&t.owner, owner, ownerLim, t.estTokens, t.estMicro)
	if !od.Allowed {
		l.release(&t.hold, t.estTokens, t.estMicro, 0, 0, false)
		// The key's quotas counted this request; it is not counted any more.
		if d.Requests.Limit > 0 {
			d.Requests.Remaining = min(d.Requests.Remaining+1, d.Requests.Limit)
		}
		if d.Tokens.Limit > 0 {
			d.Tokens.Remaining = min(d.Tokens.Remaining+t.estTokens, d.Tokens.Limit)
		}
		od.Requests, od.Tokens = tighter(od.Requests, d.Requests), tighter(od.Tokens, d.Tokens)
		return Ticket{}, od
	}
	d.Requests, d.Tokens = tighter(d.Requests, od.Requests), tighter(d.Tokens, od.Tokens)
	return t, d
}

// tighter is the quota with less remaining; an unlimited quota (Limit 0) never wins.
func tighter(a, b Quota) Quota {
	switch {
	case a.Limit <= 0:
		return b
	case b.Limit <= 0:
		return a
	case b.Remaining < a.Remaining || b.Remaining == a.Remaining && b.Reset > a.Reset:
		return b
	}
	return a
}

// admit charges subject's limits into h; on refusal h is left zero.
func (l *Limiter) admit(h *hold, subject Subject, lim Limits, estTokens, estMicro int64) Decision {
	d := Decision{Allowed: true, Requests: Quota{Limit: max(lim.RPM, 0)}, Tokens: Quota{Limit: max(lim.TPM, 0)}}
	if lim.none() {
		return d
	}
	st, err := l.state(subject)
	if err != nil {
		if l.failOpen.Add(1) == 1 {
			l.logger.Error("limits not enforced: shared table full", "subject", subject.String(), "error", err)
		}
		return d
	}
	now := l.clock()
	nowNs := now.UnixNano()
	h.st = st
	refuse := func(r Reason, retry time.Duration) Decision {
		l.release(h, estTokens, estMicro, 0, 0, false) // hands back the whole TPM estimate
		*h = hold{}
		d.Allowed, d.Reason, d.By, d.RetryAfter = false, r, subject, retry
		return d
	}

	if lim.BudgetMicro > 0 || lim.BudgetTok > 0 {
		h.period = lim.Period
		tag := periodTag(lim.Period, now)
		if lim.BudgetMicro > 0 {
			if !reserve(st.resMicro, estMicro, lim.BudgetMicro, st, spendMicro, tag) {
				return refuse(ReasonBudget, periodEnd(lim.Period, now))
			}
			h.flags |= tkBudgetMicro
		}
		if lim.BudgetTok > 0 {
			if !reserve(st.resTok, estTokens, lim.BudgetTok, st, spendTokens, tag) {
				return refuse(ReasonTokenBudget, periodEnd(lim.Period, now))
			}
			h.flags |= tkBudgetTok
		}
	}
	if lim.MaxParallel > 0 {
		if _, ok := st.parallel.AddIfAtMost(1, lim.MaxParallel); !ok {
			// No clock tells when a request in flight ends; one second is a polite guess.
			return refuse(ReasonParallel, time.Second)
		}
		h.flags |= tkParallel
	}
	if lim.TPM > 0 {
		sec, ok, q := st.tpm.admit(nowNs, estTokens, lim.TPM)
		d.Tokens.Remaining, d.Tokens.Reset = max(lim.TPM-q.used, 0), q.reset
		if !ok {
			if estTokens > lim.TPM {
				return refuse(ReasonTooLarge, 0)
			}
			return refuse(ReasonTPM, q.retry)
		}
		h.tpmSec = sec
		h.flags |= tkTPM
	}
	if lim.RPM > 0 {
		sec, ok, q := st.rpm.admit(nowNs, 1, lim.RPM)
		d.Requests.Remaining, d.Requests.Reset = max(lim.RPM-q.used, 0), q.reset
		if !ok {
			return refuse(ReasonRPM, q.retry)
		}
		h.rpmSec = sec
		h.flags |= tkRPM
	}
	h.flags |= tkLive
	return d
}

// Finish settles an admitted request with what it really used: tokens (prompt +
// completion) and cost in micro-USD. Call it exactly once per admitted request, also when
// the upstream call failed (with the usage billed, usually zero).
func (l *Limiter) Finish(t *Ticket, tokens, micro int64) {
	tokens, micro = max(tokens, 0), max(micro, 0)
	if t.flags&tkLive != 0 {
		l.release(&t.hold, t.estTokens, t.estMicro, tokens, micro, true)
	}
	if t.owner.flags&tkLive != 0 {
		l.release(&t.owner, t.estTokens, t.estMicro, tokens, micro, true)
	}
	*t = Ticket{}
}

// release hands back what h charged. Settled: the request ran and used tokens and micro;
// otherwise it is being refused, and its request count is taken back too.
func (l *Limiter) release(h *hold, estTokens, estMicro, tokens, micro int64, settled bool) {
	st := h.st
	if h.flags&tkTPM != 0 {
		st.tpm.settle(h.tpmSec, tokens-estTokens)
	}
	if !settled && h.flags&tkRPM != 0 {
		st.rpm.settle(h.rpmSec, -1)
	}
	if h.flags&tkParallel != 0 {
		st.parallel.Add(-1)
	}
	if settled && (h.flags&(tkBudgetMicro|tkBudgetTok) != 0) {
		// Spend is recorded before the reservation is dropped, so for an instant it is
		// counted twice (refusing too much), never zero times (admitting too much).
		now := l.clock()
		st.addSpent(periodTag(h.period, now), micro, tokens)
		l.pending.add(st.subject, h.period, periodIndex(h.period, now), micro, tokens)
	}
	if h.flags&tkBudgetMicro != 0 {
		st.resMicro.Add(-estMicro)
	}
	if h.flags&tkBudgetTok != 0 {
		st.resTok.Add(-estTokens)
	}
}

// Usage reports subject's current windows without charging anything (for headers on
// responses that did not go through Admit, and for the admin).
func (l *Limiter) Usage(subject Subject, lim Limits) (requests, tokens Quota, err error) {
	requests.Limit, tokens.Limit = max(lim.RPM, 0), max(lim.TPM, 0)
	st, err := l.state(subject)
	if err != nil {
		return requests, tokens, err
	}
	now := l.clock().UnixNano()
	if lim.RPM > 0 {
		used, reset := st.rpm.load(now)
		requests.Remaining, requests.Reset = max(lim.RPM-used, 0), reset
	}
	if lim.TPM > 0 {
		used, reset := st.tpm.load(now)
		tokens.Remaining, tokens.Reset = max(lim.TPM-used, 0), reset
	}
	return requests, tokens, nil
}

// FailOpen counts requests admitted unchecked because the shared table was full.
func (l *Limiter) FailOpen() int64 { return l.failOpen.Load() }
