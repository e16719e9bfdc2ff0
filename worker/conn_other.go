//go:build !unix

package worker

import "syscall"

// peerClosed cannot peek without MSG_PEEK|MSG_DONTWAIT; there a disconnect is
// noticed at the next write instead.
func peerClosed(syscall.RawConn) bool { return false }
