// Command benchkeys adds N client API keys to a gateway database for the memory
// figures of scripts/bench.sh --scaling. It goes through the store package, so the
// rows are exactly what `llm-proxy keys create` writes (SHA-256 hash and display
// prefix of a random key); the keys themselves are thrown away, as the benchmark
// only measures what holding them costs a worker.
//
//	benchkeys --db data/llm-proxy.db --n 100000
//
// The store exposes no multi-row transaction, so every key is its own small write
// transaction; with WAL and synchronous=NORMAL that is tens of thousands per second,
// fast enough for 100k keys.
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/llm-proxy/llm-proxy/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "benchkeys:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("benchkeys", flag.ContinueOnError)
	fs.SetOutput(stderr)
	db := fs.String("db", "", "database file (migrated if needed)")
	n := fs.Int("n", 1000, "keys to add (1..1000000)")
	name := fs.String("name", "bench", "name prefix of the keys; key i is NAME-i")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *db == "" {
		return errors.New("--db is required")
	}
	if *n < 1 || *n > 1_000_000 {
		return fmt.Errorf("--n must be 1..1000000, got %d", *n)
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "benchkeys", Level: hclog.Warn, Output: stderr})
	st, err := store.Open(ctx, store.Config{Path: *db, MaxOpenConns: 2, MaxIdleConns: 1}, nil, logger)
	if err != nil {
		return err
	}
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		return err
	}
	start := time.Now()
	var buf [24]byte
	for i := range *n {
		if _, err := rand.Read(buf[:]); err != nil {
			return fmt.Errorf("generate key: %w", err)
		}
		// The key text only has to be unique: its hash and prefix are what is stored.
		key := fmt.Sprintf("sk-bench%x", buf)
		if _, err := st.CreateAPIKey(ctx, store.APIKey{
			Name:   fmt.Sprintf("%s-%d", *name, i+1),
			Hash:   sha256.Sum256([]byte(key)),
			Prefix: key[:8] + "…",
		}); err != nil {
			return fmt.Errorf("key %d: %w", i+1, err)
		}
	}
	fmt.Fprintf(stdout, "added %d keys in %s\n", *n, time.Since(start).Round(time.Millisecond))
	return nil
}
