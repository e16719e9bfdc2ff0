package admin

import (
	"context"
	"encoding/hex"
	"slices"
	"testing"
	"time"

	"github.com/llm-proxy/llm-proxy/store"
)

// lease makes the harness's store the primary's, for primary-only writes such as health.
func (h *harness) lease() int64 {
	h.t.Helper()
	ctx := context.Background()
	l, err := h.st.Lease(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	if l.Holder != "" {
		return l.Epoch
	}
	nl, won, err := h.st.TryAcquire(ctx, "test", 1, l.RenewSeq, time.Now())
	if err != nil || !won {
		h.t.Fatalf("TryAcquire: %t %v", won, err)
	}
	return nl.Epoch
}

func findRoute(t *testing.T, rows []routeJSON, model string) routeJSON {
	t.Helper()
	for _, r := range rows {
		if r.Model == model {
			return r
		}
	}
	t.Fatalf("no row for %q in %+v", model, rows)
	return routeJSON{}
}

func TestRoutesAPI(t *testing.T) {
	h := newHarness(t)
	s := h.login("root", adminPass)
	ctx := context.Background()
	up, err := h.st.AddUpstream(ctx, store.Upstream{Name: "primary", BaseURL: "http://127.0.0.1:1/v1", Enabled: true, Weight: 2,
		Deployments: []store.Deployment{{PublicModel: "gpt-a", UpstreamModel: "gpt-a-2025", Weight: 3, Priority: 1, MaxConcurrent: 7}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.st.AddUpstream(ctx, store.Upstream{Name: "passthrough", BaseURL: "http://127.0.0.1:2/v1", Enabled: true, Weight: 1,
		Deployments: []store.Deployment{{PublicModel: store.AnyModel, Weight: 1}}}); err != nil {
		t.Fatal(err)
	}
	if err := h.st.RecordHealth(ctx, h.lease(), store.UpstreamHealth{UpstreamID: up, Healthy: false, CheckedAt: time.Now(),
		Latency: 12 * time.Millisecond, Error: "connection refused", Failures: 3}); err != nil {
		t.Fatal(err)
	}

	var list routesAnswer
	r := h.do(req{method: "GET", path: "/api/routes", sess: s})
	r.json(t, &list)
	if r.status != 200 || !slices.Equal(list.Strategies, []string{"round_robin", "weighted", "least_connections", "conversation_hash"}) {
		t.Fatalf("list: %d %s", r.status, r.body)
	}
	a := findRoute(t, list.Data, "gpt-a")
	want := routeDeploymentJSON{UpstreamID: up, Upstream: "primary", UpstreamModel: "gpt-a-2025", Weight: 3, Priority: 1, MaxConcurrent: 7,
		UpstreamWeight: 2, UpstreamEnabled: true}
	if a.Configured || len(a.Deployments) != 1 || a.Deployments[0].Health == nil {
		t.Fatalf("gpt-a before any route: %+v", a)
	}
	got := a.Deployments[0]
	hl := got.Health
	got.Health = nil
	if got != want || hl.Healthy || hl.Failures != 3 || hl.Error != "connection refused" || hl.LatencyMs != 12 {
		t.Errorf("gpt-a deployment = %+v health %+v, want %+v", got, hl, want)
	}
	if star := findRoute(t, list.Data, "*"); len(star.Deployments) != 1 || star.Deployments[0].Health != nil {
		t.Errorf("* row = %+v", star)
	}

	// Save routes: one for a listed model, one served only by the wildcard, one with a '/'.
	for _, tc := range []struct {
		path     string
		body     map[string]any
		strategy string
		fb       []string
		wildcard bool
	}{
		{"/api/routes/gpt-a", map[string]any{"strategy": "round_robin", "fallbacks": []string{" gpt-b ", "", "org/model-x"}}, "round_robin", []string{"gpt-b", "org/model-x"}, false},
		{"/api/routes/gpt-b", map[string]any{"strategy": "default"}, "", []string{}, true},
		{"/api/routes/org/model-x", map[string]any{"strategy": "least_connections", "fallbacks": []string{"gpt-a"}}, "least_connections", []string{"gpt-a"}, true},
	} {
		var rj routeJSON
		r := h.do(req{method: "PUT", path: tc.path, sess: s, body: tc.body})
		r.json(t, &rj)
		if r.status != 200 || !rj.Configured || rj.Strategy != tc.strategy || !slices.Equal(rj.Fallbacks, tc.fb) || rj.Wildcard != tc.wildcard || rj.UpdatedAt == nil {
			t.Errorf("PUT %s: %d %s", tc.path, r.status, r.body)
		}
	}
	stored, _ := h.st.Routes(ctx)
	if len(stored) != 3 || stored[0].Model != "gpt-a" || !slices.Equal(stored[0].Fallbacks, []string{"gpt-b", "org/model-x"}) {
		t.Errorf("stored routes = %+v", stored)
	}

	// Validation: field-level, and nothing written.
	for _, tc := range []struct {
		path  string
		body  any
		param string
	}{
		{"/api/routes/gpt-z", map[string]any{"strategy": "fastest"}, "strategy"},
		{"/api/routes/gpt-z", map[string]any{"fallbacks": []string{"gpt-z"}}, "fallbacks"},
		{"/api/routes/gpt-z", map[string]any{"fallbacks": []string{"a", "a"}}, "fallbacks"},
		{"/api/routes/gpt-z", map[string]any{"fallbacks": []string{"*"}}, "fallbacks"},
		{"/api/routes/gpt-z", map[string]any{"fallbacks": []string{"a,b"}}, "fallbacks"},
		{"/api/routes/gpt-z", map[string]any{"fallbacks": "gpt-a"}, "fallbacks"},
		{"/api/routes/gpt-z", map[string]any{"stratgy": "weighted"}, "stratgy"},
		{"/api/routes/*", map[string]any{}, "model"},
		{"/api/routes/a,b", map[string]any{}, "model"},
	} {
		r := h.do(req{method: "PUT", path: tc.path, sess: s, body: tc.body})
		if _, param := r.errCode(t); r.status != 400 || param != tc.param {
			t.Errorf("PUT %s %v: %d param %q, want 400 %q (%s)", tc.path, tc.body, r.status, param, tc.param, r.body)
		}
	}
	if stored, _ := h.st.Routes(ctx); len(stored) != 3 {
		t.Errorf("refused routes were stored: %+v", stored)
	}

	if r := h.do(req{method: "DELETE", path: "/api/routes/org/model-x", sess: s}); r.status != 200 {
		t.Errorf("delete: %d %s", r.status, r.body)
	}
	if r := h.do(req{method: "DELETE", path: "/api/routes/org/model-x", sess: s}); r.status != 404 {
		t.Errorf("delete again: %d", r.status)
	}
	h.do(req{method: "GET", path: "/api/routes", sess: s}).json(t, &list)
	for _, rj := range list.Data {
		if rj.Model == "org/model-x" {
			t.Errorf("deleted route still listed: %+v", rj)
		}
	}
}

func TestCacheAPI(t *testing.T) {
	h := newHarness(t)
	s := h.login("root", adminPass)
	ctx := context.Background()
	now := time.Now()
	keys := [][]byte{{0xab, 0x01}, {0xab, 0x02}, {0xcd, 0x03}}
	for i, m := range []string{"gpt-a", "gpt-a", "gpt-b"} {
		if err := h.st.CachePut(ctx, store.CacheEntry{Key: keys[i], Model: m, Body: []byte("{}"), CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	var c cacheJSON
	r := h.do(req{method: "GET", path: "/api/cache", sess: s})
	r.json(t, &c)
	if r.status != 200 || c.Entries != 3 || c.Bytes <= 0 || len(c.Models) != 2 || c.Models[0].Model != "gpt-a" || c.Models[0].Entries != 2 {
		t.Fatalf("stats: %d %s", r.status, r.body)
	}
	gen := c.Generation

	for _, tc := range []struct {
		body  any
		param string
	}{
		{map[string]any{}, "all"},
		{map[string]any{"all": false}, "all"},
		{map[string]any{"all": true, "model": "gpt-a"}, "all"},
		{map[string]any{"model": "gpt-a", "key_prefix": "ab"}, "all"},
		{map[string]any{"key_prefix": "xyz"}, "key_prefix"},
		{map[string]any{"namespace": "x"}, "namespace"},
	} {
		r := h.do(req{method: "POST", path: "/api/cache/purge", sess: s, body: tc.body})
		if _, param := r.errCode(t); r.status != 400 || param != tc.param {
			t.Errorf("purge %v: %d param %q, want 400 %q (%s)", tc.body, r.status, param, tc.param, r.body)
		}
	}
	if st, _ := h.st.CacheStats(ctx, now); st.Entries != 3 {
		t.Fatalf("a refused purge deleted entries: %+v", st)
	}

	for _, tc := range []struct {
		body    map[string]any
		deleted int
		left    int64
	}{
		{map[string]any{"key_prefix": hex.EncodeToString(keys[2])[:3]}, 1, 2}, // odd length: a half byte
		{map[string]any{"model": "gpt-a"}, 2, 0},
		{map[string]any{"all": true}, 0, 0},
	} {
		var out struct {
			Deleted int `json:"deleted"`
		}
		r := h.do(req{method: "POST", path: "/api/cache/purge", sess: s, body: tc.body})
		r.json(t, &out)
		if r.status != 200 || out.Deleted != tc.deleted {
			t.Errorf("purge %v: %d %s, want %d deleted", tc.body, r.status, r.body, tc.deleted)
		}
		if st, _ := h.st.CacheStats(ctx, now); st.Entries != tc.left {
			t.Errorf("after purge %v: %d entries, want %d", tc.body, st.Entries, tc.left)
		}
	}
	h.do(req{method: "GET", path: "/api/cache", sess: s}).json(t, &c)
	if c.Generation != gen+3 || len(c.Models) != 0 {
		t.Errorf("after purges: generation %d (was %d), models %+v", c.Generation, gen, c.Models)
	}
}

func findPrice(list []priceJSON, model string) (priceJSON, bool) {
	for _, p := range list {
		if p.Model == model {
			return p, true
		}
	}
	return priceJSON{}, false
}

func TestPricesAPI(t *testing.T) {
	h := newHarness(t)
	s := h.login("root", adminPass)
	var list struct {
		Data []priceJSON `json:"data"`
	}
	h.do(req{method: "GET", path: "/api/prices", sess: s}).json(t, &list)
	if p, ok := findPrice(list.Data, "gpt-4o"); !ok || p.Source != "default" || p.InputPerMTok != 2.5 || p.OutputPerMTok != 10 {
		t.Fatalf("default gpt-4o = %+v, %t", p, ok)
	}

	var p priceJSON
	r := h.do(req{method: "PUT", path: "/api/prices/gpt-4o", sess: s, body: map[string]any{"input_per_mtok": 1.25, "output_per_mtok": 5}})
	r.json(t, &p)
	if r.status != 200 || p.Source != "override" || p.InputPerMTok != 1.25 || p.Default == nil || p.Default.InputPerMTok != 2.5 {
		t.Errorf("override gpt-4o: %d %s", r.status, r.body)
	}
	r = h.do(req{method: "PUT", path: "/api/prices/acme/model-1", sess: s, body: map[string]any{"input_per_mtok": 0, "output_per_mtok": 0.5}})
	r.json(t, &p)
	if r.status != 200 || p.Model != "acme/model-1" || p.Source != "override" || p.Default != nil {
		t.Errorf("new model: %d %s", r.status, r.body)
	}
	for _, tc := range []struct {
		path  string
		body  any
		param string
	}{
		{"/api/prices/m", map[string]any{"input_per_mtok": 1}, "output_per_mtok"},
		{"/api/prices/m", map[string]any{"input_per_mtok": -1, "output_per_mtok": 1}, "input_per_mtok"},
		{"/api/prices/m", map[string]any{"input_per_mtok": 1, "output_per_mtok": 1e6}, "output_per_mtok"},
		{"/api/prices/m", map[string]any{"input_per_mtok": "1", "output_per_mtok": 1}, "input_per_mtok"},
		{"/api/prices/*", map[string]any{"input_per_mtok": 1, "output_per_mtok": 1}, "model"},
	} {
		r := h.do(req{method: "PUT", path: tc.path, sess: s, body: tc.body})
		if _, param := r.errCode(t); r.status != 400 || param != tc.param {
			t.Errorf("PUT %s %v: %d param %q, want 400 %q (%s)", tc.path, tc.body, r.status, param, tc.param, r.body)
		}
	}
	if stored, _ := h.st.Prices(context.Background()); len(stored) != 2 {
		t.Errorf("stored prices = %+v, want the two overrides", stored)
	}

	// Deleting the override brings the default back; deleting it again finds nothing.
	r = h.do(req{method: "DELETE", path: "/api/prices/gpt-4o", sess: s})
	r.json(t, &p)
	if r.status != 200 || p.Source != "default" || p.InputPerMTok != 2.5 {
		t.Errorf("delete override: %d %s", r.status, r.body)
	}
	if r := h.do(req{method: "DELETE", path: "/api/prices/gpt-4o", sess: s}); r.status != 404 {
		t.Errorf("delete a built-in price: %d", r.status)
	}
	if r := h.do(req{method: "DELETE", path: "/api/prices/acme/model-1", sess: s}); r.status != 200 {
		t.Errorf("delete acme/model-1: %d %s", r.status, r.body)
	}
	h.do(req{method: "GET", path: "/api/prices", sess: s}).json(t, &list)
	if _, ok := findPrice(list.Data, "acme/model-1"); ok {
		t.Error("deleted price still listed")
	}
}

func TestKeyLimitsAPI(t *testing.T) {
	h := newHarness(t)
	admin := h.login("root", adminPass)
	alice := h.login("alice", userPass)
	ctx := context.Background()

	// The admin makes a key for alice with limits; a budget without a period never resets.
	var created struct {
		APIKey keyJSON `json:"api_key"`
	}
	r := h.do(req{method: "POST", path: "/api/apikeys", sess: admin, body: map[string]any{"name": "alice-limited", "user_id": h.userID("alice"),
		"limits": map[string]any{"rpm": 60, "tpm": 10000, "max_parallel": 4, "budget_usd": 12.5}}})
	r.json(t, &created)
	wantLim := limitsJSON{RPM: 60, TPM: 10000, MaxParallel: 4, BudgetUSD: 12.5, BudgetPeriod: "total"}
	if r.status != 201 || created.APIKey.Limits != wantLim || created.APIKey.Spend != (spendJSON{Period: "total", PeriodKey: "total"}) {
		t.Fatalf("create with limits: %d %s", r.status, r.body)
	}
	id := created.APIKey.ID
	k, err := h.st.OwnedKeyWithLimits(ctx, id)
	if err != nil || k.Limits != (store.KeyLimits{RPM: 60, TPM: 10000, MaxParallel: 4, BudgetMicroUSD: 12_500_000, BudgetPeriod: "total"}) {
		t.Fatalf("stored limits = %+v, %v", k.Limits, err)
	}
	if err := h.st.AddSpend(ctx, "key:"+itoa(id), "total", 3_250_000, 1234); err != nil {
		t.Fatal(err)
	}

	// Alice sees her key's limits and spend.
	var list struct {
		Data []keyJSON `json:"data"`
	}
	h.do(req{method: "GET", path: "/api/apikeys", sess: alice}).json(t, &list)
	if len(list.Data) != 1 || list.Data[0].Limits != wantLim || list.Data[0].Spend != (spendJSON{Period: "total", PeriodKey: "total", USD: 3.25, Tokens: 1234}) {
		t.Fatalf("alice's listing: %+v", list.Data)
	}

	// Alice cannot set or raise limits, but may send them back unchanged.
	for _, tc := range []struct {
		name   string
		method string
		path   string
		body   map[string]any
		status int
	}{
		{"create with limits", "POST", "/api/apikeys", map[string]any{"name": "mine", "limits": map[string]any{"rpm": 1}}, 400},
		{"raise", "PUT", "/api/apikeys/" + itoa(id), map[string]any{"name": "renamed", "limits": map[string]any{"rpm": 6000}}, 400},
		{"lift the budget", "PUT", "/api/apikeys/" + itoa(id), map[string]any{"limits": map[string]any{"budget_usd": 0}}, 400},
		{"unchanged", "PUT", "/api/apikeys/" + itoa(id), map[string]any{"limits": map[string]any{"rpm": 60, "budget_usd": 12.5, "budget_period": "total"}}, 200},
		{"create without limits", "POST", "/api/apikeys", map[string]any{"name": "mine", "limits": map[string]any{"rpm": 0}}, 201},
	} {
		r := h.do(req{method: tc.method, path: tc.path, sess: alice, body: tc.body})
		if r.status != tc.status {
			t.Errorf("alice, %s: %d %s, want %d", tc.name, r.status, r.body, tc.status)
			continue
		}
		if tc.status == 400 {
			if _, param := r.errCode(t); param != "limits" {
				t.Errorf("alice, %s: param %q, want limits", tc.name, param)
			}
		}
	}
	if k, _ := h.st.OwnedKeyWithLimits(ctx, id); k.Name != "alice-limited" || k.Limits.RPM != 60 || k.Limits.BudgetMicroUSD != 12_500_000 {
		t.Errorf("after alice's refused edits: %+v", k)
	}

	// The admin changes one limit: the others stay; a period change moves the spend shown.
	var kj keyJSON
	r = h.do(req{method: "PUT", path: "/api/apikeys/" + itoa(id), sess: admin, body: map[string]any{"limits": map[string]any{"rpm": 0, "budget_tokens": 5000}}})
	r.json(t, &kj)
	if want := (limitsJSON{TPM: 10000, MaxParallel: 4, BudgetUSD: 12.5, BudgetTokens: 5000, BudgetPeriod: "total"}); r.status != 200 || kj.Limits != want || kj.Spend.USD != 3.25 {
		t.Errorf("admin partial update: %d %s", r.status, r.body)
	}
	h.do(req{method: "PUT", path: "/api/apikeys/" + itoa(id), sess: admin, body: map[string]any{"limits": map[string]any{"budget_period": "month"}}}).json(t, &kj)
	if kj.Limits.BudgetPeriod != "month" || kj.Spend.Period != "month" || kj.Spend.PeriodKey == "total" || kj.Spend.USD != 0 {
		t.Errorf("monthly budget: %+v", kj)
	}
	// Removing both budgets keeps no period.
	h.do(req{method: "PUT", path: "/api/apikeys/" + itoa(id), sess: admin, body: map[string]any{"limits": map[string]any{"budget_usd": 0, "budget_tokens": 0, "budget_period": ""}}}).json(t, &kj)
	if kj.Limits.BudgetPeriod != "" || kj.Limits.BudgetUSD != 0 || kj.Spend.Period != "total" {
		t.Errorf("budgets removed: %+v", kj)
	}

	// Validation is field-level and writes nothing, not even the valid fields.
	for _, tc := range []struct {
		body  map[string]any
		param string
	}{
		{map[string]any{"name": "x", "limits": map[string]any{"rpm": -1}}, "limits.rpm"},
		{map[string]any{"name": "x", "limits": map[string]any{"max_parallel": 1e15}}, "limits.max_parallel"},
		{map[string]any{"name": "x", "limits": map[string]any{"budget_usd": -0.01}}, "limits.budget_usd"},
		{map[string]any{"name": "x", "limits": map[string]any{"budget_period": "week"}}, "limits.budget_period"},
		{map[string]any{"name": "x", "limits": map[string]any{"tpm": 1.5}}, "limits.tpm"},
		{map[string]any{"name": "x", "limits": map[string]any{"rmp": 1}}, "rmp"},
	} {
		r := h.do(req{method: "PUT", path: "/api/apikeys/" + itoa(id), sess: admin, body: tc.body})
		if _, param := r.errCode(t); r.status != 400 || param != tc.param {
			t.Errorf("PUT %v: %d param %q, want 400 %q (%s)", tc.body, r.status, param, tc.param, r.body)
		}
	}
	if k, _ := h.st.OwnedKeyWithLimits(ctx, id); k.Name != "alice-limited" || k.Limits.TPM != 10000 {
		t.Errorf("a refused update wrote: %+v", k)
	}
}
