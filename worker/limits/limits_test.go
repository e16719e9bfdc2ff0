package limits

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/store/shm"
)

// Child processes are this test binary re-executed with LIMITS_TEST_CHILD set.
func TestMain(m *testing.M) {
	if mode := os.Getenv("LIMITS_TEST_CHILD"); mode != "" {
		if err := runChild(mode); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runChild(mode string) error {
	r, err := shm.Open(os.Getenv("LIMITS_TEST_PATH"), 1<<20)
	if err != nil {
		return err
	}
	defer r.Close()
	switch mode {
	case "hammer":
		// 8 goroutines × 100 requests at a 60 RPM key, real clock; print how many got in.
		l := New(r, nil, nil)
		var admitted atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 100 {
					t, d := l.Admit(Key(1), Limits{RPM: 60}, Estimate{})
					if d.Allowed {
						admitted.Add(1)
						l.Finish(&t, 0, 0)
					}
				}
			}()
		}
		wg.Wait()
		fmt.Println(admitted.Load())
		return nil
	case "window":
		// Goroutines admit on one window at the times of a clock the parent moves forward
		// in the shared file; every admission's charged second is printed.
		clock, err := r.Slot("test-clock")
		if err != nil {
			return err
		}
		s, err := r.Slot("rpm:property")
		if err != nil {
			return err
		}
		w := window{s}
		limit, _ := strconv.ParseInt(os.Getenv("LIMITS_TEST_LIMIT"), 10, 64)
		end, _ := strconv.ParseInt(os.Getenv("LIMITS_TEST_END"), 10, 64)
		var mu sync.Mutex
		var out []string
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					before := clock.Load(0)
					if before >= end {
						return
					}
					sec, ok, _ := w.admit(before, 1, limit)
					after := clock.Load(0)
					if ok {
						mu.Lock()
						out = append(out, fmt.Sprintf("%d %d %d", sec, before/1e9, after/1e9))
						mu.Unlock()
					}
					time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
				}
			}()
		}
		wg.Wait()
		fmt.Println(strings.Join(out, "\n"))
		return nil
	case "hold":
		// Hold two parallel requests of key 5, say so, and wait to be killed.
		l := New(r, nil, nil)
		for range 2 {
			if _, d := l.Admit(Key(5), Limits{MaxParallel: 2}, Estimate{}); !d.Allowed {
				return fmt.Errorf("refused: %v", d.Reason)
			}
		}
		fmt.Println("ready")
		time.Sleep(time.Minute)
		return fmt.Errorf("not killed")
	}
	return fmt.Errorf("unknown mode %q", mode)
}

func child(path, mode string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, "LIMITS_TEST_CHILD="+mode, "LIMITS_TEST_PATH="+path)...)
	cmd.Stderr = os.Stderr
	return cmd
}

