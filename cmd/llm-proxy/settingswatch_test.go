package main

import (
	"context"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// TestSettingsWatch: the supervisor's watch sees a change saved the way the web admin saves
// it (store.ApplySettings), once, and nothing when the table is untouched.
func TestSettingsWatch(t *testing.T) {
	ctx := context.Background()
	st := testStore(t)
	w := newSettingsWatch(ctx, st, hclog.NewNullLogger())
	if w.changed(ctx) {
		t.Fatal("changed with no write")
	}
	if err := st.ApplySettings(ctx, map[string]string{"MAX_BODY_BYTES": "2048"}, nil); err != nil {
		t.Fatal(err)
	}
	if !w.changed(ctx) {
		t.Fatal("a saved setting was not seen")
	}
	if w.changed(ctx) {
		t.Fatal("one change seen twice")
	}
	if err := st.ApplySettings(ctx, nil, []string{"MAX_BODY_BYTES"}); err != nil {
		t.Fatal(err)
	}
	if !w.changed(ctx) {
		t.Fatal("a reset setting was not seen")
	}
}
