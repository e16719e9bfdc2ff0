package worker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/valyala/bytebufferpool"
	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/cache"
	"github.com/llm-proxy/llm-proxy/routing"
	"github.com/llm-proxy/llm-proxy/routing/provider"
	"github.com/llm-proxy/llm-proxy/routing/provider/anthropic"
	"github.com/llm-proxy/llm-proxy/routing/provider/azure"
	"github.com/llm-proxy/llm-proxy/routing/provider/gemini"
	"github.com/llm-proxy/llm-proxy/routing/provider/openai"
	"github.com/llm-proxy/llm-proxy/worker/otlp"
	"github.com/llm-proxy/llm-proxy/worker/upstream"
)

// maxAttemptsPerModel bounds the attempts on one model's deployments before its
// fallback models are tried.
const maxAttemptsPerModel = 3

// attempt is one upstream call.
type attempt struct {
	dep     *routing.Deployment
	model   string // the model name sent upstream
	started time.Time
	cancel  context.CancelFunc

	req  *fasthttp.Request
	resp *fasthttp.Response
	// stream is the upstream body of a streaming call; br reads it for a
	// successful stream, whose first bytes were peeked within the first-byte timeout.
	stream *upstream.Stream
	br     *bufio.Reader
	// body holds a complete answer (or error body) read from a stream.
	body *bytebufferpool.ByteBuffer

	begun bool // counted in the deployment's in-flight total

	// tr translates for a non-OpenAI provider; nil on the pass-through path.
	tr    provider.Translator
	usage *provider.Usage // the translator's usage of a buffered answer
	// clientErr is set when the request cannot be expressed for the provider.
	clientErr string

	err        error
	outcome    routing.Outcome
	retryAfter time.Duration
	timedOut   atomic.Bool

	span *otlp.Span // the attempt's span when its request is sampled (tracing.go)
}

// ok reports an answer worth relaying as a success.
func (a *attempt) ok() bool {
	return a.err == nil && a.outcome.Status >= 200 && a.outcome.Status < 300
}

// answerBody is the complete body of a buffered answer.
func (a *attempt) answerBody() []byte {
	if a.body != nil {
		return a.body.B
	}
	return a.resp.Body()
}

// close releases everything the attempt holds; the attempt is not used afterwards.
func (a *attempt) close() {
	endAttempt(a)
	if a.br != nil {
		readerPut(a.br)
		a.br = nil
	}
	if a.stream != nil {
		_ = a.stream.Close()
		a.stream = nil
	}
	// The stream reads through resp, so resp is released only after it closed.
	if a.resp != nil {
		fasthttp.ReleaseResponse(a.resp)
		a.resp = nil
	}
	if a.req != nil {
		fasthttp.ReleaseRequest(a.req)
		a.req = nil
	}
	if a.body != nil {
		bytebufferpool.Put(a.body)
		a.body = nil
	}
	if a.begun {
		a.dep.End()
		a.begun = false
	}
	a.cancel()
}