func openRegion(t testing.TB, path string) *shm.Region {
	t.Helper()
	r, err := shm.Open(path, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Add(d time.Duration) { c.ns.Add(int64(d)) }
func newClock(t time.Time) *fakeClock    { c := &fakeClock{}; c.ns.Store(t.UnixNano()); return c }
func testLimiter(t testing.TB) (*Limiter, *fakeClock) {
	t.Helper()
	c := newClock(time.Date(2025, 11, 25, 12, 0, 0, 0, time.UTC))
	return New(openRegion(t, filepath.Join(t.TempDir(), "llm-proxy.shm")), c.Now, hclog.NewNullLogger()), c
}

// checkWindows fails if any 61 consecutive charged seconds hold more than limit, which
// is what bounds any 60 s interval of admission times (see window's comment).
func checkWindows(t *testing.T, secs []int64, limit int) {
	t.Helper()
	slices.Sort(secs)
	j := 0
	for i := range secs {
		for secs[i]-secs[j] > 60 {
			j++
		}
		if n := i - j + 1; n > limit {
			t.Fatalf("%d admissions in seconds %d..%d, limit %d", n, secs[j], secs[i], limit)
		}
	}
}

// Property: random arrival times from many goroutines never put more than N in any
// window, and the window is used (not trivially refusing).
func TestWindowPropertyGoroutines(t *testing.T) {
	r := openRegion(t, filepath.Join(t.TempDir(), "llm-proxy.shm"))
	for _, limit := range []int64{1, 7, 60, 500} {
		s, err := r.Slot("rpm:prop:" + strconv.FormatInt(limit, 10))
		if err != nil {
			t.Fatal(err)
		}
		w := window{s}
		var clock atomic.Int64
		clock.Store(1_700_000_000 * int64(time.Second))
		end := clock.Load() + 400*int64(time.Second)
		var mu sync.Mutex
		var secs []int64
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(g), uint64(limit)))
				for {
					// Each goroutine pushes the shared clock forward by a random step
					// (sometimes a burst at one instant, sometimes a gap of seconds).
					now := clock.Add(int64(rng.ExpFloat64() * float64(60*time.Second) / float64(3*limit)))
					if now >= end {
						return
					}
					cost := int64(1)
					if sec, ok, _ := w.admit(now, cost, limit); ok {
						if int64(sec) < now/1e9 {
							t.Errorf("charged second %d before the arrival second %d", sec, now/1e9)
						}
						mu.Lock()
						secs = append(secs, int64(sec))
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		checkWindows(t, secs, int(limit))
		// 400 s is 6+ windows: a working limiter admits several windows' worth. The
		// arrivals are random (with limit 1 there are only ~20 of them), so the bound
		// asks for half the windows, not all: it catches a stuck limiter, not a slow one.
		if got, want := int64(len(secs)), 3*limit; got < want {
			t.Errorf("limit %d: admitted %d over 400 s, want at least %d", limit, got, want)
		}
	}
}

// Property across processes: 3 processes × 4 goroutines on one window, times from a
// clock the parent moves forward in shared memory.
func TestWindowPropertyProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "llm-proxy.shm")
	r := openRegion(t, path)
	clock, err := r.Slot("test-clock")
	if err != nil {
		t.Fatal(err)
	}
	start := int64(1_700_000_000) * int64(time.Second)
	end := start + 300*int64(time.Second)
	clock.Store(0, start)
	const limit = 20
	var outs [3]strings.Builder
	var cmds []*exec.Cmd
	for i := range outs {
		cmd := child(path, "window", "LIMITS_TEST_LIMIT="+strconv.Itoa(limit), "LIMITS_TEST_END="+strconv.FormatInt(end, 10))
		cmd.Stdout = &outs[i]
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	// 300 simulated seconds in about a second of real time, in random steps.
	for now := start; now < end; {
		now += int64(rand.IntN(600)) * int64(time.Millisecond)
		clock.Store(0, now)
		time.Sleep(2 * time.Millisecond)
	}
	var secs []int64
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("child: %v", err)
		}
		for _, line := range strings.Split(strings.TrimSpace(outs[i].String()), "\n") {
			if line == "" {
				continue
			}
			var sec, before, after int64
			if _, err := fmt.Sscan(line, &sec, &before, &after); err != nil {
				t.Fatalf("child line %q: %v", line, err)
			}
			if sec < before || sec > after {
				t.Errorf("charged second %d outside the clock readings %d..%d around the call", sec, before, after)
			}
			secs = append(secs, sec)
		}
	}
	checkWindows(t, secs, limit)
	if len(secs) < 3*limit {
		t.Errorf("admitted %d over 300 s at %d per minute, want at least %d", len(secs), limit, 3*limit)
	}
}

// 4 worker processes × 8 goroutines hammer a 60 RPM key: exactly 60 get in, and a
// restarted process (region closed and reopened) still sees the window full.
func TestRPMAcrossProcessesAndRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "llm-proxy.shm")
	var outs [4]strings.Builder
	var cmds []*exec.Cmd
	for i := range outs {
		cmd := child(path, "hammer")
		cmd.Stdout = &outs[i]
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	total := 0
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("child: %v", err)
		}
		n, err := strconv.Atoi(strings.TrimSpace(outs[i].String()))
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	if total != 60 {
		t.Errorf("admitted %d of 3200 across 4 processes, want exactly 60", total)
	}
	l := New(openRegion(t, path), nil, nil)
	_, d := l.Admit(Key(1), Limits{RPM: 60}, Estimate{})
	if d.Allowed || d.Reason != ReasonRPM {
		t.Fatalf("after restart: Allowed=%v Reason=%v, want refused by RPM", d.Allowed, d.Reason)
	}
	if d.RetryAfter < 55*time.Second || d.RetryAfter > 61*time.Second {
		t.Errorf("RetryAfter = %v, want about a minute", d.RetryAfter)
	}
	if d.Requests.Remaining != 0 || d.Requests.Limit != 60 {
		t.Errorf("Requests = %+v, want limit 60, remaining 0", d.Requests)
	}
}

