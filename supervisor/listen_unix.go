//go:build unix

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenSlots opens n listening sockets on addr with SO_REUSEPORT, all on the
// same port (the first socket's, when addr asks for port 0). It returns them
// as files to hand to workers, the bound address, and the host:port that
// listenOne uses to add a socket to the same group later.
func listenSlots(ctx context.Context, addr string, n int) (files []*os.File, bound net.Addr, join string, err error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, "", fmt.Errorf("supervisor: listen address %q: %w", addr, err)
	}
	files = make([]*os.File, 0, n)
	for i := range n {
		a := addr
		if bound != nil {
			a = join
		}
		f, la, err := listenOne(ctx, a)
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, nil, "", fmt.Errorf("supervisor: listen slot %d: %w", i, err)
		}
		if bound == nil {
			bound = la
			// Later slots join the port the first one got.
			join = net.JoinHostPort(host, strconv.Itoa(la.(*net.TCPAddr).Port))
		}
		files = append(files, f)
	}
	return files, bound, join, nil
}

// listenOne opens one SO_REUSEPORT listening socket on addr and returns it as
// a file. The supervisor never accepts on it; it only keeps it open so that
// connections queued on it survive the worker that accepts them.
func listenOne(ctx context.Context, addr string) (*os.File, net.Addr, error) {
	lc := net.ListenConfig{Control: reusePort}
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	f, err := l.(*net.TCPListener).File()
	// The file is a dup, so the socket stays open after this Close.
	if cerr := l.Close(); err == nil && cerr != nil {
		f.Close()
		err = cerr
	}
	if err != nil {
		return nil, nil, err
	}
	return f, l.Addr(), nil
}

func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	return errors.Join(err, serr)
}
