package worker

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/worker/limits"
)

// userKeys creates a user with two keys of its own (with keyLim each) and the user's
// limits, and waits until the worker's key snapshot carries both.
func userKeys(t *testing.T, h *harness, name string, keyLim, userLim store.KeyLimits) (uid int64, keys [2]string, ids [2]int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	uid, err := h.st.CreateUser(ctx, store.User{Username: name, PasswordHash: "$argon2id$test", Role: store.RoleUser})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.st.SetUserLimits(ctx, uid, userLim); err != nil {
		t.Fatal(err)
	}
	for i := range keys {
		keys[i] = fmt.Sprintf("sk-test-%s-key%d-0123456789abcdef", name, i)
		ids[i], err = h.st.CreateAPIKey(ctx, store.APIKey{Name: fmt.Sprintf("%s-%d", name, i), Hash: sha256.Sum256([]byte(keys[i])),
			Prefix: keys[i][:10], UserID: uid, Limits: keyLim})
		if err != nil {
			t.Fatal(err)
		}
	}
	want := userLimits(userLim)
	waitKeySnapshot(t, h, func(s *keySnapshot) bool {
		for _, k := range keys {
			e := s.lookup(sha(k))
			if e == nil || e.userID != uid || e.userLimits == nil || *e.userLimits != want {
				return false
			}
		}
		return true
	})
	return uid, keys, ids
}

