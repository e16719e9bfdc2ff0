package worker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/bytebufferpool"
	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/routing"
	"github.com/llm-proxy/llm-proxy/routing/provider/openai"
	"github.com/llm-proxy/llm-proxy/store/spool"
)

// endpoint is one proxied OpenAI API path.
type endpoint struct {
	name string // stored in request records
	path string // appended to the upstream's base URL
	// streamable endpoints honour "stream": true.
	streamable bool
}

var (
	endpointChat        = endpoint{"chat", "/chat/completions", true}
	endpointCompletions = endpoint{"completions", "/completions", true}
	endpointEmbeddings  = endpoint{"embeddings", "/embeddings", false}
)

// maxUpstreamBody bounds a buffered (non-streaming) upstream answer, so a broken
// upstream cannot make a worker buffer without limit.
const maxUpstreamBody = 64 << 20

// exchange is the per-request state, pooled so the hot path reuses its buffers.
type exchange struct {
	req     openai.Request
	body    []byte // the rewritten request body sent upstream
	rec     spool.Record
	line    []byte // the encoded spool record
	started time.Time
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
	key, res := w.keys.Load().authenticate(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization), now)
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

	body := ctx.PostBody()
	if err := openai.ScanRequest(body, &x.req); err != nil {
		w.reject(ctx, x, fasthttp.StatusBadRequest, "invalid_request_error", "invalid_request", err.Error(), classBadRequest)
		return
	}
	x.rec.Model = string(x.req.Model)
	stream := x.req.Stream && ep.streamable
	x.rec.Stream = stream
	if !key.allows(x.req.Model) {
		w.reject(ctx, x, fasthttp.StatusForbidden, "permission_error", "model_not_allowed",
			"This API key is not allowed to use the model '"+x.rec.Model+"'.", classForbidden)
		return
	}
	pool := w.routes.Load().Lookup(x.rec.Model)
	if pool == nil {
		w.reject(ctx, x, fasthttp.StatusNotFound, "invalid_request_error", "model_not_found",
			"The model '"+x.rec.Model+"' does not exist or you do not have access to it.", classUnknownModel)
		return
	}
	dep := pool.Pick(conversationKey(ctx, &x.req))
	x.rec.Upstream = dep.Upstream.Name
	x.rec.UpstreamModel = dep.UpstreamModel
	if x.rec.UpstreamModel == "" {
		x.rec.UpstreamModel = x.rec.Model
	}
	x.body = openai.AppendRewrite(x.body[:0], body, &x.req, dep.UpstreamModel, stream)

	w.forward(ctx, x, ep, dep, stream)
}

// reject answers a request that never reached an upstream, and records it.
func (w *Worker) reject(ctx *fasthttp.RequestCtx, x *exchange, status int, typ, code, msg, class string) {
	writeError(ctx, status, typ, code, msg)
	ctx.Response.Header.Set("X-Request-Id", x.rec.RequestID)
	x.rec.Status = status
	x.rec.ErrorClass = class
	w.finish(x)
}

