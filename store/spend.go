package store

import (
	"context"
	"fmt"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// SpendDelta is spend to add to (or, read back, the total of) one subject's period in
// the ledger. Subject is "key:<id>" or "user:<id>"; Period is "2025-11-25" (UTC day),
// "2025-11" (UTC month) or "total".
type SpendDelta struct {
	Subject string
	Period  string
	Micro   int64 // micro-USD
	Tokens  int64
}

const addSpendSQL = `INSERT INTO spend(subject, period_start, micro_usd, tokens, updated_at)
VALUES (:subject, :period, :micro, :tokens, :now)
ON CONFLICT(subject, period_start) DO UPDATE SET
    micro_usd = micro_usd + excluded.micro_usd,
    tokens = tokens + excluded.tokens,
    updated_at = excluded.updated_at`

// AddSpend adds one subject's spend to its period in the ledger.
func (s *Store) AddSpend(ctx context.Context, subject, period string, micro, tokens int64) error {
	return s.AddSpends(ctx, []SpendDelta{{Subject: subject, Period: period, Micro: micro, Tokens: tokens}})
}

// AddSpends adds a batch (a worker's last second of settled requests) in one transaction,
// so a flush is applied entirely or not at all.
func (s *Store) AddSpends(ctx context.Context, deltas []SpendDelta) error {
	if len(deltas) == 0 {
		return nil
	}
	now := time.Now().Unix()
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		stmt := conn.Prep(addSpendSQL)
		defer stmt.Reset() //nolint:errcheck // only matters after an error, which is returned
		for _, d := range deltas {
			if d.Subject == "" || d.Period == "" {
				return fmt.Errorf("subject and period must be set, got %q %q", d.Subject, d.Period)
			}
			stmt.SetText(":subject", d.Subject)
			stmt.SetText(":period", d.Period)
			stmt.SetInt64(":micro", d.Micro)
			stmt.SetInt64(":tokens", d.Tokens)
			stmt.SetInt64(":now", now)
			if _, err := stmt.Step(); err != nil {
				return err
			}
			if err := stmt.Reset(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: add spend: %w", err)
	}
	return nil
}

// Spend returns one subject's recorded spend in a period; zero when there is none.
func (s *Store) Spend(ctx context.Context, subject, period string) (micro, tokens int64, err error) {
	err = s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, "SELECT micro_usd, tokens FROM spend WHERE subject = :subject AND period_start = :period", &sqlitex.ExecOptions{
			Named: map[string]any{":subject": subject, ":period": period},
			ResultFunc: func(stmt *sqlite.Stmt) error {
				micro, tokens = stmt.ColumnInt64(0), stmt.ColumnInt64(1)
				return nil
			},
		})
	})
	if err != nil {
		return 0, 0, fmt.Errorf("store: read spend of %s: %w", subject, err)
	}
	return micro, tokens, nil
}

// SpendIn returns every subject's spend in the given periods (for example today, this
// month and "total"), for seeding the live counters at startup and for the admin.
func (s *Store) SpendIn(ctx context.Context, periods ...string) ([]SpendDelta, error) {
	var out []SpendDelta
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		stmt := conn.Prep("SELECT subject, micro_usd, tokens FROM spend WHERE period_start = :period ORDER BY subject")
		defer stmt.Reset() //nolint:errcheck // only matters after an error, which is returned
		for _, p := range periods {
			stmt.SetText(":period", p)
			for {
				row, err := stmt.Step()
				if err != nil {
					return err
				}
				if !row {
					break
				}
				out = append(out, SpendDelta{Subject: stmt.ColumnText(0), Period: p, Micro: stmt.ColumnInt64(1), Tokens: stmt.ColumnInt64(2)})
			}
			if err := stmt.Reset(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: read spend: %w", err)
	}
	return out, nil
}

// Price is one row of the prices table, in USD per million tokens.
type Price struct {
	Model         string
	InputPerMTok  float64
	OutputPerMTok float64
	UpdatedAt     time.Time
}

// Prices returns the stored prices ordered by model.
func (s *Store) Prices(ctx context.Context) ([]Price, error) {
	var out []Price
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, "SELECT model, input_per_mtok, output_per_mtok, updated_at FROM prices ORDER BY model", &sqlitex.ExecOptions{
			ResultFunc: func(stmt *sqlite.Stmt) error {
				out = append(out, Price{Model: stmt.ColumnText(0), InputPerMTok: stmt.ColumnFloat(1), OutputPerMTok: stmt.ColumnFloat(2), UpdatedAt: time.Unix(stmt.ColumnInt64(3), 0)})
				return nil
			},
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: read prices: %w", err)
	}
	return out, nil
}

// SetPrice stores (or replaces) a model's price.
func (s *Store) SetPrice(ctx context.Context, model string, inputPerMTok, outputPerMTok float64) error {
	if model == "" || inputPerMTok < 0 || outputPerMTok < 0 {
		return fmt.Errorf("store: set price: model must be set and prices not negative")
	}
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, `INSERT INTO prices(model, input_per_mtok, output_per_mtok, updated_at) VALUES (:model, :in, :out, :now)
ON CONFLICT(model) DO UPDATE SET input_per_mtok = excluded.input_per_mtok, output_per_mtok = excluded.output_per_mtok, updated_at = excluded.updated_at`, &sqlitex.ExecOptions{
			Named: map[string]any{":model": model, ":in": inputPerMTok, ":out": outputPerMTok, ":now": time.Now().Unix()},
		})
	})
	if err != nil {
		return fmt.Errorf("store: set price of %s: %w", model, err)
	}
	return nil
}

// DeletePrice removes a model's stored price, so its default (if any) applies again.
func (s *Store) DeletePrice(ctx context.Context, model string) error {
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, "DELETE FROM prices WHERE model = :model", &sqlitex.ExecOptions{
			Named: map[string]any{":model": model},
		})
	})
	if err != nil {
		return fmt.Errorf("store: delete price of %s: %w", model, err)
	}
	return nil
}
