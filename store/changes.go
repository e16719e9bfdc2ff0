package store

import (
	"context"
	"fmt"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// Generations are the change_counters values. Triggers bump a counter on every insert,
// update or delete of its tables, so a poller that sees a value change reloads just that
// table, in any process, whoever made the edit.
type Generations struct {
	Keys      int64 // api_keys
	Upstreams int64 // upstreams and deployments
	Settings  int64 // settings
	Health    int64 // upstream_health (a flip of an upstream's healthy flag)
	Prices    int64 // prices
}

// Generations reads all counters (routes count as upstreams) in one statement; workers call it every 250 ms.
func (s *Store) Generations(ctx context.Context) (Generations, error) {
	var g Generations
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, "SELECT name, gen FROM change_counters", &sqlitex.ExecOptions{
			ResultFunc: func(stmt *sqlite.Stmt) error {
				switch stmt.ColumnText(0) {
				case "keys":
					g.Keys = stmt.ColumnInt64(1)
				case "upstreams":
					g.Upstreams = stmt.ColumnInt64(1)
				case "settings":
					g.Settings = stmt.ColumnInt64(1)
				case "health":
					g.Health = stmt.ColumnInt64(1)
				case "prices":
					g.Prices = stmt.ColumnInt64(1)
				}
				return nil
			},
		})
	})
	if err != nil {
		return Generations{}, fmt.Errorf("store: read generations: %w", err)
	}
	return g, nil
}
