package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/llm-proxy/llm-proxy/store"
)

// runUsersCLI serves `users list` and `users update`: a user's limits are shared by all
// the user's keys on top of each key's own, and the user's model list binds every key of
// the user. Users themselves (accounts, passwords) are managed in the admin console.
func runUsersCLI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("users needs a subcommand: list or update")
	}
	switch args[0] {
	case "list":
		fs := newFlagSet("users list", stderr)
		asJSON := fs.Bool("json", false, "print JSON")
		pos, err := parseFlags(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) > 0 {
			return usagef("users list: unexpected argument %q", pos[0])
		}
		return withStore(ctx, stderr, false, func(st *store.Store) error {
			users, err := st.ListUsers(ctx)
			if err != nil {
				return err
			}
			return listUsers(users, *asJSON, stdout)
		})
	case "update":
		return updateUser(ctx, args[1:], stdout, stderr)
	}
	return usagef("unknown users subcommand %q", args[0])
}

// userRowJSON is one row of `users list --json`.
type userRowJSON struct {
	ID           int64    `json:"id"`
	Username     string   `json:"username"`
	Role         string   `json:"role"`
	Disabled     bool     `json:"disabled"`
	Models       []string `json:"models"`
	RPM          int64    `json:"rpm"`
	TPM          int64    `json:"tpm"`
	MaxParallel  int64    `json:"max_parallel"`
	BudgetUSD    float64  `json:"budget_usd"`
	BudgetTokens int64    `json:"budget_tokens"`
	BudgetPeriod string   `json:"budget_period"`
}

func listUsers(users []store.User, asJSON bool, stdout io.Writer) error {
	if asJSON {
		rows := make([]userRowJSON, 0, len(users))
		for _, u := range users {
			l := u.Limits
			rows = append(rows, userRowJSON{ID: u.ID, Username: u.Username, Role: u.Role, Disabled: u.Disabled,
				Models: append([]string{}, u.Models...), RPM: l.RPM, TPM: l.TPM, MaxParallel: l.MaxParallel,
				BudgetUSD: float64(l.BudgetMicroUSD) / 1e6, BudgetTokens: l.BudgetTokens, BudgetPeriod: l.BudgetPeriod})
		}
		return writeJSON(stdout, rows)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tUSERNAME\tROLE\tSTATE\tMODELS\tLIMITS")
	for _, u := range users {
		state := "active"
		if u.Disabled {
			state = "disabled"
		}
		models := "all"
		if len(u.Models) > 0 {
			models = strings.Join(u.Models, ",")
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", u.ID, u.Username, u.Role, state, models, limitsText(u.Limits))
	}
	return tw.Flush()
}

// limitsText is a user's limits in one cell: "5 rpm, $2.50/month", or "none".
func limitsText(l store.KeyLimits) string {
	var parts []string
	add := func(v int64, unit string) {
		if v > 0 {
			parts = append(parts, strconv.FormatInt(v, 10)+" "+unit)
		}
	}
	add(l.RPM, "rpm")
	add(l.TPM, "tpm")
	add(l.MaxParallel, "parallel")
	if l.BudgetMicroUSD > 0 {
		parts = append(parts, fmt.Sprintf("$%.2f/%s", float64(l.BudgetMicroUSD)/1e6, periodText(l.BudgetPeriod)))
	}
	if l.BudgetTokens > 0 {
		parts = append(parts, fmt.Sprintf("%d tokens/%s", l.BudgetTokens, periodText(l.BudgetPeriod)))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// updateUser serves `users update NAME_OR_ID [--rpm N ...] [--models m1,m2]`. Unlike
// `keys update`, only the flags given change (0 removes a limit, --models "" allows every
// model): limits and models are set together here, and setting one must not wipe the other.
func updateUser(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("users update", stderr)
	lim := limitFlags(fs)
	models := fs.String("models", "", `comma-separated model allow-list for all the user's keys ("": every model)`)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("users update needs exactly one user name or ID")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if len(set) == 0 {
		return usagef("users update: nothing to change; give limit flags or --models")
	}
	given, err := lim.limits("users update")
	if err != nil {
		return err
	}
	return withStore(ctx, stderr, false, func(st *store.Store) error {
		u, err := findUser(ctx, st, pos[0])
		if err != nil {
			return err
		}
		l := u.Limits
		for name, pair := range map[string][2]*int64{
			"rpm": {&l.RPM, &given.RPM}, "tpm": {&l.TPM, &given.TPM}, "max-parallel": {&l.MaxParallel, &given.MaxParallel},
			"budget": {&l.BudgetMicroUSD, &given.BudgetMicroUSD}, "budget-tokens": {&l.BudgetTokens, &given.BudgetTokens},
		} {
			if set[name] {
				*pair[0] = *pair[1]
			}
		}
		if set["budget-period"] {
			l.BudgetPeriod = *lim.period
		}
		if l.BudgetPeriod == "" && (l.BudgetMicroUSD > 0 || l.BudgetTokens > 0) {
			l.BudgetPeriod = "total"
		}
		upd := store.UserUpdate{Limits: &l}
		if set["models"] {
			m := splitList(*models)
			upd.Models = &m
		}
		out, err := st.UpdateUser(ctx, u.ID, upd, nil)
		if err != nil {
			return err
		}
		ms := "all"
		if len(out.Models) > 0 {
			ms = strings.Join(out.Models, ",")
		}
		fmt.Fprintf(stdout, "updated user %s (ID %d): limits %s; models %s\n", out.Username, out.ID, limitsText(out.Limits), ms)
		return nil
	})
}

// findUser resolves a user name (case-insensitive) or, failing that, a numeric ID.
func findUser(ctx context.Context, st *store.Store, ref string) (store.User, error) {
	u, err := st.UserByName(ctx, ref)
	if err == nil || !errors.Is(err, store.ErrNotFound) {
		return u, err
	}
	if id, perr := strconv.ParseInt(ref, 10, 64); perr == nil && id > 0 {
		u, err = st.User(ctx, id)
		if err == nil || !errors.Is(err, store.ErrNotFound) {
			return u, err
		}
	}
	return store.User{}, fmt.Errorf("no user named or numbered %q (see users list)", ref)
}
