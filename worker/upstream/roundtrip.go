package upstream

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/valyala/fasthttp"
)

// noStop stands in for the AfterFunc stop of a context that can never be
// cancelled.
func noStop() bool { return true }

// roundTrip runs one exchange on cn. On error cn is closed, and retry says
// whether the request may be sent again on a fresh connection.
func (cn *conn) roundTrip(ctx context.Context, req *fasthttp.Request, resp *fasthttp.Response, stream bool) (s *Stream, retry bool, err error) {
	cfg := &cn.pool.client.cfg
	cn.nread, cn.rerr, cn.werr = 0, nil, nil
	cn.stop = noStop
	if ctx.Done() != nil {
		cn.stop = context.AfterFunc(ctx, cn.abortFn)
	}
	// One deadline covers writing the request and reading the headers (and a
	// buffered body): an upstream that stops reading our body is as stuck as
	// one that never answers.
	if err := cn.nc.SetDeadline(time.Now().Add(cfg.ResponseHeaderTimeout)); err != nil {
		return nil, false, cn.fail(ctx, OpWrite, err)
	}

	if err := req.Write(cn.bw); err != nil {
		return nil, cn.shouldRetry(OpWrite), cn.fail(ctx, OpWrite, err)
	}
	if err := cn.bw.Flush(); err != nil {
		return nil, cn.shouldRetry(OpWrite), cn.fail(ctx, OpWrite, err)
	}

	resp.StreamBody = stream
	resp.SkipBody = req.Header.IsHead()
	if err := resp.ReadLimitBody(cn.br, cfg.MaxResponseBytes); err != nil {
		if stream {
			_ = resp.CloseBodyStream()
		}
		return nil, cn.shouldRetry(OpReadHeader), cn.fail(ctx, OpReadHeader, err)
	}

	if stream {
		if err := cn.nc.SetDeadline(time.Time{}); err != nil {
			_ = resp.CloseBodyStream()
			return nil, false, cn.fail(ctx, OpReadHeader, err)
		}
		cn.stream.start(resp, req.ConnectionClose())
		return &cn.stream, false, nil
	}

	// A canceled context after a complete response: the answer stands, but
	// the connection is being closed under us and cannot be reused.
	stopped := cn.stop()
	cn.stop = noStop
	if !stopped || !cn.clean() || req.ConnectionClose() || resp.ConnectionClose() {
		cn.pool.discard(cn)
		return nil, false, nil
	}
	if err := cn.nc.SetDeadline(time.Time{}); err != nil {
		cn.pool.discard(cn)
		return nil, false, nil
	}
	cn.pool.put(cn)
	return nil, false, nil
}

// fail closes cn after a failed exchange and builds the error Do returns.
func (cn *conn) fail(ctx context.Context, op string, err error) error {
	cn.stop()
	cn.stop = noStop
	canceled := cn.canceled.Load()
	cn.pool.discard(cn)
	if cerr := ctx.Err(); cerr != nil && canceled {
		return &Error{Op: op, Addr: cn.pool.addr, Err: cerr}
	}
	// fasthttp reports any failure on the first response byte as io.EOF and a
	// timeout as its own ErrTimeout; the socket's own error says more.
	switch {
	case isTimeout(cn.rerr) || isTimeout(cn.werr):
		return &Error{Op: op, Addr: cn.pool.addr, Err: ErrResponseHeaderTimeout}
	case op == OpWrite && cn.werr != nil:
		err = cn.werr
	case op == OpReadHeader && cn.nread == 0 && cn.rerr != nil:
		err = cn.rerr
	}
	return &Error{Op: op, Addr: cn.pool.addr, Err: err}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return err != nil && errors.As(err, &t) && t.Timeout()
}

// shouldRetry decides whether a failed request may be sent once more, on a
// fresh connection. It is the only retry in this package, and is called before
// fail closes the connection.
//
// The rule: retry only when the connection had carried an earlier request
// (reused), the context was not cancelled, not one byte of a response arrived,
// and either writing the request failed or reading the response ended in a
// clean EOF or a TCP reset.
//
// Why: an upstream may close a keep-alive connection at any moment it is idle
// (its idle timeout), and that close can cross our request on the wire. The
// request then dies without the upstream having handled it, and sending it
// again is the only way not to fail a healthy call. A write error means the
// upstream never received the whole request; an EOF or reset with zero
// response bytes on a reused connection is the signature of that race (a
// reset in particular is what a kernel sends when a closed socket receives our
// request). A fresh connection has no such race, so any failure there is the
// upstream's answer, and so is a failure after response bytes, a timeout (the
// upstream is working, or stuck, on the request) or any other error: sending
// those again could run a paid generation twice.
//
// The remaining risk is an upstream that read a request on a reused connection
// and then closed without a byte of answer (a crash): that looks the same and
// is retried once. alive() makes the race itself rare by dropping idle
// connections the upstream already closed before anything is written.
//
// What the others do: net/http (Transport.roundTrip / shouldRetryRequest)
// retries only on reused connections too; for a request with a body that
// cannot be replayed (not idempotent, no Idempotency-Key) it retries only when
// nothing was written, while idempotent requests are also retried after an EOF
// or read error before the first response byte. fasthttp's HostClient retries
// any failed attempt, up to MaxIdemponentCallAttempts (5), but only for
// idempotent methods (GET, HEAD, PUT) unless RetryIf says otherwise; so its
// POSTs are never retried, stale connection or not. Every call the gateway
// makes is a POST, so net/http's rule would fail the EOF case (the common one:
// the write lands in the kernel buffer before the FIN is seen) and fasthttp's
// would fail them all.
func (cn *conn) shouldRetry(op string) bool {
	if !cn.reused || cn.canceled.Load() || cn.nread > 0 {
		return false
	}
	switch op {
	case OpWrite:
		return cn.werr != nil && !isTimeout(cn.werr)
	case OpReadHeader:
		return cn.werr == nil && (errors.Is(cn.rerr, io.EOF) || isConnReset(cn.rerr))
	}
	return false
}

// clean reports whether the exchange left the connection fit for another:
// no socket error (a body delimited by the close ends in io.EOF) and nothing
// read past the end of the response.
func (cn *conn) clean() bool {
	return cn.rerr == nil && cn.werr == nil && cn.br.Buffered() == 0
}