func TestRPMSlidesAndRetryAfter(t *testing.T) {
	l, clock := testLimiter(t)
	lim := Limits{RPM: 3}
	// Requests at t=0, 10, 20 s fill the window; t=30 is refused until the first leaves.
	for i := range 3 {
		if _, d := l.Admit(Key(1), lim, Estimate{}); !d.Allowed || d.Requests.Remaining != int64(2-i) {
			t.Fatalf("request %d: %+v", i, d)
		}
		clock.Add(10 * time.Second)
	}
	_, d := l.Admit(Key(1), lim, Estimate{})
	if d.Allowed {
		t.Fatal("4th request in a minute admitted")
	}
	// The t=0 request is counted until 61 s: 31 s from t=30.
	if d.RetryAfter != 31*time.Second {
		t.Errorf("RetryAfter = %v, want 31s", d.RetryAfter)
	}
	clock.Add(30 * time.Second) // t=60: the t=0 request still counts (buckets leave at 61 s)
	if _, d := l.Admit(Key(1), lim, Estimate{}); d.Allowed {
		t.Error("admitted at t=60 s: a request from t=0 must still count")
	}
	clock.Add(time.Second) // t=61
	if _, d := l.Admit(Key(1), lim, Estimate{}); !d.Allowed {
		t.Errorf("refused at t=61 s: %+v", d)
	}
	// Other keys are not affected.
	if _, d := l.Admit(Key(2), lim, Estimate{}); !d.Allowed {
		t.Errorf("key 2 refused: %+v", d)
	}
}

func TestTPMReserveSettle(t *testing.T) {
	l, clock := testLimiter(t)
	lim := Limits{TPM: 1000}
	t1, d := l.Admit(Key(1), lim, Estimate{Tokens: 600})
	if !d.Allowed || d.Tokens.Remaining != 400 {
		t.Fatalf("first reservation: %+v", d)
	}
	_, d = l.Admit(Key(1), lim, Estimate{Tokens: 600})
	if d.Allowed || d.Reason != ReasonTPM || d.RetryAfter != 61*time.Second {
		t.Fatalf("second reservation: %+v, want refused by TPM, retry 61s", d)
	}
	clock.Add(2 * time.Second)
	l.Finish(&t1, 100, 0) // used far less than estimated: 500 tokens come back
	l.Finish(&t1, 100, 0) // a second Finish does nothing
	t2, d := l.Admit(Key(1), lim, Estimate{Tokens: 600})
	if !d.Allowed || d.Tokens.Remaining != 300 {
		t.Fatalf("after settling: %+v, want admitted with 300 left", d)
	}
	l.Finish(&t2, 900, 0) // used more than estimated: charged in full
	req, tok, err := l.Usage(Key(1), lim)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Remaining != 0 || req.Limit != 0 {
		t.Errorf("Usage tokens = %+v (want 0 remaining: 100+900 used), requests = %+v", tok, req)
	}
	if _, d := l.Admit(Key(1), lim, Estimate{Tokens: 1001}); d.Allowed || d.Reason != ReasonTooLarge || d.RetryAfter != 0 {
		t.Errorf("estimate above the limit: %+v, want ReasonTooLarge without Retry-After", d)
	}
	// A refusal by RPM hands the TPM reservation back.
	l2, _ := testLimiter(t)
	both := Limits{TPM: 1000, RPM: 1}
	tk, _ := l2.Admit(Key(1), both, Estimate{Tokens: 10})
	l2.Finish(&tk, 10, 0)
	if _, d := l2.Admit(Key(1), both, Estimate{Tokens: 500}); d.Allowed || d.Reason != ReasonRPM {
		t.Fatalf("want RPM refusal, got %+v", d)
	}
	if _, tok, _ := l2.Usage(Key(1), both); tok.Remaining != 990 {
		t.Errorf("tokens remaining after an RPM refusal = %d, want 990", tok.Remaining)
	}
}

func TestMaxParallel(t *testing.T) {
	l, _ := testLimiter(t)
	lim := Limits{MaxParallel: 2}
	a, d1 := l.Admit(Key(1), lim, Estimate{})
	_, d2 := l.Admit(Key(1), lim, Estimate{})
	_, d3 := l.Admit(Key(1), lim, Estimate{})
	if !d1.Allowed || !d2.Allowed || d3.Allowed || d3.Reason != ReasonParallel {
		t.Fatalf("got %v %v %v(%v), want allowed, allowed, refused by parallel", d1.Allowed, d2.Allowed, d3.Allowed, d3.Reason)
	}
	l.Finish(&a, 0, 0)
	if _, d := l.Admit(Key(1), lim, Estimate{}); !d.Allowed {
		t.Errorf("after one finished: %+v", d)
	}
}

