package worker

import (
	"bufio"
	"bytes"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/routing"
	"github.com/llm-proxy/llm-proxy/routing/provider/anthropic"
	"github.com/llm-proxy/llm-proxy/routing/provider/openai"
	"github.com/llm-proxy/llm-proxy/store/spool"
	"github.com/llm-proxy/llm-proxy/worker/limits"
	"github.com/llm-proxy/llm-proxy/worker/otlp"
)

// endpoint is one proxied OpenAI API path.
type endpoint struct {
	name string // stored in request records
	path string // appended to the upstream's base URL
	// streamable endpoints honour "stream": true.
	streamable bool
	// inbound: the client speaks Anthropic's Messages API; the request is turned
	// into an OpenAI chat request and every answer back into Anthropic's shape.
	inbound bool
}

var (
	endpointChat        = endpoint{"chat", "/chat/completions", true, false}
	endpointCompletions = endpoint{"completions", "/completions", true, false}
	endpointEmbeddings  = endpoint{"embeddings", "/embeddings", false, false}
	endpointMessages    = endpoint{"messages", "/chat/completions", true, true}
)

// maxUpstreamBody bounds a buffered (non-streaming) upstream answer, so a broken
// upstream cannot make a worker buffer without limit.
const maxUpstreamBody = 64 << 20

// exchange is the per-request state, pooled so the hot path reuses its buffers.
type exchange struct {
	req  openai.Request
	body []byte // the rewritten request body sent upstream
	rec  spool.Record
	line []byte // the encoded spool record
	// attempts is the JSON array of upstream attempts being built for the record.
	attempts []byte
	// ticket is the limiter's reservation when admitted is set; hdr is scratch
	// space for rate-limit header values.
	ticket   limits.Ticket
	admitted bool
	hdr      []byte
	// inbound converts answers for /v1/messages clients; nil otherwise.
	inbound *anthropic.Inbound
	// estimated: the token counts were computed by the gateway.
	estimated bool
	cache     cacheStep
	started   time.Time
	// traceparent is the client's W3C traceparent, passed upstream; spanCtx is the
	// request span's identity whenever tracing is on, span the span itself when the
	// request is sampled (tracing.go).
	traceparent []byte
	span        *otlp.Span
	spanCtx     traceContext
	// bodies: this request's bodies are being captured for the body log (bodylog.go).
	bodies              bool
	reqBody, respBody   []byte
	reqTrunc, respTrunc bool
	// streamText keeps a pass-through stream's chunks until its usage is known
	// (estimate.go).
	streamText []byte
}

var exchangePool = sync.Pool{New: func() any { return &exchange{body: make([]byte, 0, 4096)} }}

func (w *Worker) proxy(ep endpoint) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) { w.serveProxy(ctx, ep) }
}

func (w *Worker) newRequestID() string {
	n := w.reqSeq.Add(1)
	var b [40]byte
	out := append(b[:0], w.reqPrefix...)
	out = strconv.AppendUint(out, n, 36)
	return string(out)
}

func (w *Worker) serveProxy(ctx *fasthttp.RequestCtx, ep endpoint) {
	now := time.Now()
	keys := w.keys.Load()
	key, res := keys.authenticate(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization), now)
	if ep.inbound && res == authMissing {
		key, res = keys.authenticateKey(ctx.Request.Header.Peek("x-api-key"), now)
	}
	if res != authOK {
		// Refused keys are not recorded: a flood of bad keys must not turn into
		// database writes.
		writeError(ctx, fasthttp.StatusUnauthorized, "invalid_request_error", res.code(), res.message())
		return
	}

	x := exchangePool.Get().(*exchange)
	w.inFlight.Add(1)
	x.started = now
	x.rec = spool.Record{
		RequestID: w.newRequestID(),
		TsMs:      now.UnixMilli(),
		Worker:    w.deps.Slot,
		KeyID:     key.id,
		Endpoint:  ep.name,
	}
	ctx.Response.Header.Set("X-Request-Id", x.rec.RequestID)
	keepTraceparent(ctx, x)
	w.tracing.startRequest(ctx, x, ep.name)

	body := ctx.PostBody()
	w.captureRequest(x, key, body)
	if ep.inbound {
		x.inbound = &anthropic.Inbound{}
		chat, _, _, err := x.inbound.Request(body)
		if err != nil {
			w.reject(ctx, x, fasthttp.StatusBadRequest, "invalid_request_error", "invalid_request", err.Error(), classBadRequest)
			return
		}
		body = chat
	}
	if err := openai.ScanRequest(body, &x.req); err != nil {
		w.reject(ctx, x, fasthttp.StatusBadRequest, "invalid_request_error", "invalid_request", err.Error(), classBadRequest)
		return
	}
	x.rec.Model = string(x.req.Model)
	stream := x.req.Stream && ep.streamable
	x.rec.Stream = stream
	if !key.allows(x.req.Model) || !key.userAllows(x.req.Model) {
		w.reject(ctx, x, fasthttp.StatusForbidden, "permission_error", "model_not_allowed",
			"This API key is not allowed to use the model '"+x.rec.Model+"'.", classForbidden)
		return
	}
	w.routeSemantic(ctx, x, ep, body) // a semantic route rewrites x.rec.Model to its choice
	pool := w.routes.Load().Lookup(x.rec.Model)
	if pool == nil {
		w.reject(ctx, x, fasthttp.StatusNotFound, "invalid_request_error", "model_not_found",
			"The model '"+x.rec.Model+"' does not exist or you do not have access to it.", classUnknownModel)
		return
	}
	if !w.admit(ctx, x, key, body) {
		return
	}
	if w.cacheLookup(ctx, x, key, ep, body) {
		return
	}
	w.dispatch(ctx, x, ep, pool, body, stream)
}

