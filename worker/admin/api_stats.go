package admin

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/coordinator"
	"github.com/llm-proxy/llm-proxy/store"
)

// Settings.

func (a *Admin) getSettings(c *call) {
	if a.settings == nil {
		c.fail(fasthttp.StatusServiceUnavailable, "server_error", "settings_unavailable", "", "Settings are not available in this process.")
		return
	}
	list, err := a.settings.List(c.std)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	c.json(fasthttp.StatusOK, map[string]any{"data": list})
}

// putSettings stores database-backed settings: {"settings": {"NAME": "value", "OTHER": null}},
// null reverting to the default. Everything is validated before anything is written.
func (a *Admin) putSettings(c *call) {
	if a.settings == nil {
		c.fail(fasthttp.StatusServiceUnavailable, "server_error", "settings_unavailable", "", "Settings are not available in this process.")
		return
	}
	var req struct {
		Settings map[string]*string `json:"settings"`
	}
	if !c.decode(&req) {
		return
	}
	var v validation
	if len(req.Settings) == 0 {
		v.add("settings", `settings must be an object of variable names to values, e.g. {"settings": {"LOG_LEVEL": "DEBUG"}}.`)
		c.invalid(&v)
		return
	}
	list, err := a.settings.List(c.std)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	known := make(map[string]Setting, len(list))
	for _, s := range list {
		known[s.Name] = s
	}
	set := map[string]string{}
	var del []string
	names := make([]string, 0, len(req.Settings))
	for name := range req.Settings {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, raw := range names {
		name := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(raw)), "LLM_PROXY_")
		s, ok := known[name]
		switch {
		case !ok:
			v.add(raw, "Unknown setting "+raw+".")
		case s.ReadOnly && s.Source == "env":
			v.add(raw, "LLM_PROXY_"+name+" is set in the environment, which overrides the database; change it there.")
		case s.ReadOnly:
			v.add(raw, "LLM_PROXY_"+name+" cannot be stored in the database.")
		case req.Settings[raw] == nil:
			del = append(del, name)
		default:
			set[name] = strings.TrimSpace(*req.Settings[raw])
		}
	}
	if !v.ok() {
		c.invalid(&v)
		return
	}
	if err := a.settings.Validate(c.std, set, del); err != nil {
		field := names[0]
		for _, n := range names {
			if strings.Contains(err.Error(), "LLM_PROXY_"+strings.ToUpper(n)+"=") {
				field = n
			}
		}
		v.add(field, err.Error())
		c.invalid(&v)
		return
	}
	if err := a.st.ApplySettings(c.std, set, del); err != nil {
		c.internal(err, a.logger)
		return
	}
	a.logger.Info("settings changed", "set", len(set), "reset", len(del), "by", c.user.Username)
	list, err = a.settings.List(c.std)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	c.json(fasthttp.StatusOK, map[string]any{"data": list,
		"note": "Saved. Within a few seconds the workers restart one at a time with the new values, without dropping requests."})
}

// Statistics.

// statRange is one of the dashboard's windows.
type statRange struct {
	Name string
	Span time.Duration
	Step time.Duration
}

var statRanges = map[string]statRange{
	"hour": {"hour", time.Hour, time.Minute},
	"day":  {"day", 24 * time.Hour, time.Hour},
	"week": {"week", 7 * 24 * time.Hour, time.Hour},
}

type countsJSON struct {
	Requests          int64   `json:"requests"`
	Errors            int64   `json:"errors"`
	ErrorRate         float64 `json:"error_rate"`
	RequestsPerSecond float64 `json:"requests_per_second"`
	P50Ms             float64 `json:"p50_ms"`
	P95Ms             float64 `json:"p95_ms"`
	MeanMs            float64 `json:"mean_ms"`
	PromptTokens      int64   `json:"prompt_tokens"`
	CompletionTokens  int64   `json:"completion_tokens"`
}

func toCounts(c store.StatsCounts, seconds float64) countsJSON {
	return countsJSON{Requests: c.Requests, Errors: c.Errors, ErrorRate: c.ErrorRate(), RequestsPerSecond: float64(c.Requests) / seconds,
		P50Ms: c.PercentileMs(0.5), P95Ms: c.PercentileMs(0.95), MeanMs: c.MeanLatencyMs(),
		PromptTokens: c.PromptTokens, CompletionTokens: c.CompletionTokens}
}

