//go:build unix

package upstream

import (
	"golang.org/x/sys/unix"
)

// alive reports whether an idle connection may carry a request. Nothing may be
// readable on an idle HTTP/1.1 connection: readable means the upstream's FIN,
// a reset, or unexpected bytes (a late response, a TLS alert before a close),
// and each makes the connection unusable. This catches most upstream idle
// closes before a request is written, which keeps the retry in shouldRetry
// rare. poll with a zero timeout, on a descriptor array kept in the conn,
// costs one syscall and no allocation (unix.Recvfrom with MSG_PEEK allocates
// its address buffer).
func (cn *conn) alive() bool {
	if cn.rc == nil {
		return true
	}
	cn.peekOK = false
	if err := cn.rc.Control(cn.peekFn); err != nil {
		return false
	}
	return cn.peekOK
}

// peek runs inside RawConn.Control (not Read, which would wait for data).
func (cn *conn) peek(fd uintptr) {
	cn.pollFds[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	n, err := unix.Poll(cn.pollFds[:], 0)
	cn.peekOK = err == nil && n == 0
}

type pollFd = unix.PollFd
