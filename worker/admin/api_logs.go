package admin

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/store"
)

type logJSON struct {
	ID               int64           `json:"id"`
	RequestID        string          `json:"request_id"`
	Time             string          `json:"time"` // request start, RFC 3339 with milliseconds
	Worker           int             `json:"worker"`
	KeyID            *int64          `json:"key_id"` // null: the key was not recognised
	Endpoint         string          `json:"endpoint"`
	Model            string          `json:"model"`
	Upstream         string          `json:"upstream"`
	UpstreamModel    string          `json:"upstream_model"`
	Status           int             `json:"status"`
	Stream           bool            `json:"stream"`
	LatencyMs        float64         `json:"latency_ms"`
	TTFBMs           float64         `json:"ttfb_ms"`
	PromptTokens     int64           `json:"prompt_tokens"`
	CompletionTokens int64           `json:"completion_tokens"`
	ErrorClass       string          `json:"error_class"`
	Cache            string          `json:"cache"`    // '', miss, bypass, hit-l1, hit-l2, hit-semantic
	Route            string          `json:"route"`    // why the target was chosen
	Attempts         json.RawMessage `json:"attempts"` // one object per upstream attempt
	TokensEstimated  bool            `json:"tokens_estimated"`
	CostMicroUSD     int64           `json:"cost_micro_usd"`
}

func toLogJSON(l store.RequestLog) logJSON {
	out := logJSON{ID: l.ID, RequestID: l.RequestID, Time: time.UnixMilli(l.TsMs).UTC().Format("2006-01-02T15:04:05.000Z07:00"),
		Worker: l.Worker, Endpoint: l.Endpoint, Model: l.Model, Upstream: l.Upstream, UpstreamModel: l.UpstreamModel,
		Status: l.Status, Stream: l.Stream, LatencyMs: float64(l.LatencyUs) / 1000, TTFBMs: float64(l.TTFBUs) / 1000,
		PromptTokens: l.PromptTokens, CompletionTokens: l.CompletionTokens, ErrorClass: l.ErrorClass,
		Cache: l.Cache, Route: l.Route, Attempts: json.RawMessage(l.Attempts), TokensEstimated: l.TokensEstimated, CostMicroUSD: l.CostMicroUSD}
	if !json.Valid(out.Attempts) {
		out.Attempts = json.RawMessage("[]")
	}
	if l.KeyID != 0 {
		id := l.KeyID
		out.KeyID = &id
	}
	return out
}

// parseTime reads RFC 3339, a date, or unix milliseconds; "" is 0.
func parseTime(v *validation, field, s string) int64 {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n > 0 {
		return n
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UnixMilli()
		}
	}
	v.add(field, field+" must be an RFC 3339 time, a date (YYYY-MM-DD) or unix milliseconds.")
	return 0
}

func positiveInt(v *validation, field, s string) int64 {
	if s == "" {
		return 0
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		v.add(field, field+" must be a positive whole number.")
		return 0
	}
	return n
}

// logFilter reads the filters shared by GET /api/logs and the logs page. A "user" role is
// always limited to their own keys.
func (a *Admin) logFilter(c *call, args *fasthttp.Args, v *validation) store.LogFilter {
	get := func(k string) string { return strings.TrimSpace(string(args.Peek(k))) }
	f := store.LogFilter{
		FromMs:    parseTime(v, "from", get("from")),
		ToMs:      parseTime(v, "to", get("to")),
		KeyID:     positiveInt(v, "key_id", get("key_id")),
		UserID:    positiveInt(v, "user_id", get("user_id")),
		Model:     get("model"),
		Upstream:  get("upstream"),
		ErrorText: get("error"),
		Cache:     get("cache"),
		Before:    positiveInt(v, "cursor", get("cursor")),
		Limit:     int(positiveInt(v, "limit", get("limit"))),
	}
	if f.Limit > 1000 {
		v.add("limit", "limit must be at most 1000.")
	}
	if s := get("status"); s != "" {
		switch {
		case len(s) == 3 && strings.HasSuffix(strings.ToLower(s), "xx") && s[0] >= '1' && s[0] <= '5':
			f.StatusClass = int(s[0] - '0')
		default:
			n, err := strconv.Atoi(s)
			if err != nil || n < 100 || n > 599 {
				v.add("status", "status must be an HTTP status (100-599) or a class such as 5xx.")
			}
			f.Status = n
		}
	}
	if f.FromMs != 0 && f.ToMs != 0 && f.FromMs >= f.ToMs {
		v.add("to", "to must be after from.")
	}
	if !c.isAdmin() {
		f.UserID = c.user.ID
	}
	return f
}

func (a *Admin) listLogs(c *call) {
	var v validation
	f := a.logFilter(c, c.ctx.QueryArgs(), &v)
	if !v.ok() {
		c.invalid(&v)
		return
	}
	page, err := a.st.QueryLogs(c.std, f)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	out := make([]logJSON, 0, len(page.Logs))
	for _, l := range page.Logs {
		out = append(out, toLogJSON(l))
	}
	var next *string
	if page.NextCursor != 0 {
		s := strconv.FormatInt(page.NextCursor, 10)
		next = &s
	}
	c.json(fasthttp.StatusOK, map[string]any{"data": out, "next_cursor": next})
}

// ownLog loads log id if the caller may see it (404 otherwise).
func (a *Admin) ownLog(c *call, id int64) (store.RequestLog, bool) {
	l, err := a.st.RequestLog(c.std, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		c.internal(err, a.logger)
		return l, false
	}
	if err == nil && !c.isAdmin() {
		k, kerr := a.st.OwnedKey(c.std, l.KeyID)
		if kerr != nil || k.UserID != c.user.ID {
			err = store.ErrNotFound
		}
	}
	if err != nil {
		c.notFound("Request log")
		return l, false
	}
	return l, true
}

func (a *Admin) getLog(c *call) {
	id, ok := c.pathID()
	if !ok {
		return
	}
	if l, ok := a.ownLog(c, id); ok {
		c.json(fasthttp.StatusOK, toLogJSON(l))
	}
}

// deleteLogs clears logs with ts in [from, to); "all=true" without a range clears every
// row the caller may see, so a forgotten parameter never wipes the table.
func (a *Admin) deleteLogs(c *call) {
	args := c.ctx.QueryArgs()
	var v validation
	from := parseTime(&v, "from", string(args.Peek("from")))
	to := parseTime(&v, "to", string(args.Peek("to")))
	if from != 0 && to != 0 && from >= to {
		v.add("to", "to must be after from.")
	}
	if from == 0 && to == 0 && string(args.Peek("all")) != "true" {
		v.add("from", "Give a time range (from and/or to), or all=true to clear every log.")
	}
	if !v.ok() {
		c.invalid(&v)
		return
	}
	n, err := a.st.DeleteLogs(c.std, from, to, c.scopeUser())
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	a.logger.Info("request logs cleared", "rows", n, "from_ms", from, "to_ms", to, "by", c.user.Username)
	c.json(fasthttp.StatusOK, map[string]any{"deleted": n})
}
