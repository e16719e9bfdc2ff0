package store

import (
	"context"
	"encoding/json"
	"time"
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
	rows, err := s.Workers(ctx)
	if err != nil {
		return ClusterStatus{}, err
	}
	lease, err := s.Lease(ctx)
	if err != nil {
		return ClusterStatus{}, err
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
