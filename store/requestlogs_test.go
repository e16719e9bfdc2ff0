package store

import (
	"fmt"
	"slices"
	"testing"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

func insertRequestLog(t *testing.T, s *Store, l RequestLog) {
	t.Helper()
	var key any
	if l.KeyID != 0 {
		key = l.KeyID
	}
	err := s.write(testContext(t), func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, `INSERT INTO request_logs(request_id, ts_ms, worker, key_id, endpoint, model, upstream,
upstream_model, status, stream, latency_us, ttfb_us, prompt_tokens, completion_tokens, error_class)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, &sqlitex.ExecOptions{
			Args: []any{l.RequestID, l.TsMs, l.Worker, key, l.Endpoint, l.Model, l.Upstream, l.UpstreamModel,
				l.Status, l.Stream, l.LatencyUs, l.TTFBUs, l.PromptTokens, l.CompletionTokens, l.ErrorClass},
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRequestLogs(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	full := RequestLog{RequestID: "r-full", TsMs: 5000, Worker: 3, KeyID: 7, Endpoint: "chat", Model: "gpt",
		Upstream: "openai", UpstreamModel: "gpt-4o", Status: 200, Stream: true, LatencyUs: 1234, TTFBUs: 456,
		PromptTokens: 11, CompletionTokens: 22, Attempts: "[]"}
	insertRequestLog(t, s, full)
	for i := range 4 {
		insertRequestLog(t, s, RequestLog{RequestID: fmt.Sprintf("r-%d", i), TsMs: int64(1000 * (i + 1)), Endpoint: "chat",
			Status: 502, ErrorClass: "upstream_5xx", KeyID: int64(i % 2)})
	}
	if n, err := s.CountRequestLogs(ctx); err != nil || n != 5 {
		t.Fatalf("CountRequestLogs = %d, %v; want 5", n, err)
	}

	all, err := s.RequestLogs(ctx, LogQuery{})
	if err != nil {
		t.Fatal(err)
	}
	got := all[0]
	full.ID = got.ID
	if got != full {
		t.Errorf("newest row = %+v, want %+v", got, full)
	}
	if all[2].KeyID != 0 || all[2].ErrorClass != "upstream_5xx" {
		t.Errorf("row with NULL key = %+v, want KeyID 0 and error class", all[2])
	}

	tests := []struct {
		name string
		q    LogQuery
		want []string
	}{
		{"all newest first", LogQuery{}, []string{"r-full", "r-3", "r-2", "r-1", "r-0"}},
		{"limit", LogQuery{Limit: 2}, []string{"r-full", "r-3"}},
		{"since", LogQuery{SinceMs: 3000}, []string{"r-full", "r-3", "r-2"}},
		{"key", LogQuery{KeyID: 1}, []string{"r-3", "r-1"}},
		{"request ids", LogQuery{RequestIDs: []string{"r-0", "r-2", "missing"}}, []string{"r-2", "r-0"}},
		{"combined", LogQuery{SinceMs: 2000, RequestIDs: []string{"r-0", "r-1", "r-2"}, Limit: 1}, []string{"r-2"}},
		{"none", LogQuery{SinceMs: 9000}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs, err := s.RequestLogs(ctx, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, l := range logs {
				ids = append(ids, l.RequestID)
			}
			if !slices.Equal(ids, tt.want) {
				t.Errorf("request ids = %v, want %v", ids, tt.want)
			}
		})
	}
}
