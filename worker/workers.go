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

// The answer of GET /api/workers has the shape of `llm-proxy status`.
type (
	workersJSON = store.ClusterStatus
	workerJSON  = store.WorkerStatus
	primaryJSON = store.PrimaryStatus
)

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
	out, err := w.deps.Store.Status(rctx, now)
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
