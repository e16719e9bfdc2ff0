package worker

import (
	"github.com/llm-proxy/llm-proxy/routing"
	"github.com/llm-proxy/llm-proxy/routing/embed"
)

// The admin runs inside a worker but has no access to its memory; these methods are
// what it may read of it (wired with admin.SetRuntime). They describe this worker
// only: passive circuits are per worker process.

// Circuits returns this worker's passive circuit and cool-down state of every
// deployment in its current routing table.
func (w *Worker) Circuits() []routing.DeploymentCircuit {
	t := w.routes.Load()
	if t == nil {
		return nil
	}
	return t.Circuits(w.book.Now())
}

// SemanticEmbedder is the embedder this worker's semantic routes use, so a prompt
// tried in the admin is embedded exactly as a request would be.
func (w *Worker) SemanticEmbedder() embed.Embedder { return w.embedder() }

// ID is this worker's id in the workers table.
func (w *Worker) ID() string { return w.deps.WorkerID }
