package store

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"testing"
	"time"
)

func statsLease(tb testing.TB, s *Store) int64 {
	tb.Helper()
	l, won, err := s.TryAcquire(tb.Context(), "me", 1, -1, time.Now())
	if err != nil || !won {
		tb.Fatalf("TryAcquire: %t, %v", won, err)
	}
	return l.Epoch
}

func TestPercentileFromBands(t *testing.T) {
	for _, tc := range []struct {
		name string
		lat  []int64 // ms
		q    float64
		want float64
	}{
		{"empty", nil, 0.5, 0},
		{"one band", []int64{10, 10, 10, 10}, 0.5, 12.5}, // half of [0,25)
		{"p95 in second band", append(make([]int64, 90), 30, 30, 30, 30, 30, 30, 30, 30, 30, 30), 0.95, 37.5},
		{"open last band", []int64{90_000}, 0.5, 60_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c StatsCounts
			for _, ms := range tc.lat {
				c.Hist[band(ms*1000)]++
			}
			if got := c.PercentileMs(tc.q); math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRollupStatsIncrementalAndFenced(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	uid, _ := s.CreateUser(ctx, User{Username: "u", PasswordHash: "h", Role: RoleUser})
	mine, _ := s.CreateOwnedAPIKey(ctx, APIKey{Name: "mine", Hash: [32]byte{1}, Prefix: "a"}, uid)
	epoch := statsLease(t, s)
	now := time.Now().Truncate(time.Hour).Add(30 * time.Minute)
	mk := func(id string, ago time.Duration, key int64, model, up string, status int, latMs int64, errClass string) RequestLog {
		return RequestLog{RequestID: id, TsMs: now.Add(-ago).UnixMilli(), KeyID: key, Model: model, Upstream: up,
			Status: status, LatencyUs: latMs * 1000, PromptTokens: 10, CompletionTokens: 5, ErrorClass: errClass}
	}
	insertLogs(t, s, []RequestLog{
		mk("1", 0, mine, "m1", "a", 200, 10, ""),
		mk("2", time.Minute, mine, "m1", "a", 200, 30, ""),
		mk("3", time.Minute, 0, "m2", "b", 502, 200, "upstream_error"),
	})
	// A deposed primary folds nothing.
	if _, err := s.RollupStats(ctx, epoch+1, 2, now); !errors.Is(err, ErrFenced) {
		t.Fatalf("RollupStats at a stale epoch: %v, want ErrFenced", err)
	}
	if w, _ := s.StatsWatermark(ctx); w != 0 {
		t.Errorf("watermark moved under a stale epoch: %d", w)
	}
	// Batches of 2 over 3 rows, then one more row: each row counted once.
	if n, err := s.RollupStats(ctx, epoch, 2, now); err != nil || n != 3 {
		t.Fatalf("RollupStats = %d, %v; want 3", n, err)
	}
	insertLogs(t, s, []RequestLog{mk("4", 0, mine, "m1", "a", 200, 10, "")})
	if n, err := s.RollupStats(ctx, epoch, 2, now); err != nil || n != 1 {
		t.Fatalf("second RollupStats = %d, %v; want 1", n, err)
	}
	if n, _ := s.RollupStats(ctx, epoch, 2, now); n != 0 {
		t.Errorf("a caught-up roll-up folded %d rows", n)
	}

	for _, tc := range []struct {
		name     string
		q        StatsQuery
		requests int64
		errors   int64
		points   int
		tokens   int64
	}{
		{"minutes", StatsQuery{From: now.Add(-time.Hour), To: now.Add(time.Minute), Step: time.Minute}, 4, 1, 2, 60},
		{"hours", StatsQuery{From: now.Add(-24 * time.Hour), To: now.Add(time.Hour), Step: time.Hour}, 4, 1, 1, 60},
		{"user", StatsQuery{From: now.Add(-time.Hour), To: now.Add(time.Minute), Step: time.Minute, UserID: uid}, 3, 0, 2, 45},
		{"out of range", StatsQuery{From: now.Add(time.Hour), To: now.Add(2 * time.Hour), Step: time.Minute}, 0, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := s.Stats(ctx, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			got := fmt.Sprint(res.Total.Requests, res.Total.Errors, len(res.Series), res.Total.PromptTokens+res.Total.CompletionTokens)
			want := fmt.Sprint(tc.requests, tc.errors, tc.points, tc.tokens)
			if got != want {
				t.Errorf("requests errors points tokens = %s, want %s", got, want)
			}
		})
	}
	res, _ := s.Stats(ctx, StatsQuery{From: now.Add(-time.Hour), To: now.Add(time.Minute), Step: time.Minute})
	if len(res.ByUpstream) != 2 || res.ByUpstream[0].Name != "a" || res.ByUpstream[0].Requests != 3 {
		t.Errorf("ByUpstream = %+v", res.ByUpstream)
	}
	if len(res.ByModel) != 2 || res.ByModel[1].Name != "m2" || res.ByModel[1].ErrorRate() != 1 {
		t.Errorf("ByModel = %+v", res.ByModel)
	}
}

// genLogs is the synthetic traffic of the benchmarks: n rows spread over the last week,
// 20 keys, 8 models, 4 upstreams, 2% errors.
func genLogs(n int, now time.Time) []RequestLog {
	rows := make([]RequestLog, n)
	span := int64(7 * 24 * time.Hour / time.Millisecond)
	start := now.UnixMilli() - span
	for i := range rows {
		r := &rows[i]
		r.RequestID = "req-" + strconv.Itoa(i)
		r.TsMs = start + span*int64(i)/int64(n)
		r.KeyID = int64(i%20 + 1)
		r.Model = "model-" + strconv.Itoa(i%8)
		r.Upstream = "up-" + strconv.Itoa(i%4)
		r.Status = 200
		r.LatencyUs = int64(50_000 + (i*7919)%2_000_000)
		r.PromptTokens, r.CompletionTokens = 20, int64(i%300)
		if i%50 == 0 {
			r.Status, r.ErrorClass = 502, "upstream_error"
		}
	}
	return rows
}

// BenchmarkDashboardStats times the dashboard's three queries over roll-ups built from
// LLM_PROXY_BENCH_ROWS request rows (default 1,000,000). Building the data set is not
// timed; its cost is reported once.
func BenchmarkDashboardStats(b *testing.B) {
	rows := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("LLM_PROXY_BENCH_ROWS")); err == nil && v > 0 {
		rows = v
	}
	ctx := b.Context()
	s, err := Open(ctx, Config{Path: b.TempDir() + "/bench.db", MaxOpenConns: 4, MaxIdleConns: 4}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	t0 := time.Now()
	const chunk = 100_000
	all := genLogs(rows, now)
	for i := 0; i < rows; i += chunk {
		insertLogs(b, s, all[i:min(i+chunk, rows)])
	}
	all = nil
	insert := time.Since(t0)
	epoch := statsLease(b, s)
	t0 = time.Now()
	if n, err := s.RollupStats(ctx, epoch, 20_000, now); err != nil || n != rows {
		b.Fatalf("RollupStats = %d, %v", n, err)
	}
	b.Logf("%d rows: insert %s, full roll-up %s", rows, insert.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	for _, r := range []struct {
		name string
		q    StatsQuery
	}{
		{"hour", StatsQuery{From: now.Add(-time.Hour), To: now, Step: time.Minute}},
		{"day", StatsQuery{From: now.Add(-24 * time.Hour), To: now, Step: time.Hour}},
		{"week", StatsQuery{From: now.Add(-7 * 24 * time.Hour), To: now, Step: time.Hour}},
	} {
		b.Run(r.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Stats(ctx, r.q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("logs-first-page", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.QueryLogs(ctx, LogFilter{Limit: 50}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
