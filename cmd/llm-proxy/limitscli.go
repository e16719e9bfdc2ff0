package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"

	"github.com/llm-proxy/llm-proxy/store"
)

// keyLimitFlags are the limit flags of `keys create` and `keys update`.
type keyLimitFlags struct {
	rpm, tpm, parallel, tokens *int64
	budget                     *float64
	period                     *string
}

func limitFlags(fs *flag.FlagSet) *keyLimitFlags {
	return &keyLimitFlags{
		rpm:      fs.Int64("rpm", 0, "requests per minute (0: the global default)"),
		tpm:      fs.Int64("tpm", 0, "tokens per minute (0: the global default)"),
		parallel: fs.Int64("max-parallel", 0, "requests in flight at once (0: the global default)"),
		budget:   fs.Float64("budget", 0, "spend limit in USD per --budget-period (0: none)"),
		tokens:   fs.Int64("budget-tokens", 0, "token limit per --budget-period (0: none)"),
		period:   fs.String("budget-period", "", "day, month or total (default total when a budget is set)"),
	}
}

func (f *keyLimitFlags) limits(cmd string) (store.KeyLimits, error) {
	for name, v := range map[string]int64{"--rpm": *f.rpm, "--tpm": *f.tpm, "--max-parallel": *f.parallel, "--budget-tokens": *f.tokens} {
		if v < 0 {
			return store.KeyLimits{}, usagef("%s: %s must be 0 or more", cmd, name)
		}
	}
	if *f.budget < 0 || math.IsNaN(*f.budget) || *f.budget > 1e9 {
		return store.KeyLimits{}, usagef("%s: --budget must be a USD amount from 0 to 1e9", cmd)
	}
	l := store.KeyLimits{
		RPM: *f.rpm, TPM: *f.tpm, MaxParallel: *f.parallel,
		BudgetMicroUSD: int64(math.Round(*f.budget * 1e6)), BudgetTokens: *f.tokens,
	}
	switch *f.period {
	case "", "day", "month", "total":
		l.BudgetPeriod = *f.period
	default:
		return store.KeyLimits{}, usagef("%s: --budget-period must be day, month or total", cmd)
	}
	if l.BudgetPeriod == "" && (l.BudgetMicroUSD > 0 || l.BudgetTokens > 0) {
		l.BudgetPeriod = "total"
	}
	return l, nil
}

// updateKey serves `keys update ID --rpm ... `: it replaces the key's limits.
func updateKey(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("keys update", stderr)
	lim := limitFlags(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("keys update needs exactly one key ID")
	}
	id, err := strconv.ParseInt(pos[0], 10, 64)
	if err != nil || id < 1 {
		return usagef("keys update: %q is not a key ID (see keys list)", pos[0])
	}
	kl, err := lim.limits("keys update")
	if err != nil {
		return err
	}
	return withStore(ctx, stderr, false, func(st *store.Store) error {
		if err := st.SetAPIKeyLimits(ctx, id, kl); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("no key with ID %d", id)
			}
			return err
		}
		fmt.Fprintf(stdout, "updated limits of key %d: rpm %d, tpm %d, max parallel %d, budget $%.2f / %d tokens per %s\n",
			id, kl.RPM, kl.TPM, kl.MaxParallel, float64(kl.BudgetMicroUSD)/1e6, kl.BudgetTokens, periodText(kl.BudgetPeriod))
		return nil
	})
}

func periodText(p string) string {
	if p == "" {
		return "-"
	}
	return p
}

// runCache serves `cache purge [--all | --model M | --prefix HEX]`: the purge
// reaches every worker's in-memory tier within a second (generation counter).
func runCache(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "purge" {
		return usagef("cache needs a subcommand: purge")
	}
	fs := newFlagSet("cache purge", stderr)
	all := fs.Bool("all", false, "remove every cached answer")
	model := fs.String("model", "", "remove the answers of this model")
	prefix := fs.String("prefix", "", "remove the entries whose key starts with this hex prefix")
	pos, err := parseFlags(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("cache purge: unexpected argument %q", pos[0])
	}
	n := 0
	for _, set := range []bool{*all, *model != "", *prefix != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return usagef("cache purge needs exactly one of --all, --model, --prefix")
	}
	return withStore(ctx, stderr, false, func(st *store.Store) error {
		removed, err := st.CachePurge(ctx, store.CacheFilter{All: *all, Model: *model, KeyPrefix: *prefix})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "purged %d cached answer(s)\n", removed)
		return nil
	})
}
