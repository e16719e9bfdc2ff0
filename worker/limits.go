package worker

import (
	"bytes"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/routing"
	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/store/shm"
	"github.com/llm-proxy/llm-proxy/worker/limits"
)

// keyLimits merges a key's own limits over the configured defaults.
func keyLimits(k store.KeyLimits, cfg Config) limits.Limits {
	pick := func(own, def int64) int64 {
		if own > 0 {
			return own
		}
		return def
	}
	l := limits.Limits{
		RPM:         pick(k.RPM, cfg.DefaultRPM),
		TPM:         pick(k.TPM, cfg.DefaultTPM),
		MaxParallel: pick(k.MaxParallel, cfg.DefaultMaxParallel),
		BudgetMicro: k.BudgetMicroUSD,
		BudgetTok:   k.BudgetTokens,
	}
	if p, err := limits.ParsePeriod(k.BudgetPeriod); err == nil {
		l.Period = p
	}
	return l
}

// userLimits converts a user's limits; unlike a key's, they have no defaults, since a
// default per user on top of the default per key would only ever be the tighter of two
// guesses.
func userLimits(u store.KeyLimits) limits.Limits {
	l := limits.Limits{RPM: u.RPM, TPM: u.TPM, MaxParallel: u.MaxParallel, BudgetMicro: u.BudgetMicroUSD, BudgetTok: u.BudgetTokens}
	if p, err := limits.ParsePeriod(u.BudgetPeriod); err == nil {
		l.Period = p
	}
	return l
}

func anyLimit(l *limits.Limits) bool {
	return l.RPM > 0 || l.TPM > 0 || l.MaxParallel > 0 || l.BudgetMicro > 0 || l.BudgetTok > 0
}

func (l *keyEntry) limited() bool { return anyLimit(l.limits) }

// userLimited reports whether the key's owner has a limit of their own.
func (l *keyEntry) userLimited() bool { return l.userLimits != nil && anyLimit(l.userLimits) }

// defaultCompletionEstimate is the completion size assumed for TPM and budget
// reservations when a request sets no max_tokens; settlement corrects it.
const defaultCompletionEstimate = 256

// estimateTokens guesses a request's tokens before the call: about four bytes of
// JSON per prompt token, plus max_tokens (or max_completion_tokens). A quoted key
// cannot occur unescaped inside a string value, so the byte search finds keys only.
func estimateTokens(body []byte) (prompt, completion int64) {
	prompt = int64(len(body)/4) + 1
	completion = defaultCompletionEstimate
	for _, key := range [][]byte{[]byte(`"max_completion_tokens"`), []byte(`"max_tokens"`)} {
		i := bytes.Index(body, key)
		if i < 0 {
			continue
		}
		rest := bytes.TrimLeft(body[i+len(key):], " \t\r\n:")
		n := 0
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		if v, err := strconv.ParseInt(string(rest[:n]), 10, 64); err == nil && v > 0 {
			return prompt, v
		}
	}
	return prompt, completion
}

// admit applies the key's limits and then its owner's (shared by all the owner's
// keys); it answers 429 and returns false when either refuses.
func (w *Worker) admit(ctx *fasthttp.RequestCtx, x *exchange, key *keyEntry, body []byte) bool {
	if w.deps.Limiter == nil {
		return true
	}
	byUser := key.userLimited()
	if !byUser && !key.limited() {
		return true
	}
	prompt, completion := estimateTokens(body)
	est := limits.Estimate{Tokens: prompt + completion}
	if p, ok := w.prices.Load().Lookup(x.rec.Model); ok {
		est.Micro = p.Cost(prompt, completion)
	}
	var (
		t   limits.Ticket
		dec limits.Decision
	)
	if byUser {
		t, dec = w.deps.Limiter.AdmitPair(limits.Key(key.id), *key.limits, limits.User(key.userID), *key.userLimits, est)
	} else {
		t, dec = w.deps.Limiter.Admit(limits.Key(key.id), *key.limits, est)
	}
	if !dec.Allowed {
		if w.deps.Metrics != nil {
			w.deps.Metrics.RateLimited(reasonName(dec.Reason))
		}
		msg := rateLimitMessage(dec.Reason)
		if dec.By.Kind == limits.KindUser {
			msg = userRateLimitMessage(dec.Reason)
		}
		// The limit headers go on after writeError (which resets the response) and
		// before rejected, which hands x back to its pool.
		writeError(ctx, fasthttp.StatusTooManyRequests, "rate_limit_exceeded", "rate_limit_exceeded", msg)
		x.hdr = dec.Headers(x.hdr[:0], &ctx.Response.Header)
		w.rejected(ctx, x, fasthttp.StatusTooManyRequests, classRateLimited)
		return false
	}
	x.hdr = dec.Headers(x.hdr[:0], &ctx.Response.Header)
	x.ticket, x.admitted = t, true
	return true
}

