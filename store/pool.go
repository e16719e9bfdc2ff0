package store

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// errPoolClosed is returned by take after close.
var errPoolClosed = errors.New("store: pool closed")

// openFlags for every pooled connection (zombiezen implies NOMUTEX: a pooled
// connection is only ever used by one goroutine at a time).
const openFlags = sqlite.OpenReadWrite | sqlite.OpenCreate | sqlite.OpenWAL | sqlite.OpenURI

// connPragmas run on every new connection. busy_timeout comes first so the journal_mode
// switch, which needs a brief exclusive lock, waits out a concurrent opener instead of failing.
var connPragmas = []string{
	"PRAGMA busy_timeout=5000",
	"PRAGMA journal_mode=WAL",
	"PRAGMA synchronous=NORMAL",
	"PRAGMA foreign_keys=ON",
}

// pool is a lazy connection pool. sqlitex.Pool opens every connection up front, which
// would cost each worker process MaxOpenConns file handles and page caches it rarely uses;
// this one opens on demand and keeps only maxIdle around.
//
// Invariant: open == in use + len(idle) <= maxOpen, because a connection is only opened
// by a caller holding a slot when the idle list is empty.
type pool struct {
	path    string
	maxIdle int
	slots   chan struct{} // one token per connection that may be in use

	mu     sync.Mutex
	idle   []*sqlite.Conn
	open   int
	closed bool
	done   chan struct{} // closed by close, wakes blocked takers
}

func newPool(path string, maxOpen, maxIdle int) *pool {
	return &pool{
		path:    path,
		maxIdle: maxIdle,
		slots:   make(chan struct{}, maxOpen),
		done:    make(chan struct{}),
	}
}

// take returns a connection whose statements are interrupted when ctx ends. It blocks
// while maxOpen connections are in use, until ctx ends.
func (p *pool) take(ctx context.Context) (*sqlite.Conn, error) {
	// select picks at random among ready cases, so without this check an expired ctx could
	// still win a free slot and open a connection only to be interrupted at once.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store: wait for connection: %w", err)
	}
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("store: wait for connection: %w", ctx.Err())
	case <-p.done:
		return nil, errPoolClosed
	}
	conn, err := p.get()
	if err != nil {
		<-p.slots
		return nil, err
	}
	conn.SetInterrupt(ctx.Done())
	return conn, nil
}

func (p *pool) get() (*sqlite.Conn, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errPoolClosed
	}
	if n := len(p.idle); n > 0 {
		conn := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return conn, nil
	}
	p.open++
	p.mu.Unlock()

	conn, err := openConn(p.path)
	if err != nil {
		p.mu.Lock()
		p.open--
		p.mu.Unlock()
		return nil, err
	}
	return conn, nil
}

func openConn(path string) (*sqlite.Conn, error) {
	conn, err := sqlite.OpenConn(path, openFlags)
	if err != nil {
		return nil, fmt.Errorf("store: open connection: %w", err)
	}
	for _, q := range connPragmas {
		if err := sqlitex.ExecuteTransient(conn, q, nil); err != nil {
			conn.Close()
			return nil, fmt.Errorf("store: %s: %w", q, err)
		}
	}
	// From here on a busy database is waited out until the caller's context ends
	// (take sets the interrupt), not for a fixed 5 s: a write with a 200 ms deadline
	// must give up after 200 ms.
	conn.SetBlockOnBusy()
	return conn, nil
}

// put returns conn to the pool. A connection left inside a transaction (a caller bug or
// an interrupted commit) is closed rather than handed to the next caller.
func (p *pool) put(conn *sqlite.Conn) {
	conn.SetInterrupt(nil)
	p.mu.Lock()
	keep := !p.closed && len(p.idle) < p.maxIdle && conn.AutocommitEnabled()
	if keep {
		p.idle = append(p.idle, conn)
	} else {
		p.open--
	}
	p.mu.Unlock()
	if !keep {
		conn.Close()
	}
	<-p.slots
}

// stats reports open and idle connection counts, for tests and diagnostics.
func (p *pool) stats() (open, idle int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open, len(p.idle)
}

// close closes idle connections now; connections in use are closed when they are put back.
func (p *pool) close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	idle := p.idle
	p.idle = nil
	p.open -= len(idle)
	p.mu.Unlock()
	var errs []error
	for _, conn := range idle {
		errs = append(errs, conn.Close())
	}
	return errors.Join(errs...)
}
