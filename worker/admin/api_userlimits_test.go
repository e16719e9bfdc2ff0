package admin

import (
	"context"
	"reflect"
	"testing"

	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/worker/limits"
)

// TestUserLimitsAPI: /api/users takes and shows a user's limits (the keys API's names and
// shape), model allow-list and spend; bad values are refused with 400 naming the field,
// and nothing is written then.
func TestUserLimitsAPI(t *testing.T) {
	h := newHarness(t)
	s := h.login("root", adminPass)
	r := h.do(req{method: "POST", path: "/api/users", sess: s, body: map[string]any{
		"username": "dave", "password": "dave-password-1",
		"models": []string{"gpt-4o", " alias "},
		"limits": map[string]any{"rpm": 5, "budget_usd": 2.5, "budget_period": "month"},
	}})
	var u userOut
	r.json(t, &u)
	if r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	wantLim := limitsJSON{RPM: 5, BudgetUSD: 2.5, BudgetPeriod: "month"}
	if u.Limits != wantLim || !reflect.DeepEqual(u.Models, []string{"gpt-4o", "alias"}) {
		t.Errorf("created: limits %+v models %q, want %+v [gpt-4o alias]", u.Limits, u.Models, wantLim)
	}

	// Fields left out keep their value; 0 removes a limit; [] allows every model.
	r = h.do(req{method: "PUT", path: "/api/users/" + itoa(u.ID), sess: s, body: map[string]any{
		"limits": map[string]any{"tpm": 1000, "rpm": 0, "budget_tokens": 500}, "models": []string{},
	}})
	r.json(t, &u)
	wantLim = limitsJSON{TPM: 1000, BudgetUSD: 2.5, BudgetTokens: 500, BudgetPeriod: "month"}
	if r.status != 200 || u.Limits != wantLim || len(u.Models) != 0 || u.Models == nil {
		t.Fatalf("update: %d %s; want limits %+v and models []", r.status, r.body, wantLim)
	}
	stored, err := h.st.User(context.Background(), u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := (store.KeyLimits{TPM: 1000, BudgetMicroUSD: 2_500_000, BudgetTokens: 500, BudgetPeriod: "month"}); stored.Limits != want {
		t.Errorf("stored limits %+v, want %+v", stored.Limits, want)
	}

	for _, tc := range []struct {
		name  string
		body  map[string]any
		param string
	}{
		{"negative rpm", map[string]any{"limits": map[string]any{"rpm": -1}}, "limits.rpm"},
		{"huge tpm", map[string]any{"limits": map[string]any{"tpm": 1e13}}, "limits.tpm"},
		{"negative budget", map[string]any{"limits": map[string]any{"budget_usd": -2}}, "limits.budget_usd"},
		{"bad period", map[string]any{"limits": map[string]any{"budget_period": "week"}}, "limits.budget_period"},
		{"comma model", map[string]any{"models": []string{"a,b"}}, "models"},
	} {
		r := h.do(req{method: "PUT", path: "/api/users/" + itoa(u.ID), sess: s, body: tc.body})
		code, param := r.errCode(t)
		if r.status != 400 || code != "invalid_value" || param != tc.param {
			t.Errorf("%s: %d %s/%s, want 400 invalid_value/%s", tc.name, r.status, code, param, tc.param)
		}
	}
	if r := h.do(req{method: "POST", path: "/api/users", sess: s, body: map[string]any{
		"username": "erin", "password": "erin-password-12", "limits": map[string]any{"max_parallel": -3},
	}}); r.status != 400 {
		t.Errorf("create with a bad limit: %d %s", r.status, r.body)
	}
	if _, err := h.st.UserByName(context.Background(), "erin"); err == nil {
		t.Error("a user refused for a bad limit was stored")
	}
	if r := h.do(req{method: "PUT", path: "/api/users/99999", sess: s, body: map[string]any{"limits": map[string]any{"rpm": 1}}}); r.status != 404 {
		t.Errorf("limits of a missing user: %d", r.status)
	}
	if got, _ := h.st.User(context.Background(), u.ID); got.Limits != stored.Limits {
		t.Errorf("a refused update was written: %+v", got.Limits)
	}

	// The user's spend in the budget's period comes from the ledger.
	ctx := context.Background()
	if err := h.st.AddSpend(ctx, limits.User(u.ID).String(), limits.PeriodKey(limits.PeriodMonth, h.a.now()), 1_250_000, 42); err != nil {
		t.Fatal(err)
	}
	var list struct {
		Data []userOut `json:"data"`
	}
	h.do(req{method: "GET", path: "/api/users", sess: s}).json(t, &list)
	found := false
	for _, x := range list.Data {
		if x.ID != u.ID {
			continue
		}
		found = true
		if x.Spend.Period != "month" || x.Spend.USD != 1.25 || x.Spend.Tokens != 42 || x.Limits != wantLim {
			t.Errorf("listed: spend %+v limits %+v", x.Spend, x.Limits)
		}
	}
	if !found {
		t.Errorf("user %d not listed: %+v", u.ID, list.Data)
	}
}
