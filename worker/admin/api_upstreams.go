package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/routing"
	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/worker/upstream"
)

// deploymentJSON is one deployment of an upstream. In a request, a priority or
// max_concurrent left out (null) keeps the value the deployment of the same public model
// has now (0 for a new one), so an edit that does not mention them keeps them.
type deploymentJSON struct {
	PublicModel   string `json:"public_model"`
	UpstreamModel string `json:"upstream_model"`
	Weight        int    `json:"weight"`
	Priority      *int   `json:"priority"`       // tier: lower is tried first
	MaxConcurrent *int   `json:"max_concurrent"` // 0: unlimited
}

// circuitJSON is the passive state of an upstream's deployments as the worker that
// answered sees it (circuits live in each worker's memory, so another worker may differ).
type circuitJSON struct {
	State       string                  `json:"state"`       // the worst of its deployments: open, half-open or closed
	RetryInMs   int64                   `json:"retry_in_ms"` // open: until the soonest probe request; else 0
	Worker      string                  `json:"worker"`      // id of the worker whose view this is
	Deployments []deploymentCircuitJSON `json:"deployments"`
}

type deploymentCircuitJSON struct {
	PublicModel   string `json:"public_model"`
	UpstreamModel string `json:"upstream_model"`
	State         string `json:"state"`
	RetryInMs     int64  `json:"retry_in_ms"`
	CoolingMs     int64  `json:"cooling_ms"` // left of a 429 Retry-After cool-down
	InFlight      int64  `json:"in_flight"`
}

type upstreamJSON struct {
	ID          int64            `json:"id"`
	Name        string           `json:"name"`
	Provider    string           `json:"provider"`
	BaseURL     string           `json:"base_url"`
	APIKey      string           `json:"api_key"` // masked; "" when none is stored
	HasAPIKey   bool             `json:"has_api_key"`
	Weight      int              `json:"weight"`
	Enabled     bool             `json:"enabled"`
	CreatedAt   string           `json:"created_at"`
	Deployments []deploymentJSON `json:"deployments"`
	// Health is the latest active probe (shared by every worker through the store); null
	// until the primary has probed the upstream.
	Health *healthJSON `json:"health"`
	// Circuit is the passive state; null when the serving worker does not report it.
	Circuit *circuitJSON `json:"circuit"`
}

// maskSecret shows enough of a provider key to recognise it and never all of it.
func maskSecret(k string) string {
	switch {
	case k == "":
		return ""
	case len(k) <= 12:
		return "…" + strings.Repeat("*", 4)
	}
	return k[:4] + "…" + k[len(k)-4:]
}

func toUpstreamJSON(u store.Upstream) upstreamJSON {
	out := upstreamJSON{ID: u.ID, Name: u.Name, Provider: u.Provider, BaseURL: u.BaseURL, APIKey: maskSecret(u.APIKey),
		HasAPIKey: u.APIKey != "", Weight: u.Weight, Enabled: u.Enabled, CreatedAt: u.CreatedAt.UTC().Format(time.RFC3339),
		Deployments: []deploymentJSON{}}
	for _, d := range u.Deployments {
		p, m := d.Priority, d.MaxConcurrent
		out.Deployments = append(out.Deployments, deploymentJSON{PublicModel: d.PublicModel, UpstreamModel: d.UpstreamModel, Weight: d.Weight,
			Priority: &p, MaxConcurrent: &m})
	}
	return out
}

func toHealthJSON(h store.UpstreamHealth) *healthJSON {
	return &healthJSON{Healthy: h.Healthy, CheckedAt: h.CheckedAt.UTC().Format(time.RFC3339), Error: h.Error, Failures: h.Failures,
		LatencyMs: float64(h.Latency.Microseconds()) / 1000}
}

