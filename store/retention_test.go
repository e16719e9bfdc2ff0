package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// insertAgedLogs adds n request_logs rows with ts_ms = tsMs, request ids prefix0...
func insertAgedLogs(t *testing.T, s *Store, prefix string, n int, tsMs int64) {
	t.Helper()
	if n == 0 {
		return
	}
	err := s.write(context.Background(), func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, `WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i+1 FROM n WHERE i < :last)
			INSERT INTO request_logs (request_id, ts_ms, worker, endpoint, model, upstream, upstream_model, status, stream,
				latency_us, ttfb_us, prompt_tokens, completion_tokens, error_class)
			SELECT :prefix || i, :ts, 0, 'chat', 'm', 'u', 'um', 200, 0, 0, 0, 0, 0, '' FROM n`,
			&sqlitex.ExecOptions{Named: map[string]any{":last": n - 1, ":prefix": prefix, ":ts": tsMs}})
	})
	if err != nil {
		t.Fatalf("insert %d request logs: %v", n, err)
	}
}

// TestRetentionDeletesInBatches: old request logs go in transactions of at most batch rows,
// each committed on its own (another connection sees the count fall batch by batch), and
// only rows strictly older than the cutoff are deleted.
func TestRetentionDeletesInBatches(t *testing.T) {
	const cutoff = int64(1_700_000_000_000)
	tests := []struct {
		name        string
		old, kept   int // rows before the cutoff, rows at or after it
		batch       int
		wantBatches []int
	}{
		{"2500 at 1000", 2500, 10, 1000, []int{1000, 1000, 500}},
		{"exact multiple", 3000, 10, 1000, []int{1000, 1000, 1000, 0}},
		{"nothing old", 0, 25, 1000, []int{0}},
		{"batch below 1 means 1", 3, 2, 0, []int{1, 1, 1, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := openMigratedStore(t, "")
			ctx := context.Background()
			l, _, err := s.TryAcquire(ctx, "A", 1, 0, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			// Old rows spread over the hour before the cutoff; kept ones at the cutoff
			// exactly (the boundary) and after it.
			for i := 0; i < tt.old; i += 500 {
				insertAgedLogs(t, s, fmt.Sprint("old", i, "-"), min(500, tt.old-i), cutoff-1-int64(i)*1000)
			}
			insertAgedLogs(t, s, "edge", 1, cutoff)
			insertAgedLogs(t, s, "new", tt.kept-1, cutoff+1)

			var got []int
			var seenOld []int64
			total, err := s.deleteOldRequestLogs(ctx, l.Epoch, cutoff, tt.batch, func(n int) {
				got = append(got, n)
				seenOld = append(seenOld, queryInt(t, s, "SELECT count(*) FROM request_logs WHERE ts_ms < ?", cutoff))
			})
			if err != nil || total != tt.old {
				t.Errorf("deleted: got %d, %v; want %d", total, err, tt.old)
			}
			if !slices.Equal(got, tt.wantBatches) {
				t.Errorf("rows per transaction: got %v, want %v", got, tt.wantBatches)
			}
			// Each batch is committed before the next starts: a reader sees the rest.
			left := int64(tt.old)
			for i, n := range got {
				left -= int64(n)
				if i < len(seenOld) && seenOld[i] != left {
					t.Errorf("after batch %d another connection sees %d old rows, want %d", i+1, seenOld[i], left)
				}
			}
			if n := queryInt(t, s, "SELECT count(*) FROM request_logs"); n != int64(tt.kept) {
				t.Errorf("rows left: got %d, want %d", n, tt.kept)
			}
			if n := queryInt(t, s, "SELECT count(*) FROM request_logs WHERE ts_ms < ?", cutoff); n != 0 {
				t.Errorf("rows older than the cutoff left: got %d, want 0", n)
			}
			if n := queryInt(t, s, "SELECT count(*) FROM request_logs WHERE request_id = 'edge0'"); n != 1 {
				t.Error("the row at the cutoff exactly was deleted; only older rows may be")
			}
		})
	}
}

// TestRetentionFencedDeletesNothing: a stale epoch's retention pass commits no batch.
func TestRetentionFencedDeletesNothing(t *testing.T) {
	s, _ := openMigratedStore(t, "")
	ctx := context.Background()
	l, _, err := s.TryAcquire(ctx, "A", 1, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	insertAgedLogs(t, s, "old", 1500, 1000)
	// B takes over; A's epoch is stale.
	if _, won, err := s.TryAcquire(ctx, "B", 2, l.RenewSeq, time.Now()); err != nil || !won {
		t.Fatalf("takeover: %v %v", won, err)
	}
	calls := 0
	n, err := s.deleteOldRequestLogs(ctx, l.Epoch, 5000, 1000, func(int) { calls++ })
	if !errors.Is(err, ErrFenced) || n != 0 || calls != 0 {
		t.Errorf("stale epoch: got %d rows in %d batches, %v; want 0 in 0, ErrFenced", n, calls, err)
	}
	if left := queryInt(t, s, "SELECT count(*) FROM request_logs"); left != 1500 {
		t.Errorf("rows left: got %d, want 1500", left)
	}
}
