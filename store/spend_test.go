package store

import (
	"sync"
	"testing"
)

func TestSpendLedger(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	if err := s.AddSpend(ctx, "key:1", "2025-11-25", 1500, 30); err != nil {
		t.Fatal(err)
	}
	if err := s.AddSpends(ctx, []SpendDelta{
		{Subject: "key:1", Period: "2025-11-25", Micro: 500, Tokens: 10},
		{Subject: "key:1", Period: "2025-11", Micro: 2000, Tokens: 40},
		{Subject: "user:7", Period: "2025-11-25", Micro: 9, Tokens: 1},
	}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		subject, period       string
		wantMicro, wantTokens int64
	}{
		{"key:1", "2025-11-25", 2000, 40},
		{"key:1", "2025-11", 2000, 40},
		{"user:7", "2025-11-25", 9, 1},
		{"key:2", "2025-11-25", 0, 0},
	}
	for _, tt := range tests {
		micro, tokens, err := s.Spend(ctx, tt.subject, tt.period)
		if err != nil {
			t.Fatal(err)
		}
		if micro != tt.wantMicro || tokens != tt.wantTokens {
			t.Errorf("Spend(%s, %s) = %d, %d; want %d, %d", tt.subject, tt.period, micro, tokens, tt.wantMicro, tt.wantTokens)
		}
	}
	rows, err := s.SpendIn(ctx, "2025-11-25", "total")
	if err != nil {
		t.Fatal(err)
	}
	want := []SpendDelta{{"key:1", "2025-11-25", 2000, 40}, {"user:7", "2025-11-25", 9, 1}}
	if len(rows) != len(want) {
		t.Fatalf("SpendIn = %+v, want %+v", rows, want)
	}
	for i := range want {
		if rows[i] != want[i] {
			t.Errorf("SpendIn[%d] = %+v, want %+v", i, rows[i], want[i])
		}
	}
}

func TestAddSpendsIsAllOrNothing(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	err := s.AddSpends(ctx, []SpendDelta{{Subject: "key:1", Period: "total", Micro: 5}, {Subject: "", Period: "total", Micro: 5}})
	if err == nil {
		t.Fatal("AddSpends with an empty subject: want an error")
	}
	if micro, _, err := s.Spend(ctx, "key:1", "total"); err != nil || micro != 0 {
		t.Errorf("after a failed batch Spend = %d, %v; want 0 (rolled back)", micro, err)
	}
	// The same connection is usable after the failure.
	if err := s.AddSpend(ctx, "key:1", "total", 7, 0); err != nil {
		t.Fatal(err)
	}
	if micro, _, err := s.Spend(ctx, "key:1", "total"); err != nil || micro != 7 {
		t.Errorf("Spend = %d, %v; want 7", micro, err)
	}
}

// Workers flush concurrently from separate connections: no increment may be lost.
func TestAddSpendConcurrentFlushes(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8*25)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				errs <- s.AddSpend(ctx, "key:9", "2025-11", 3, 1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	micro, tokens, err := s.Spend(ctx, "key:9", "2025-11")
	if err != nil {
		t.Fatal(err)
	}
	if micro != 600 || tokens != 200 {
		t.Errorf("Spend = %d, %d; want 600, 200", micro, tokens)
	}
}

func TestPrices(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	if err := s.SetPrice(ctx, "gpt-4o", 2.5, 10); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPrice(ctx, "gpt-4o", 2, 8); err != nil { // replace
		t.Fatal(err)
	}
	if err := s.SetPrice(ctx, "my-model", 0.5, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPrice(ctx, "bad", -1, 1); err == nil {
		t.Error("negative price accepted")
	}
	if err := s.DeletePrice(ctx, "my-model"); err != nil {
		t.Fatal(err)
	}
	got, err := s.Prices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Model != "gpt-4o" || got[0].InputPerMTok != 2 || got[0].OutputPerMTok != 8 {
		t.Errorf("Prices() = %+v, want one gpt-4o at 2/8", got)
	}
}
