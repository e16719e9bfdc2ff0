package admin

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/llm-proxy/llm-proxy/routing"
	"github.com/llm-proxy/llm-proxy/routing/embed"
	"github.com/llm-proxy/llm-proxy/store"
)

func depByModel(t *testing.T, u upstreamJSON, model string) deploymentJSON {
	t.Helper()
	for _, d := range u.Deployments {
		if d.PublicModel == model {
			return d
		}
	}
	t.Fatalf("no deployment %q in %+v", model, u.Deployments)
	return deploymentJSON{}
}

// TestUpstreamEditKeepsDeploymentTuning: editing an upstream's name, base URL or weight
// (the form sends the models shorthand, the toggle sends deployments without tuning)
// keeps each deployment's priority and max_concurrent.
func TestUpstreamEditKeepsDeploymentTuning(t *testing.T) {
	h := newHarness(t)
	s := h.login("root", adminPass)
	r := h.do(req{method: "POST", path: "/api/upstreams", sess: s, body: map[string]any{
		"name": "tuned", "base_url": "http://127.0.0.1:9/v1", "deployments": []map[string]any{
			{"public_model": "gpt", "upstream_model": "gpt-4o", "weight": 3, "priority": 2, "max_concurrent": 7},
			{"public_model": "mini", "priority": 1},
		}}})
	var u upstreamJSON
	r.json(t, &u)
	if r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	id := itoa(u.ID)
	check := func(step string, u upstreamJSON, gptPrio, gptMax, miniPrio int) {
		t.Helper()
		g, m := depByModel(t, u, "gpt"), depByModel(t, u, "mini")
		if *g.Priority != gptPrio || *g.MaxConcurrent != gptMax || g.UpstreamModel != "gpt-4o" || g.Weight != 3 || *m.Priority != miniPrio {
			t.Errorf("%s: gpt %+v (priority %d, max %d), mini priority %d; want gpt-4o w3 p%d max %d, mini p%d", step, g, *g.Priority,
				*g.MaxConcurrent, *m.Priority, gptPrio, gptMax, miniPrio)
		}
	}
	check("created", u, 2, 7, 1)
	steps := []struct {
		name                      string
		body                      map[string]any
		gptPrio, gptMax, miniPrio int
	}{
		{"form edit (models shorthand)", map[string]any{"name": "renamed", "base_url": "http://127.0.0.1:10/v1", "weight": 4,
			"models": []string{"gpt", "mini"}}, 2, 7, 1},
		{"toggle (deployments without tuning)", map[string]any{"name": "renamed", "base_url": "http://127.0.0.1:10/v1", "enabled": false,
			"deployments": []map[string]any{{"public_model": "gpt", "upstream_model": "gpt-4o", "weight": 3}, {"public_model": "mini"}}}, 2, 7, 1},
		{"explicit tuning wins", map[string]any{"name": "renamed", "base_url": "http://127.0.0.1:10/v1",
			"deployments": []map[string]any{{"public_model": "gpt", "upstream_model": "gpt-4o", "weight": 3, "priority": 0, "max_concurrent": 2},
				{"public_model": "mini"}}}, 0, 2, 1},
	}
	for _, st := range steps {
		r := h.do(req{method: "PUT", path: "/api/upstreams/" + id, sess: s, body: st.body})
		r.json(t, &u)
		if r.status != 200 {
			t.Fatalf("%s: %d %s", st.name, r.status, r.body)
		}
		check(st.name+" (answer)", u, st.gptPrio, st.gptMax, st.miniPrio)
		var list struct{ Data []upstreamJSON }
		h.do(req{method: "GET", path: "/api/upstreams", sess: s}).json(t, &list)
		check(st.name+" (listed)", list.Data[0], st.gptPrio, st.gptMax, st.miniPrio)
	}
	if u.Name != "renamed" || u.BaseURL != "http://127.0.0.1:10/v1" {
		t.Errorf("edit not applied: %+v", u)
	}
}