// A worker killed with requests in flight must not hold the key's parallel slots forever.
func TestMaxParallelCrashReaped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "llm-proxy.shm")
	r := openRegion(t, path)
	l := New(r, nil, nil)
	cmd := child(path, "hold")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("child said %q, %v", line, err)
	}
	lim := Limits{MaxParallel: 2}
	if _, d := l.Admit(Key(5), lim, Estimate{}); d.Allowed {
		t.Fatal("admitted while the other process holds both slots")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if got := r.Reap(); got != 1 {
		t.Errorf("Reap = %d, want 1", got)
	}
	if _, d := l.Admit(Key(5), lim, Estimate{}); !d.Allowed {
		t.Errorf("after reaping the killed worker: %+v", d)
	}
}

// 50 concurrent requests at a budget that allows 10: the admitted reservations never
// exceed the budget, so spend ends within one reservation of it.
func TestBudgetConcurrent(t *testing.T) {
	l, _ := testLimiter(t)
	const cost = 100
	lim := Limits{BudgetMicro: 10 * cost, Period: PeriodDay}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			tk, d := l.Admit(Key(1), lim, Estimate{Micro: cost})
			if !d.Allowed {
				if d.Reason != ReasonBudget {
					t.Errorf("refused for %v, want budget", d.Reason)
				}
				return
			}
			admitted.Add(1)
			time.Sleep(time.Millisecond)  // the upstream call
			l.Finish(&tk, 0, cost+cost/2) // real cost above the estimate
		}()
	}
	close(start)
	wg.Wait()
	spent, _, err := l.Spent(Key(1), PeriodDay)
	if err != nil {
		t.Fatal(err)
	}
	if n := admitted.Load(); n < 1 || n*cost > lim.BudgetMicro {
		t.Errorf("admitted %d requests of estimated %d against a budget of %d", n, cost, lim.BudgetMicro)
	}
	if spent > lim.BudgetMicro+10*cost/2+cost {
		t.Errorf("spent %d, budget %d", spent, lim.BudgetMicro)
	}
	if _, d := l.Admit(Key(1), lim, Estimate{Micro: 1}); spent >= lim.BudgetMicro && d.Allowed {
		t.Error("admitted after the budget was spent")
	}
}

func TestBudgetExactEstimates(t *testing.T) {
	l, clock := testLimiter(t)
	const cost = 100
	lim := Limits{BudgetMicro: 10 * cost, BudgetTok: 1 << 40, Period: PeriodDay}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				tk, d := l.Admit(Key(1), lim, Estimate{Micro: cost, Tokens: 10})
				if d.Allowed {
					admitted.Add(1)
					l.Finish(&tk, 10, cost)
				}
			}
		}()
	}
	wg.Wait()
	spent, tokens, _ := l.Spent(Key(1), PeriodDay)
	if admitted.Load() != 10 || spent != 10*cost || tokens != 100 {
		t.Errorf("admitted %d, spent %d µ$ %d tokens; want 10, %d, 100", admitted.Load(), spent, tokens, 10*cost)
	}
	_, d := l.Admit(Key(1), lim, Estimate{Micro: 1})
	if d.Allowed || d.Reason != ReasonBudget || d.RetryAfter != 12*time.Hour {
		t.Errorf("spent budget: %+v, want refused until midnight (12h)", d)
	}
	clock.Add(12 * time.Hour) // next day: a new period
	if _, d := l.Admit(Key(1), lim, Estimate{Micro: cost}); !d.Allowed {
		t.Errorf("new day: %+v", d)
	}
	if spent, _, _ := l.Spent(Key(1), PeriodDay); spent != 0 {
		t.Errorf("spent on the new day = %d, want 0", spent)
	}
}

func TestTokenBudget(t *testing.T) {
	l, _ := testLimiter(t)
	lim := Limits{BudgetTok: 1000, Period: PeriodTotal}
	tk, d := l.Admit(Key(3), lim, Estimate{Tokens: 800})
	if !d.Allowed {
		t.Fatal(d)
	}
	if _, d := l.Admit(Key(3), lim, Estimate{Tokens: 300}); d.Allowed || d.Reason != ReasonTokenBudget || d.RetryAfter != 0 {
		t.Errorf("over token budget: %+v, want refused, no retry (total never resets)", d)
	}
	l.Finish(&tk, 500, 0)
	if _, d := l.Admit(Key(3), lim, Estimate{Tokens: 300}); !d.Allowed {
		t.Errorf("after settling 500 of 800: %+v", d)
	}
}