// dispatch runs the attempt chain for one request: the model's deployments in the
// strategy's order (at most maxAttemptsPerModel), then each fallback model's,
// retrying only where routing.Retry allows and the retry budget has room, and
// relays the first success — or the last failure as the upstream gave it.
func (w *Worker) dispatch(ctx *fasthttp.RequestCtx, x *exchange, ep endpoint, pool *routing.Pool, body []byte, stream bool) {
	reqCtx, cancelReq := context.WithCancel(context.Background())
	watch := watchDisconnect(ctx.Conn(), cancelReq)
	// The chain deadline bounds the search for an answer, not the answer: it is
	// stopped once one starts, so a long stream is never cut by it.
	var chainExpired atomic.Bool
	chain := time.AfterFunc(w.cfg.RequestTimeout, func() { chainExpired.Store(true); cancelReq() })
	convKey := conversationKey(ctx, &x.req)
	table := w.routes.Load()
	w.budget.Request(w.book.Now())

	var last *attempt
	n := 0
	stop := false
	fallbacks := pool.Fallbacks()
	for fi := -1; fi < len(fallbacks) && !stop; fi++ {
		p, public := pool, x.rec.Model
		if fi >= 0 {
			public = fallbacks[fi]
			if p = table.Lookup(public); p == nil {
				continue
			}
		}
		var exclude uint64
		for tries := 0; tries < maxAttemptsPerModel; tries++ {
			now := w.book.Now()
			d := p.Next(convKey, now, exclude)
			if d == nil && n == 0 && fi == len(fallbacks)-1 {
				// Nothing in the whole chain looks available (every upstream failed
				// its health check, say). Trying beats refusing: checks can be wrong.
				d = pool.Pick(convKey)
			}
			if d == nil {
				break
			}
			exclude |= 1 << uint(d.Index())
			if n > 0 {
				if !w.budget.Allow(now) || !sleepCtx(reqCtx, routing.Backoff(n)) {
					stop = true
					break
				}
			}
			n++
			if last != nil {
				last.close()
				last = nil
			}
			a := w.try(reqCtx, x, ep, d, upstreamModel(d, public), body, stream, watch)
			if a.clientErr != "" {
				a.close()
				chain.Stop()
				cancelReq()
				watch.stop()
				w.reject(ctx, x, fasthttp.StatusBadRequest, "invalid_request_error", "unsupported_request", a.clientErr, classBadRequest)
				return
			}
			w.noteAttempt(x, a)
			st := d.State()
			st.Report(w.book.Now(), a.outcome.Failed())
			if a.outcome.Status == fasthttp.StatusTooManyRequests {
				st.CoolDown(now, max(a.retryAfter, time.Second))
			}
			if a.ok() {
				chain.Stop()
				w.relay(ctx, x, a, n, stream, cancelReq, watch)
				return
			}
			last = a
			if retry, _ := routing.Retry(a.outcome); !retry {
				stop = true
				break
			}
		}
	}
	chain.Stop()
	defer cancelReq()
	defer watch.stop()
	if last != nil && chainExpired.Load() && last.err != nil {
		last.outcome.Timeout = true
	}
	switch {
	case last == nil:
		w.reject(ctx, x, fasthttp.StatusServiceUnavailable, "upstream_error", "no_available_upstream",
			"No upstream is available for the model '"+x.rec.Model+"'.", classUnreachable)
		ctx.Response.Header.Set("X-LLM-Proxy-Attempts", "0")
	case last.err == nil:
		// The upstream's own error answer, status and body, as the client would
		// have had it without the gateway.
		defer last.close()
		w.relayBuffered(ctx, x, last)
		w.setAttemptHeaders(ctx, last, n)
	default:
		defer last.close()
		w.upstreamFailed(ctx, x, last)
		// After the answer is written: writing an error resets the headers.
		w.setAttemptHeaders(ctx, last, n)
	}
}

