package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Buffer sizes of a connection. The reader must hold a whole response header
// block (fasthttp parses headers from the buffer), so it is larger than
// fasthttp's 4 KiB default: providers send long header lists.
const (
	readBufferSize  = 16 << 10
	writeBufferSize = 8 << 10
)

var (
	readerPool sync.Pool
	writerPool sync.Pool
)

// hostPool is the set of connections to one scheme+host:port.
type hostPool struct {
	client *Client
	addr   string      // host:port to dial
	tls    *tls.Config // nil for http

	mu      sync.Mutex
	idle    []*conn // oldest first; reuse takes the last (LIFO)
	open    int     // connections that exist or are being dialled
	waiters []chan *conn
}

// conn is one upstream connection. It is the io.Reader and io.Writer under its
// bufio buffers, so it sees every byte and error of the socket: that is how a
// failure is known to have happened before any response byte (see shouldRetry)
// and how a timeout or reset is told apart from a clean close.
type conn struct {
	pool *hostPool
	nc   net.Conn        // the connection requests use (TCP, or TLS over it)
	raw  net.Conn        // the TCP connection; closing it unblocks everything
	rc   syscall.RawConn // for the idle-close peek; nil when not available
	br   *bufio.Reader
	bw   *bufio.Writer

	// Per request.
	nread  int64 // bytes read from nc since the request started
	rerr   error // last read error from nc
	werr   error // last write error to nc
	stop   func() bool
	reused bool // has carried a request before this one
	// wrote: the last call was a write. The first read after a request is
	// written yields the processor first: the upstream has had no time to
	// answer, and a read now would only fail with EAGAIN and park (the
	// server side does the same, worker/yieldconn.go).
	wrote bool

	idleSince time.Time
	canceled  atomic.Bool
	stream    Stream

	// Method values built once per connection so that registering them per
	// request allocates nothing.
	abortFn func()
	peekFn  func(fd uintptr)
	pollFds [1]pollFd
	peekOK  bool
}

func newConn(p *hostPool, nc net.Conn) *conn {
	cn := &conn{pool: p, nc: nc, raw: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			cn.rc = rc
		}
	}
	cn.abortFn = cn.abort
	cn.peekFn = cn.peek
	if br, ok := readerPool.Get().(*bufio.Reader); ok {
		br.Reset(cn)
		cn.br = br
	} else {
		cn.br = bufio.NewReaderSize(cn, readBufferSize)
	}
	if bw, ok := writerPool.Get().(*bufio.Writer); ok {
		bw.Reset(cn)
		cn.bw = bw
	} else {
		cn.bw = bufio.NewWriterSize(cn, writeBufferSize)
	}
	cn.stream.cn = cn
	return cn
}

func (cn *conn) Read(p []byte) (int, error) {
	if cn.wrote {
		cn.wrote = false
		runtime.Gosched()
	}
	n, err := cn.nc.Read(p)
	cn.nread += int64(n)
	if err != nil {
		cn.rerr = err
	}
	return n, err
}

func (cn *conn) Write(p []byte) (int, error) {
	cn.wrote = true
	n, err := cn.nc.Write(p)
	if err != nil {
		cn.werr = err
	}
	return n, err
}

// abort runs from context.AfterFunc when the request's context is done.
// Closing the TCP socket (not the tls.Conn, whose Close may block sending
// close_notify) fails any read or write in progress at once.
func (cn *conn) abort() {
	cn.canceled.Store(true)
	_ = cn.raw.Close()
}

// release hands the buffers back; the connection must be closed or unused.
func (cn *conn) release() {
	if cn.br != nil {
		cn.br.Reset(nil)
		readerPool.Put(cn.br)
		cn.br = nil
	}
	if cn.bw != nil {
		cn.bw.Reset(nil)
		writerPool.Put(cn.bw)
		cn.bw = nil
	}
}

// get returns a connection for one request: the most recently used live idle
// one, or (fresh, or none idle) a new one when the host has a free slot, or the
// first one freed while it waits. The wait ends with ctx.
// alivePeekAfter is how long a connection must have been idle before it is peeked at
// (alive) on reuse. Upstream idle timeouts are seconds (5 s and up in common servers).
const alivePeekAfter = time.Second

