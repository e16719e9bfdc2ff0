package admin

import (
	"context"
	"strings"

	"github.com/llm-proxy/llm-proxy/routing"
	"github.com/llm-proxy/llm-proxy/routing/embed"
	"github.com/llm-proxy/llm-proxy/worker/upstream"
)

// Runtime is what the admin reads of the worker process serving it: state that lives in
// that worker's memory, not in the store. *worker.Worker implements it.
type Runtime interface {
	// Circuits is the worker's passive circuit and cool-down state of every deployment.
	// It is this worker's view only: each worker keeps its own circuits.
	Circuits() []routing.DeploymentCircuit
	// SemanticEmbedder embeds requests for semantic routing.
	SemanticEmbedder() embed.Embedder
	// ID is the worker's id in the workers table.
	ID() string
}

type runtimeBox struct{ rt Runtime }

// SetRuntime connects the serving worker (built after the admin, which it mounts).
func (a *Admin) SetRuntime(rt Runtime) {
	if rt == nil {
		a.runtime.Store(nil)
		return
	}
	a.runtime.Store(&runtimeBox{rt: rt})
}

func (a *Admin) rt() Runtime {
	if b := a.runtime.Load(); b != nil {
		return b.rt
	}
	return nil
}

// embedder is the embedder prompts are tried with: the worker's, else Deps.Embedder,
// else the lexical one workers fall back to.
func (a *Admin) embedder() embed.Embedder {
	if rt := a.rt(); rt != nil {
		if e := rt.SemanticEmbedder(); e != nil {
			return e
		}
	}
	if a.emb != nil {
		return a.emb
	}
	return embed.Lexical{}
}

// addressPolicy is the policy upstream base URLs must satisfy, resolved like the
// worker's (environment > settings table > default). An unreadable value allows public
// addresses only, as the worker's dialer does.
func (a *Admin) addressPolicy(ctx context.Context) upstream.AddressPolicy {
	v := a.allowPriv
	if v == "" && a.settings != nil {
		if list, err := a.settings.List(ctx); err == nil {
			for _, s := range list {
				if s.Name == "ALLOW_PRIVATE_UPSTREAMS" {
					v = s.Value
				}
			}
		}
	}
	p, err := upstream.ParsePolicy(v)
	if err != nil {
		return upstream.AddressPolicy{}
	}
	return p
}

// baseURLProblem checks raw with upstream.ValidateBaseURL; "" when it is acceptable.
func baseURLProblem(raw string, p upstream.AddressPolicy) string {
	if err := upstream.ValidateBaseURL(raw, p); err != nil {
		return strings.TrimPrefix(err.Error(), "upstream: ") + "."
	}
	return ""
}