// TestUpstreamBaseURLPolicy: base URLs are checked with upstream.ValidateBaseURL against
// LLM_PROXY_ALLOW_PRIVATE_UPSTREAMS, on create and on edit, answering 400 in OpenAI's
// error shape.
func TestUpstreamBaseURLPolicy(t *testing.T) {
	tests := []struct {
		policy  string // Deps.AllowPrivateUpstreams; "" is the default, loopback
		url     string
		ok      bool
		message string // part of the error message
	}{
		{"", "http://169.254.169.254/latest", false, "link-local"},
		{"", "file:///etc/passwd", false, "http:// or https://"},
		{"", "http://", false, "no host"},
		{"", "https://user:pw@api.example.com/v1", false, "user:password@"},
		{"", "http://10.0.0.5:8000/v1", false, "private"},
		{"", "http://0x7f000001:9/v1", true, ""},
		{"", "http://127.0.0.1:9/v1", true, ""},
		{"", "https://api.example.com/v1", true, ""},
		{"false", "http://127.0.0.1:9/v1", false, "loopback"},
		{"true", "http://10.0.0.5:8000/v1", true, ""},
		{"true", "http://169.254.169.254/", true, ""},
	}
	harnesses := map[string]*harness{}
	for i, tt := range tests {
		h, ok := harnesses[tt.policy]
		if !ok {
			policy := tt.policy
			h = newHarnessWith(t, func(d *Deps) { d.AllowPrivateUpstreams = policy })
			harnesses[tt.policy] = h
		}
		s := h.login("root", adminPass)
		name := "u" + itoa(int64(i))
		r := h.do(req{method: "POST", path: "/api/upstreams", sess: s, body: map[string]any{"name": name, "base_url": tt.url}})
		if tt.ok {
			if r.status != 201 {
				t.Errorf("policy %q, create %s: %d %s; want 201", tt.policy, tt.url, r.status, r.body)
			}
			continue
		}
		var e struct{ Error apiError }
		r.json(t, &e)
		if r.status != 400 || e.Error.Type != "invalid_request_error" || e.Error.Param == nil || *e.Error.Param != "base_url" ||
			!strings.Contains(e.Error.Message, tt.message) {
			t.Errorf("policy %q, create %s: %d %s; want 400 on base_url mentioning %q", tt.policy, tt.url, r.status, r.body, tt.message)
		}
	}
	// An edit is checked too, and the refused edit changes nothing.
	h := harnesses[""]
	s := h.login("root", adminPass)
	var u upstreamJSON
	h.do(req{method: "POST", path: "/api/upstreams", sess: s, body: map[string]any{"name": "edit-me", "base_url": "http://127.0.0.1:9/v1"}}).json(t, &u)
	r := h.do(req{method: "PUT", path: "/api/upstreams/" + itoa(u.ID), sess: s, body: map[string]any{"name": "edit-me", "base_url": "http://169.254.169.254"}})
	if code, param := r.errCode(t); r.status != 400 || code != "invalid_value" || param != "base_url" {
		t.Errorf("edit to the metadata address: %d %s", r.status, r.body)
	}
	ups, err := h.st.ListUpstreams(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range ups {
		if x.ID == u.ID && x.BaseURL != "http://127.0.0.1:9/v1" {
			t.Errorf("refused edit was written: %s", x.BaseURL)
		}
	}
}

// fakeRuntime is a worker's live view.
type fakeRuntime struct{ circuits []routing.DeploymentCircuit }

func (f fakeRuntime) Circuits() []routing.DeploymentCircuit { return f.circuits }
func (f fakeRuntime) SemanticEmbedder() embed.Embedder      { return embed.Lexical{} }
func (f fakeRuntime) ID() string                            { return "w-test" }

// TestUpstreamHealthAndCircuits: the upstreams API and page show the active verdict
// (from the store) and the serving worker's circuits.
func TestUpstreamHealthAndCircuits(t *testing.T) {
	h := newHarness(t)
	s := h.login("root", adminPass)
	var up, other upstreamJSON
	h.do(req{method: "POST", path: "/api/upstreams", sess: s, body: map[string]any{"name": "flaky", "base_url": "http://127.0.0.1:9/v1", "models": []string{"gpt"}}}).json(t, &up)
	h.do(req{method: "POST", path: "/api/upstreams", sess: s, body: map[string]any{"name": "fine", "base_url": "http://127.0.0.1:10/v1"}}).json(t, &other)
	checked := time.Now().Add(-30 * time.Second).Truncate(time.Second)
	if err := h.st.RecordHealth(context.Background(), h.lease(), store.UpstreamHealth{UpstreamID: up.ID, Healthy: false, CheckedAt: checked,
		Latency: 12 * time.Millisecond, Error: "GET /v1/models: connection refused", Failures: 3}); err != nil {
		t.Fatal(err)
	}
	list := func() map[string]upstreamJSON {
		var out struct{ Data []upstreamJSON }
		h.do(req{method: "GET", path: "/api/upstreams", sess: s}).json(t, &out)
		m := map[string]upstreamJSON{}
		for _, u := range out.Data {
			m[u.Name] = u
		}
		return m
	}
	got := list()
	if hj := got["flaky"].Health; hj == nil || hj.Healthy || hj.Failures != 3 || !strings.Contains(hj.Error, "connection refused") ||
		hj.CheckedAt != checked.UTC().Format(time.RFC3339) {
		t.Errorf("flaky health = %+v", hj)
	}
	if got["fine"].Health != nil || got["flaky"].Circuit != nil {
		t.Errorf("fine health %+v (want null: never probed), circuit without a runtime %+v", got["fine"].Health, got["flaky"].Circuit)
	}
	if r := h.do(req{method: "GET", path: "/upstreams", sess: s}); !strings.Contains(string(r.body), "not reported") || !strings.Contains(string(r.body), "connection refused") {
		t.Errorf("page without a runtime: %s", r.body)
	}

	h.a.SetRuntime(fakeRuntime{circuits: []routing.DeploymentCircuit{
		{PublicModel: "gpt", UpstreamID: up.ID, Upstream: "flaky", UpstreamModel: "gpt", State: routing.CircuitOpen, RetryIn: 3 * time.Second},
	}})
	got = list()
	c := got["flaky"].Circuit
	if c == nil || c.State != "open" || c.RetryInMs != 3000 || c.Worker != "w-test" || len(c.Deployments) != 1 || c.Deployments[0].State != "open" {
		t.Errorf("flaky circuit = %+v", c)
	}
	if c := got["fine"].Circuit; c == nil || c.State != "closed" {
		t.Errorf("fine circuit = %+v, want closed", c)
	}
	body := string(h.do(req{method: "GET", path: "/upstreams", sess: s}).body)
	for _, want := range []string{"circuit open", "retry in 3.0 s", "circuit closed", "(this worker)", "down"} {
		if !strings.Contains(body, want) {
			t.Errorf("upstreams page lacks %q", want)
		}
	}
}

type tryAnswer struct {
	Embedder string            `json:"embedder"`
	Data     []semanticTryJSON `json:"data"`
}

// TestSemanticRoutesAndTry: semantic routes are listed and edited with their example
// prompts, and a tried prompt reports the target it would go to, with every score.
func TestSemanticRoutesAndTry(t *testing.T) {
	h := newHarness(t)
	s := h.login("root", adminPass)
	route := map[string]any{"default": "gpt-4o-mini", "top_k": 1, "targets": []map[string]any{
		{"name": "code", "model": "gpt-4o", "threshold": 0.5, "utterances": []string{
			"Write a Go function that reverses a string", "Fix this Python stack trace", "Refactor my JavaScript class"}},
		{"name": "poetry", "model": "claude-sonnet", "threshold": 0.5, "utterances": []string{
			"Write a sonnet about the sea", "Compose a haiku about autumn leaves"}},
	}}
	r := h.do(req{method: "PUT", path: "/api/semantic-routes/smart", sess: s, body: route})
	if r.status != 200 {
		t.Fatalf("put semantic route: %d %s", r.status, r.body)
	}
	var list struct{ Data []semanticRouteJSON }
	h.do(req{method: "GET", path: "/api/semantic-routes", sess: s}).json(t, &list)
	if len(list.Data) != 1 || len(list.Data[0].Targets) != 2 || list.Data[0].Targets[1].Utterances[1] != "Compose a haiku about autumn leaves" {
		t.Fatalf("semantic routes = %+v", list.Data)
	}
	if body := string(h.do(req{method: "GET", path: "/routes", sess: s}).body); !strings.Contains(body, "Compose a haiku about autumn leaves") ||
		!strings.Contains(body, `id="try-prompt"`) {
		t.Error("routes page lacks the example prompts or the try box")
	}

	tests := []struct {
		prompt  string
		matched bool
		target  string
		model   string
	}{
		{"write a Go function to reverse a string", true, "code", "gpt-4o"},
		{"compose a haiku about the autumn leaves", true, "poetry", "claude-sonnet"},
		{"quarterly invoice totals for the Berlin warehouse", false, "", "gpt-4o-mini"},
	}
	for _, tt := range tests {
		var out tryAnswer
		r := h.do(req{method: "POST", path: "/api/semantic-try", sess: s, body: map[string]any{"prompt": tt.prompt, "model": "smart"}})
		r.json(t, &out)
		if r.status != 200 || len(out.Data) != 1 {
			t.Fatalf("try %q: %d %s", tt.prompt, r.status, r.body)
		}
		got := out.Data[0]
		if got.Matched != tt.matched || got.Target != tt.target || got.Model != tt.model || len(got.Scores) != 2 || out.Embedder != "lexical-v1" {
			t.Errorf("try %q = %+v; want matched %t target %q model %q", tt.prompt, got, tt.matched, tt.target, tt.model)
		}
		for _, sc := range got.Scores {
			if sc.Threshold != 0.5 || sc.Passes != (sc.Score >= 0.5) || (sc.Target == tt.target) != (tt.matched && sc.Passes && sc.Target == got.Target) {
				t.Errorf("try %q: score %+v", tt.prompt, sc)
			}
		}
	}

	// Editing the examples changes the decision.
	route["targets"].([]map[string]any)[0]["utterances"] = []string{"quarterly invoice totals per warehouse"}
	if r := h.do(req{method: "PUT", path: "/api/semantic-routes/smart", sess: s, body: route}); r.status != 200 {
		t.Fatalf("edit examples: %d %s", r.status, r.body)
	}
	var out tryAnswer
	h.do(req{method: "POST", path: "/api/semantic-try", sess: s, body: map[string]any{"prompt": "quarterly invoice totals for the Berlin warehouse"}}).json(t, &out)
	if len(out.Data) != 1 || out.Data[0].Target != "code" {
		t.Errorf("after editing the examples: %+v", out.Data)
	}

	for _, tc := range []struct {
		name   string
		path   string
		body   map[string]any
		status int
	}{
		{"empty prompt", "/api/semantic-try", map[string]any{"prompt": " "}, 400},
		{"unknown route", "/api/semantic-try", map[string]any{"prompt": "hi", "model": "nope"}, 404},
		{"target without examples", "/api/semantic-routes/bad", map[string]any{"default": "x", "targets": []map[string]any{{"name": "a", "model": "m", "threshold": 0.5}}}, 400},
		{"default is the route", "/api/semantic-routes/bad", map[string]any{"default": "bad", "targets": []map[string]any{{"name": "a", "model": "m", "utterances": []string{"u"}}}}, 400},
	} {
		method := "POST"
		if strings.HasPrefix(tc.path, "/api/semantic-routes/") {
			method = "PUT"
		}
		if r := h.do(req{method: method, path: tc.path, sess: s, body: tc.body}); r.status != tc.status {
			t.Errorf("%s: %d %s; want %d", tc.name, r.status, r.body, tc.status)
		}
	}
	alice := h.login("alice", userPass)
	if r := h.do(req{method: "POST", path: "/api/semantic-try", sess: alice, body: map[string]any{"prompt": "hi"}}); r.status != 403 {
		t.Errorf("a user trying a prompt: %d", r.status)
	}
	if r := h.do(req{method: "DELETE", path: "/api/semantic-routes/smart", sess: s}); r.status != 200 {
		t.Errorf("delete: %d %s", r.status, r.body)
	}
}

// TestKeyBodyLogOptOut: the keys API shows and sets the per-key body-logging opt-out,
// for an admin and for a key's owner.
func TestKeyBodyLogOptOut(t *testing.T) {
	h := newHarness(t)
	alice := h.login("alice", userPass)
	var created struct {
		APIKey keyJSON `json:"api_key"`
	}
	h.do(req{method: "POST", path: "/api/apikeys", sess: alice, body: map[string]any{"name": "mine"}}).json(t, &created)
	if !created.APIKey.LogBodies {
		t.Fatalf("new key log_bodies = false, want true (the default)")
	}
	id := itoa(created.APIKey.ID)
	for _, tc := range []struct {
		who  string
		sess *session
		on   bool
	}{{"owner opts out", alice, false}, {"admin opts back in", h.login("root", adminPass), true}, {"owner opts out again", alice, false}} {
		var k keyJSON
		r := h.do(req{method: "PUT", path: "/api/apikeys/" + id, sess: tc.sess, body: map[string]any{"log_bodies": tc.on}})
		r.json(t, &k)
		if r.status != 200 || k.LogBodies != tc.on {
			t.Fatalf("%s: %d %s", tc.who, r.status, r.body)
		}
		var list struct{ Data []keyJSON }
		h.do(req{method: "GET", path: "/api/apikeys", sess: alice}).json(t, &list)
		if len(list.Data) != 1 || list.Data[0].LogBodies != tc.on {
			t.Errorf("%s: listed %+v", tc.who, list.Data)
		}
		opt, err := h.st.KeyBodyLogOptOuts(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if opt[created.APIKey.ID] == tc.on {
			t.Errorf("%s: stored opt-out %t", tc.who, opt[created.APIKey.ID])
		}
	}
	if r := h.do(req{method: "PUT", path: "/api/apikeys/" + id, sess: alice, body: map[string]any{"log_bodies": "no"}}); r.status != 400 {
		t.Errorf("log_bodies as a string: %d", r.status)
	}
	bob := h.login("bob", userPass)
	if r := h.do(req{method: "PUT", path: "/api/apikeys/" + id, sess: bob, body: map[string]any{"log_bodies": true}}); r.status != 404 {
		t.Errorf("bob on alice's key: %d", r.status)
	}
}