func (p *hostPool) get(ctx context.Context, fresh bool) (*conn, error) {
	now := p.client.now()
	idleTimeout := p.client.cfg.IdleTimeout
	p.mu.Lock()
	if !fresh {
		for len(p.idle) > 0 {
			cn := p.idle[len(p.idle)-1]
			p.idle[len(p.idle)-1] = nil
			p.idle = p.idle[:len(p.idle)-1]
			if now.Sub(cn.idleSince) > idleTimeout {
				// Everything below is older still.
				p.closeLocked(cn)
				for _, old := range p.idle {
					p.closeLocked(old)
				}
				clear(p.idle)
				p.idle = p.idle[:0]
				break
			}
			p.mu.Unlock()
			// Peeking costs a system call per request, and a connection back in the pool
			// for less than alivePeekAfter is one an upstream's idle timeout has not
			// closed; a rarer close in that window is caught by shouldRetry.
			if now.Sub(cn.idleSince) < alivePeekAfter || cn.alive() {
				return cn, nil
			}
			p.mu.Lock()
			p.closeLocked(cn)
		}
	}
	limit := p.client.cfg.MaxConnsPerHost
	if limit == 0 || p.open < limit {
		p.open++
		p.mu.Unlock()
		return p.dialSlot(ctx)
	}
	// Full: wait for a connection to come back (handed over by put) or for a
	// slot (nil, handed over by a close). The channel is the slow path's only
	// allocation.
	w := make(chan *conn, 1)
	p.waiters = append(p.waiters, w)
	p.mu.Unlock()
	select {
	case cn := <-w:
		return p.handed(ctx, cn)
	case <-ctx.Done():
		p.mu.Lock()
		for i, x := range p.waiters {
			if x == w {
				p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
				p.mu.Unlock()
				return nil, &Error{Op: OpDial, Addr: p.addr, Err: ctx.Err()}
			}
		}
		p.mu.Unlock()
		// Something was handed over as ctx ended: give it back.
		if cn := <-w; cn != nil {
			p.put(cn)
		} else {
			p.mu.Lock()
			p.freeSlotLocked()
			p.mu.Unlock()
		}
		return nil, &Error{Op: OpDial, Addr: p.addr, Err: ctx.Err()}
	}
}

// handed takes what a waiter was given: a connection just returned by another
// request, or a slot to dial with (nil).
func (p *hostPool) handed(ctx context.Context, cn *conn) (*conn, error) {
	if cn != nil {
		return cn, nil
	}
	return p.dialSlot(ctx)
}

// dialSlot dials with a slot already counted in p.open.
func (p *hostPool) dialSlot(ctx context.Context) (*conn, error) {
	cn, err := p.client.dial(ctx, p)
	if err != nil {
		p.mu.Lock()
		p.freeSlotLocked()
		p.mu.Unlock()
		return nil, err
	}
	return cn, nil
}

// put returns a connection whose exchange ended cleanly.
func (p *hostPool) put(cn *conn) {
	cn.idleSince = p.client.now()
	cn.reused = true
	p.mu.Lock()
	if len(p.waiters) > 0 {
		w := p.waiters[0]
		p.waiters = append(p.waiters[:0], p.waiters[1:]...)
		p.mu.Unlock()
		w <- cn
		return
	}
	if len(p.idle) >= p.client.cfg.MaxIdleConnsPerHost {
		oldest := p.idle[0]
		copy(p.idle, p.idle[1:])
		p.idle[len(p.idle)-1] = nil
		p.idle = p.idle[:len(p.idle)-1]
		p.closeLocked(oldest)
	}
	p.idle = append(p.idle, cn)
	p.mu.Unlock()
	p.client.armReaper()
}

// discard closes a connection that cannot be reused.
func (p *hostPool) discard(cn *conn) {
	p.mu.Lock()
	p.closeLocked(cn)
	p.mu.Unlock()
}

// closeLocked closes cn and frees its slot; p.mu is held. Closing a socket
// does not block, so doing it under the lock is fine.
func (p *hostPool) closeLocked(cn *conn) {
	_ = cn.raw.Close()
	cn.release()
	p.freeSlotLocked()
}

// freeSlotLocked gives a slot to the first waiter, or frees it.
func (p *hostPool) freeSlotLocked() {
	if len(p.waiters) > 0 {
		w := p.waiters[0]
		p.waiters = append(p.waiters[:0], p.waiters[1:]...)
		w <- nil // buffered: never blocks
		return
	}
	p.open--
}

// closeIdle closes the idle connections for which expired reports true and
// returns how many stay idle. The oldest are first, so it stops at the first
// that is kept.
func (p *hostPool) closeIdle(expired func(*conn) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for n < len(p.idle) && expired(p.idle[n]) {
		p.closeLocked(p.idle[n])
		n++
	}
	if n > 0 {
		copy(p.idle, p.idle[n:])
		clear(p.idle[len(p.idle)-n:])
		p.idle = p.idle[:len(p.idle)-n]
	}
	return len(p.idle)
}

// armReaper starts the idle reaper unless it is already armed.
func (c *Client) armReaper() {
	c.reapMu.Lock()
	defer c.reapMu.Unlock()
	if c.reapArmed {
		return
	}
	c.reapArmed = true
	d := c.cfg.IdleTimeout / 2
	if c.reapTimer == nil {
		c.reapTimer = time.AfterFunc(d, c.reap)
	} else {
		c.reapTimer.Reset(d)
	}
}

// reap closes connections idle past IdleTimeout and re-arms while any remain.
func (c *Client) reap() {
	cutoff := c.now().Add(-c.cfg.IdleTimeout)
	left := 0
	for _, p := range *c.pools.Load() {
		left += p.closeIdle(func(cn *conn) bool { return cn.idleSince.Before(cutoff) })
	}
	c.reapMu.Lock()
	c.reapArmed = false
	c.reapMu.Unlock()
	if left > 0 {
		c.armReaper()
	}
}
