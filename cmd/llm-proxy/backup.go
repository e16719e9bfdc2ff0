package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/llm-proxy/llm-proxy/store"
)

// runBackup is `llm-proxy backup [--timeout D] FILE`: a consistent copy of the
// database named by the environment, taken while the gateway keeps serving
// (store.Backup: VACUUM INTO inside one read transaction).
func runBackup(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("backup", stderr)
	timeout := fs.Duration("timeout", 30*time.Minute, "give up if the copy takes longer")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("backup needs one argument: the file to write, which must not exist")
	}
	if *timeout <= 0 {
		return usagef("backup: --timeout must be positive")
	}
	dst := pos[0]
	scfg, _, err := loadDatabaseConfig(os.LookupEnv)
	if err != nil {
		return err
	}
	// Opening a path that holds no database would create an empty one and back
	// that up: almost certainly a wrong LLM_PROXY_DATABASE_PATH.
	if _, err := os.Stat(scfg.Path); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("backup: no database at %s (set LLM_PROXY_DATABASE_PATH)", scfg.Path)
	}
	scfg.MaxOpenConns, scfg.MaxIdleConns = 2, 1
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	logger := hclog.New(&hclog.LoggerOptions{Name: "llm-proxy", Level: hclog.Warn, Output: stderr})
	st, err := store.Open(ctx, scfg, nil, logger)
	if err != nil {
		return err
	}
	defer st.Close()
	start := time.Now()
	if err := st.Backup(ctx, dst); err != nil {
		return err
	}
	fi, err := os.Stat(dst)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	fmt.Fprintf(stdout, "backed up %s to %s (%d bytes in %s)\n", scfg.Path, dst, fi.Size(), time.Since(start).Round(time.Millisecond))
	fmt.Fprintln(stdout, "the secret key (LLM_PROXY_SECRET_KEY or secret.key) is not in the backup: keep a copy of it apart from the backup")
	return nil
}