func rateLimitMessage(r limits.Reason) string {
	switch r {
	case limits.ReasonRPM:
		return "Rate limit reached for requests per minute on this API key."
	case limits.ReasonTPM:
		return "Rate limit reached for tokens per minute on this API key."
	case limits.ReasonParallel:
		return "Too many requests in flight on this API key."
	case limits.ReasonBudget:
		return "The spend budget of this API key is exhausted for the period."
	case limits.ReasonTokenBudget:
		return "The token budget of this API key is exhausted for the period."
	case limits.ReasonTooLarge:
		return "The request alone exceeds this API key's tokens-per-minute limit."
	}
	return "Rate limit reached."
}

// userRateLimitMessage is rateLimitMessage for a limit of the key's owner, which all the
// owner's keys share: the client should not look for the cause in this key alone.
func userRateLimitMessage(r limits.Reason) string {
	switch r {
	case limits.ReasonRPM:
		return "Rate limit reached for requests per minute for this user."
	case limits.ReasonTPM:
		return "Rate limit reached for tokens per minute for this user."
	case limits.ReasonParallel:
		return "Too many requests in flight for this user."
	case limits.ReasonBudget:
		return "The spend budget for this user is exhausted for the period."
	case limits.ReasonTokenBudget:
		return "The token budget for this user is exhausted for the period."
	case limits.ReasonTooLarge:
		return "The request alone exceeds the tokens-per-minute limit for this user."
	}
	return "Rate limit reached for this user."
}

// settle prices the finished request and hands its ticket back to the limiter
// with the real usage.
func (w *Worker) settle(x *exchange) {
	if strings.HasPrefix(x.rec.Cache, "hit") {
		// Answered from the cache: no upstream tokens were spent, nothing is owed.
		if x.admitted {
			w.deps.Limiter.Finish(&x.ticket, 0, 0)
			x.admitted = false
		}
		return
	}
	if x.rec.PromptTokens > 0 || x.rec.CompletionTokens > 0 {
		if p, ok := w.prices.Load().Lookup(x.rec.UpstreamModel); ok {
			x.rec.CostMicroUSD = p.Cost(int64(x.rec.PromptTokens), int64(x.rec.CompletionTokens))
		} else if p, ok := w.prices.Load().Lookup(x.rec.Model); ok {
			x.rec.CostMicroUSD = p.Cost(int64(x.rec.PromptTokens), int64(x.rec.CompletionTokens))
		}
	}
	if x.admitted {
		w.deps.Limiter.Finish(&x.ticket, int64(x.rec.PromptTokens+x.rec.CompletionTokens), x.rec.CostMicroUSD)
		x.admitted = false
	}
}

func newPriceTable(rows []store.Price) *limits.PriceTable {
	over := make(map[string]limits.Price, len(rows))
	for _, r := range rows {
		over[r.Model] = limits.Price{InputPerMTok: r.InputPerMTok, OutputPerMTok: r.OutputPerMTok}
	}
	return limits.NewPriceTable(limits.DefaultPrices, over)
}

// SharedCounters adapts the shared memory region to routing's counters:
// round-robin positions are plain shared counters; in-flight counts are gauges, so
// the share of a worker that dies is dropped by the supervisor's reap instead of
// leaking into least_connections forever.
func SharedCounters(r *shm.Region) routing.CounterSource { return shmCounters{r} }

type shmCounters struct{ r *shm.Region }

func (c shmCounters) Counter(name string) routing.Counter {
	if strings.HasPrefix(name, "inflight:") {
		if g, err := c.r.Gauge(name); err == nil {
			return g
		}
	} else if s, err := c.r.Slot(name); err == nil {
		return s.Counter(0)
	}
	// The table is full: count in this process rather than fail requests.
	return &localCounter{}
}

type localCounter struct{ v atomic.Int64 }

func (c *localCounter) Add(d int64) int64 { return c.v.Add(d) }
func (c *localCounter) Load() int64       { return c.v.Load() }

// reasonName is a refusal reason as a metric label.
func reasonName(r limits.Reason) string {
	switch r {
	case limits.ReasonRPM:
		return "rpm"
	case limits.ReasonTPM:
		return "tpm"
	case limits.ReasonParallel:
		return "parallel"
	case limits.ReasonBudget:
		return "budget"
	case limits.ReasonTokenBudget:
		return "token_budget"
	case limits.ReasonTooLarge:
		return "too_large"
	}
	return "other"
}
