package metrics

import (
	"crypto/subtle"
	"fmt"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

const ns = "llm_proxy_"

var (
	descRequests = prometheus.NewDesc(ns+"requests_total",
		"Proxied requests by endpoint, requested model, upstream that answered last, HTTP status and cache tier.",
		[]string{"endpoint", "model", "upstream", "status", "cache"}, nil)
	descDuration = prometheus.NewDesc(ns+"request_duration_seconds",
		"Time from receiving a request to its last byte, whole streams included.",
		[]string{"endpoint", "model"}, nil)
	descTTFT = prometheus.NewDesc(ns+"time_to_first_token_seconds",
		"Time from receiving a request to the upstream's first response byte.",
		[]string{"model"}, nil)
	descTokens = prometheus.NewDesc(ns+"tokens_total",
		"Tokens by requested model; direction is prompt (input) or completion (output).",
		[]string{"model", "direction"}, nil)
	descCost = prometheus.NewDesc(ns+"cost_usd_total",
		"Cost of the requests by requested model, in US dollars from the price table.",
		[]string{"model"}, nil)
	descHealthy = prometheus.NewDesc(ns+"upstream_healthy",
		"1 if the upstream's last health check passed, else 0.",
		[]string{"upstream"}, nil)
	descCircuit = prometheus.NewDesc(ns+"circuit_open",
		"Workers whose circuit breaker for this deployment is open or half-open (circuits are per worker).",
		[]string{"upstream", "model"}, nil)
	descRetries = prometheus.NewDesc(ns+"retries_total",
		"Upstream attempts after the first of a request (retries and fallbacks).", nil, nil)
	descLimited = prometheus.NewDesc(ns+"rate_limited_total",
		"Requests refused by a rate limit or budget, by the limit that refused them.",
		[]string{"reason"}, nil)
	descWorkers = prometheus.NewDesc(ns+"workers",
		"Worker processes alive and serving.", nil, nil)
	descEpoch = prometheus.NewDesc(ns+"primary_epoch",
		"Lease epoch of the current primary; it increases at every failover.", nil, nil)
	descBacklog = prometheus.NewDesc(ns+"spool_backlog_bytes",
		"Bytes of request records in spool files not yet ingested into the database.", nil, nil)
)

// collector reads the shared file at every scrape and emits constant metrics, so any
// process reports the same whole-server totals.
type collector struct{ m *Metrics }

var _ prometheus.Collector = collector{}

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRequests, descDuration, descTTFT, descTokens, descCost,
		descHealthy, descCircuit, descRetries, descLimited, descWorkers, descEpoch, descBacklog} {
		ch <- d
	}
}

// hist accumulates one histogram series over the request series it aggregates.
type hist struct {
	sumUs   int64
	buckets []uint64 // not cumulative; the last is +Inf
}

func (h *hist) add(s interface{ Load(int) int64 }, sumWord, firstBucket, n int) {
	if h.buckets == nil {
		h.buckets = make([]uint64, n+1)
	}
	h.sumUs += s.Load(sumWord)
	for i := range h.buckets {
		h.buckets[i] += uint64(s.Load(firstBucket + i))
	}
}

func (h *hist) emit(ch chan<- prometheus.Metric, d *prometheus.Desc, boundsUs []int64, labels ...string) {
	cum := make(map[float64]uint64, len(boundsUs))
	var count uint64
	for i, b := range boundsUs {
		count += h.buckets[i]
		cum[float64(b)/1e6] = count
	}
	count += h.buckets[len(boundsUs)]
	ch <- prometheus.MustNewConstHistogram(d, count, float64(h.sumUs)/1e6, cum, labels...)
}

type reqLabels struct{ endpoint, model, upstream, status, cache string }
type durLabels struct{ endpoint, model string }
type circuitLabels struct{ upstream, model string }
type modelTotals struct{ prompt, completion, costMicro int64 }

