//go:build !unix

package upstream

// alive cannot peek at the socket on this platform; a stale connection is
// then caught by the retry in shouldRetry.
func (cn *conn) alive() bool { return true }

func (cn *conn) peek(uintptr) {}

type pollFd struct{}
