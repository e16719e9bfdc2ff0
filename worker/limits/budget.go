package limits

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/store/shm"
)

// Budgets.
//
// A request is admitted when spent + reserved + estimate <= budget, where spent is the
// settled spend of the current period (one tagged word in the subject's spend slot) and
// reserved is the sum of the estimates of the requests in flight (a shm Gauge, so a worker
// killed mid-request has its reservations dropped by shm.Reap). Reserving adds first and
// checks after (see shm.Gauge.AddIfAtMost): among concurrent requests the last to add sees
// all the others, so the reservations admitted together never exceed what is left. The
// budget can be overrun only by requests whose real cost exceeds their estimate, by at
// most that difference; with the estimate from max_tokens it is not overrun at all.
//
// Durability. The shm words are the live truth and survive worker and supervisor
// restarts (the file persists). Each worker also accumulates its settled spend and
// Flush writes it to SQLite (store.AddSpends) every second, and at startup Seed loads the
// ledger into a fresh shm file. What can be lost: if the shm file is lost (reboot, layout
// change) the budget restarts from the ledger, which lacks at most the last flush
// interval (1 s) of spend of each worker that died without flushing.

// Period is a budget period.
type Period uint8

const (
	PeriodTotal Period = iota // never resets
	PeriodDay                 // UTC calendar day
	PeriodMonth               // UTC calendar month
)

// ParsePeriod parses "day", "month", "total" or "" (total).
func ParsePeriod(s string) (Period, error) {
	switch s {
	case "", "total":
		return PeriodTotal, nil
	case "day":
		return PeriodDay, nil
	case "month":
		return PeriodMonth, nil
	}
	return 0, fmt.Errorf("limits: budget period %q: want day, month or total", s)
}

func (p Period) String() string {
	switch p {
	case PeriodDay:
		return "day"
	case PeriodMonth:
		return "month"
	}
	return "total"
}

// periodIndex numbers periods: days since the epoch, months since year 0, or 0.
func periodIndex(p Period, now time.Time) int64 {
	switch p {
	case PeriodDay:
		return now.Unix() / 86400
	case PeriodMonth:
		y, m, _ := now.UTC().Date()
		return int64(y)*12 + int64(m) - 1
	}
	return 0
}

// PeriodKey names the period containing now in the spend ledger: "2025-11-25",
// "2025-11" or "total".
func PeriodKey(p Period, now time.Time) string { return periodKey(p, periodIndex(p, now)) }

func periodKey(p Period, idx int64) string {
	switch p {
	case PeriodDay:
		return time.Unix(idx*86400, 0).UTC().Format("2006-01-02")
	case PeriodMonth:
		return fmt.Sprintf("%04d-%02d", idx/12, idx%12+1)
	}
	return "total"
}

// parsePeriodKey is the inverse of periodKey.
func parsePeriodKey(s string) (Period, int64, bool) {
	if s == "total" {
		return PeriodTotal, 0, true
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return PeriodDay, t.Unix() / 86400, true
	}
	if t, err := time.Parse("2006-01", s); err == nil {
		y, m, _ := t.Date()
		return PeriodMonth, int64(y)*12 + int64(m) - 1, true
	}
	return 0, 0, false
}

// periodEnd is how long until the period containing now ends (0: never).
func periodEnd(p Period, now time.Time) time.Duration {
	u := now.UTC()
	switch p {
	case PeriodDay:
		y, m, d := u.Date()
		return time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC).Sub(u)
	case PeriodMonth:
		y, m, _ := u.Date()
		return time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC).Sub(u)
	}
	return 0
}

// Spend words: counter spendMicro and spendTokens of the spend slot each pack a 16-bit
// period tag (2 bits of kind, 14 bits of index) over a 48-bit amount, so moving to a new
// period and zeroing the amount is one CAS. Counter spendSeeded holds tag+1 once the words
// hold the period's spend (seeded from the ledger, or written by a settled request).
const (
	spendMicro  = 0
	spendTokens = 1
	spendSeeded = 2

	amountBits = 48
	amountMax  = 1<<amountBits - 1
	tagIdxMask = 1<<14 - 1
)

func periodTag(p Period, now time.Time) int64 {
	return int64(p)<<14 | periodIndex(p, now)&tagIdxMask
}

func tagOf(w int64) int64    { return int64(uint64(w) >> amountBits) }
func amountOf(w int64) int64 { return w & amountMax }
func packSpend(tag, amount int64) int64 {
	return tag<<amountBits | min(max(amount, 0), amountMax)
}

// newer reports whether tag a is a later period than b of the same kind, or another kind.
func newer(a, b int64) bool {
	if a>>14 != b>>14 {
		return true
	}
	return a != b && (a-b)&tagIdxMask < 1<<13
}

func (st *subjectState) spent(i int, tag int64) int64 {
	w := st.spend.Load(i)
	if tagOf(w) != tag {
		return 0 // a previous period's word: nothing spent yet in this one
	}
	return amountOf(w)
}

func (st *subjectState) addSpent(tag, micro, tokens int64) {
	addTagged(st.spend, spendMicro, tag, micro)
	addTagged(st.spend, spendTokens, tag, tokens)
}

func addTagged(s *shm.Slot, i int, tag, delta int64) {
	for {
		w := s.Load(i)
		nw := packSpend(tag, delta)
		if w != 0 && (tagOf(w) == tag || !newer(tag, tagOf(w))) {
			// Same period, or our clock is a hair behind whoever rolled it over: charge it
			// to the newer period rather than reopen the old one.
			nw = packSpend(tagOf(w), amountOf(w)+delta)
		}
		if s.CompareAndSwap(i, w, nw) {
			break
		}
	}
	// These words now hold live spend of the period, which also reaches the ledger by
	// Flush: seeding them from the ledger later would count it twice. So every worker must
	// seed (SeedFrom) before it serves, and the first write of a period closes seeding.
	if m := tag + 1; s.Load(spendSeeded) != m {
		s.Store(spendSeeded, m)
	}
}