// finish appends the request record to the spool and returns x to its pool. It
// runs before the last bytes of the response are handed to the client, so a
// completed request always has its record.
func (w *Worker) finish(x *exchange) {
	x.rec.LatencyUs = time.Since(x.started).Microseconds()
	x.line = spool.AppendRecord(x.line[:0], &x.rec)
	if err := w.deps.Spool.Append(x.line); err != nil {
		w.logger.Error("append request record", "request_id", x.rec.RequestID, "error", err)
	}
	x.rec = spool.Record{}
	w.inFlight.Add(-1)
	w.served.Add(1)
	if cap(x.body) > 1<<20 {
		x.body = make([]byte, 0, 4096) // do not keep one huge request's buffer forever
	}
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

// forward sends the rewritten request to dep and relays the answer.
func (w *Worker) forward(ctx *fasthttp.RequestCtx, x *exchange, ep endpoint, dep *routing.Deployment, stream bool) {
	upCtx, cancel := context.WithCancel(context.Background())
	watch := watchDisconnect(ctx.Conn(), cancel)

	hreq, err := http.NewRequestWithContext(upCtx, http.MethodPost, dep.Upstream.BaseURL+ep.path, bytes.NewReader(x.body))
	if err != nil {
		watch.stop()
		cancel()
		w.reject(ctx, x, fasthttp.StatusBadGateway, "upstream_error", "upstream_unreachable",
			"The upstream '"+dep.Upstream.Name+"' has an invalid base URL.", classUnreachable)
		return
	}
	hreq.Header = http.Header{
		"Content-Type": {"application/json"},
		"User-Agent":   {"llm-proxy/" + w.deps.Version},
	}
	if dep.Upstream.APIKey != "" {
		hreq.Header["Authorization"] = []string{"Bearer " + dep.Upstream.APIKey}
	}
	if stream {
		hreq.Header["Accept"] = []string{"text/event-stream"}
	} else {
		hreq.Header["Accept"] = []string{"application/json"}
	}

	dep.Begin()
	resp, err := w.client.Do(hreq)
	if err != nil {
		dep.End()
		watch.stop()
		cancel()
		w.upstreamFailed(ctx, x, dep, err, watch.gone())
		return
	}
	x.rec.TtfbUs = time.Since(x.started).Microseconds()
	ctx.Response.Header.Set("X-LLM-Proxy-Upstream", dep.Upstream.Name)

	if stream && resp.StatusCode == http.StatusOK && isEventStream(resp.Header.Get("Content-Type")) {
		copyResponseHeaders(ctx, resp)
		ctx.SetStatusCode(resp.StatusCode)
		// The stream writer runs after this handler returns and must not touch ctx;
		// the disconnect watch already holds the client socket it needs.
		ctx.SetBodyStreamWriter(func(bw *bufio.Writer) {
			defer dep.End()
			defer cancel()
			defer watch.stop()
			w.pumpStream(bw, resp, x, watch)
		})
		return
	}

	defer dep.End()
	defer cancel()
	defer watch.stop()
	buf := bytebufferpool.Get()
	_, err = buf.ReadFrom(io.LimitReader(resp.Body, maxUpstreamBody))
	resp.Body.Close()
	if err != nil {
		bytebufferpool.Put(buf)
		w.upstreamFailed(ctx, x, dep, err, watch.gone())
		return
	}
	copyResponseHeaders(ctx, resp)
	ctx.SetStatusCode(resp.StatusCode)
	ctx.SetBody(buf.B)
	x.rec.Status = resp.StatusCode
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if u, ok := openai.ParseUsage(buf.B); ok {
			x.rec.PromptTokens, x.rec.CompletionTokens = u.PromptTokens, u.CompletionTokens
		}
	} else {
		x.rec.ErrorClass = classUpstream
	}
	bytebufferpool.Put(buf)
	w.finish(x)
}

// upstreamFailed answers a request whose upstream call failed before a response.
func (w *Worker) upstreamFailed(ctx *fasthttp.RequestCtx, x *exchange, dep *routing.Deployment, err error, clientGone bool) {
	var netErr net.Error
	switch {
	case clientGone:
		// Nobody is listening; record it the way nginx does.
		x.rec.Status = statusClientClosed
		x.rec.ErrorClass = classClientClosed
		ctx.SetConnectionClose()
		ctx.SetStatusCode(statusClientClosed)
		w.finish(x)
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()):
		w.logger.Warn("upstream timeout", "upstream", dep.Upstream.Name, "request_id", x.rec.RequestID, "error", err)
		w.reject(ctx, x, fasthttp.StatusGatewayTimeout, "upstream_error", "upstream_timeout",
			"The upstream '"+dep.Upstream.Name+"' did not answer in time.", classTimeout)
	default:
		w.logger.Warn("upstream unreachable", "upstream", dep.Upstream.Name, "request_id", x.rec.RequestID, "error", err)
		w.reject(ctx, x, fasthttp.StatusBadGateway, "upstream_error", "upstream_unreachable",
			"The upstream '"+dep.Upstream.Name+"' could not be reached.", classUnreachable)
	}
}

