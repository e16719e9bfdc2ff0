package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// LatencyBoundsMs are the upper bounds (exclusive) of the roll-ups' latency bands h0..h10;
// h11 counts everything from the last bound up. Fixed bands make a percentile a sum over
// twelve columns whatever the number of requests, at the price of interpolating inside one
// band (at worst the band's width, which grows with the latency).
var LatencyBoundsMs = [HistBands - 1]int64{25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000}

// HistBands is the number of latency bands in a roll-up row.
const HistBands = 12

// Retention of the roll-ups: minutes feed the last-hour view, hours the day and week views.
const (
	MinuteStatsRetention = 48 * time.Hour
	HourStatsRetention   = 400 * 24 * time.Hour
)

// StatsCounts are the additive measures of a set of requests.
type StatsCounts struct {
	Requests         int64
	Errors           int64 // status >= 400 or an error class
	LatencyUsSum     int64
	PromptTokens     int64
	CompletionTokens int64
	Hist             [HistBands]int64
}

func (c *StatsCounts) add(o *StatsCounts) {
	c.Requests += o.Requests
	c.Errors += o.Errors
	c.LatencyUsSum += o.LatencyUsSum
	c.PromptTokens += o.PromptTokens
	c.CompletionTokens += o.CompletionTokens
	for i := range c.Hist {
		c.Hist[i] += o.Hist[i]
	}
}

// ErrorRate is Errors/Requests, 0 without requests.
func (c StatsCounts) ErrorRate() float64 {
	if c.Requests == 0 {
		return 0
	}
	return float64(c.Errors) / float64(c.Requests)
}

// MeanLatencyMs is the mean latency in milliseconds, 0 without requests.
func (c StatsCounts) MeanLatencyMs() float64 {
	if c.Requests == 0 {
		return 0
	}
	return float64(c.LatencyUsSum) / float64(c.Requests) / 1000
}

// PercentileMs estimates the q-quantile (0 < q <= 1) of the latency in milliseconds from
// the bands, interpolating linearly inside the band that holds it. In the open last band
// it answers that band's lower bound. 0 without requests.
func (c StatsCounts) PercentileMs(q float64) float64 {
	var total int64
	for _, n := range c.Hist {
		total += n
	}
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var seen float64
	for i, n := range c.Hist {
		if n == 0 {
			continue
		}
		if seen+float64(n) >= rank {
			lo := float64(0)
			if i > 0 {
				lo = float64(LatencyBoundsMs[i-1])
			}
			if i == HistBands-1 {
				return lo
			}
			hi := float64(LatencyBoundsMs[i])
			return lo + (hi-lo)*(rank-seen)/float64(n)
		}
		seen += float64(n)
	}
	return float64(LatencyBoundsMs[len(LatencyBoundsMs)-1])
}

func band(latencyUs int64) int {
	ms := latencyUs / 1000
	for i, b := range LatencyBoundsMs {
		if ms < b {
			return i
		}
	}
	return HistBands - 1
}

type rollupKey struct {
	bucket   int64
	keyID    int64
	model    string
	upstream string
}

// RollupStats folds request_logs rows above the watermark into stats_minute and
// stats_hour, batch rows per fenced transaction (so a deposed primary writes nothing and
// the write lock is held briefly), until it has caught up or ctx ends. It returns the
// number of rows folded. Old roll-up rows are pruned relative to now.
func (s *Store) RollupStats(ctx context.Context, epoch int64, batch int, now time.Time) (int, error) {
	if batch < 1 {
		batch = 1
	}
	total := 0
	for {
		n, err := s.rollupBatch(ctx, epoch, batch)
		total += n
		if err != nil {
			return total, err
		}
		if n < batch {
			break
		}
		if err := ctx.Err(); err != nil {
			return total, fmt.Errorf("store: roll up stats: %w", err)
		}
	}
	err := s.FencedExec(ctx, epoch, func(conn *sqlite.Conn) error {
		if err := sqlitex.Execute(conn, "DELETE FROM stats_minute WHERE bucket < :cut", &sqlitex.ExecOptions{
			Named: map[string]any{":cut": now.Add(-MinuteStatsRetention).Unix()},
		}); err != nil {
			return err
		}
		return sqlitex.Execute(conn, "DELETE FROM stats_hour WHERE bucket < :cut", &sqlitex.ExecOptions{
			Named: map[string]any{":cut": now.Add(-HourStatsRetention).Unix()},
		})
	})
	return total, err
}