// upstreamModel is the model name sent to d for the public model asked for.
func upstreamModel(d *routing.Deployment, public string) string {
	if d.UpstreamModel != "" {
		return d.UpstreamModel
	}
	return public
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// try makes one attempt on d. It returns with the response headers read and, for
// a non-streaming success, the whole body; for a streaming success, the first
// bytes of the stream already in hand (within FirstByteTimeout). Anything short
// of that is a failed attempt whose outcome says whether another may follow.
func (w *Worker) try(reqCtx context.Context, x *exchange, ep endpoint, d *routing.Deployment, model string, body []byte, stream bool, watch *disconnectWatch) *attempt {
	// A stream attempt has its own cancel (its first-byte timeout, and closing it
	// ends the upstream stream); a buffered one just runs under the request's
	// context, which spares a child context per request on the fast path.
	actx, cancel := reqCtx, func() {}
	if stream {
		actx, cancel = context.WithCancel(reqCtx)
	}
	a := &attempt{dep: d, model: model, started: time.Now(), cancel: cancel}
	x.body = openai.AppendRewrite(x.body[:0], body, &x.req, model, stream)

	a.req = fasthttp.AcquireRequest()
	a.resp = fasthttp.AcquireResponse()
	req := a.req
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.Header.SetUserAgent(w.userAgent)
	if stream {
		req.Header.Set(fasthttp.HeaderAccept, "text/event-stream")
	} else {
		req.Header.Set(fasthttp.HeaderAccept, "application/json")
	}
	if a.tr = newTranslator(d.Upstream); a.tr == nil {
		req.SetRequestURI(d.Upstream.BaseURL + ep.path)
		if d.Upstream.APIKey != "" {
			req.Header.Set(fasthttp.HeaderAuthorization, d.Upstream.Bearer())
		}
		req.SetBodyRaw(x.body)
	} else {
		if ep.path != endpointChat.path {
			a.clientErr = "The upstream '" + d.Upstream.Name + "' (" + d.Upstream.Provider + ") serves chat completions only."
			return a
		}
		path, hdrs, tbody, err := a.tr.Request(x.body, model, stream)
		if err != nil {
			a.clientErr = err.Error()
			return a
		}
		req.SetRequestURI(d.Upstream.BaseURL + path)
		for k, v := range hdrs {
			req.Header.Set(k, v)
		}
		req.SetBodyRaw(tbody)
	}

	w.tracing.startAttempt(x, a, req)
	// In flight until close: a stream occupies the deployment until it ends.
	d.Begin()
	a.begun = true
	st, err := w.up.Do(actx, req, a.resp, stream)
	a.stream = st
	if err != nil {
		a.fail(err, watch, reqCtx.Err() != nil)
		return a
	}
	status := a.resp.StatusCode()
	a.outcome.Status = status
	if status == fasthttp.StatusTooManyRequests || status == fasthttp.StatusServiceUnavailable {
		a.retryAfter = parseRetryAfter(a.resp.Header.Peek(fasthttp.HeaderRetryAfter))
	}
	if !stream {
		a.translate(a.resp.Body())
		return a
	}
	if status == fasthttp.StatusOK && isEventStream(a.resp.Header.ContentType()) {
		// Hold the answer back until its first bytes arrive: until then another
		// deployment can still take over without the client noticing.
		t := time.AfterFunc(w.cfg.FirstByteTimeout, func() { a.timedOut.Store(true); cancel() })
		a.br = readerGet(st)
		_, err := a.br.Peek(1)
		t.Stop()
		if err != nil {
			a.fail(err, watch, reqCtx.Err() != nil)
		}
		return a
	}
	// A stream request answered without a stream (an error, usually): buffer it
	// to relay if nothing better comes.
	buf := bytebufferpool.Get()
	_, err = buf.ReadFrom(io.LimitReader(st, maxUpstreamBody))
	if err != nil {
		bytebufferpool.Put(buf)
		a.fail(err, watch, reqCtx.Err() != nil)
		return a
	}
	a.body = buf
	if a.tr != nil {
		a.body = nil
		a.translate(buf.B)
		bytebufferpool.Put(buf)
	}
	return a
}

// translate turns a buffered provider answer into OpenAI's shape (success or
// error body) when the attempt has a translator.
func (a *attempt) translate(body []byte) {
	if a.tr == nil {
		return
	}
	out := a.tr.Error(a.outcome.Status, body)
	if a.outcome.Status >= 200 && a.outcome.Status < 300 {
		o, u, err := a.tr.Response(body)
		if err != nil {
			// Unreadable answer: like a broken connection, another deployment may do better.
			a.err, a.outcome.Transport, a.outcome.Status = err, true, 0
			return
		}
		out, a.usage = o, &u
	}
	a.body = bytebufferpool.Get()
	a.body.B = append(a.body.B[:0], out...)
}

// newTranslator returns the adapter for a non-OpenAI provider, or nil for the
// OpenAI-compatible pass-through.
func newTranslator(u *routing.Upstream) provider.Translator {
	switch u.Provider {
	case "anthropic":
		return &anthropic.Translator{APIKey: u.APIKey}
	case "gemini":
		return &gemini.Translator{APIKey: u.APIKey}
	case "azure":
		return &azure.Translator{APIKey: u.APIKey}
	}
	return nil
}

// fail classifies an attempt's transport error.
// chainDone is set when the request's own context ended (the chain deadline, or
// the client leaving).
func (a *attempt) fail(err error, watch *disconnectWatch, chainDone bool) {
	a.err = err
	var netErr net.Error
	switch {
	case watch.gone():
		a.outcome.ClientGone = true
	case chainDone || a.timedOut.Load() || errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()):
		a.outcome.Timeout = true
	default:
		a.outcome.Transport = true
	}
	// The status, if any, no longer describes a usable answer.
	if a.outcome.Status >= 200 && a.outcome.Status < 300 {
		a.outcome.Status = 0
	}
}