// Spend reaches SQLite through Flush, and a fresh shared file is seeded from it once.
func TestSpendLedgerFlushAndSeed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := store.Open(ctx, store.Config{Path: filepath.Join(t.TempDir(), "llm-proxy.db"), MaxOpenConns: 4, MaxIdleConns: 1}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	l, clock := testLimiter(t)
	lim := Limits{BudgetMicro: 1_000_000, Period: PeriodMonth}
	for range 3 {
		tk, _ := l.Admit(User(7), lim, Estimate{Micro: 5000, Tokens: 100})
		l.Finish(&tk, 80, 4000)
	}
	if err := l.Flush(ctx, st); err != nil {
		t.Fatal(err)
	}
	if err := l.Flush(ctx, st); err != nil { // nothing new: nothing added twice
		t.Fatal(err)
	}
	micro, tokens, err := st.Spend(ctx, "user:7", "2025-11")
	if err != nil || micro != 12000 || tokens != 240 {
		t.Fatalf("ledger = %d, %d, %v; want 12000, 240", micro, tokens, err)
	}
	// The shared file is lost: a new one starts from the ledger, exactly once.
	fresh := New(openRegion(t, filepath.Join(t.TempDir(), "other.shm")), clock.Now, nil)
	rows, err := st.SpendIn(ctx, PeriodKey(PeriodDay, clock.Now()), PeriodKey(PeriodMonth, clock.Now()), "total")
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{1, 0} {
		if n, err := fresh.SeedFrom(rows); err != nil || n != want {
			t.Errorf("SeedFrom call %d applied %d rows (%v), want %d", i, n, err, want)
		}
	}
	if micro, tokens, _ := fresh.Spent(User(7), PeriodMonth); micro != 12000 || tokens != 240 {
		t.Errorf("seeded spend = %d, %d; want 12000, 240", micro, tokens)
	}
	// The original file already holds the month's spend: seeding it adds nothing.
	if did, _ := l.Seed(User(7), PeriodMonth, 12000, 240); did {
		t.Error("Seed on a live file applied the ledger again")
	}
}

func TestHeaders(t *testing.T) {
	tests := []struct {
		name string
		d    Decision
		want string
	}{
		{"allowed", Decision{Allowed: true, Requests: Quota{60, 59, time.Minute}, Tokens: Quota{150000, 149000, 6 * time.Minute}},
			"X-Ratelimit-Limit-Requests=60 X-Ratelimit-Remaining-Requests=59 X-Ratelimit-Reset-Requests=1m0s X-Ratelimit-Limit-Tokens=150000 X-Ratelimit-Remaining-Tokens=149000 X-Ratelimit-Reset-Tokens=6m0s"},
		{"refused", Decision{Reason: ReasonRPM, RetryAfter: 17497 * time.Millisecond, Requests: Quota{60, 0, 17497 * time.Millisecond}},
			"X-Ratelimit-Limit-Requests=60 X-Ratelimit-Remaining-Requests=0 X-Ratelimit-Reset-Requests=17.497s Retry-After=18 Retry-After-Ms=17497"},
		{"no limits", Decision{Allowed: true}, ""},
		{"budget", Decision{Reason: ReasonBudget, RetryAfter: time.Hour}, "Retry-After=3600 Retry-After-Ms=3600000"},
	}
	for _, tt := range tests {
		var got headerList
		tt.d.Headers(nil, &got)
		if s := strings.Join(got, " "); s != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.name, s, tt.want)
		}
	}
}

// headerList records the headers set, in order.
type headerList []string

func (h *headerList) SetCanonical(k, v []byte) { *h = append(*h, string(k)+"="+string(v)) }

func TestAppendDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"}, {time.Microsecond, "1ms"}, {20 * time.Millisecond, "20ms"}, {time.Second, "1s"},
		{1500 * time.Millisecond, "1.5s"}, {6 * time.Minute, "6m0s"}, {61*time.Second + 10*time.Millisecond, "1m1.01s"},
		{time.Hour, "1h0m0s"}, {25*time.Hour + 2*time.Second, "25h0m2s"},
	}
	for _, tt := range tests {
		if got := string(appendDuration(nil, tt.d)); got != tt.want {
			t.Errorf("appendDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
		if tt.d >= time.Millisecond && tt.d%time.Millisecond == 0 && tt.d.String() != tt.want {
			t.Errorf("format of %v differs from time.Duration's %q", tt.d, tt.d.String())
		}
	}
}

func TestPrices(t *testing.T) {
	table := NewPriceTable(DefaultPrices, map[string]Price{"gpt-4o": {2, 8}})
	tests := []struct {
		model    string
		in, out  int64
		want     int64
		wantFind bool
	}{
		{"gpt-4o", 1000, 1000, 10000, true},                    // override: 1000×2 + 1000×8
		{"gpt-4o-2024-08-06", 1000, 0, 2000, true},             // dated snapshot → gpt-4o
		{"gpt-4o-mini-2024-07-18", 1_000_000, 0, 150000, true}, // not gpt-4o
		{"claude-sonnet-4-20250514", 1000, 1000, 18000, true},
		{"text-embedding-3-small", 1000, 0, 20, true},
		{"gemini-2.0-flash", 3, 0, 1, true}, // 0.3 µ$ rounds up
		{"gpt-4ox", 1000, 0, 0, false},      // a prefix must end at '-'
		{"unknown", 1, 1, 0, false},
	}
	for _, tt := range tests {
		p, ok := table.Lookup(tt.model)
		if ok != tt.wantFind {
			t.Errorf("Lookup(%q) found = %v, want %v", tt.model, ok, tt.wantFind)
			continue
		}
		if got := p.Cost(tt.in, tt.out); got != tt.want {
			t.Errorf("cost of %s (%d in, %d out) = %d µ$, want %d", tt.model, tt.in, tt.out, got, tt.want)
		}
	}
}

func TestPeriodKeys(t *testing.T) {
	now := time.Date(2025, 12, 31, 23, 59, 59, 0, time.UTC)
	tests := []struct {
		p       Period
		want    string
		wantEnd time.Duration
	}{{PeriodDay, "2025-12-31", time.Second}, {PeriodMonth, "2025-12", time.Second}, {PeriodTotal, "total", 0}}
	for _, tt := range tests {
		if got := PeriodKey(tt.p, now); got != tt.want {
			t.Errorf("PeriodKey(%v) = %q, want %q", tt.p, got, tt.want)
		}
		p, idx, ok := parsePeriodKey(tt.want)
		if !ok || p != tt.p || idx != periodIndex(tt.p, now) {
			t.Errorf("parsePeriodKey(%q) = %v %d %v", tt.want, p, idx, ok)
		}
		if got := periodEnd(tt.p, now); got != tt.wantEnd {
			t.Errorf("periodEnd(%v) = %v, want %v", tt.p, got, tt.wantEnd)
		}
	}
}

// BenchmarkAdmitFinish is the per-request cost with every limit on.
func BenchmarkAdmitFinish(b *testing.B) {
	l := New(openRegion(b, filepath.Join(b.TempDir(), "llm-proxy.shm")), nil, nil)
	lim := Limits{RPM: 1 << 30, TPM: 1 << 30, MaxParallel: 1 << 20, BudgetMicro: 1 << 46, BudgetTok: 1 << 46, Period: PeriodMonth}
	tk, _ := l.Admit(Key(1), lim, Estimate{Tokens: 100, Micro: 100})
	l.Finish(&tk, 50, 50)
	b.ReportAllocs()
	for b.Loop() {
		tk, d := l.Admit(Key(1), lim, Estimate{Tokens: 100, Micro: 100})
		if !d.Allowed {
			b.Fatal(d.Reason)
		}
		l.Finish(&tk, 50, 50)
	}
}

// BenchmarkAdmitFinishRPM is the common case: only a requests-per-minute limit.
func BenchmarkAdmitFinishRPM(b *testing.B) {
	l := New(openRegion(b, filepath.Join(b.TempDir(), "llm-proxy.shm")), nil, nil)
	lim := Limits{RPM: 1 << 30}
	b.ReportAllocs()
	for b.Loop() {
		tk, _ := l.Admit(Key(1), lim, Estimate{})
		l.Finish(&tk, 0, 0)
	}
}

func BenchmarkAdmitFinishParallel(b *testing.B) {
	l := New(openRegion(b, filepath.Join(b.TempDir(), "llm-proxy.shm")), nil, nil)
	lim := Limits{RPM: 1 << 30, TPM: 1 << 30, MaxParallel: 1 << 20, BudgetMicro: 1 << 46, Period: PeriodMonth}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tk, _ := l.Admit(Key(1), lim, Estimate{Tokens: 100, Micro: 100})
			l.Finish(&tk, 50, 50)
		}
	})
}
