package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// Per-user limits: the same six columns as api_keys (migration 0008), shared by all of a
// user's keys. Workers read them with the keys (ListAPIKeys), and the users_limits_au
// trigger bumps the keys change counter, so an edit reaches every worker like a key edit.

const userLimitSets = `rpm = :rpm, tpm = :tpm, max_parallel = :par,
budget_micro_usd = :bmu, budget_tokens = :btok, budget_period = :period`

// addLimitArgs sets the named parameters of userLimitSets: 0 (or less) stores NULL.
func addLimitArgs(args map[string]any, l KeyLimits) {
	var period any
	if l.BudgetPeriod != "" {
		period = l.BudgetPeriod
	}
	args[":rpm"] = nullPositive(l.RPM)
	args[":tpm"] = nullPositive(l.TPM)
	args[":par"] = nullPositive(l.MaxParallel)
	args[":bmu"] = nullPositive(l.BudgetMicroUSD)
	args[":btok"] = nullPositive(l.BudgetTokens)
	args[":period"] = period
}

// checkLimits rejects what the column CHECK would, with a readable error.
func checkLimits(l KeyLimits) error {
	switch l.BudgetPeriod {
	case "", "day", "month", "total":
		return nil
	}
	return fmt.Errorf("invalid budget period %q: want day, month or total", l.BudgetPeriod)
}

// joinModels is a model allow-list as stored: trimmed, empty names dropped,
// comma-separated (so a name containing a comma is refused).
func joinModels(models []string) (string, error) {
	clean := make([]string, 0, len(models))
	for _, m := range models {
		m = strings.TrimSpace(m)
		if m == "" {
			continue
		}
		if strings.Contains(m, ",") {
			return "", fmt.Errorf("invalid model name %q", m)
		}
		clean = append(clean, m)
	}
	return strings.Join(clean, ","), nil
}

// SetUserLimits replaces user id's limits; ErrNotFound when there is no such user.
func (s *Store) SetUserLimits(ctx context.Context, id int64, l KeyLimits) error {
	if err := checkLimits(l); err != nil {
		return fmt.Errorf("store: set limits of user %d: %w", id, err)
	}
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		args := map[string]any{":id": id, ":now": time.Now().Unix()}
		addLimitArgs(args, l)
		return execOne(conn, "UPDATE users SET "+userLimitSets+", updated_at = :now WHERE id = :id",
			&sqlitex.ExecOptions{Named: args})
	})
	if err != nil {
		return fmt.Errorf("store: set limits of user %d: %w", id, err)
	}
	return nil
}