// parseRetryAfter reads a Retry-After header in seconds (RFC 9110 section 10.2.3;
// the HTTP-date form is rare from APIs and treated as absent).
func parseRetryAfter(v []byte) time.Duration {
	if len(v) == 0 {
		return 0
	}
	s, err := strconv.Atoi(string(v))
	if err != nil || s < 0 {
		return 0
	}
	return min(time.Duration(s)*time.Second, 10*time.Minute)
}

// noteAttempt appends the attempt to the request record's attempt list.
func (w *Worker) noteAttempt(x *exchange, a *attempt) {
	x.rec.Upstream = a.dep.Upstream.Name
	x.rec.UpstreamModel = a.model
	x.rec.AttemptCount++
	if len(x.attempts) == 0 {
		x.attempts = append(x.attempts, '[')
	} else {
		x.attempts[len(x.attempts)-1] = ','
	}
	x.attempts = append(x.attempts, `{"upstream":`...)
	x.attempts = appendJSONString(x.attempts, a.dep.Upstream.Name)
	x.attempts = append(x.attempts, `,"model":`...)
	x.attempts = appendJSONString(x.attempts, a.model)
	x.attempts = append(x.attempts, `,"status":`...)
	x.attempts = strconv.AppendInt(x.attempts, int64(a.outcome.Status), 10)
	x.attempts = append(x.attempts, `,"error":`...)
	x.attempts = appendJSONString(x.attempts, attemptError(a))
	x.attempts = append(x.attempts, `,"latency_us":`...)
	x.attempts = strconv.AppendInt(x.attempts, time.Since(a.started).Microseconds(), 10)
	x.attempts = append(x.attempts, "}]"...)
}

func attemptError(a *attempt) string {
	switch {
	case a.outcome.ClientGone:
		return classClientClosed
	case a.outcome.Timeout:
		return classTimeout
	case a.outcome.Transport:
		return classUnreachable
	case a.outcome.Status >= 400:
		return classUpstream
	}
	return ""
}

func (w *Worker) setAttemptHeaders(ctx *fasthttp.RequestCtx, a *attempt, n int) {
	ctx.Response.Header.Set("X-LLM-Proxy-Upstream", a.dep.Upstream.Name)
	ctx.Response.Header.Set("X-LLM-Proxy-Attempts", strconv.Itoa(n))
}

// relay answers with a successful attempt: buffered, or as a stream.
func (w *Worker) relay(ctx *fasthttp.RequestCtx, x *exchange, a *attempt, n int, stream bool, cancelReq context.CancelFunc, watch *disconnectWatch) {
	x.rec.TtfbUs = time.Since(x.started).Microseconds()
	w.setAttemptHeaders(ctx, a, n)
	if a.br == nil {
		defer cancelReq()
		defer watch.stop()
		defer a.close()
		w.relayBuffered(ctx, x, a)
		return
	}
	copyResponseHeaders(ctx, a.resp)
	ctx.SetStatusCode(a.outcome.Status)
	if a.tr != nil || x.inbound != nil {
		ctx.Response.Header.SetContentType("text/event-stream")
	}
	// The stream writer runs after this handler returns and must not touch ctx;
	// the disconnect watch already holds the client socket it needs.
	ctx.SetBodyStreamWriter(func(bw *bufio.Writer) {
		defer cancelReq()
		defer watch.stop()
		defer a.close()
		if a.tr != nil || x.inbound != nil {
			w.pumpEvents(bw, x, a, watch)
			return
		}
		w.pumpStream(bw, x, a, watch)
	})
}

