package worker

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
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
	d.timer = time.AfterFunc(disconnectPoll, d.check)
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

func peerClosed(rc syscall.RawConn) bool {
	var closed bool
	var b [1]byte
	err := rc.Read(func(fd uintptr) bool {
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == nil:
			closed = n == 0
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
			closed = false
		default:
			closed = true
		}
		return true // never wait for readability
	})
	if err != nil {
		// The connection is already closed on our side.
		return true
	}
	return closed
}
