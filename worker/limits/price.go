package limits

import (
	"math"
	"strings"
)

// Price is a model's list price in USD per million tokens. Since a micro-dollar per token
// is a dollar per million tokens, the cost of n tokens in micro-USD is n × price.
type Price struct {
	InputPerMTok  float64
	OutputPerMTok float64
}

// Cost returns the cost of a call in micro-USD, rounded up so budgets err on the safe side.
func (p Price) Cost(inputTokens, outputTokens int64) int64 {
	return int64(math.Ceil(float64(inputTokens)*p.InputPerMTok + float64(outputTokens)*p.OutputPerMTok))
}

// DefaultPrices are the providers' public list prices (standard tier, no caching or batch
// discount) as published on their pricing pages, checked November 2025. The admin's
// prices table overrides them; a model in neither has no cost (budgets in USD do not
// count it, token budgets still do).
var DefaultPrices = map[string]Price{
	"gpt-4o":                 {2.50, 10.00},
	"gpt-4o-mini":            {0.15, 0.60},
	"gpt-4.1":                {2.00, 8.00},
	"gpt-4.1-mini":           {0.40, 1.60},
	"gpt-4.1-nano":           {0.10, 0.40},
	"o3-mini":                {1.10, 4.40},
	"claude-sonnet-4":        {3.00, 15.00},
	"claude-3-5-haiku":       {0.80, 4.00},
	"gemini-2.0-flash":       {0.10, 0.40},
	"text-embedding-3-small": {0.02, 0},
	"text-embedding-3-large": {0.13, 0},
}

// PriceTable looks prices up by model name. Immutable once built; safe to share.
type PriceTable struct {
	exact  map[string]Price
	byLen  []string // names, longest first, for prefix matching
	prices []Price
}

// NewPriceTable returns a table of defaults overridden by overrides (either may be nil).
func NewPriceTable(defaults, overrides map[string]Price) *PriceTable {
	t := &PriceTable{exact: make(map[string]Price, len(defaults)+len(overrides))}
	for k, v := range defaults {
		t.exact[k] = v
	}
	for k, v := range overrides {
		t.exact[k] = v
	}
	for k := range t.exact {
		t.byLen = append(t.byLen, k)
	}
	// Longest first, so "gpt-4o-mini-2024-07-18" matches gpt-4o-mini, not gpt-4o.
	for i := 1; i < len(t.byLen); i++ {
		for j := i; j > 0 && len(t.byLen[j]) > len(t.byLen[j-1]); j-- {
			t.byLen[j], t.byLen[j-1] = t.byLen[j-1], t.byLen[j]
		}
	}
	for _, k := range t.byLen {
		t.prices = append(t.prices, t.exact[k])
	}
	return t
}

// Lookup returns the price of model: an exact entry, else the longest entry that is a
// prefix of it followed by '-' (dated snapshots such as claude-sonnet-4-20250514).
func (t *PriceTable) Lookup(model string) (Price, bool) {
	if p, ok := t.exact[model]; ok {
		return p, true
	}
	for i, k := range t.byLen {
		if len(model) > len(k) && model[len(k)] == '-' && strings.HasPrefix(model, k) {
			return t.prices[i], true
		}
	}
	return Price{}, false
}