// relayBuffered writes a buffered upstream answer (success or error) and records it.
func (w *Worker) relayBuffered(ctx *fasthttp.RequestCtx, x *exchange, a *attempt) {
	copyResponseHeaders(ctx, a.resp)
	ctx.SetStatusCode(a.outcome.Status)
	x.rec.Status = a.outcome.Status
	body := a.answerBody()
	if a.tr != nil {
		// The provider's own headers (content type included) describe its body,
		// not the translated one.
		ctx.Response.Header.SetContentType("application/json")
	}
	if a.ok() {
		switch {
		case a.usage != nil:
			x.rec.PromptTokens, x.rec.CompletionTokens = a.usage.PromptTokens, a.usage.CompletionTokens
			x.estimated = a.usage.Estimated
		default:
			if u, ok := openai.ParseUsage(body); ok {
				x.rec.PromptTokens, x.rec.CompletionTokens = u.PromptTokens, u.CompletionTokens
			} else if a.outcome.Status == fasthttp.StatusOK {
				x.estimateUsage(body)
			}
		}
		if x.cache.on && a.outcome.Status == fasthttp.StatusOK {
			w.cacheStore(x, body)
		}
		if x.inbound != nil {
			out, err := x.inbound.Response(body)
			if err != nil {
				w.logger.Warn("translate answer for /v1/messages", "request_id", x.rec.RequestID, "error", err)
				out = anthropic.ErrorBody(fasthttp.StatusBadGateway, appendErrorJSON(nil, "upstream_error", "bad_answer", "The upstream answer could not be translated."))
				ctx.SetStatusCode(fasthttp.StatusBadGateway)
				x.rec.Status, x.rec.ErrorClass = fasthttp.StatusBadGateway, classUpstream
			}
			body = out
			ctx.Response.Header.SetContentType("application/json")
		}
	} else {
		x.rec.ErrorClass = classUpstream
	}
	ctx.SetBody(body)
	w.captureResponse(x, body)
	w.finish(x)
}

// upstreamFailed answers a request whose last attempt got no usable response.
func (w *Worker) upstreamFailed(ctx *fasthttp.RequestCtx, x *exchange, a *attempt) {
	name := a.dep.Upstream.Name
	ctx.Response.Header.Set("X-LLM-Proxy-Upstream", name)
	switch {
	case a.outcome.ClientGone:
		// Nobody is listening; record it the way nginx does.
		x.rec.Status = statusClientClosed
		x.rec.ErrorClass = classClientClosed
		ctx.SetConnectionClose()
		ctx.SetStatusCode(statusClientClosed)
		w.finish(x)
	case a.outcome.Timeout:
		w.logger.Warn("upstream timeout", "upstream", name, "request_id", x.rec.RequestID, "error", a.err)
		w.reject(ctx, x, fasthttp.StatusGatewayTimeout, "upstream_error", "upstream_timeout",
			"The upstream '"+name+"' did not answer in time.", classTimeout)
	default:
		w.logger.Warn("upstream unreachable", "upstream", name, "request_id", x.rec.RequestID, "error", a.err)
		w.reject(ctx, x, fasthttp.StatusBadGateway, "upstream_error", "upstream_unreachable",
			"The upstream '"+name+"' could not be reached.", classUnreachable)
	}
}

var (
	dataPrefixSpace = []byte("data: ")
	eventEnd        = []byte("\n\n")
	doneEvent       = []byte("data: [DONE]\n\n")
	dataPrefix      = []byte("data:")
	doneData        = []byte("[DONE]")
	usageKey        = []byte(`"usage"`)
)

