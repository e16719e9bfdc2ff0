package admin

import (
	"math"
	"strconv"
	"strings"

	"time"

	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/worker/limits"
)

// Per-key limits and spend as /api/apikeys shows and takes them.

const msgLimitsAdminOnly = "Only an admin can set a key's limits."

// Bounds of the limit fields: far above any real use, low enough that no arithmetic on
// them (micro-USD, token windows) can overflow.
const (
	maxLimit     = 1_000_000_000_000
	maxBudgetUSD = 1e9
)

// limitsJSON is a key's own limits; 0 means none (the global default applies to rpm, tpm
// and max_parallel; no budget otherwise).
type limitsJSON struct {
	RPM          int64   `json:"rpm"`
	TPM          int64   `json:"tpm"`
	MaxParallel  int64   `json:"max_parallel"`
	BudgetUSD    float64 `json:"budget_usd"`
	BudgetTokens int64   `json:"budget_tokens"`
	BudgetPeriod string  `json:"budget_period"` // day, month, total; "" with no budget
}

func toLimitsJSON(l store.KeyLimits) limitsJSON {
	return limitsJSON{RPM: l.RPM, TPM: l.TPM, MaxParallel: l.MaxParallel, BudgetUSD: float64(l.BudgetMicroUSD) / 1e6,
		BudgetTokens: l.BudgetTokens, BudgetPeriod: l.BudgetPeriod}
}

// spendJSON is what a key spent in one budget period, from the spend ledger (which the
// workers flush every second).
type spendJSON struct {
	Period    string  `json:"period"`     // day, month or total
	PeriodKey string  `json:"period_key"` // "2025-11-25", "2025-11" or "total"
	USD       float64 `json:"usd"`
	Tokens    int64   `json:"tokens"`
}

// limitsRequest is the "limits" object of POST and PUT /api/apikeys: fields left out keep
// their value (on POST: none), 0 removes a limit.
type limitsRequest struct {
	RPM          *int64   `json:"rpm"`
	TPM          *int64   `json:"tpm"`
	MaxParallel  *int64   `json:"max_parallel"`
	BudgetUSD    *float64 `json:"budget_usd"`
	BudgetTokens *int64   `json:"budget_tokens"`
	BudgetPeriod *string  `json:"budget_period"`
}

// apply validates r and returns cur with r's fields applied. A nil r returns cur.
func (r *limitsRequest) apply(v *validation, cur store.KeyLimits) store.KeyLimits {
	if r == nil {
		return cur
	}
	out := cur
	for _, f := range []struct {
		name string
		in   *int64
		dst  *int64
	}{{"rpm", r.RPM, &out.RPM}, {"tpm", r.TPM, &out.TPM}, {"max_parallel", r.MaxParallel, &out.MaxParallel}, {"budget_tokens", r.BudgetTokens, &out.BudgetTokens}} {
		if f.in == nil {
			continue
		}
		if *f.in < 0 || *f.in > maxLimit {
			v.add("limits."+f.name, f.name+" must be a whole number from 0 (no limit) to "+strconv.FormatInt(maxLimit, 10)+".")
			continue
		}
		*f.dst = *f.in
	}
	if r.BudgetUSD != nil {
		usd := *r.BudgetUSD
		if usd < 0 || usd > maxBudgetUSD || math.IsNaN(usd) {
			v.add("limits.budget_usd", "budget_usd must be a USD amount from 0 (no budget) to 1e9.")
		} else {
			out.BudgetMicroUSD = int64(math.Round(usd * 1e6))
		}
	}
	if r.BudgetPeriod != nil {
		p := strings.TrimSpace(*r.BudgetPeriod)
		switch p {
		case "", "day", "month", "total":
			out.BudgetPeriod = p
		default:
			v.add("limits.budget_period", "budget_period must be day, month or total.")
		}
	}
	// As the CLI does: a budget without a period never resets.
	if out.BudgetPeriod == "" && (out.BudgetMicroUSD > 0 || out.BudgetTokens > 0) {
		out.BudgetPeriod = "total"
	}
	return out
}

// spendPeriod is the ledger period a key's spend is shown for: its budget's, else total.
func spendPeriod(l store.KeyLimits, now time.Time) (limits.Period, string) {
	p, err := limits.ParsePeriod(l.BudgetPeriod)
	if err != nil {
		p = limits.PeriodTotal
	}
	return p, limits.PeriodKey(p, now)
}

func spendSubject(keyID int64) string { return limits.Key(keyID).String() }

// keyOut is toKeyJSON with the key's spend read from the ledger (k has its Limits).
func (a *Admin) keyOut(c *call, k store.OwnedKey, now time.Time) (keyJSON, error) {
	out := toKeyJSON(k, now)
	optOut, err := a.st.KeyBodyLogOptOuts(c.std)
	if err != nil {
		return keyJSON{}, err
	}
	out.LogBodies = !optOut[k.ID]
	p, pk := spendPeriod(k.Limits, now)
	micro, tokens, err := a.st.Spend(c.std, spendSubject(k.ID), pk)
	if err != nil {
		return keyJSON{}, err
	}
	out.Spend = spendJSON{Period: p.String(), PeriodKey: pk, USD: float64(micro) / 1e6, Tokens: tokens}
	return out, nil
}

// keyList is the caller's keys (every key for an admin), oldest first, with limits and
// spend: four reads whatever the number of keys.
func (a *Admin) keyList(c *call) ([]keyJSON, error) {
	keys, err := a.st.OwnedKeys(c.std, c.scopeUser())
	if err != nil {
		return nil, err
	}
	lims, err := a.st.APIKeyLimits(c.std, c.scopeUser())
	if err != nil {
		return nil, err
	}
	now := a.now()
	spent, err := a.st.SpendIn(c.std, limits.PeriodKey(limits.PeriodDay, now), limits.PeriodKey(limits.PeriodMonth, now), "total")
	if err != nil {
		return nil, err
	}
	optOut, err := a.st.KeyBodyLogOptOuts(c.std)
	if err != nil {
		return nil, err
	}
	type sp struct{ subject, period string }
	bySubject := make(map[sp]store.SpendDelta, len(spent))
	for _, d := range spent {
		bySubject[sp{d.Subject, d.Period}] = d
	}
	out := make([]keyJSON, 0, len(keys))
	for _, k := range keys {
		k.Limits = lims[k.ID]
		j := toKeyJSON(k, now)
		j.LogBodies = !optOut[k.ID]
		p, pk := spendPeriod(k.Limits, now)
		d := bySubject[sp{spendSubject(k.ID), pk}]
		j.Spend = spendJSON{Period: p.String(), PeriodKey: pk, USD: float64(d.Micro) / 1e6, Tokens: d.Tokens}
		out = append(out, j)
	}
	return out, nil
}