func (s *Store) rollupBatch(ctx context.Context, epoch int64, batch int) (int, error) {
	n := 0
	err := s.FencedExec(ctx, epoch, func(conn *sqlite.Conn) error {
		var mark int64
		if err := sqlitex.Execute(conn, "SELECT watermark FROM stats_state WHERE id = 1", &sqlitex.ExecOptions{
			ResultFunc: func(stmt *sqlite.Stmt) error { mark = stmt.ColumnInt64(0); return nil },
		}); err != nil {
			return err
		}
		minutes := map[rollupKey]*StatsCounts{}
		hours := map[rollupKey]*StatsCounts{}
		last := mark
		err := sqlitex.Execute(conn, `SELECT id, ts_ms, coalesce(key_id, 0), model, upstream, status, latency_us,
  prompt_tokens, completion_tokens, error_class <> ''
FROM request_logs WHERE id > :mark ORDER BY id LIMIT :batch`, &sqlitex.ExecOptions{
			Named: map[string]any{":mark": mark, ":batch": batch},
			ResultFunc: func(stmt *sqlite.Stmt) error {
				n++
				last = stmt.ColumnInt64(0)
				sec := stmt.ColumnInt64(1) / 1000
				var c StatsCounts
				c.Requests = 1
				if stmt.ColumnInt(5) >= 400 || stmt.ColumnBool(9) {
					c.Errors = 1
				}
				lat := stmt.ColumnInt64(6)
				c.LatencyUsSum = lat
				c.PromptTokens = stmt.ColumnInt64(7)
				c.CompletionTokens = stmt.ColumnInt64(8)
				c.Hist[band(lat)] = 1
				k := rollupKey{keyID: stmt.ColumnInt64(2), model: stmt.ColumnText(3), upstream: stmt.ColumnText(4)}
				for _, t := range []struct {
					m    map[rollupKey]*StatsCounts
					size int64
				}{{minutes, 60}, {hours, 3600}} {
					k.bucket = sec - sec%t.size
					agg := t.m[k]
					if agg == nil {
						agg = &StatsCounts{}
						t.m[k] = agg
					}
					agg.add(&c)
				}
				return nil
			},
		})
		if err != nil || n == 0 {
			return err
		}
		if err := upsertRollups(conn, "stats_minute", minutes); err != nil {
			return err
		}
		if err := upsertRollups(conn, "stats_hour", hours); err != nil {
			return err
		}
		return sqlitex.Execute(conn, "UPDATE stats_state SET watermark = :last WHERE id = 1", &sqlitex.ExecOptions{
			Named: map[string]any{":last": last},
		})
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

var histCols, histExcluded, histParams string

func init() {
	var c, e, p []string
	for i := 0; i < HistBands; i++ {
		c = append(c, fmt.Sprintf("h%d", i))
		e = append(e, fmt.Sprintf("h%d = h%d + excluded.h%d", i, i, i))
		p = append(p, fmt.Sprintf("?%d", 10+i))
	}
	histCols, histExcluded, histParams = strings.Join(c, ", "), strings.Join(e, ", "), strings.Join(p, ", ")
}

func upsertRollups(conn *sqlite.Conn, table string, rows map[rollupKey]*StatsCounts) error {
	// table is one of two constants; values are bound by position.
	stmt, err := conn.Prepare(`INSERT INTO ` + table + `(bucket, key_id, model, upstream, requests, errors, latency_us_sum,
  prompt_tokens, completion_tokens, ` + histCols + `)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ` + histParams + `)
ON CONFLICT(bucket, key_id, model, upstream) DO UPDATE SET requests = requests + excluded.requests,
  errors = errors + excluded.errors, latency_us_sum = latency_us_sum + excluded.latency_us_sum,
  prompt_tokens = prompt_tokens + excluded.prompt_tokens, completion_tokens = completion_tokens + excluded.completion_tokens,
  ` + histExcluded)
	if err != nil {
		return err
	}
	for k, c := range rows {
		stmt.BindInt64(1, k.bucket)
		stmt.BindInt64(2, k.keyID)
		stmt.BindText(3, k.model)
		stmt.BindText(4, k.upstream)
		stmt.BindInt64(5, c.Requests)
		stmt.BindInt64(6, c.Errors)
		stmt.BindInt64(7, c.LatencyUsSum)
		stmt.BindInt64(8, c.PromptTokens)
		stmt.BindInt64(9, c.CompletionTokens)
		for i, h := range c.Hist {
			stmt.BindInt64(10+i, h)
		}
		if _, err := stmt.Step(); err != nil {
			stmt.Reset()
			return err
		}
		if err := stmt.Reset(); err != nil {
			return err
		}
	}
	return nil
}

// StatsWatermark is the last request_logs id folded into the roll-ups.
func (s *Store) StatsWatermark(ctx context.Context) (int64, error) {
	var w int64
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, "SELECT watermark FROM stats_state WHERE id = 1", &sqlitex.ExecOptions{
			ResultFunc: func(stmt *sqlite.Stmt) error { w = stmt.ColumnInt64(0); return nil },
		})
	})
	if err != nil {
		return 0, fmt.Errorf("store: stats watermark: %w", err)
	}
	return w, nil
}