type pointJSON struct {
	T int64 `json:"t"` // bucket start, unix seconds
	countsJSON
}

type groupJSON struct {
	Name string `json:"name"`
	countsJSON
}

type statsJSON struct {
	Range       string      `json:"range"`
	From        string      `json:"from"`
	To          string      `json:"to"`
	StepSeconds int64       `json:"step_seconds"`
	Totals      countsJSON  `json:"totals"`
	Series      []pointJSON `json:"series"` // every step of the range, zeros included
	ByUpstream  []groupJSON `json:"by_upstream"`
	ByModel     []groupJSON `json:"by_model"`
}

// stats builds the dashboard's data for range name (hour, day, week), scoped like the logs.
func (a *Admin) stats(c *call, name string, keyID int64) (statsJSON, error) {
	r := statRanges[name]
	step := r.Step
	now := a.now()
	to := now.Truncate(step).Add(step) // include the current, partial step
	from := to.Add(-r.Span)
	res, err := a.st.Stats(c.std, store.StatsQuery{From: from, To: to, Step: step, UserID: c.scopeUser(), KeyID: keyID})
	if err != nil {
		return statsJSON{}, err
	}
	out := statsJSON{Range: r.Name, From: from.UTC().Format(time.RFC3339), To: to.UTC().Format(time.RFC3339),
		StepSeconds: int64(step / time.Second), Totals: toCounts(res.Total, r.Span.Seconds()),
		Series: []pointJSON{}, ByUpstream: []groupJSON{}, ByModel: []groupJSON{}}
	byBucket := make(map[int64]store.StatsCounts, len(res.Series))
	for _, p := range res.Series {
		byBucket[p.Bucket.Unix()] = p.StatsCounts
	}
	for t := from; t.Before(to); t = t.Add(step) {
		out.Series = append(out.Series, pointJSON{T: t.Unix(), countsJSON: toCounts(byBucket[t.Unix()], step.Seconds())})
	}
	for _, g := range res.ByUpstream {
		out.ByUpstream = append(out.ByUpstream, groupJSON{Name: g.Name, countsJSON: toCounts(g.StatsCounts, r.Span.Seconds())})
	}
	for _, g := range res.ByModel {
		out.ByModel = append(out.ByModel, groupJSON{Name: g.Name, countsJSON: toCounts(g.StatsCounts, r.Span.Seconds())})
	}
	return out, nil
}

func (a *Admin) getStats(c *call) {
	var v validation
	name := string(c.ctx.QueryArgs().Peek("range"))
	if name == "" {
		name = "hour"
	}
	if _, ok := statRanges[name]; !ok {
		v.add("range", "range must be hour, day or week.")
	}
	keyID := positiveInt(&v, "key_id", string(c.ctx.QueryArgs().Peek("key_id")))
	if !v.ok() {
		c.invalid(&v)
		return
	}
	out, err := a.stats(c, name, keyID)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	c.json(fasthttp.StatusOK, out)
}

// Workers.

// workersJSON is the workers page's data: the shape `llm-proxy status` prints.
type workersJSON = store.ClusterStatus

func (a *Admin) workers(ctx context.Context) (workersJSON, error) {
	return a.st.Status(ctx, a.now())
}

func (a *Admin) getWorkers(c *call) {
	out, err := a.workers(c.std)
	if err != nil {
		a.logger.Warn("GET /api/workers: reading the workers table failed", "error", err)
		c.fail(fasthttp.StatusServiceUnavailable, "server_error", "database_unavailable", "", "The worker list could not be read from the database; try again.")
		return
	}
	c.json(fasthttp.StatusOK, out)
}

// Roll-ups.

// Roll-up task parameters: every 5 s, 5,000 rows per fenced transaction (a few
// milliseconds of write lock), so the dashboard trails the logs by seconds.
const (
	rollupInterval = 5 * time.Second
	rollupBatch    = 5000
)

// RollupTask folds new request logs into the statistics roll-ups; the primary runs it.
func RollupTask(st *store.Store, logger hclog.Logger) coordinator.Task {
	logger = logger.Named("rollup")
	return coordinator.Task{Name: "rollup", Interval: rollupInterval, Run: func(ctx context.Context, epoch int64) error {
		n, err := st.RollupStats(ctx, epoch, rollupBatch, time.Now())
		if n > 0 {
			logger.Trace("rolled up request logs", "rows", n)
		}
		return err
	}}
}