// reserve adds est to this process's share of g if spent + reserved stays within budget.
// Spent is read after the add: Finish records spend before it drops its reservation, so
// a request finishing concurrently is seen in one or the other (or both), never neither.
func reserve(g *shm.Gauge, est, budget int64, st *subjectState, i int, tag int64) bool {
	for attempt := 0; ; attempt++ {
		g.Add(est)
		if g.Load()+st.spent(i, tag) <= budget {
			return true
		}
		g.Add(-est)
		if attempt == 3 || g.Load()+st.spent(i, tag)+est > budget {
			return false
		}
		runtime.Gosched() // others' tentative reservations were in the way: let them settle
	}
}

// Spent reports subject's settled spend in the current period of p.
func (l *Limiter) Spent(subject Subject, p Period) (micro, tokens int64, err error) {
	st, err := l.state(subject)
	if err != nil {
		return 0, 0, err
	}
	tag := periodTag(p, l.clock())
	return st.spent(spendMicro, tag), st.spent(spendTokens, tag), nil
}

// Seed adds ledger spend for the current period of p to subject's shared words unless
// they already cover the period, and reports whether it did. Call it at worker start for
// every row of store.SpendIn(current periods) (see SeedFrom) before serving: a fresh shm
// file then continues from the ledger, and an existing one is left alone, so a worker
// restart never counts spend twice.
func (l *Limiter) Seed(subject Subject, p Period, micro, tokens int64) (bool, error) {
	st, err := l.state(subject)
	if err != nil {
		return false, err
	}
	tag := periodTag(p, l.clock())
	for {
		m := st.spend.Load(spendSeeded)
		if m == tag+1 {
			return false, nil
		}
		if st.spend.CompareAndSwap(spendSeeded, m, tag+1) {
			break
		}
	}
	addTagged(st.spend, spendMicro, tag, micro)
	addTagged(st.spend, spendTokens, tag, tokens)
	return true, nil
}

// SeedFrom seeds every ledger row that belongs to a current period; it returns how many
// rows were applied.
func (l *Limiter) SeedFrom(rows []store.SpendDelta) (int, error) {
	now := l.clock()
	n := 0
	for _, r := range rows {
		subj, ok := ParseSubject(r.Subject)
		if !ok {
			continue
		}
		p, idx, ok := parsePeriodKey(r.Period)
		if !ok || idx != periodIndex(p, now) {
			continue
		}
		did, err := l.Seed(subj, p, r.Micro, r.Tokens)
		if err != nil {
			return n, err
		}
		if did {
			n++
		}
	}
	return n, nil
}

// ParseSubject parses Subject.String's form.
func ParseSubject(s string) (Subject, bool) {
	kind, id, ok := strings.Cut(s, ":")
	n, err := strconv.ParseInt(id, 10, 64)
	if !ok || err != nil {
		return Subject{}, false
	}
	switch kind {
	case "key":
		return Key(n), true
	case "user":
		return User(n), true
	}
	return Subject{}, false
}

// pendingSpend is this process's settled spend not yet written to the ledger.
type pendingSpend struct {
	mu sync.Mutex
	m  map[pendingKey]*pendingEntry
}

type pendingKey struct {
	subject Subject
	period  Period
	idx     int64
}

type pendingEntry struct{ micro, tokens int64 }

func (p *pendingSpend) add(s Subject, per Period, idx, micro, tokens int64) {
	if micro == 0 && tokens == 0 {
		return
	}
	k := pendingKey{s, per, idx}
	p.mu.Lock()
	e := p.m[k]
	if e == nil {
		e = &pendingEntry{}
		p.m[k] = e
	}
	e.micro += micro
	e.tokens += tokens
	p.mu.Unlock()
}

// SpendSink is where Flush writes: *store.Store.
type SpendSink interface {
	AddSpends(ctx context.Context, deltas []store.SpendDelta) error
}

// Flush writes the spend settled since the last flush to sink in one transaction. On
// failure the amounts are kept for the next flush.
func (l *Limiter) Flush(ctx context.Context, sink SpendSink) error {
	l.pending.mu.Lock()
	m := l.pending.m
	l.pending.m = make(map[pendingKey]*pendingEntry, len(m))
	l.pending.mu.Unlock()
	if len(m) == 0 {
		return nil
	}
	deltas := make([]store.SpendDelta, 0, len(m))
	for k, e := range m {
		deltas = append(deltas, store.SpendDelta{Subject: k.subject.String(), Period: periodKey(k.period, k.idx), Micro: e.micro, Tokens: e.tokens})
	}
	if err := sink.AddSpends(ctx, deltas); err != nil {
		for k, e := range m {
			l.pending.add(k.subject, k.period, k.idx, e.micro, e.tokens)
		}
		return fmt.Errorf("limits: flush spend: %w", err)
	}
	return nil
}

// RunFlusher flushes every interval until ctx ends, then once more, so a draining worker
// leaves nothing behind. Failed flushes are logged and retried at the next tick.
func (l *Limiter) RunFlusher(ctx context.Context, sink SpendSink, interval time.Duration) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if err := l.Flush(ctx, sink); err != nil {
				l.logger.Warn("spend flush failed; will retry", "error", err)
			}
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			return l.Flush(fctx, sink)
		}
	}
}
