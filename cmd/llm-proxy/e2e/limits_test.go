package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// Limits, end to end: real supervisor and workers, real mockllm, limits set with the
// CLI. The limiter's state lives in the shared memory file, so the tests spread their
// requests over every worker (a new connection per request: SO_REUSEPORT picks the
// worker) and roll all workers in the middle of a window.

// rawAnswer is one HTTP exchange with the gateway.
type rawAnswer struct {
	status int
	header http.Header
	body   []byte
}

// postChat sends body to /v1/chat/completions with key through hc.
func postChat(ctx context.Context, hc *http.Client, g *gateway, key, body string) (rawAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.baseURL()+"/chat/completions", strings.NewReader(body))
	if err != nil {
		return rawAnswer{}, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return rawAnswer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return rawAnswer{status: resp.StatusCode, header: resp.Header, body: b}, err
}

func limitChatBody(model, prompt string, maxTokens int) string {
	b, _ := json.Marshal(map[string]any{
		"model":      model,
		"messages":   []map[string]string{{"role": "user", "content": prompt}},
		"max_tokens": maxTokens,
	})
	return string(b)
}

// check429 asserts a rate-limit refusal as OpenAI sends it: the error shape,
// Retry-After in whole seconds, and the x-ratelimit headers of the limits that apply.
func check429(t *testing.T, a rawAnswer, headers map[string]string) {
	t.Helper()
	if a.status != http.StatusTooManyRequests {
		t.Errorf("status %d, want 429: %s", a.status, a.body)
		return
	}
	checkErrorShape(t, a.body)
	// The limiter counts in 1 s buckets: a unit leaves the window 60 to 61 s after it came.
	if ra, err := strconv.Atoi(a.header.Get("Retry-After")); err != nil || ra < 1 || ra > 61 {
		t.Errorf("Retry-After = %q, want whole seconds from 1 to 61", a.header.Get("Retry-After"))
	}
	for name, want := range headers {
		got := a.header.Get(name)
		if want == "*" {
			if _, err := time.ParseDuration(got); err != nil {
				t.Errorf("%s = %q, want a duration", name, got)
			}
		} else if got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}

// TestRPMAcrossWorkersAndRoll: a 60 RPM key hammered by 300 requests within 30 s over
// 4 workers. The first half is sent, then every worker is replaced (SIGHUP rolls them
// one slot at a time), then the second half: at most 60 (+5% slack) are accepted in
// all, the second half gets nothing because the window survived the roll, and every
// refusal is a 429 with Retry-After and the x-ratelimit headers.
func TestRPMAcrossWorkersAndRoll(t *testing.T) {
	mock := startMock(t, "--reply", reply(3))
	g := newGateway(t, map[string]string{"LLM_PROXY_WORKERS": "4"})
	g.workers = 4
	g.cli(t, "upstreams", "add", "--name", "mock", "--base-url", mock.baseURL())
	keyID, key := g.createKey(t, "rpm60", "--rpm", "60")
	g.start(t)
	before := g.waitWorkers(t, nil, startTimeout)

	hc := freshClient(requestTimeout)
	started := time.Now()
	var mu sync.Mutex
	accepted := [2]int{}
	var refusals []rawAnswer
	wave := func(phase, n int) {
		var wg sync.WaitGroup
		next := make(chan int, n)
		for i := range n {
			next <- i
		}
		close(next)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range next {
					ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
					a, err := postChat(ctx, hc, g, key, limitChatBody("mock-1", "hi", 5))
					cancel()
					mu.Lock()
					switch {
					case err != nil:
						t.Errorf("request: %v", err)
					case a.status == http.StatusOK:
						accepted[phase]++
						if got := a.header.Get("x-ratelimit-limit-requests"); got != "60" {
							t.Errorf("accepted: x-ratelimit-limit-requests = %q, want 60", got)
						}
					default:
						refusals = append(refusals, a)
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	wave(0, 150)

	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP: %v", err)
	}
	exclude := map[int]bool{}
	for pid := range before {
		exclude[pid] = true
	}
	after := g.waitWorkers(t, exclude, 25*time.Second)
	for pid := range before {
		for isWorker(pid, g.cmd.Path) {
			if time.Since(started) > 25*time.Second {
				t.Fatalf("old worker %d still runs after the roll", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	wave(1, 150)
	elapsed := time.Since(started)
	if elapsed > 30*time.Second {
		t.Fatalf("300 requests and a roll took %s; the test needs them inside one window (< 30 s)", elapsed)
	}

	total := accepted[0] + accepted[1]
	t.Logf("accepted %d before the roll, %d after (workers %v then %v), %d refused, in %s",
		accepted[0], accepted[1], before, after, len(refusals), elapsed.Round(time.Millisecond))
	if total > 63 || total < 57 {
		t.Errorf("accepted %d requests of 300 at 60 RPM, want 60 (at most 63)", total)
	}
	if accepted[1] != 0 {
		t.Errorf("%d requests accepted after the roll, want 0: restarting the workers reset the window", accepted[1])
	}
	if len(refusals) != 300-total {
		t.Errorf("%d refusals, want %d", len(refusals), 300-total)
	}
	for i, a := range refusals {
		if i == 5 {
			break // the first few in detail; all of them below by status
		}
		check429(t, a, map[string]string{
			"x-ratelimit-limit-requests":     "60",
			"x-ratelimit-remaining-requests": "0",
			"x-ratelimit-reset-requests":     "*",
		})
	}
	for _, a := range refusals {
		if a.status != http.StatusTooManyRequests {
			t.Errorf("refusal with status %d, want 429: %s", a.status, a.body)
		}
	}

	// The records agree, and the requests really went to several workers.
	var rows, ok200, workers int
	deadline := time.Now().Add(recordTimeout)
	for {
		rows, ok200, workers = g.keyLogStats(t, keyID)
		if rows >= 300 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if rows != 300 || ok200 != total {
		t.Errorf("request_logs: %d rows (%d with status 200), want 300 (%d)", rows, ok200, total)
	}
	if workers < 2 {
		t.Errorf("requests were served by %d worker slot(s), want them spread over several", workers)
	}
}

// keyLogStats counts keyID's request_logs rows, those with status 200, and the
// distinct worker slots that served them.
func (g *gateway) keyLogStats(t *testing.T, keyID int64) (rows, ok200, workers int) {
	t.Helper()
	g.query(t, `SELECT COUNT(*), COALESCE(SUM(status = 200), 0), COUNT(DISTINCT worker) FROM request_logs WHERE key_id = :k`,
		map[string]any{":k": keyID}, func(stmt *sqlite.Stmt) {
			rows, ok200, workers = stmt.ColumnInt(0), stmt.ColumnInt(1), stmt.ColumnInt(2)
		})
	return rows, ok200, workers
}

// query runs one read-only statement on the gateway's database.
func (g *gateway) query(t *testing.T, sql string, args map[string]any, row func(*sqlite.Stmt)) {
	t.Helper()
	conn, err := sqlite.OpenConn(g.dbPath, sqlite.OpenReadOnly)
	if err != nil {
		t.Fatalf("open %s: %v", g.dbPath, err)
	}
	defer conn.Close()
	if err := sqlitex.ExecuteTransient(conn, "PRAGMA busy_timeout = 5000;", nil); err != nil {
		t.Fatalf("busy_timeout: %v", err)
	}
	if err := sqlitex.Execute(conn, sql, &sqlitex.ExecOptions{Named: args, ResultFunc: func(stmt *sqlite.Stmt) error {
		row(stmt)
		return nil
	}}); err != nil {
		t.Fatalf("query %q: %v", sql, err)
	}
}

// exec runs one write statement on the gateway's database (before it starts).
func (g *gateway) exec(t *testing.T, sql string, args map[string]any) {
	t.Helper()
	conn, err := sqlite.OpenConn(g.dbPath, sqlite.OpenReadWrite)
	if err != nil {
		t.Fatalf("open %s: %v", g.dbPath, err)
	}
	defer conn.Close()
	if err := sqlitex.Execute(conn, sql, &sqlitex.ExecOptions{Named: args}); err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
}

// usageOf reads prompt + completion tokens from a chat completion body.
func usageOf(t *testing.T, body []byte) int64 {
	t.Helper()
	var v struct {
		Usage struct {
			PromptTokens     int64 `json:"prompt_tokens"`
			CompletionTokens int64 `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.Usage.CompletionTokens == 0 {
		t.Fatalf("no usage in %s (%v)", body, err)
	}
	return v.Usage.PromptTokens + v.Usage.CompletionTokens
}

// TestTPMSettledWithRealUsage: a 1000 TPM key. Each request reserves its estimate
// (prompt bytes / 4 + max_tokens = a few hundred tokens) but mockllm reports about ten:
// settlement hands the difference back, so twenty requests in a row pass where the
// estimates alone would stop at four. A request whose estimate exceeds what the real
// usage left is refused with the token headers, and the remaining tokens it reports
// are exactly the limit less the usage mockllm reported.
func TestTPMSettledWithRealUsage(t *testing.T) {
	mock := startMock(t, "--reply", reply(5))
	g := newGateway(t, nil)
	g.cli(t, "upstreams", "add", "--name", "mock", "--base-url", mock.baseURL())
	_, key := g.createKey(t, "tpm", "--tpm", "1000")
	g.start(t)
	hc := freshClient(requestTimeout)

	var used int64
	for i := range 20 {
		ctx := ctxTimeout(t, requestTimeout)
		a, err := postChat(ctx, hc, g, key, limitChatBody("mock-1", "hi", 200))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if a.status != http.StatusOK {
			t.Fatalf("request %d after %d real tokens: status %d, want 200 (settlement did not return the unused estimate): %s",
				i, used, a.status, a.body)
		}
		used += usageOf(t, a.body)
		if got := a.header.Get("x-ratelimit-limit-tokens"); got != "1000" {
			t.Errorf("x-ratelimit-limit-tokens = %q, want 1000", got)
		}
	}
	// Estimate ~ 980 tokens: within the limit alone, above what is left.
	ctx := ctxTimeout(t, requestTimeout)
	a, err := postChat(ctx, hc, g, key, limitChatBody("mock-1", "hi", 960))
	if err != nil {
		t.Fatal(err)
	}
	check429(t, a, map[string]string{
		"x-ratelimit-limit-tokens":     "1000",
		"x-ratelimit-remaining-tokens": strconv.FormatInt(1000-used, 10),
		"x-ratelimit-reset-tokens":     "*",
	})
	if !strings.Contains(string(a.body), "tokens per minute") {
		t.Errorf("refusal body %s does not name the tokens-per-minute limit", a.body)
	}
	// A small request still fits.
	a, err = postChat(ctxTimeout(t, requestTimeout), hc, g, key, limitChatBody("mock-1", "hi", 10))
	if err != nil || a.status != http.StatusOK {
		t.Errorf("small request after the refusal: status %d, %v: %s", a.status, err, a.body)
	}
}

// TestBudgetConcurrentReservations: a key with a $0.24 budget, where a request costs
// about $0.024 (24 tokens at $1000 per million) and reserves $0.04 (its estimate).
// 50 requests at once, then more one at a time until the budget refuses: the spend
// recorded in request_logs never exceeds the budget by more than one reservation, and
// the spend ledger (flushed every second) agrees with request_logs.
func TestBudgetConcurrentReservations(t *testing.T) {
	mock := startMock(t, "--reply", reply(20), "--latency", "300ms")
	g := newGateway(t, nil)
	g.cli(t, "upstreams", "add", "--name", "mock", "--base-url", mock.baseURL())
	g.exec(t, `INSERT INTO prices (model, input_per_mtok, output_per_mtok, updated_at) VALUES ('mock-1', 1000, 1000, 0)`, nil)
	keyID, key := g.createKey(t, "budget", "--budget", "0.24", "--budget-period", "day")
	g.start(t)
	hc := freshClient(requestTimeout)

	const budgetMicro = 240_000
	const reservationMicro = 40_000 // about 76 bytes / 4 + 1 + max_tokens 20 = 40 tokens
	body := limitChatBody("mock-1", "x", 20)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok, refused int
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
			defer cancel()
			a, err := postChat(ctx, hc, g, key, body)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				t.Errorf("request: %v", err)
			case a.status == http.StatusOK:
				ok++
			case a.status == http.StatusTooManyRequests:
				refused++
				if !strings.Contains(string(a.body), "budget") {
					t.Errorf("refusal %s does not name the budget", a.body)
				}
			default:
				t.Errorf("status %d: %s", a.status, a.body)
			}
		}()
	}
	wg.Wait()
	if ok == 0 || refused == 0 {
		t.Fatalf("50 parallel requests: %d accepted, %d refused; want both", ok, refused)
	}
	// Use up the rest one at a time.
	for i := 0; ; i++ {
		if i == 20 {
			t.Fatalf("budget never refused after %d more requests", i)
		}
		a, err := postChat(ctxTimeout(t, requestTimeout), hc, g, key, body)
		if err != nil {
			t.Fatal(err)
		}
		if a.status == http.StatusTooManyRequests {
			break
		}
		ok++
	}

	// request_logs: every request ingested, the spend bounded.
	var rows, spent int64
	deadline := time.Now().Add(recordTimeout)
	for {
		g.query(t, `SELECT COUNT(*), COALESCE(SUM(cost_micro_usd), 0) FROM request_logs WHERE key_id = :k AND status = 200`,
			map[string]any{":k": keyID}, func(s *sqlite.Stmt) { rows, spent = s.ColumnInt64(0), s.ColumnInt64(1) })
		if rows >= int64(ok) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%d accepted, spend %d micro-USD of a %d budget", ok, spent, budgetMicro)
	if rows != int64(ok) {
		t.Fatalf("request_logs has %d accepted rows, want %d", rows, ok)
	}
	if spent > budgetMicro+reservationMicro {
		t.Errorf("spent %d micro-USD, more than the budget %d plus one reservation %d", spent, budgetMicro, reservationMicro)
	}
	if spent < budgetMicro/2 {
		t.Errorf("spent only %d micro-USD of %d: the budget refused too early", spent, budgetMicro)
	}
	// The ledger catches up within a flush interval or two.
	var ledger int64
	deadline = time.Now().Add(recordTimeout)
	for {
		g.query(t, `SELECT COALESCE(SUM(micro_usd), 0) FROM spend WHERE subject = :s AND period_start != 'total' AND length(period_start) = 10`,
			map[string]any{":s": fmt.Sprintf("key:%d", keyID)}, func(s *sqlite.Stmt) { ledger = s.ColumnInt64(0) })
		if ledger == spent || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ledger != spent {
		t.Errorf("spend ledger (day) = %d micro-USD, request_logs say %d", ledger, spent)
	}
}
