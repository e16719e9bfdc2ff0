package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// LogFilter selects request logs for the admin. Zero fields do not filter.
type LogFilter struct {
	FromMs, ToMs int64  // ts_ms in [FromMs, ToMs)
	KeyID        int64  // one client key
	UserID       int64  // keys owned by this user (a "user" role always sets it to itself)
	Model        string // as requested, exact
	Upstream     string // exact
	Status       int    // exact HTTP status; see StatusClass for a range
	StatusClass  int    // 2, 4 or 5: 2xx, 4xx or 5xx
	ErrorText    string // substring of error_class, case-insensitive
	Cache        string // cache tier, exact ('miss', 'hit-l1', ...); "none" selects ''
	Before       int64  // cursor: only ids below it (the previous page's NextCursor)
	Limit        int    // 0 means DefaultLogLimit, capped at MaxLogLimit
}

// LogPage is one page of QueryLogs, newest first.
type LogPage struct {
	Logs       []RequestLog
	NextCursor int64 // 0 when this is the last page
}

// QueryLogs returns the rows matching f, newest (highest id) first. Pagination is by id,
// not offset, so a page costs the same however deep it is and rows ingested meanwhile
// never shift a page.
func (s *Store) QueryLogs(ctx context.Context, f LogFilter) (LogPage, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultLogLimit
	}
	limit = min(limit, MaxLogLimit)
	where, args := f.where()
	args[":limit"] = limit + 1 // one more tells whether a next page exists
	q := selectRequestLogs + ` WHERE ` + where + " ORDER BY id DESC LIMIT :limit"
	var page LogPage
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, q, &sqlitex.ExecOptions{Named: args, ResultFunc: func(stmt *sqlite.Stmt) error {
			page.Logs = append(page.Logs, scanRequestLog(stmt))
			return nil
		}})
	})
	if err != nil {
		return LogPage{}, fmt.Errorf("store: query logs: %w", err)
	}
	if len(page.Logs) > limit {
		page.Logs = page.Logs[:limit]
		page.NextCursor = page.Logs[limit-1].ID
	}
	return page, nil
}

// where builds the WHERE clause from fixed fragments; every value is bound.
func (f LogFilter) where() (string, map[string]any) {
	conds := []string{"1"}
	args := map[string]any{}
	add := func(cond, name string, v any) {
		conds = append(conds, cond)
		args[name] = v
	}
	if f.FromMs != 0 {
		add("ts_ms >= :from", ":from", f.FromMs)
	}
	if f.ToMs != 0 {
		add("ts_ms < :to", ":to", f.ToMs)
	}
	if f.KeyID != 0 {
		add("key_id = :key", ":key", f.KeyID)
	}
	if f.UserID != 0 {
		add("key_id IN (SELECT id FROM api_keys WHERE user_id = :user)", ":user", f.UserID)
	}
	if f.Model != "" {
		add("model = :model", ":model", f.Model)
	}
	if f.Upstream != "" {
		add("upstream = :upstream", ":upstream", f.Upstream)
	}
	if f.Status != 0 {
		add("status = :status", ":status", f.Status)
	}
	if f.StatusClass != 0 {
		add("status >= :slo AND status < :shi", ":slo", f.StatusClass*100)
		args[":shi"] = f.StatusClass*100 + 100
	}
	if f.Cache != "" {
		c := f.Cache
		if c == "none" {
			c = ""
		}
		add("cache = :cache", ":cache", c)
	}
	if f.ErrorText != "" {
		add("instr(lower(error_class), :err) > 0", ":err", strings.ToLower(f.ErrorText))
	}
	if f.Before != 0 {
		add("id < :before", ":before", f.Before)
	}
	return strings.Join(conds, " AND "), args
}

// selectRequestLogs reads the columns scanRequestLog takes, in its order.
const selectRequestLogs = `SELECT id, request_id, ts_ms, worker, key_id, endpoint, model, upstream, upstream_model,
status, stream, latency_us, ttfb_us, prompt_tokens, completion_tokens, error_class,
attempts, attempt_count, cache, route, tokens_estimated, cost_micro_usd
FROM request_logs`

