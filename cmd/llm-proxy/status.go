package main

import (
	"context"
	"io"
	"time"

	"github.com/llm-proxy/llm-proxy/store"
)

// statusJSON is the output of `llm-proxy status`. It is read from the database, so it works
// from any shell while the gateway runs.
type statusJSON = store.ClusterStatus

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", stderr)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("status: unexpected argument %q", pos[0])
	}
	return withStore(ctx, stderr, false, func(st *store.Store) error {
		s, err := st.Status(ctx, time.Now())
		if err != nil {
			return err
		}
		return writeJSON(stdout, s)
	})
}
