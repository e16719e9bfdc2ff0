package worker

import (
	"context"
	"math"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// disconnectPoll is how often a waiting request checks whether its client is still
// there; it bounds how long an abandoned upstream call keeps running (< 1 s).
const disconnectPoll = 200 * time.Millisecond

// disconnectWatch notices a client that closed its connection while the gateway is
// waiting on the upstream, and cancels the upstream call. fasthttp has no close
// notification and does not read the socket while a handler runs, so the watch
// peeks at it (MSG_PEEK|MSG_DONTWAIT consumes nothing): a zero-byte read means the
// peer sent FIN, an error other than EAGAIN means it reset. It runs on a timer, so
// requests that finish within one poll interval cost no goroutine.
type disconnectWatch struct {
	rc     syscall.RawConn
	cancel context.CancelFunc
	timer  *time.Timer
	closed atomic.Bool
	done   atomic.Bool
}

// watchDisconnect starts watching conn; it returns nil (a valid, inert watch) when
// conn gives no access to its socket.
func watchDisconnect(conn net.Conn, cancel context.CancelFunc) *disconnectWatch {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	d := &disconnectWatch{rc: rc, cancel: cancel}
	// Create the timer idle and arm it only once d.timer is set: Reset publishes
	// the field to the callback goroutine (a first firing could otherwise read it
	// before the assignment, which -race reports).
	d.timer = time.AfterFunc(time.Duration(math.MaxInt64), d.check)
	d.timer.Reset(disconnectPoll)
	return d
}

func (d *disconnectWatch) check() {
	if d.done.Load() {
		return
	}
	if peerClosed(d.rc) {
		d.closed.Store(true)
		d.cancel()
		return
	}
	if !d.done.Load() {
		d.timer.Reset(disconnectPoll)
	}
}

// stop ends the watch; it is safe on a nil watch and more than once.
func (d *disconnectWatch) stop() {
	if d == nil {
		return
	}
	d.done.Store(true)
	d.timer.Stop()
}

// gone reports whether the client was seen to disconnect.
func (d *disconnectWatch) gone() bool { return d != nil && d.closed.Load() }

// Limits of the lingering read after a refused body (see drainBody).
const (
	drainMaxBytes = 256 << 20
	drainTimeout  = 3 * time.Second
)

// drainBody reads and discards the rest of a refused request body before the
// error is written. fasthttp refuses an oversized body from its Content-Length
// without reading it; closing the connection while the client is still sending
// makes the kernel reset it, and a client that does not use Expect: 100-continue
// (the OpenAI SDKs) then sees "connection reset" instead of the 413. This is
// nginx's lingering close, bounded in bytes and time so a slow sender cannot hold
// the connection. It stops as soon as the client pauses (drainIdle): part of the
// body may already sit in fasthttp's buffer, so counting bytes alone would wait
// for bytes that never come. The bytes are discarded as they arrive.
func drainBody(conn net.Conn, contentLength int64) {
	limit := int64(drainMaxBytes)
	if contentLength >= 0 && contentLength < limit {
		limit = contentLength
	}
	end := time.Now().Add(drainTimeout)
	buf := make([]byte, 32<<10)
	for read := int64(0); read < limit; {
		deadline := time.Now().Add(drainIdle)
		if deadline.After(end) {
			deadline = end
		}
		if err := conn.SetReadDeadline(deadline); err != nil {
			return
		}
		n, err := conn.Read(buf[:min(int64(len(buf)), limit-read)])
		read += int64(n)
		if err != nil {
			return
		}
	}
}

// drainIdle ends the lingering read when the client sends nothing for this long.
const drainIdle = 200 * time.Millisecond
