package worker

import (
	"context"
	"encoding/json"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/store"
)

// workersReadTimeout bounds the two reads behind GET /api/workers: an admin page must answer
// (with 503) rather than hang while a frozen process holds the database.
const workersReadTimeout = 2 * time.Second

// workersJSON is the answer of GET /api/workers; it has the shape of `llm-proxy status`.
type workersJSON struct {
	Workers []workerJSON `json:"workers"`
	Primary primaryJSON  `json:"primary"`
}

type workerJSON struct {
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

type primaryJSON struct {
	Holder string `json:"holder"` // worker id; "" while no primary holds the lease
	PID    int    `json:"pid"`
	Epoch  int64  `json:"epoch"`
	Since  string `json:"since,omitempty"`
}

// workers answers GET /api/workers from the workers table and the lease row, so whichever
// worker answers, the caller sees every worker and the primary.
//
// Any valid client API key is accepted for now: this belongs behind admin auth, which
// comes with the admin issue; move the route there then.
func (w *Worker) workers(ctx *fasthttp.RequestCtx) {
	now := time.Now()
	if _, res := w.keys.Load().authenticate(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization), now); res != authOK {
		writeError(ctx, fasthttp.StatusUnauthorized, "invalid_request_error", res.code(), res.message())
		return
	}
	rctx, cancel := context.WithTimeout(context.Background(), workersReadTimeout)
	defer cancel()
	out, err := readWorkers(rctx, w.deps.Store, now)
	if err != nil {
		w.logger.Warn("GET /api/workers: reading the workers table failed", "error", err)
		writeError(ctx, fasthttp.StatusServiceUnavailable, "server_error", "database_unavailable",
			"The worker list could not be read from the database; try again.")
		return
	}
	b, err := json.Marshal(out)
	if err != nil {
		writeError(ctx, fasthttp.StatusInternalServerError, "server_error", "internal_error", "The gateway hit an internal error.")
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// readWorkers builds the answer; now is the reference for the beat ages.
func readWorkers(ctx context.Context, st *store.Store, now time.Time) (workersJSON, error) {
	rows, err := st.Workers(ctx)
	if err != nil {
		return workersJSON{}, err
	}
	lease, err := st.Lease(ctx)
	if err != nil {
		return workersJSON{}, err
	}
	out := workersJSON{Workers: make([]workerJSON, 0, len(rows))}
	for _, r := range rows {
		stats := json.RawMessage(r.Stats)
		if !json.Valid(stats) {
			// A row written by another version: show the text rather than fail the page.
			stats, _ = json.Marshal(r.Stats)
		}
		out.Workers = append(out.Workers, workerJSON{
			ID: r.ID, Slot: r.Slot, PID: r.PID, Role: r.Role,
			Started: r.StartedAt.UTC().Format(time.RFC3339),
			BeatAge: max(0, now.Sub(r.BeatAt).Round(time.Second).Seconds()),
			Version: r.Version,
			Stats:   stats,
		})
	}
	out.Primary = primaryJSON{Holder: lease.Holder, PID: lease.PID, Epoch: lease.Epoch}
	if lease.Holder != "" && lease.Since.Unix() > 0 {
		out.Primary.Since = lease.Since.UTC().Format(time.RFC3339)
	}
	return out, nil
}
