package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// RequestLog is one request_logs row.
type RequestLog struct {
	ID               int64
	RequestID        string
	TsMs             int64 // request start, unix milliseconds
	Worker           int   // worker slot
	KeyID            int64 // 0 when the key was not recognised (NULL in the table)
	Endpoint         string
	Model            string // as requested by the client
	Upstream         string // "" when none was chosen
	UpstreamModel    string
	Status           int
	Stream           bool
	LatencyUs        int64
	TTFBUs           int64 // first upstream byte; 0 when none arrived
	PromptTokens     int64
	CompletionTokens int64
	ErrorClass       string // "" on success
	Attempts         string // JSON array of upstream attempts (see migrations/0005)
	AttemptCount     int
	Cache            string // '', miss, bypass, hit-l1, hit-l2, hit-semantic
	Route            string // why the target was chosen
	TokensEstimated  bool   // the gateway counted tokens the provider did not report
	CostMicroUSD     int64
}

// Request log query limits.
const (
	DefaultLogLimit = 100
	MaxLogLimit     = 10000
)

// LogQuery selects request logs. Zero fields do not filter.
type LogQuery struct {
	Limit      int      // rows returned; 0 means DefaultLogLimit, capped at MaxLogLimit
	SinceMs    int64    // only rows with ts_ms >= SinceMs
	KeyID      int64    // only rows of this client key
	RequestIDs []string // only these request ids
}

// RequestLogs returns the rows matching q, newest first.
func (s *Store) RequestLogs(ctx context.Context, q LogQuery) ([]RequestLog, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultLogLimit
	}
	limit = min(limit, MaxLogLimit)
	// The statement is assembled from fixed fragments only (every value is bound), so each
	// filter combination gets a plan that can use its own index.
	var sb strings.Builder
	sb.WriteString(selectRequestLogs + ` WHERE 1`)
	args := map[string]any{":limit": limit}
	if q.SinceMs != 0 {
		sb.WriteString(" AND ts_ms >= :since")
		args[":since"] = q.SinceMs
	}
	if q.KeyID != 0 {
		sb.WriteString(" AND key_id = :key")
		args[":key"] = q.KeyID
	}
	if len(q.RequestIDs) > 0 {
		ids, err := json.Marshal(q.RequestIDs)
		if err != nil {
			return nil, fmt.Errorf("store: request logs: %w", err)
		}
		// One JSON array parameter instead of one placeholder per id keeps the statement
		// text, and so the prepared-statement cache entry, independent of the list length.
		sb.WriteString(" AND request_id IN (SELECT value FROM json_each(:ids))")
		args[":ids"] = string(ids)
	}
	sb.WriteString(" ORDER BY ts_ms DESC, id DESC LIMIT :limit")

	var logs []RequestLog
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, sb.String(), &sqlitex.ExecOptions{
			Named: args,
			ResultFunc: func(stmt *sqlite.Stmt) error {
				logs = append(logs, scanRequestLog(stmt)) // a NULL key_id reads as 0
				return nil
			},
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: request logs: %w", err)
	}
	return logs, nil
}

// CountRequestLogs returns the number of stored request logs.
func (s *Store) CountRequestLogs(ctx context.Context) (int64, error) {
	var n int64
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, "SELECT count(*) FROM request_logs", &sqlitex.ExecOptions{
			ResultFunc: func(stmt *sqlite.Stmt) error { n = stmt.ColumnInt64(0); return nil },
		})
	})
	if err != nil {
		return 0, fmt.Errorf("store: count request logs: %w", err)
	}
	return n, nil
}