// reject answers a request that never reached an upstream, and records it.
func (w *Worker) reject(ctx *fasthttp.RequestCtx, x *exchange, status int, typ, code, msg, class string) {
	writeError(ctx, status, typ, code, msg)
	w.rejected(ctx, x, status, class)
}

// rejected records a refusal whose error answer is already written; x goes back
// to its pool, so nothing may touch it afterwards.
func (w *Worker) rejected(ctx *fasthttp.RequestCtx, x *exchange, status int, class string) {
	ctx.Response.Header.Set("X-Request-Id", x.rec.RequestID)
	w.captureResponse(x, ctx.Response.Body())
	x.rec.Status = status
	x.rec.ErrorClass = class
	w.finish(x)
}

// finish appends the request record to the spool and returns x to its pool. It
// runs before the last bytes of the response are handed to the client, so a
// completed request always has its record.
func (w *Worker) finish(x *exchange) {
	w.settle(x)
	x.rec.LatencyUs = time.Since(x.started).Microseconds()
	x.rec.TokensEstimated = x.estimated
	if len(x.attempts) > 0 {
		x.rec.Attempts = string(x.attempts)
		x.attempts = x.attempts[:0]
	}
	x.line = spool.AppendRecord(x.line[:0], &x.rec)
	if err := w.deps.Spool.Append(x.line); err != nil {
		w.logger.Error("append request record", "request_id", x.rec.RequestID, "error", err)
	}
	if w.deps.Metrics != nil {
		w.deps.Metrics.Observe(&x.rec)
	}
	w.writeBodies(x)
	w.tracing.endRequest(x)
	x.rec = spool.Record{}
	x.inbound, x.estimated = nil, false
	x.cache = cacheStep{}
	w.inFlight.Add(-1)
	w.served.Add(1)
	if cap(x.body) > 1<<20 {
		x.body = make([]byte, 0, 4096) // do not keep one huge request's buffer forever
	}
	if cap(x.streamText) > 1<<20 {
		x.streamText = nil
	}
	x.streamText = x.streamText[:0]
	exchangePool.Put(x)
}

// conversationKey identifies a conversation for conversation_hash routing: the
// X-Conversation-ID header, else the "user" field; 0 when neither is present.
func conversationKey(ctx *fasthttp.RequestCtx, r *openai.Request) uint64 {
	if v := ctx.Request.Header.Peek("X-Conversation-ID"); len(v) > 0 {
		return routing.ConversationKey(v)
	}
	if len(r.User) > 0 {
		return routing.ConversationKey(r.User)
	}
	return 0
}

func isEventStream(ct []byte) bool {
	return bytes.HasPrefix(ct, []byte("text/event-stream"))
}

// hopHeaders are never relayed from an upstream (RFC 9110 section 7.6.1), nor are
// headers that fasthttp sets itself or that would let an upstream set cookies on
// the gateway's origin.
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Transfer-Encoding": true,
	"Te": true, "Trailer": true, "Upgrade": true, "Content-Length": true, "Set-Cookie": true,
	"Date": true, "Server": true, "Content-Encoding": true, "Alt-Svc": true,
}

func copyResponseHeaders(ctx *fasthttp.RequestCtx, resp *fasthttp.Response) {
	ctx.Response.Header.SetContentTypeBytes(resp.Header.ContentType())
	for k, v := range resp.Header.All() {
		if hopHeaders[string(k)] || string(k) == fasthttp.HeaderContentType {
			continue
		}
		if string(k) == "X-Request-Id" {
			// The gateway's own X-Request-Id names the record; keep the provider's
			// id too, since support desks ask for it.
			ctx.Response.Header.AddBytesV("X-Upstream-Request-Id", v)
			continue
		}
		ctx.Response.Header.AddBytesKV(k, v)
	}
}

var readerPool sync.Pool

func readerGet(r io.Reader) *bufio.Reader {
	if br, ok := readerPool.Get().(*bufio.Reader); ok {
		br.Reset(r)
		return br
	}
	return bufio.NewReaderSize(r, 32<<10)
}

func readerPut(br *bufio.Reader) {
	br.Reset(nil)
	readerPool.Put(br)
}
