package store

import (
	"fmt"
	"testing"
	"time"

	"zombiezen.com/go/sqlite"
)

// insertLogs bulk-inserts rows (IDs are assigned by SQLite) in one transaction.
func insertLogs(tb testing.TB, s *Store, rows []RequestLog) {
	tb.Helper()
	ctx, cancel := withDeadline(tb.Context())
	defer cancel()
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		stmt, err := conn.Prepare(`INSERT INTO request_logs(request_id, ts_ms, worker, key_id, endpoint, model, upstream,
upstream_model, status, stream, latency_us, ttfb_us, prompt_tokens, completion_tokens, error_class)
VALUES (?1, ?2, 0, ?3, 'chat', ?4, ?5, ?4, ?6, 0, ?7, 0, ?8, ?9, ?10)`)
		if err != nil {
			return err
		}
		for _, r := range rows {
			stmt.BindText(1, r.RequestID)
			stmt.BindInt64(2, r.TsMs)
			if r.KeyID == 0 {
				stmt.BindNull(3)
			} else {
				stmt.BindInt64(3, r.KeyID)
			}
			stmt.BindText(4, r.Model)
			stmt.BindText(5, r.Upstream)
			stmt.BindInt64(6, int64(r.Status))
			stmt.BindInt64(7, r.LatencyUs)
			stmt.BindInt64(8, r.PromptTokens)
			stmt.BindInt64(9, r.CompletionTokens)
			stmt.BindText(10, r.ErrorClass)
			if _, err := stmt.Step(); err != nil {
				return err
			}
			if err := stmt.Reset(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("insert logs: %v", err)
	}
}

func TestQueryLogsFiltersAndCursor(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	uid, _ := s.CreateUser(ctx, User{Username: "u", PasswordHash: "h", Role: RoleUser})
	mine, _ := s.CreateOwnedAPIKey(ctx, APIKey{Name: "mine", Hash: [32]byte{1}, Prefix: "a"}, uid)
	other, _ := s.CreateOwnedAPIKey(ctx, APIKey{Name: "other", Hash: [32]byte{2}, Prefix: "b"}, 0)
	base := int64(1_800_000_000_000)
	var rows []RequestLog
	for i := 0; i < 10; i++ {
		r := RequestLog{RequestID: fmt.Sprint("r", i), TsMs: base + int64(i)*1000, KeyID: mine, Model: "gpt-4o", Upstream: "a", Status: 200}
		if i%2 == 1 {
			r.KeyID, r.Model, r.Upstream = other, "gpt-4o-mini", "b"
		}
		if i == 9 {
			r.Status, r.ErrorClass = 502, "upstream_error"
		}
		rows = append(rows, r)
	}
	insertLogs(t, s, rows)

	ids := func(p LogPage) []string {
		var out []string
		for _, l := range p.Logs {
			out = append(out, l.RequestID)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		f    LogFilter
		want string
	}{
		{"all newest first", LogFilter{Limit: 3}, "[r9 r8 r7]"},
		{"user", LogFilter{UserID: uid}, "[r8 r6 r4 r2 r0]"},
		{"key", LogFilter{KeyID: other, Limit: 2}, "[r9 r7]"},
		{"model", LogFilter{Model: "gpt-4o-mini"}, "[r9 r7 r5 r3 r1]"},
		{"upstream", LogFilter{Upstream: "a", Limit: 1}, "[r8]"},
		{"status", LogFilter{Status: 502}, "[r9]"},
		{"5xx", LogFilter{StatusClass: 5}, "[r9]"},
		{"error text", LogFilter{ErrorText: "UPSTREAM"}, "[r9]"},
		{"time range", LogFilter{FromMs: base + 2000, ToMs: base + 4000}, "[r3 r2]"},
		{"cursor", LogFilter{Before: 3}, "[r1 r0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := s.QueryLogs(ctx, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(ids(p)); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
	// Walking pages of 4 visits every row once.
	var seen []string
	f := LogFilter{Limit: 4}
	for pages := 0; ; pages++ {
		p, err := s.QueryLogs(ctx, f)
		if err != nil || pages > 5 {
			t.Fatalf("page %d: %v", pages, err)
		}
		seen = append(seen, ids(p)...)
		if p.NextCursor == 0 {
			break
		}
		f.Before = p.NextCursor
	}
	if got := fmt.Sprint(seen); got != "[r9 r8 r7 r6 r5 r4 r3 r2 r1 r0]" {
		t.Errorf("paged walk = %s", got)
	}

	// Delete a time range, then only the user's own rows.
	n, err := s.DeleteLogs(ctx, base, base+2000, 0)
	if err != nil || n != 2 {
		t.Errorf("DeleteLogs(range) = %d, %v; want 2", n, err)
	}
	n, err = s.DeleteLogs(ctx, 0, 0, uid)
	if err != nil || n != 4 {
		t.Errorf("DeleteLogs(user) = %d, %v; want 4", n, err)
	}
	p, _ := s.QueryLogs(ctx, LogFilter{})
	if got := fmt.Sprint(ids(p)); got != "[r9 r7 r5 r3]" {
		t.Errorf("after deletes: %s", got)
	}
	if _, err := s.DeleteLogs(ctx, base+5, base+5, 0); err == nil {
		t.Error("an empty range was accepted")
	}
	if _, err := s.RequestLog(ctx, p.Logs[0].ID); err != nil {
		t.Error(err)
	}
}

func TestDeleteNewestLogsKeepsNewRowsCounted(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	epoch := statsLease(t, s)
	now := time.Now()
	insertLogs(t, s, []RequestLog{{RequestID: "a", TsMs: now.UnixMilli(), Status: 200}, {RequestID: "b", TsMs: now.UnixMilli(), Status: 200}})
	if _, err := s.RollupStats(ctx, epoch, 100, now); err != nil {
		t.Fatal(err)
	}
	// Clearing every row lets SQLite hand out id 1 again; it must still be folded in.
	if _, err := s.DeleteLogs(ctx, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	insertLogs(t, s, []RequestLog{{RequestID: "c", TsMs: now.UnixMilli(), Status: 200}})
	n, err := s.RollupStats(ctx, epoch, 100, now)
	if err != nil || n != 1 {
		t.Fatalf("RollupStats after clearing = %d, %v; want 1", n, err)
	}
	res, err := s.Stats(ctx, StatsQuery{From: now.Add(-time.Hour), To: now.Add(time.Hour), Step: time.Minute})
	if err != nil || res.Total.Requests != 3 {
		t.Errorf("requests = %d, %v; want 3 (history is kept)", res.Total.Requests, err)
	}
}
