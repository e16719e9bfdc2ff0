package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// ClusterStatus is every worker and the primary, as `llm-proxy status`, the worker's
// GET /api/workers and the admin's workers page show them (one shape, one builder).
type ClusterStatus struct {
	Workers []WorkerStatus `json:"workers"`
	Primary PrimaryStatus  `json:"primary"`
}

// WorkerStatus is one heartbeat row for display.
type WorkerStatus struct {
	ID      string  `json:"id"`
	Slot    int     `json:"slot"`
	PID     int     `json:"pid"`
	Role    string  `json:"role"`
	Started string  `json:"started"`
	BeatAge float64 `json:"last_beat_age_seconds"`
	Version string  `json:"version"`
	// Stats is the worker's own heartbeat snapshot, passed through as JSON.
	Stats json.RawMessage `json:"stats"`
}

// PrimaryStatus is the lease row for display.
type PrimaryStatus struct {
	Holder string `json:"holder"` // worker id; "" while no primary holds the lease
	PID    int    `json:"pid"`
	Epoch  int64  `json:"epoch"`
	Since  string `json:"since,omitempty"`
}

// Status reads the workers table and the lease; now is the reference for beat ages.
func (s *Store) Status(ctx context.Context, now time.Time) (ClusterStatus, error) {
	var (
		rows  []WorkerRow
		lease Lease
	)
	err := s.read(ctx, func(conn *sqlite.Conn) (err error) {
		// One read transaction: read apart, a takeover committed between the two reads
		// would show a holder whose row still says "worker", or a primary row next to a
		// lease naming another worker.
		defer sqlitex.Transaction(conn)(&err)
		if rows, err = readWorkers(conn); err != nil {
			return err
		}
		lease, err = readLease(conn)
		return err
	})
	if err != nil {
		return ClusterStatus{}, fmt.Errorf("store: read status: %w", err)
	}
	out := ClusterStatus{Workers: make([]WorkerStatus, 0, len(rows))}
	for _, r := range rows {
		stats := json.RawMessage(r.Stats)
		if !json.Valid(stats) {
			// A row written by another version: show the text rather than fail.
			stats, _ = json.Marshal(r.Stats)
		}
		out.Workers = append(out.Workers, WorkerStatus{
			ID: r.ID, Slot: r.Slot, PID: r.PID, Role: r.Role,
			Started: r.StartedAt.UTC().Format(time.RFC3339),
			BeatAge: max(0, now.Sub(r.BeatAt).Round(time.Second).Seconds()),
			Version: r.Version,
			Stats:   stats,
		})
	}
	out.Primary = PrimaryStatus{Holder: lease.Holder, PID: lease.PID, Epoch: lease.Epoch}
	if lease.Holder != "" && lease.Since.Unix() > 0 {
		out.Primary.Since = lease.Since.UTC().Format(time.RFC3339)
	}
	return out, nil
}

// readWorkers lists every worker row on conn, by slot then id.
func readWorkers(conn *sqlite.Conn) ([]WorkerRow, error) {
	var out []WorkerRow
	err := sqlitex.Execute(conn, `SELECT id, slot, pid, started_at, beat_at, role, version, stats
		FROM workers ORDER BY slot, id`, &sqlitex.ExecOptions{
		ResultFunc: func(st *sqlite.Stmt) error {
			out = append(out, WorkerRow{
				ID: st.ColumnText(0), Slot: st.ColumnInt(1), PID: st.ColumnInt(2),
				StartedAt: time.Unix(st.ColumnInt64(3), 0), BeatAt: time.Unix(st.ColumnInt64(4), 0),
				Role: st.ColumnText(5), Version: st.ColumnText(6), Stats: st.ColumnText(7),
			})
			return nil
		}})
	return out, err
}