// StatsQuery selects roll-up data for the dashboard.
type StatsQuery struct {
	From, To time.Time     // buckets starting in [From, To)
	Step     time.Duration // series resolution: under an hour reads the minute roll-up (a multiple of 1m), else the hour roll-up (a multiple of 1h)
	UserID   int64         // only keys of this user; 0: everything
	KeyID    int64         // only this key; 0: every key
}

// StatsPoint is one step of the series.
type StatsPoint struct {
	Bucket time.Time
	StatsCounts
}

// StatsGroup is the total of one upstream or model over the whole range.
type StatsGroup struct {
	Name string
	StatsCounts
}

// StatsResult is the dashboard's data.
type StatsResult struct {
	Series     []StatsPoint // one per step with requests, ascending; steps without requests are absent
	Total      StatsCounts
	ByUpstream []StatsGroup // by requests, descending
	ByModel    []StatsGroup // by requests, descending
}

// Stats reads only the roll-ups, never request_logs, so its cost depends on the range and
// the number of key/model/upstream combinations, not on the number of requests.
func (s *Store) Stats(ctx context.Context, q StatsQuery) (StatsResult, error) {
	table, unit := "stats_minute", int64(60)
	if q.Step >= time.Hour {
		table, unit = "stats_hour", 3600
	}
	step := int64(q.Step / time.Second)
	if step < unit {
		step = unit
	}
	step -= step % unit
	where := "bucket >= :from AND bucket < :to"
	args := map[string]any{":from": q.From.Unix(), ":to": q.To.Unix()}
	if q.UserID != 0 {
		where += " AND key_id IN (SELECT id FROM api_keys WHERE user_id = :user)"
		args[":user"] = q.UserID
	}
	if q.KeyID != 0 {
		where += " AND key_id = :key"
		args[":key"] = q.KeyID
	}
	sums := "sum(requests), sum(errors), sum(latency_us_sum), sum(prompt_tokens), sum(completion_tokens)"
	for i := 0; i < HistBands; i++ {
		sums += fmt.Sprintf(", sum(h%d)", i)
	}
	scan := func(stmt *sqlite.Stmt, from int) StatsCounts {
		c := StatsCounts{
			Requests: stmt.ColumnInt64(from), Errors: stmt.ColumnInt64(from + 1), LatencyUsSum: stmt.ColumnInt64(from + 2),
			PromptTokens: stmt.ColumnInt64(from + 3), CompletionTokens: stmt.ColumnInt64(from + 4),
		}
		for i := range c.Hist {
			c.Hist[i] = stmt.ColumnInt64(from + 5 + i)
		}
		return c
	}
	var res StatsResult
	err := s.read(ctx, func(conn *sqlite.Conn) (err error) {
		// One read transaction: the three answers describe the same moment.
		defer sqlitex.Transaction(conn)(&err)
		args[":step"] = step
		err = sqlitex.Execute(conn, "SELECT bucket - bucket % :step AS b, "+sums+" FROM "+table+" WHERE "+where+" GROUP BY b ORDER BY b",
			&sqlitex.ExecOptions{Named: args, ResultFunc: func(stmt *sqlite.Stmt) error {
				p := StatsPoint{Bucket: time.Unix(stmt.ColumnInt64(0), 0), StatsCounts: scan(stmt, 1)}
				res.Total.add(&p.StatsCounts)
				res.Series = append(res.Series, p)
				return nil
			}})
		if err != nil {
			return err
		}
		delete(args, ":step")
		for _, g := range []struct {
			col string
			out *[]StatsGroup
		}{{"upstream", &res.ByUpstream}, {"model", &res.ByModel}} {
			err = sqlitex.Execute(conn, "SELECT "+g.col+", "+sums+" FROM "+table+" WHERE "+where+" GROUP BY "+g.col+" ORDER BY 2 DESC LIMIT 50",
				&sqlitex.ExecOptions{Named: args, ResultFunc: func(stmt *sqlite.Stmt) error {
					*g.out = append(*g.out, StatsGroup{Name: stmt.ColumnText(0), StatsCounts: scan(stmt, 1)})
					return nil
				}})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return StatsResult{}, fmt.Errorf("store: stats: %w", err)
	}
	return res, nil
}