// circuitsByUpstream groups the serving worker's circuits by upstream id; nil without a
// runtime.
func (a *Admin) circuitsByUpstream() (map[int64]*circuitJSON, bool) {
	rt := a.rt()
	if rt == nil {
		return nil, false
	}
	worker := rt.ID()
	rank := map[string]int{routing.CircuitClosed: 0, routing.CircuitHalfOpen: 1, routing.CircuitOpen: 2}
	out := map[int64]*circuitJSON{}
	for _, d := range rt.Circuits() {
		cj, ok := out[d.UpstreamID]
		if !ok {
			cj = &circuitJSON{State: routing.CircuitClosed, Worker: worker, Deployments: []deploymentCircuitJSON{}}
			out[d.UpstreamID] = cj
		}
		retry := d.RetryIn.Milliseconds()
		cj.Deployments = append(cj.Deployments, deploymentCircuitJSON{PublicModel: d.PublicModel, UpstreamModel: d.UpstreamModel,
			State: d.State, RetryInMs: retry, CoolingMs: d.CoolingFor.Milliseconds(), InFlight: d.InFlight})
		if rank[d.State] > rank[cj.State] {
			cj.State = d.State
		}
		if d.State == routing.CircuitOpen && (cj.RetryInMs == 0 || retry < cj.RetryInMs) {
			cj.RetryInMs = retry
		}
	}
	return out, true
}

// upstreamViews is ups as the API shows them, with active health and passive circuits.
// An upstream the worker routes nothing to (disabled, or added a moment ago) reports a
// closed circuit with no deployments.
func (a *Admin) upstreamViews(c *call, ups []store.Upstream) ([]upstreamJSON, error) {
	health, err := a.st.UpstreamHealths(c.std)
	if err != nil {
		return nil, err
	}
	circuits, haveRT := a.circuitsByUpstream()
	out := make([]upstreamJSON, 0, len(ups))
	for _, u := range ups {
		j := toUpstreamJSON(u)
		if h, ok := health[u.ID]; ok {
			j.Health = toHealthJSON(h)
		}
		if haveRT {
			j.Circuit = circuits[u.ID]
			if j.Circuit == nil {
				j.Circuit = &circuitJSON{State: routing.CircuitClosed, Worker: a.rt().ID(), Deployments: []deploymentCircuitJSON{}}
			}
		}
		out = append(out, j)
	}
	return out, nil
}

func (a *Admin) listUpstreams(c *call) {
	ups, err := a.st.ListUpstreams(c.std)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	out, err := a.upstreamViews(c, ups)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	c.json(fasthttp.StatusOK, map[string]any{"data": out})
}

// upstreamRequest is the body of POST and PUT /api/upstreams.
type upstreamRequest struct {
	Name        string            `json:"name"`
	Provider    string            `json:"provider"`
	BaseURL     string            `json:"base_url"`
	APIKey      *string           `json:"api_key"` // PUT: null/absent keeps the stored key, "" removes it
	Weight      *int              `json:"weight"`  // default 1
	Enabled     *bool             `json:"enabled"` // default true
	Models      []string          `json:"models"`  // shorthand: public names served under the same name
	Deployments []*deploymentJSON `json:"deployments"`
}

