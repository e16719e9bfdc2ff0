package upstream

import (
	"context"
	"errors"
	"io"

	"github.com/valyala/fasthttp"
)

var (
	// errStreamClosed is returned by Read after Close.
	errStreamClosed = errors.New("upstream: read on closed stream")
	// errStreamTaken is returned when the response's body stream was
	// consumed or released other than through the Stream.
	errStreamTaken = errors.New("response body stream used outside the Stream")
)

// Stream is a response body being received. Read returns the bytes as they
// arrive (chunked framing removed), io.EOF at the end of the body, and an
// *Error when the upstream breaks the stream or the request's context is
// cancelled (errors.Is(err, context.Canceled)). Close must be called exactly
// once when the caller is done, read to the end or not; the connection goes
// back to the pool only if the body was read to io.EOF. A Stream belongs to
// its connection: it must not be used after Close.
type Stream struct {
	cn        *conn
	resp      *fasthttp.Response
	body      io.Reader
	eof       bool
	closeConn bool // Connection: close, or a body that ends with the connection
	err       error
}

func (s *Stream) start(resp *fasthttp.Response, reqClose bool) {
	s.resp = resp
	s.body = resp.BodyStream()
	s.eof = s.body == nil // HEAD, 204, 304: no body to read
	s.err = nil
	// ContentLength -2 is a body delimited by the connection's close.
	s.closeConn = reqClose || resp.ConnectionClose() || resp.Header.ContentLength() == -2
}

// Read reads the next bytes of the body.
func (s *Stream) Read(p []byte) (int, error) {
	if s.resp == nil {
		return 0, errStreamClosed
	}
	if s.eof {
		return 0, io.EOF
	}
	if s.err != nil {
		return 0, s.err
	}
	if s.resp.BodyStream() != s.body {
		// resp.Body(), Reset or Release consumed the body stream behind our back.
		s.err = &Error{Op: OpReadBody, Addr: s.cn.pool.addr, Err: errStreamTaken}
		return 0, s.err
	}
	n, err := s.body.Read(p)
	switch {
	case err == nil:
	case err == io.EOF:
		s.eof = true
		err = io.EOF
	default:
		if s.cn.canceled.Load() {
			err = context.Canceled
		} else if isTimeout(s.cn.rerr) {
			err = s.cn.rerr
		}
		s.err = &Error{Op: OpReadBody, Addr: s.cn.pool.addr, Err: err}
		err = s.err
	}
	return n, err
}

// Close ends the exchange: it returns the connection to the pool when the body
// was read to the end, and closes it otherwise.
func (s *Stream) Close() error {
	if s.resp == nil {
		return nil
	}
	cn := s.cn
	taken := s.body != nil && s.resp.BodyStream() != s.body
	if !taken {
		_ = s.resp.CloseBodyStream()
	}
	stopped := cn.stop()
	cn.stop = noStop
	reuse := s.eof && !taken && stopped && !s.closeConn && cn.clean()
	s.resp, s.body, s.err = nil, nil, nil
	if reuse {
		cn.pool.put(cn)
	} else {
		cn.pool.discard(cn)
	}
	return nil
}