func isEventStream(ct string) bool {
	return len(ct) >= len("text/event-stream") && ct[:len("text/event-stream")] == "text/event-stream"
}

// hopHeaders are never relayed from an upstream (RFC 9110 section 7.6.1), nor are
// headers that fasthttp sets itself or that would let an upstream set cookies on
// the gateway's origin.
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Transfer-Encoding": true,
	"Te": true, "Trailer": true, "Upgrade": true, "Content-Length": true, "Set-Cookie": true,
	"Date": true, "Server": true, "Content-Encoding": true, "Alt-Svc": true,
}

func copyResponseHeaders(ctx *fasthttp.RequestCtx, resp *http.Response) {
	for k, vs := range resp.Header {
		if hopHeaders[k] {
			continue
		}
		if k == "X-Request-Id" {
			// The gateway's own X-Request-Id names the record; keep the provider's
			// id too, since support desks ask for it.
			k = "X-Upstream-Request-Id"
		}
		for _, v := range vs {
			ctx.Response.Header.Add(k, v)
		}
	}
}

var (
	dataPrefix = []byte("data:")
	doneData   = []byte("[DONE]")
	usageKey   = []byte(`"usage"`)
)

// pumpStream relays an upstream SSE body to the client, flushing whenever the
// upstream has nothing more buffered so each chunk leaves as soon as it arrives.
// It records usage, strips the usage-only chunk the client did not ask for, and
// writes the request record before the final [DONE] reaches the client.
func (w *Worker) pumpStream(bw *bufio.Writer, resp *http.Response, x *exchange, watch *disconnectWatch) {
	// After finish(x) on [DONE], x belongs to the pool again: nothing below may touch it.
	defer resp.Body.Close()
	br := readerGet(resp.Body)
	defer readerPut(br)
	stripUsage := !x.req.IncludeUsage
	x.rec.Status = http.StatusOK
	recorded, skipBlank, clientGone := false, false, false
	var readErr error
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 && !clientGone {
			forward := true
			if skipBlank && len(bytes.TrimSpace(line)) == 0 {
				forward, skipBlank = false, false
			} else if !recorded && bytes.HasPrefix(line, dataPrefix) && err != bufio.ErrBufferFull {
				data := bytes.TrimSpace(line[len(dataPrefix):])
				switch {
				case bytes.Equal(data, doneData):
					w.finish(x)
					recorded = true
				case bytes.Contains(data, usageKey):
					if u, ok := openai.ParseUsage(data); ok {
						x.rec.PromptTokens, x.rec.CompletionTokens = u.PromptTokens, u.CompletionTokens
						if stripUsage && openai.IsUsageOnlyChunk(data) {
							forward, skipBlank = false, true
						}
					}
				}
			}
			if forward {
				if _, werr := bw.Write(line); werr != nil {
					clientGone = true
				}
			}
		}
		if err != nil && err != bufio.ErrBufferFull {
			if err != io.EOF {
				readErr = err
			}
			break
		}
		if clientGone {
			break
		}
		if br.Buffered() == 0 {
			if ferr := bw.Flush(); ferr != nil {
				clientGone = true
				break
			}
		}
	}
	if recorded {
		_ = bw.Flush()
		return
	}
	switch {
	case clientGone || watch.gone():
		x.rec.Status = statusClientClosed
		x.rec.ErrorClass = classClientClosed
		w.finish(x)
	default:
		// The upstream ended the stream without [DONE]: tell the client with an
		// error event instead of pretending the answer was complete.
		x.rec.Status = http.StatusBadGateway
		x.rec.ErrorClass = classStreamBroken
		msg := "The upstream closed the stream before it was complete."
		if readErr != nil {
			w.logger.Warn("upstream stream broken", "upstream", x.rec.Upstream, "request_id", x.rec.RequestID, "error", readErr)
		}
		w.finish(x)
		var b []byte
		b = append(b, "data: "...)
		b = appendErrorJSON(b, "upstream_error", "stream_broken", msg)
		b = append(b, "\n\ndata: [DONE]\n\n"...)
		_, _ = bw.Write(b)
		_ = bw.Flush()
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
