package limits

import (
	"sync"
	"testing"
	"time"
)

// TestAdmitPairOwnerRefusalReleasesKey: when the owner refuses, every word the key
// charged is back where it was (parallel, TPM, request window, budget reservations), the
// decision names the owner, and settling the pair charges both subjects.
func TestAdmitPairOwnerRefusalReleasesKey(t *testing.T) {
	l, _ := testLimiter(t)
	keyLim := Limits{RPM: 10, TPM: 1000, MaxParallel: 5, BudgetMicro: 1000, BudgetTok: 1000, Period: PeriodDay}
	userLim := Limits{RPM: 1, BudgetTok: 1000, Period: PeriodDay}
	est := Estimate{Tokens: 40, Micro: 7}

	first, d := l.AdmitPair(Key(1), keyLim, User(9), userLim, est)
	if !d.Allowed {
		t.Fatalf("first: %+v", d)
	}
	if got, want := d.Requests, (Quota{Limit: 1, Remaining: 0, Reset: d.Requests.Reset}); got != want {
		t.Errorf("first: requests quota %+v, want the user's (tighter) %+v", got, want)
	}
	l.Finish(&first, 30, 5)

	_, d = l.AdmitPair(Key(1), keyLim, User(9), userLim, est)
	if d.Allowed || d.Reason != ReasonRPM || d.By != User(9) {
		t.Fatalf("second: %+v, want refused by the user's RPM", d)
	}
	st, err := l.state(Key(1))
	if err != nil {
		t.Fatal(err)
	}
	now := l.clock().UnixNano()
	rpmUsed, _ := st.rpm.load(now)
	tpmUsed, _ := st.tpm.load(now)
	got := [5]int64{st.parallel.Load(), rpmUsed, tpmUsed, st.resMicro.Load(), st.resTok.Load()}
	if want := [5]int64{0, 1, 30, 0, 0}; got != want {
		t.Errorf("key after the user's refusal: parallel, rpm, tpm, reserved usd, reserved tokens = %v, want %v", got, want)
	}
	for _, s := range []Subject{Key(1), User(9)} {
		if _, tok, _ := l.Spent(s, PeriodDay); tok != 30 {
			t.Errorf("%s spent %d tokens, want 30", s, tok)
		}
	}
	// The key refusing first never touches the owner.
	_, d = l.AdmitPair(Key(1), Limits{RPM: 1}, User(10), Limits{RPM: 5}, est)
	if d.Allowed || d.By != Key(1) {
		t.Fatalf("key at its limit: %+v, want refused by the key", d)
	}
	r, _, _ := l.Usage(User(10), Limits{RPM: 5})
	if r.Remaining != 5 {
		t.Errorf("owner charged by a request its key refused: remaining %d", r.Remaining)
	}
}

// TestAdmitPairUserBudgetConcurrent: goroutines on several keys of one user cannot
// overrun the user's budget when their estimates hold.
func TestAdmitPairUserBudgetConcurrent(t *testing.T) {
	l, _ := testLimiter(t)
	userLim := Limits{BudgetMicro: 10_000, Period: PeriodMonth}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				tk, d := l.AdmitPair(Key(int64(100+g%4)), Limits{MaxParallel: 100}, User(1), userLim, Estimate{Tokens: 1, Micro: 300})
				if d.Allowed {
					time.Sleep(time.Microsecond)
					l.Finish(&tk, 1, 300)
				}
			}
		}()
	}
	wg.Wait()
	micro, _, err := l.Spent(User(1), PeriodMonth)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := micro, int64(9900); got != want {
		t.Errorf("user spent %d micro-USD, want %d (33 requests of 300 within 10000)", got, want)
	}
}

func BenchmarkAdmitPairFinish(b *testing.B) {
	l, _ := testLimiter(b)
	keyLim := Limits{RPM: 1 << 40, MaxParallel: 1000}
	userLim := Limits{TPM: 1 << 40, BudgetMicro: 1 << 45, Period: PeriodMonth}
	b.ReportAllocs()
	for b.Loop() {
		t, d := l.AdmitPair(Key(1), keyLim, User(1), userLim, Estimate{Tokens: 100, Micro: 10})
		if !d.Allowed {
			b.Fatal(d)
		}
		l.Finish(&t, 50, 5)
	}
}
