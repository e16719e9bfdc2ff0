package worker

import (
	"github.com/valyala/fasthttp"
	"sync"
)

// Error classes stored in request records (error_class); ” means success.
const (
	classAuth          = "auth"            // missing, invalid, revoked or expired key
	classForbidden     = "model_forbidden" // key may not use the model
	classUnknownModel  = "unknown_model"
	classBadRequest    = "bad_request"
	classUpstream      = "upstream_error"       // upstream answered with an error status
	classUnreachable   = "upstream_unreachable" // connect or transport failure
	classTimeout       = "upstream_timeout"
	classClientClosed  = "client_closed"
	classStreamBroken  = "stream_broken" // the upstream stream ended without [DONE]
	classRateLimited   = "rate_limited"  // refused by the key's rate limit or budget
	classStreamIdle    = "stream_idle"   // the upstream stream went silent past STREAM_IDLE_TIMEOUT
	statusClientClosed = 499             // nginx's status for a client that went away
)

// writeError answers with OpenAI's error object:
// {"error":{"message":...,"type":...,"param":null,"code":...}}.
func writeError(ctx *fasthttp.RequestCtx, status int, typ, code, msg string) {
	ctx.Response.Reset()
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	// Built in a pooled buffer and copied into the response's own pooled body: a
	// flood of bad requests (invalid keys) then allocates nothing, and so does not
	// drive the garbage collector whose pauses would reach every other request.
	bp := errBufs.Get().(*[]byte)
	b := appendErrorJSON((*bp)[:0], typ, code, msg)
	ctx.Response.SetBody(b)
	if cap(b) <= 64<<10 {
		*bp = b
		errBufs.Put(bp)
	}
}

var errBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func appendErrorJSON(b []byte, typ, code, msg string) []byte {
	b = append(b, `{"error":{"message":`...)
	b = appendJSONString(b, msg)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, typ)
	b = append(b, `,"param":null,"code":`...)
	if code == "" {
		b = append(b, "null"...)
	} else {
		b = appendJSONString(b, code)
	}
	return append(b, "}}"...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string literal.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}