func scanRequestLog(stmt *sqlite.Stmt) RequestLog {
	return RequestLog{
		ID:               stmt.ColumnInt64(0),
		RequestID:        stmt.ColumnText(1),
		TsMs:             stmt.ColumnInt64(2),
		Worker:           stmt.ColumnInt(3),
		KeyID:            stmt.ColumnInt64(4),
		Endpoint:         stmt.ColumnText(5),
		Model:            stmt.ColumnText(6),
		Upstream:         stmt.ColumnText(7),
		UpstreamModel:    stmt.ColumnText(8),
		Status:           stmt.ColumnInt(9),
		Stream:           stmt.ColumnBool(10),
		LatencyUs:        stmt.ColumnInt64(11),
		TTFBUs:           stmt.ColumnInt64(12),
		PromptTokens:     stmt.ColumnInt64(13),
		CompletionTokens: stmt.ColumnInt64(14),
		ErrorClass:       stmt.ColumnText(15),
		Attempts:         stmt.ColumnText(16),
		AttemptCount:     stmt.ColumnInt(17),
		Cache:            stmt.ColumnText(18),
		Route:            stmt.ColumnText(19),
		TokensEstimated:  stmt.ColumnBool(20),
		CostMicroUSD:     stmt.ColumnInt64(21),
	}
}

// RequestLog returns request_logs row id, or ErrNotFound.
func (s *Store) RequestLog(ctx context.Context, id int64) (RequestLog, error) {
	var (
		l     RequestLog
		found bool
	)
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, selectRequestLogs+` WHERE id = :id`, &sqlitex.ExecOptions{
			Named:      map[string]any{":id": id},
			ResultFunc: func(stmt *sqlite.Stmt) error { l = scanRequestLog(stmt); found = true; return nil },
		})
	})
	if err != nil {
		return RequestLog{}, fmt.Errorf("store: read request log %d: %w", id, err)
	}
	if !found {
		return RequestLog{}, ErrNotFound
	}
	return l, nil
}

// DeleteLogs deletes the rows with ts_ms in [fromMs, toMs) (0 leaves a side open) and
// returns how many. Only rows of userID's keys are deleted when userID is not 0.
//
// Statistics are kept: roll-ups are history. Because request_logs ids are not
// AUTOINCREMENT, deleting the newest rows would let new rows reuse ids the roll-up has
// already passed; lowering the roll-up watermark in the same transaction keeps them counted.
func (s *Store) DeleteLogs(ctx context.Context, fromMs, toMs, userID int64) (int64, error) {
	if fromMs != 0 && toMs != 0 && fromMs >= toMs {
		return 0, errors.New("store: delete logs: the range is empty")
	}
	where, args := LogFilter{FromMs: fromMs, ToMs: toMs, UserID: userID}.where()
	var n int64
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		if err := sqlitex.Execute(conn, "DELETE FROM request_logs WHERE "+where, &sqlitex.ExecOptions{Named: args}); err != nil {
			return err
		}
		n = int64(conn.Changes())
		return sqlitex.Execute(conn, `UPDATE stats_state SET watermark = min(watermark, coalesce((SELECT max(id) FROM request_logs), 0))
WHERE id = 1`, nil)
	})
	if err != nil {
		return 0, fmt.Errorf("store: delete logs: %w", err)
	}
	return n, nil
}

// LogFacets returns the distinct models and upstreams seen in the statistics roll-ups
// (cheap, unlike a DISTINCT over request_logs), for the log filter's choices.
func (s *Store) LogFacets(ctx context.Context) (models, upstreams []string, err error) {
	err = s.read(ctx, func(conn *sqlite.Conn) error {
		if err := sqlitex.Execute(conn, "SELECT DISTINCT model FROM stats_hour WHERE model <> '' ORDER BY model LIMIT 200", &sqlitex.ExecOptions{
			ResultFunc: func(stmt *sqlite.Stmt) error { models = append(models, stmt.ColumnText(0)); return nil },
		}); err != nil {
			return err
		}
		return sqlitex.Execute(conn, "SELECT DISTINCT upstream FROM stats_hour WHERE upstream <> '' ORDER BY upstream LIMIT 200", &sqlitex.ExecOptions{
			ResultFunc: func(stmt *sqlite.Stmt) error { upstreams = append(upstreams, stmt.ColumnText(0)); return nil },
		})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("store: log facets: %w", err)
	}
	return models, upstreams, nil
}
