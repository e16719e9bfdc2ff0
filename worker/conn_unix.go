//go:build unix

package worker

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

func peerClosed(rc syscall.RawConn) bool {
	var closed bool
	var b [1]byte
	// Control, not Read: RawConn.Read refuses to run once the connection's read
	// deadline (fasthttp's ReadTimeout, set while reading the request) has passed,
	// which would make every request longer than the read timeout look abandoned.
	err := rc.Control(func(fd uintptr) {
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == nil:
			closed = n == 0
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
			closed = false
		default:
			closed = true
		}
	})
	if err != nil {
		// The connection is already closed on our side.
		return true
	}
	return closed
}
