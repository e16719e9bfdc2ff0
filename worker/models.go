package worker

import (
	"time"

	"github.com/valyala/fasthttp"
)

// models answers GET /v1/models with the models this key may use: the routing
// table's named models, or the key's allow-list when it has one, less the models
// the key's user may not use. Wildcard
// upstreams accept any name, so only allow-listed names are listed for them.
func (w *Worker) models(ctx *fasthttp.RequestCtx) {
	key, res := w.keys.Load().authenticate(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization), time.Now())
	if res != authOK {
		writeError(ctx, fasthttp.StatusUnauthorized, "invalid_request_error", res.code(), res.message())
		return
	}
	table := w.routes.Load()
	b := make([]byte, 0, 512)
	b = append(b, `{"object":"list","data":[`...)
	names := table.Models()
	if key.models != nil {
		// An allow-listed model is listed when something serves it, including a
		// wildcard upstream.
		names = key.models.list
	} else if key.userModels != nil {
		names = key.userModels.list
	}
	first := true
	for _, m := range names {
		if table.Lookup(m) == nil || !key.allowsName(m) {
			continue
		}
		owner := "llm-proxy"
		if p := table.Lookup(m); p != nil && len(p.Deployments()) > 0 {
			owner = p.Deployments()[0].Upstream.Name
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, `{"id":`...)
		b = appendJSONString(b, m)
		b = append(b, `,"object":"model","created":0,"owned_by":`...)
		b = appendJSONString(b, owner)
		b = append(b, '}')
	}
	b = append(b, "]}"...)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}