func (c collector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	// A worker killed without its supervisor noticing (or before it reaped) would
	// otherwise stay counted in llm_proxy_workers and in its circuits.
	m.region.Reap()

	requests := map[reqLabels]int64{}
	durations := map[durLabels]*hist{}
	ttfts := map[string]*hist{}
	models := map[string]*modelTotals{}
	limited := map[string]int64{}
	healthy := map[string]int64{}
	circuits := map[circuitLabels]int64{}

	seen := map[string]bool{}
	for _, name := range m.region.Names() {
		if len(name) < 5 || !strings.HasPrefix(name, "m|") || name[3] != '|' || seen[name] {
			continue
		}
		seen[name] = true // gauges and plain slots may share a name (circuits)
		s, err := m.region.Slot(name)
		if err != nil {
			continue
		}
		k, ok := parseText(readText(s))
		if !ok {
			continue
		}
		switch name[2] {
		case famRequest:
			endpoint, model := k.s[0], k.s[1]
			requests[reqLabels{endpoint, model, k.s[2], strconv.FormatInt(k.n, 10), k.s[3]}] += s.Load(wRequests)
			d := durations[durLabels{endpoint, model}]
			if d == nil {
				d = &hist{}
				durations[durLabels{endpoint, model}] = d
			}
			d.add(s, wLatSum, wLatBuckets, len(latencyBoundsUs))
			t := ttfts[model]
			if t == nil {
				t = &hist{}
				ttfts[model] = t
			}
			t.add(s, wTTFBSum, wTTFBBucket, len(ttfbBoundsUs))
			mt := models[model]
			if mt == nil {
				mt = &modelTotals{}
				models[model] = mt
			}
			mt.prompt += s.Load(wPrompt)
			mt.completion += s.Load(wCompletion)
			mt.costMicro += s.Load(wCost)
		case famRateLimited:
			limited[k.s[0]] += s.Load(0)
		case famHealth:
			healthy[k.s[2]] = max(healthy[k.s[2]], s.Load(0))
		case famCircuit:
			g, err := m.region.Gauge(name)
			if err != nil {
				continue
			}
			circuits[circuitLabels{k.s[2], k.s[1]}] += g.Load()
		}
	}

	for l, v := range requests {
		ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(v),
			l.endpoint, l.model, l.upstream, l.status, l.cache)
	}
	for l, h := range durations {
		h.emit(ch, descDuration, latencyBoundsUs[:], l.endpoint, l.model)
	}
	for model, h := range ttfts {
		h.emit(ch, descTTFT, ttfbBoundsUs[:], model)
	}
	for model, t := range models {
		ch <- prometheus.MustNewConstMetric(descTokens, prometheus.CounterValue, float64(t.prompt), model, "prompt")
		ch <- prometheus.MustNewConstMetric(descTokens, prometheus.CounterValue, float64(t.completion), model, "completion")
		ch <- prometheus.MustNewConstMetric(descCost, prometheus.CounterValue, float64(t.costMicro)/1e6, model)
	}
	for reason, v := range limited {
		ch <- prometheus.MustNewConstMetric(descLimited, prometheus.CounterValue, float64(v), reason)
	}
	for up, v := range healthy {
		ch <- prometheus.MustNewConstMetric(descHealthy, prometheus.GaugeValue, float64(v), up)
	}
	for l, v := range circuits {
		ch <- prometheus.MustNewConstMetric(descCircuit, prometheus.GaugeValue, float64(v), l.upstream, l.model)
	}
	ch <- prometheus.MustNewConstMetric(descRetries, prometheus.CounterValue, float64(m.global.Load(gRetries)))
	ch <- prometheus.MustNewConstMetric(descWorkers, prometheus.GaugeValue, float64(m.workers.Load()))
	ch <- prometheus.MustNewConstMetric(descEpoch, prometheus.GaugeValue, float64(m.global.Load(gEpoch)))
	ch <- prometheus.MustNewConstMetric(descBacklog, prometheus.GaugeValue, float64(m.global.Load(gBacklog)))
}

// Handler serves the exposition (any path: mount it at Config.Path). A non-empty token
// must come as "Authorization: Bearer <token>"; otherwise the answer is 401 in OpenAI's
// error shape, like a bad API key.
func (m *Metrics) Handler(token string) fasthttp.RequestHandler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{m})
	serve := fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      promLogger{m},
	}))
	want := []byte("Bearer " + token)
	return func(ctx *fasthttp.RequestCtx) {
		if token != "" && subtle.ConstantTimeCompare(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization), want) != 1 {
			ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="metrics"`)
			ctx.SetStatusCode(fasthttp.StatusUnauthorized)
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"error":{"message":"A valid metrics token is required: send Authorization: Bearer <LLM_PROXY_METRICS_TOKEN>.","type":"invalid_request_error","param":null,"code":"invalid_metrics_token"}}`)
			return
		}
		serve(ctx)
	}
}

// promLogger passes promhttp's gathering errors to the metrics logger.
type promLogger struct{ m *Metrics }

func (l promLogger) Println(v ...any) {
	l.m.logger.Warn("metrics exposition", "error", strings.TrimSpace(fmt.Sprintln(v...)))
}
