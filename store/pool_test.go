package store

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

func TestPoolOpensLazily(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxOpenConns, cfg.MaxIdleConns = 50, 10
	s := openTestStore(t, cfg, nil)
	if open, idle := s.pool.stats(); open > 1 || idle > 1 {
		t.Errorf("idle store holds open=%d idle=%d connections, want at most 1", open, idle)
	}
	// Sequential calls reuse the one connection.
	for range 20 {
		if _, err := s.Settings(testContext(t)); err != nil {
			t.Fatal(err)
		}
	}
	if open, _ := s.pool.stats(); open != 1 {
		t.Errorf("after sequential reads open = %d, want 1", open)
	}
}

func TestPoolMaxOpenAndIdle(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxOpenConns, cfg.MaxIdleConns = 3, 1
	s := openTestStore(t, cfg, nil)
	ctx := testContext(t)

	var held []*sqlite.Conn
	for range cfg.MaxOpenConns {
		c, err := s.pool.take(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	if open, _ := s.pool.stats(); open != cfg.MaxOpenConns {
		t.Errorf("open = %d, want %d", open, cfg.MaxOpenConns)
	}

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := s.pool.take(short)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("take beyond MaxOpenConns: err = %v, want DeadlineExceeded", err)
	}
	if waited := time.Since(start); waited < 40*time.Millisecond {
		t.Errorf("take returned after %v, want it to block until the deadline", waited)
	}
	// The public API reports the same thing through read.
	err = s.read(short, func(*sqlite.Conn) error { return nil })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("read with all connections busy: err = %v, want DeadlineExceeded", err)
	}

	// A blocked take proceeds as soon as one connection comes back.
	got := make(chan error, 1)
	go func() {
		c, err := s.pool.take(ctx)
		if err == nil {
			s.pool.put(c)
		}
		got <- err
	}()
	time.Sleep(20 * time.Millisecond)
	s.pool.put(held[0])
	if err := <-got; err != nil {
		t.Errorf("take after put: %v", err)
	}
	for _, c := range held[1:] {
		s.pool.put(c)
	}
	if open, idle := s.pool.stats(); open != cfg.MaxIdleConns || idle != cfg.MaxIdleConns {
		t.Errorf("after all put back open=%d idle=%d, want %d and %d (extras closed)", open, idle, cfg.MaxIdleConns, cfg.MaxIdleConns)
	}
}

func TestPoolConcurrentNeverExceedsMax(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxOpenConns, cfg.MaxIdleConns = 4, 2
	s := openTestStore(t, cfg, nil)
	ctx := testContext(t)
	var mu sync.Mutex
	maxOpen := 0
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.read(ctx, func(conn *sqlite.Conn) error {
				open, _ := s.pool.stats()
				mu.Lock()
				maxOpen = max(maxOpen, open)
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
				return sqlitex.Execute(conn, "SELECT count(*) FROM settings", nil)
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if maxOpen > cfg.MaxOpenConns {
		t.Errorf("peak open connections = %d, want at most %d", maxOpen, cfg.MaxOpenConns)
	}
	if maxOpen < 2 {
		t.Errorf("peak open connections = %d; concurrent reads did not open extra connections", maxOpen)
	}
}

func TestPoolInterruptsOnContextEnd(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx, cancel := context.WithTimeout(testContext(t), 50*time.Millisecond)
	defer cancel()
	// A query that runs far past the deadline unless interrupted.
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.ExecuteTransient(conn, `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c)
SELECT count(*) FROM c`, nil)
	})
	if code := sqlite.ErrCode(err); code != sqlite.ResultInterrupt {
		t.Errorf("long query past the deadline: err = %v, want SQLITE_INTERRUPT", err)
	}
	// The connection went back clean: the next call with a fresh ctx works.
	if _, err := s.Settings(testContext(t)); err != nil {
		t.Errorf("next call after interrupt: %v", err)
	}
}

func TestPoolClose(t *testing.T) {
	cfg := testConfig(t)
	s, err := Open(testContext(t), cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.pool.take(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s.pool.put(c) // an in-use connection is closed when returned
	if open, idle := s.pool.stats(); open != 0 || idle != 0 {
		t.Errorf("after Close open=%d idle=%d, want 0 and 0", open, idle)
	}
	if _, err := s.Settings(testContext(t)); err == nil {
		t.Error("call after Close succeeded")
	}
}
