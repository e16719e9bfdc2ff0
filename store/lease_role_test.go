package store

import (
	"context"
	"testing"
	"time"
)

// TestWorkerRoleFollowsLease: a workers row says primary only while its worker holds the
// lease. A takeover demotes the deposed holder's row and promotes the winner's in the same
// transaction, and a late "primary" beat of a deposed holder (woken from a freeze before
// its lease loop noticed) is stored as worker.
func TestWorkerRoleFollowsLease(t *testing.T) {
	s, _ := openMigratedStore(t, "")
	ctx := context.Background()
	t0 := time.Unix(1_700_000_000, 0)
	beat := func(id string, pid int, role string) {
		t.Helper()
		if err := s.Heartbeat(ctx, WorkerRow{ID: id, PID: pid, StartedAt: t0, BeatAt: t0, Role: role}); err != nil {
			t.Fatal(err)
		}
	}
	roles := func() map[string]string {
		t.Helper()
		ws, err := s.Workers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, w := range ws {
			out[w.ID] = w.Role
		}
		return out
	}
	beat("a", 1, "worker")
	beat("b", 2, "worker")
	for _, step := range []struct {
		name string
		do   func()
		want map[string]string
	}{
		{"primary beat without the lease", func() { beat("a", 1, "primary") }, map[string]string{"a": "worker", "b": "worker"}},
		{"a takes the lease", func() {
			if _, won, err := s.TryAcquire(ctx, "a", 1, -1, t0); err != nil || !won {
				t.Fatalf("a acquire: %v %v", won, err)
			}
		}, map[string]string{"a": "primary", "b": "worker"}},
		{"b takes over", func() {
			l, err := s.Lease(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, won, err := s.TryAcquire(ctx, "b", 2, l.RenewSeq, t0); err != nil || !won {
				t.Fatalf("b takeover: %v %v", won, err)
			}
		}, map[string]string{"a": "worker", "b": "primary"}},
		{"a wakes and beats as primary", func() { beat("a", 1, "primary") }, map[string]string{"a": "worker", "b": "primary"}},
	} {
		step.do()
		got := roles()
		if len(got) != len(step.want) || got["a"] != step.want["a"] || got["b"] != step.want["b"] {
			t.Errorf("%s: roles = %v, want %v", step.name, got, step.want)
		}
	}
}