// pumpStream relays an upstream SSE body to the client, flushing whenever the
// upstream has nothing more buffered so each chunk leaves as soon as it arrives.
// It records usage, strips the usage-only chunk the client did not ask for, and
// writes the request record before the final [DONE] reaches the client. A stream
// silent for StreamIdleTimeout, or broken by the upstream, ends with an SSE error
// event and [DONE] — never with a made-up finish_reason.
func (w *Worker) pumpStream(bw *bufio.Writer, x *exchange, a *attempt, watch *disconnectWatch) {
	// After finish(x) on [DONE], x belongs to the pool again: nothing below may touch it.
	br := a.br
	var idle atomic.Bool
	idleTimer := time.AfterFunc(w.cfg.StreamIdleTimeout, func() { idle.Store(true); a.cancel() })
	defer idleTimer.Stop()
	stripUsage := !x.req.IncludeUsage
	x.rec.Status = fasthttp.StatusOK
	recorded, skipBlank, clientGone := false, false, false
	var readErr error
	for {
		line, err := br.ReadSlice('\n')
		idleTimer.Reset(w.cfg.StreamIdleTimeout)
		if len(line) > 0 && !clientGone {
			if !recorded {
				w.captureResponse(x, line)
			}
			forward := true
			if skipBlank && len(bytes.TrimSpace(line)) == 0 {
				forward, skipBlank = false, false
			} else if !recorded && bytes.HasPrefix(line, dataPrefix) && err != bufio.ErrBufferFull {
				data := bytes.TrimSpace(line[len(dataPrefix):])
				if x.cache.on {
					if x.cache.asm == nil {
						x.cache.asm = &cache.Assembler{}
					}
					x.cache.asm.Add(data)
				}
				switch {
				case bytes.Equal(data, doneData):
					x.estimateUsage(nil)
					w.storeAssembled(x)
					w.finish(x)
					recorded = true
				case bytes.Contains(data, usageKey):
					if u, ok := openai.ParseUsage(data); ok {
						x.rec.PromptTokens, x.rec.CompletionTokens = u.PromptTokens, u.CompletionTokens
						if stripUsage && openai.IsUsageOnlyChunk(data) {
							forward, skipBlank = false, true
						}
						break
					}
					x.keepStreamChunk(data)
				default:
					x.keepStreamChunk(data)
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
	w.endStreamEarly(bw, x, clientGone || watch.gone(), idle.Load(), readErr, nil)
}

// endStreamEarly records and ends a stream that did not finish normally: the
// client left, the upstream went silent, broke off, or reported an error inside
// the stream (serr). The client gets an error event and the end marker, never a
// made-up finish_reason.
func (w *Worker) endStreamEarly(bw *bufio.Writer, x *exchange, clientGone, idle bool, readErr error, serr *provider.StreamError) {
	var code, msg string
	switch {
	case clientGone:
		x.rec.Status = statusClientClosed
		x.rec.ErrorClass = classClientClosed
		w.finish(x)
		return
	case serr != nil:
		x.rec.Status = fasthttp.StatusBadGateway
		x.rec.ErrorClass = classUpstream
		code, msg = serr.Type, serr.Message
	case idle:
		x.rec.Status = fasthttp.StatusGatewayTimeout
		x.rec.ErrorClass = classStreamIdle
		code, msg = "stream_idle_timeout", "The upstream sent nothing for "+w.cfg.StreamIdleTimeout.String()+"; the stream was ended."
	default:
		x.rec.Status = fasthttp.StatusBadGateway
		x.rec.ErrorClass = classStreamBroken
		code, msg = "stream_broken", "The upstream closed the stream before it was complete."
	}
	w.logger.Warn("upstream stream ended early", "upstream", x.rec.Upstream, "request_id", x.rec.RequestID,
		"reason", code, "error", readErr)
	inbound := x.inbound
	w.finish(x)
	var b []byte
	if inbound != nil {
		b = anthropic.ErrorEvent(b, "api_error", msg)
	} else {
		b = append(b, "data: "...)
		b = appendErrorJSON(b, "upstream_error", code, msg)
		b = append(b, "\n\ndata: [DONE]\n\n"...)
	}
	_, _ = bw.Write(b)
	_ = bw.Flush()
}

// pumpEvents relays a stream event by event where the bytes cannot pass through
// unchanged: a provider translator turns each upstream event into OpenAI chunks,
// and an Anthropic-speaking client (/v1/messages) gets each chunk as Anthropic
// events. The record is written before the end marker, as in pumpStream.
func (w *Worker) pumpEvents(bw *bufio.Writer, x *exchange, a *attempt, watch *disconnectWatch) {
	br := a.br
	var idle atomic.Bool
	idleTimer := time.AfterFunc(w.cfg.StreamIdleTimeout, func() { idle.Store(true); a.cancel() })
	defer idleTimer.Stop()
	x.rec.Status = fasthttp.StatusOK
	in := x.inbound
	var event, data, out, long []byte
	clientGone := false

	write := func(b []byte) {
		if _, err := bw.Write(b); err != nil {
			clientGone = true
		}
	}
	// emit sends one OpenAI chunk payload in the client's dialect.
	emit := func(chunk []byte) {
		if in != nil {
			var err error
			if out, err = in.StreamChunk(out[:0], chunk); err != nil {
				w.logger.Debug("skip untranslatable chunk", "request_id", x.rec.RequestID, "error", err)
				return
			}
			write(out)
			return
		}
		if x.cache.on {
			if x.cache.asm == nil {
				x.cache.asm = &cache.Assembler{}
			}
			x.cache.asm.Add(chunk)
		}
		write(dataPrefixSpace)
		write(chunk)
		write(eventEnd)
	}
	// handle processes one complete upstream event; done reports the normal end.
	handle := func() (done bool, serr *provider.StreamError, err error) {
		if a.tr == nil {
			// OpenAI-compatible upstream, Anthropic client.
			if bytes.Equal(bytes.TrimSpace(data), doneData) {
				x.estimateUsage(nil)
				return true, nil, nil
			}
			if u, ok := openai.ParseUsage(data); ok {
				x.rec.PromptTokens, x.rec.CompletionTokens = u.PromptTokens, u.CompletionTokens
			} else {
				x.keepStreamChunk(data)
			}
			emit(data)
			return false, nil, nil
		}
		chunks, usage, done, err := a.tr.StreamEvent(event, data)
		for _, c := range chunks {
			emit(c)
		}
		if usage != nil {
			x.rec.PromptTokens, x.rec.CompletionTokens = usage.PromptTokens, usage.CompletionTokens
			x.estimated = usage.Estimated
		}
		if err != nil {
			if se, ok := err.(*provider.StreamError); ok {
				return false, se, nil
			}
			return false, nil, err
		}
		return done, nil, nil
	}

	var readErr error
	for {
		line, err := br.ReadSlice('\n')
		idleTimer.Reset(w.cfg.StreamIdleTimeout)
		if err == bufio.ErrBufferFull {
			long = append(long, line...)
			continue
		}
		if len(long) > 0 {
			line = append(long, line...)
			long = long[:0]
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		switch {
		case len(trimmed) == 0 && (len(data) > 0 || len(event) > 0):
			done, serr, herr := handle()
			event, data = event[:0], data[:0]
			switch {
			case clientGone:
			case done:
				final := in
				if x.cache.asm != nil {
					x.cache.asm.Add(doneData)
					w.storeAssembled(x)
				}
				w.finish(x)
				if final != nil {
					write(final.Finish(out[:0]))
				} else {
					write(doneEvent)
				}
				_ = bw.Flush()
				return
			case serr != nil:
				w.endStreamEarly(bw, x, false, false, nil, serr)
				return
			case herr != nil:
				w.endStreamEarly(bw, x, false, false, herr, nil)
				return
			}
		case bytes.HasPrefix(trimmed, []byte("event:")):
			event = append(event[:0], bytes.TrimSpace(trimmed[len("event:"):])...)
		case bytes.HasPrefix(trimmed, dataPrefix):
			if len(data) > 0 {
				data = append(data, '\n')
			}
			data = append(data, bytes.TrimPrefix(trimmed[len(dataPrefix):], []byte(" "))...)
		}
		if err != nil {
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
	w.endStreamEarly(bw, x, clientGone || watch.gone(), idle.Load(), readErr, nil)
}

// storeAssembled caches a stream's answer once it is complete.
func (w *Worker) storeAssembled(x *exchange) {
	if !x.cache.on || x.cache.asm == nil || !x.cache.asm.Complete() {
		return
	}
	if body, err := x.cache.asm.Body(); err == nil {
		w.cacheStore(x, body)
	}
}
