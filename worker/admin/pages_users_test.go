package admin

import (
	"context"
	"html"
	"strings"
	"testing"

	"github.com/llm-proxy/llm-proxy/store"
)

// TestUsersPageShowsLimitsAndModels: the users page lists each user's model list, limits
// and spend, carries the row as JSON for the edit form, and has that form.
func TestUsersPageShowsLimitsAndModels(t *testing.T) {
	h := newHarness(t)
	s := h.login("root", adminPass)
	ctx := context.Background()
	id := h.userID("alice")
	lim := store.KeyLimits{RPM: 7, BudgetMicroUSD: 3_000_000, BudgetPeriod: "day"}
	models := []string{"gpt-4o", "alias"}
	if _, err := h.st.UpdateUser(ctx, id, store.UserUpdate{Limits: &lim, Models: &models}, nil); err != nil {
		t.Fatal(err)
	}
	r := h.do(req{method: "GET", path: "/users", sess: s})
	if r.status != 200 {
		t.Fatalf("/users: %d %s", r.status, r.body)
	}
	body := html.UnescapeString(string(r.body))
	for _, w := range []string{`id="user-limits-form"`, `id="user-rpm"`, `id="user-models"`, "7 req/min", "$3.00 / day",
		"gpt-4o, alias", `"limits":{"rpm":7`, `"models":["gpt-4o","alias"]`, `"spend":{"period":"day"`} {
		if !strings.Contains(body, w) {
			t.Errorf("/users lacks %q", w)
		}
	}
}
