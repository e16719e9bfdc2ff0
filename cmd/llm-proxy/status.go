package main

import (
	"context"
	"encoding/json"
	"io"
	"time"

	"github.com/llm-proxy/llm-proxy/store"
)

// statusJSON is the output of `llm-proxy status`. It is read from the database, so it works
// from any shell while the gateway runs.
type statusJSON struct {
	Workers []workerStatusJSON `json:"workers"`
	Primary leaseJSON          `json:"primary"`
}

type workerStatusJSON struct {
	ID       string  `json:"id"`
	Slot     int     `json:"slot"`
	PID      int     `json:"pid"`
	Role     string  `json:"role"`
	Started  string  `json:"started"`
	LastBeat float64 `json:"last_beat_age_seconds"`
	Version  string  `json:"version"`
	// Stats is the worker's own snapshot (requests served and friends), passed through.
	Stats json.RawMessage `json:"stats"`
}

type leaseJSON struct {
	Holder string `json:"holder"` // worker id; "" when no primary holds the lease
	PID    int    `json:"pid"`
	Epoch  int64  `json:"epoch"`
	Since  string `json:"since,omitempty"`
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", stderr)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("status: unexpected argument %q", pos[0])
	}
	return withStore(ctx, stderr, false, func(st *store.Store) error {
		s, err := readStatus(ctx, st, time.Now())
		if err != nil {
			return err
		}
		return writeJSON(stdout, s)
	})
}

func readStatus(ctx context.Context, st *store.Store, now time.Time) (statusJSON, error) {
	rows, err := st.Workers(ctx)
	if err != nil {
		return statusJSON{}, err
	}
	lease, err := st.Lease(ctx)
	if err != nil {
		return statusJSON{}, err
	}
	out := statusJSON{Workers: make([]workerStatusJSON, 0, len(rows))}
	for _, r := range rows {
		stats := json.RawMessage(r.Stats)
		if !json.Valid(stats) {
			stats, _ = json.Marshal(r.Stats)
		}
		out.Workers = append(out.Workers, workerStatusJSON{
			ID: r.ID, Slot: r.Slot, PID: r.PID, Role: r.Role,
			Started:  r.StartedAt.UTC().Format(time.RFC3339),
			LastBeat: max(0, now.Sub(r.BeatAt).Round(time.Second).Seconds()),
			Version:  r.Version,
			Stats:    stats,
		})
	}
	out.Primary = leaseJSON{Holder: lease.Holder, PID: lease.PID, Epoch: lease.Epoch}
	if lease.Holder != "" && lease.Since.Unix() > 0 {
		out.Primary.Since = lease.Since.UTC().Format(time.RFC3339)
	}
	return out, nil
}