var (
	nameRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`)
	providerRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)
)

// toUpstream validates req; without models or deployments every model passes through.
// prev is the upstream being edited (nil on create): a deployment of a public model it
// already has keeps what the request does not say — for a "models" entry everything
// (upstream model, weight, priority, max concurrency), for a "deployments" entry its
// priority and max concurrency when left out.
func (req *upstreamRequest) toUpstream(v *validation, policy upstream.AddressPolicy, prev *store.Upstream) store.Upstream {
	old := map[string]store.Deployment{}
	if prev != nil {
		for _, d := range prev.Deployments {
			old[d.PublicModel] = d
		}
	}
	u := store.Upstream{Name: strings.TrimSpace(req.Name), Provider: strings.TrimSpace(req.Provider),
		BaseURL: strings.TrimRight(strings.TrimSpace(req.BaseURL), "/"), Weight: 1, Enabled: true}
	if !nameRE.MatchString(u.Name) {
		v.add("name", "name must be 1 to 100 letters, digits, '.', '_' or '-'.")
	}
	if u.Provider == "" {
		u.Provider = "openai"
	} else if !providerRE.MatchString(u.Provider) {
		v.add("provider", "provider must be a lower-case adapter name such as openai.")
	}
	if u.BaseURL == "" {
		v.add("base_url", "base_url is required: an http:// or https:// URL, such as https://api.openai.com/v1.")
	} else if msg := baseURLProblem(u.BaseURL, policy); msg != "" {
		v.add("base_url", msg)
	}
	if req.Weight != nil {
		if *req.Weight < 0 || *req.Weight > 1000 {
			v.add("weight", "weight must be from 0 to 1000.")
		}
		u.Weight = *req.Weight
	}
	if req.Enabled != nil {
		u.Enabled = *req.Enabled
	}
	if req.APIKey != nil {
		u.APIKey = strings.TrimSpace(*req.APIKey)
	}
	seen := map[string]bool{}
	addDep := func(d store.Deployment) {
		switch {
		case d.PublicModel == "" || len(d.PublicModel) > 200 || strings.Contains(d.PublicModel, ","):
			v.add("deployments", "Every deployment needs a public_model of at most 200 characters without commas.")
		case seen[d.PublicModel]:
			v.add("deployments", "The model "+d.PublicModel+" is listed twice.")
		case d.Weight < 0 || d.Weight > 1000:
			v.add("deployments", "Deployment weights must be from 0 to 1000.")
		case d.Priority < 0 || d.Priority > 1000:
			v.add("deployments", "Deployment priorities must be from 0 to 1000.")
		case d.MaxConcurrent < 0 || d.MaxConcurrent > 1_000_000:
			v.add("deployments", "Deployment max_concurrent must be from 0 (unlimited) to 1000000.")
		case d.PublicModel == store.AnyModel && d.UpstreamModel != "":
			v.add("deployments", `The "*" deployment passes model names through and takes no upstream_model.`)
		}
		seen[d.PublicModel] = true
		u.Deployments = append(u.Deployments, d)
	}
	for _, m := range req.Models {
		if m = strings.TrimSpace(m); m != "" {
			d, ok := old[m]
			if !ok {
				d = store.Deployment{PublicModel: m, Weight: 1}
			}
			addDep(d)
		}
	}
	for _, d := range req.Deployments {
		if d == nil {
			continue
		}
		w := d.Weight
		if w == 0 {
			w = 1
		}
		nd := store.Deployment{PublicModel: strings.TrimSpace(d.PublicModel), UpstreamModel: strings.TrimSpace(d.UpstreamModel), Weight: w}
		o := old[nd.PublicModel]
		nd.Priority, nd.MaxConcurrent = o.Priority, o.MaxConcurrent
		if d.Priority != nil {
			nd.Priority = *d.Priority
		}
		if d.MaxConcurrent != nil {
			nd.MaxConcurrent = *d.MaxConcurrent
		}
		addDep(nd)
	}
	if len(u.Deployments) == 0 {
		d, ok := old[store.AnyModel]
		if !ok {
			d = store.Deployment{PublicModel: store.AnyModel, Weight: 1}
		}
		u.Deployments = []store.Deployment{d}
	}
	return u
}

// answerUpstream answers upstream id as the API shows it.
func (a *Admin) answerUpstream(c *call, status int, id int64) {
	u, ok := a.findUpstream(c, id)
	if !ok {
		return
	}
	views, err := a.upstreamViews(c, []store.Upstream{u})
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	c.json(status, views[0])
}

func (a *Admin) findUpstream(c *call, id int64) (store.Upstream, bool) {
	ups, err := a.st.ListUpstreams(c.std)
	if err != nil {
		c.internal(err, a.logger)
		return store.Upstream{}, false
	}
	for _, u := range ups {
		if u.ID == id {
			return u, true
		}
	}
	c.notFound("Upstream")
	return store.Upstream{}, false
}

func (a *Admin) createUpstream(c *call) {
	var req upstreamRequest
	if !c.decode(&req) {
		return
	}
	var v validation
	u := req.toUpstream(&v, a.addressPolicy(c.std), nil)
	if !v.ok() {
		c.invalid(&v)
		return
	}
	id, err := a.st.AddUpstream(c.std, u)
	if errors.Is(err, store.ErrExists) {
		v.add("name", "An upstream named "+u.Name+" already exists.")
		c.invalid(&v)
		return
	}
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	a.logger.Info("upstream added", "name", u.Name, "base_url", u.BaseURL, "by", c.user.Username)
	a.answerUpstream(c, fasthttp.StatusCreated, id)
}

func (a *Admin) updateUpstream(c *call) {
	id, ok := c.pathID()
	if !ok {
		return
	}
	var req upstreamRequest
	if !c.decode(&req) {
		return
	}
	prev, ok := a.findUpstream(c, id)
	if !ok {
		return
	}
	var v validation
	u := req.toUpstream(&v, a.addressPolicy(c.std), &prev)
	if !v.ok() {
		c.invalid(&v)
		return
	}
	err := a.st.UpdateUpstream(c.std, id, u, req.APIKey == nil)
	switch {
	case errors.Is(err, store.ErrNotFound):
		c.notFound("Upstream")
		return
	case errors.Is(err, store.ErrExists):
		v.add("name", "An upstream named "+u.Name+" already exists.")
		c.invalid(&v)
		return
	case err != nil:
		c.internal(err, a.logger)
		return
	}
	a.logger.Info("upstream updated", "name", u.Name, "by", c.user.Username)
	a.answerUpstream(c, fasthttp.StatusOK, id)
}

func (a *Admin) deleteUpstream(c *call) {
	id, ok := c.pathID()
	if !ok {
		return
	}
	err := a.st.RemoveUpstreamByID(c.std, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		c.notFound("Upstream")
	case err != nil:
		c.internal(err, a.logger)
	default:
		a.logger.Info("upstream removed", "id", id, "by", c.user.Username)
		c.json(fasthttp.StatusOK, map[string]any{"id": id, "deleted": true})
	}
}

// testResult is the answer of POST /api/upstreams/{id}/test.
type testResult struct {
	OK        bool     `json:"ok"`
	Status    int      `json:"status"` // upstream HTTP status; 0 when none arrived
	LatencyMs float64  `json:"latency_ms"`
	Models    []string `json:"models"` // ids from the upstream's model list (at most 50)
	Error     string   `json:"error,omitempty"`
}

// testUpstream calls GET {base_url}/models with the stored key, within 5 s.
func (a *Admin) testUpstream(c *call) {
	id, ok := c.pathID()
	if !ok {
		return
	}
	u, ok := a.findUpstream(c, id)
	if !ok {
		return
	}
	// An upstream stored before the policy was tightened (or by the CLI) is not dialled
	// from here either.
	if msg := baseURLProblem(u.BaseURL, a.addressPolicy(c.std)); msg != "" {
		c.json(fasthttp.StatusOK, testResult{Models: []string{}, Error: msg})
		return
	}
	ctx, cancel := context.WithTimeout(c.std, upstreamTestTime)
	defer cancel()
	c.json(fasthttp.StatusOK, probeModels(ctx, a.client, u))
}

func probeModels(ctx context.Context, client *http.Client, u store.Upstream) testResult {
	res := testResult{Models: []string{}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(u.BaseURL, "/")+"/models", nil)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	if u.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+u.APIKey)
		req.Header.Set("x-api-key", u.APIKey) // Anthropic's header; OpenAI-style servers ignore it
	}
	start := time.Now()
	resp, err := client.Do(req)
	res.LatencyMs = float64(time.Since(start).Microseconds()) / 1000
	if err != nil {
		res.Error = err.Error()
		if errors.Is(err, context.DeadlineExceeded) {
			res.Error = fmt.Sprintf("no answer within %s", upstreamTestTime)
		}
		return res
	}
	defer resp.Body.Close()
	res.Status = resp.StatusCode
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		res.Error = "read the answer: " + err.Error()
		return res
	}
	if resp.StatusCode != http.StatusOK {
		res.Error = fmt.Sprintf("the upstream answered %d: %s", resp.StatusCode, truncate(strings.TrimSpace(string(body)), 300))
		return res
	}
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		res.Error = "the answer is not a model list: " + err.Error()
		return res
	}
	for i, m := range list.Data {
		if i == 50 {
			break
		}
		res.Models = append(res.Models, m.ID)
	}
	res.OK = true
	return res
}