func waitKeySnapshot(t *testing.T, h *harness, ok func(*keySnapshot) bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !ok(h.w.keys.Load()) {
		if time.Now().After(deadline) {
			t.Fatal("the key snapshot did not pick up the change within 3 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// post sends a chat request without touching t, for use from goroutines.
func (h *harness) post(key, body string) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, h.url("/v1/chat/completions"), strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func errMessage(t *testing.T, body []byte) string {
	t.Helper()
	var e openAIError
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body: %v: %s", err, body)
	}
	return e.Error.Message
}

const userChatBody = `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`

// TestUserRPMSharedByKeys: a user's RPM of 5 holds across both of the user's keys even
// though each key alone allows 100; refusals name the user, and the headers report the
// tighter (the user's) quota.
func TestUserRPMSharedByKeys(t *testing.T) {
	h := newHarness(t, harnessOptions{limits: true})
	_, keys, _ := userKeys(t, h, "alice", store.KeyLimits{RPM: 100}, store.KeyLimits{RPM: 5})
	admitted := 0
	for i := range 10 {
		resp, out := h.chat(t, keys[i%2], userChatBody)
		switch resp.StatusCode {
		case 200:
			admitted++
			if got, want := resp.Header.Get("x-ratelimit-limit-requests"), "5"; got != want {
				t.Errorf("request %d: x-ratelimit-limit-requests = %q, want %q (the user's, tighter)", i+1, got, want)
			}
			if got, want := resp.Header.Get("x-ratelimit-remaining-requests"), fmt.Sprint(5-admitted); got != want {
				t.Errorf("request %d: remaining = %q, want %q", i+1, got, want)
			}
		case 429:
			e := checkError(t, resp, out, 429, "rate_limit_exceeded")
			if !strings.Contains(e.Error.Message, "for this user") {
				t.Errorf("request %d: message %q does not name the user", i+1, e.Error.Message)
			}
			if resp.Header.Get("Retry-After") == "" {
				t.Errorf("request %d: no Retry-After", i+1)
			}
		default:
			t.Fatalf("request %d: status %d %s", i+1, resp.StatusCode, out)
		}
	}
	if got, want := admitted, 5; got != want {
		t.Errorf("admitted %d requests over two keys, want %d (the user's RPM)", got, want)
	}
	// A key of nobody is not affected.
	if resp, out := h.chat(t, keyAll, userChatBody); resp.StatusCode != 200 {
		t.Errorf("unrelated key: status %d %s", resp.StatusCode, out)
	}
}

// TestUserRefusalReleasesKey: a request the user's limit refuses holds nothing on the
// key: not its one parallel slot, not one of its two requests per minute.
func TestUserRefusalReleasesKey(t *testing.T) {
	h := newHarness(t, harnessOptions{limits: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keyLim := store.KeyLimits{RPM: 2, MaxParallel: 1}
	uid, keys, ids := userKeys(t, h, "bob", keyLim, store.KeyLimits{RPM: 1})

	if resp, out := h.chat(t, keys[0], userChatBody); resp.StatusCode != 200 {
		t.Fatalf("first request: status %d %s", resp.StatusCode, out)
	}
	for range 3 {
		resp, out := h.chat(t, keys[0], userChatBody)
		checkError(t, resp, out, 429, "rate_limit_exceeded")
		if msg := errMessage(t, out); !strings.Contains(msg, "for this user") {
			t.Fatalf("refusal %q is not the user's", msg)
		}
	}
	req, _, err := h.w.deps.Limiter.Usage(limits.Key(ids[0]), keyLimits(keyLim, h.w.cfg))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := req.Remaining, int64(1); got != want {
		t.Errorf("key requests remaining = %d, want %d: refused requests were counted on the key", got, want)
	}

	// Lift the user's limit: the key's own limits must be intact.
	if err := h.st.SetUserLimits(ctx, uid, store.KeyLimits{}); err != nil {
		t.Fatal(err)
	}
	waitKeySnapshot(t, h, func(s *keySnapshot) bool { return !s.lookup(sha(keys[0])).userLimited() })
	resp, out := h.chat(t, keys[0], userChatBody)
	if resp.StatusCode != 200 {
		t.Fatalf("after lifting the user limit: status %d %s (a leaked parallel slot or request count?)", resp.StatusCode, out)
	}
	resp, out = h.chat(t, keys[0], userChatBody)
	checkError(t, resp, out, 429, "rate_limit_exceeded")
	if got, want := errMessage(t, out), "Rate limit reached for requests per minute on this API key."; got != want {
		t.Errorf("third admitted request: message %q, want %q", got, want)
	}
}

// TestUserBudgetConcurrent: concurrent requests on two keys of one user cannot spend
// more than the user's token budget plus one request's reservation, and the user's spend
// reaches the ledger.
func TestUserBudgetConcurrent(t *testing.T) {
	h := newHarness(t, harnessOptions{limits: true})
	const budget = 100
	uid, keys, _ := userKeys(t, h, "carol", store.KeyLimits{}, store.KeyLimits{BudgetTokens: budget, BudgetPeriod: "day"})
	body := `{"model":"gpt-4o","max_tokens":20,"messages":[{"role":"user","content":"hi"}]}`
	p, c := estimateTokens([]byte(body))
	reservation := p + c

	var (
		mu       sync.Mutex
		ok, nope int
		failures []string
		wg       sync.WaitGroup
	)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 4 {
				status, out, err := h.post(keys[g%2], body)
				mu.Lock()
				switch {
				case err != nil:
					failures = append(failures, err.Error())
				case status == 200:
					ok++
				case status == 429 && strings.Contains(out, "The token budget for this user is exhausted for the period."):
					nope++
				default:
					failures = append(failures, fmt.Sprintf("status %d %s", status, out))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("unexpected answers: %v", failures)
	}
	_, spent, err := h.w.deps.Limiter.Spent(limits.User(uid), limits.PeriodDay)
	if err != nil {
		t.Fatal(err)
	}
	const perRequest = 18 // the fake upstream's usage
	if got, want := spent, int64(ok*perRequest); got != want {
		t.Errorf("user spent %d tokens, want %d (%d admitted × %d)", got, want, ok, perRequest)
	}
	if spent > budget+reservation {
		t.Errorf("user spent %d tokens, more than budget %d + one reservation %d", spent, budget, reservation)
	}
	if ok == 0 || nope == 0 {
		t.Errorf("admitted %d, refused %d: want both", ok, nope)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.w.deps.Limiter.Flush(ctx, h.st); err != nil {
		t.Fatal(err)
	}
	_, ledger, err := h.st.Spend(ctx, limits.User(uid).String(), limits.PeriodKey(limits.PeriodDay, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if ledger != spent {
		t.Errorf("ledger holds %d tokens for the user, shared memory %d", ledger, spent)
	}
}
