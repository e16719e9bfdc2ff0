package metrics

import (
	"crypto/subtle"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

// The exposition is written here rather than through the Prometheus client library:
// every series lives in the shared file and is read fresh at each scrape, so the
// library's registry, protobuf model and HTTP handler would add megabytes of text to
// every worker's resident memory for what is a few dozen lines of formatting.

const ns = "llm_proxy_"

// ContentType is the media type of the text exposition format 0.0.4.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Metric types as the TYPE line names them.
const (
	typeCounter   = "counter"
	typeGauge     = "gauge"
	typeHistogram = "histogram"
)

// desc is one metric family: its name, HELP text, type and label names. Label names
// are in sorted order, which is the order the exposition writes them in; series give
// their label values in the same order.
type desc struct {
	name, help, typ string
	labels          []string
}

var (
	descRequests = &desc{ns + "requests_total",
		"Proxied requests by endpoint, requested model, upstream that answered last, HTTP status and cache tier.",
		typeCounter, []string{"cache", "endpoint", "model", "status", "upstream"}}
	descDuration = &desc{ns + "request_duration_seconds",
		"Time from receiving a request to its last byte, whole streams included.",
		typeHistogram, []string{"endpoint", "model"}}
	descTTFT = &desc{ns + "time_to_first_token_seconds",
		"Time from receiving a request to the upstream's first response byte.",
		typeHistogram, []string{"model"}}
	descTokens = &desc{ns + "tokens_total",
		"Tokens by requested model; direction is prompt (input) or completion (output).",
		typeCounter, []string{"direction", "model"}}
	descCost = &desc{ns + "cost_usd_total",
		"Cost of the requests by requested model, in US dollars from the price table.",
		typeCounter, []string{"model"}}
	descHealthy = &desc{ns + "upstream_healthy",
		"1 if the upstream's last health check passed, else 0.",
		typeGauge, []string{"upstream"}}
	descCircuit = &desc{ns + "circuit_open",
		"Workers whose circuit breaker for this deployment is open or half-open (circuits are per worker).",
		typeGauge, []string{"model", "upstream"}}
	descRetries = &desc{ns + "retries_total",
		"Upstream attempts after the first of a request (retries and fallbacks).", typeCounter, nil}
	descLimited = &desc{ns + "rate_limited_total",
		"Requests refused by a rate limit or budget, by the limit that refused them.",
		typeCounter, []string{"reason"}}
	descWorkers = &desc{ns + "workers",
		"Worker processes alive and serving.", typeGauge, nil}
	descEpoch = &desc{ns + "primary_epoch",
		"Lease epoch of the current primary; it increases at every failover.", typeGauge, nil}
	descBacklog = &desc{ns + "spool_backlog_bytes",
		"Bytes of request records in spool files not yet ingested into the database.", typeGauge, nil}
	descCacheDropped = &desc{ns + "cache_writes_dropped_total",
		"Cacheable answers not cached because the cache write queue was full.", typeCounter, nil}
)

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

// sample is one series of a family: its label values (in the family's label order)
// and either a value or, for histograms, the buckets with the le text of their bounds.
type sample struct {
	labels []string
	value  float64
	hist   *hist
	les    []string
}

// The le label values of the histograms, formatted once.
var (
	latencyLes = les(latencyBoundsUs[:])
	ttfbLes    = les(ttfbBoundsUs[:])
)

func les(boundsUs []int64) []string {
	out := make([]string, len(boundsUs))
	for i, b := range boundsUs {
		out[i] = string(appendFloat(nil, float64(b)/1e6))
	}
	return out
}

// famSamples is a family with its samples of this scrape.
type famSamples struct {
	d       *desc
	samples []sample
}

type reqLabels struct{ endpoint, model, upstream, status, cache string }
type durLabels struct{ endpoint, model string }
type circuitLabels struct{ upstream, model string }
type modelTotals struct{ prompt, completion, costMicro int64 }

// collect reads the shared file and returns every family with its samples, so any
// process reports the same whole-server totals.
func (m *Metrics) collect() []famSamples {
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

	// Label values go in each desc's (sorted) label name order.
	fams := []famSamples{{d: descRequests}, {d: descDuration}, {d: descTTFT}, {d: descTokens}, {d: descCost},
		{d: descHealthy}, {d: descCircuit}, {d: descLimited}}
	for l, v := range requests {
		fams[0].samples = append(fams[0].samples, sample{labels: []string{l.cache, l.endpoint, l.model, l.status, l.upstream}, value: float64(v)})
	}
	for l, h := range durations {
		fams[1].samples = append(fams[1].samples, sample{labels: []string{l.endpoint, l.model}, hist: h, les: latencyLes})
	}
	for model, h := range ttfts {
		fams[2].samples = append(fams[2].samples, sample{labels: []string{model}, hist: h, les: ttfbLes})
	}
	for model, t := range models {
		fams[3].samples = append(fams[3].samples,
			sample{labels: []string{"prompt", model}, value: float64(t.prompt)},
			sample{labels: []string{"completion", model}, value: float64(t.completion)})
		fams[4].samples = append(fams[4].samples, sample{labels: []string{model}, value: float64(t.costMicro) / 1e6})
	}
	for up, v := range healthy {
		fams[5].samples = append(fams[5].samples, sample{labels: []string{up}, value: float64(v)})
	}
	for l, v := range circuits {
		fams[6].samples = append(fams[6].samples, sample{labels: []string{l.model, l.upstream}, value: float64(v)})
	}
	for reason, v := range limited {
		fams[7].samples = append(fams[7].samples, sample{labels: []string{reason}, value: float64(v)})
	}
	return append(fams,
		famSamples{descRetries, []sample{{value: float64(m.global.Load(gRetries))}}},
		famSamples{descWorkers, []sample{{value: float64(m.workers.Load())}}},
		famSamples{descEpoch, []sample{{value: float64(m.global.Load(gEpoch))}}},
		famSamples{descBacklog, []sample{{value: float64(m.global.Load(gBacklog))}}},
		famSamples{descCacheDropped, []sample{{value: float64(m.global.Load(gCacheDropped))}}},
	)
}

// appendExposition appends fams in the text format 0.0.4: families by name, series by
// their label values, families without series left out.
func appendExposition(b []byte, fams []famSamples) []byte {
	slices.SortFunc(fams, func(a, b famSamples) int { return strings.Compare(a.d.name, b.d.name) })
	for _, f := range fams {
		if len(f.samples) == 0 {
			continue
		}
		slices.SortFunc(f.samples, func(a, b sample) int { return slices.Compare(a.labels, b.labels) })
		b = append(b, "# HELP "...)
		b = append(b, f.d.name...)
		b = append(b, ' ')
		b = appendEscaped(b, f.d.help, false)
		b = append(b, "\n# TYPE "...)
		b = append(b, f.d.name...)
		b = append(b, ' ')
		b = append(b, f.d.typ...)
		b = append(b, '\n')
		for _, s := range f.samples {
			if f.d.typ == typeHistogram {
				b = appendHistogram(b, f.d, s)
				continue
			}
			b = appendSample(b, f.d.name, "", f.d.labels, s.labels, "", s.value)
		}
	}
	return b
}

// appendHistogram writes the cumulative buckets of s (le after its other labels, +Inf
// last), then its sum in seconds and its count.
func appendHistogram(b []byte, d *desc, s sample) []byte {
	var count uint64
	for i, le := range s.les {
		count += s.hist.buckets[i]
		b = appendSample(b, d.name, "_bucket", d.labels, s.labels, le, float64(count))
	}
	count += s.hist.buckets[len(s.les)]
	b = appendSample(b, d.name, "_bucket", d.labels, s.labels, "+Inf", float64(count))
	b = appendSample(b, d.name, "_sum", d.labels, s.labels, "", float64(s.hist.sumUs)/1e6)
	return appendSample(b, d.name, "_count", d.labels, s.labels, "", float64(count))
}

// appendSample writes one line: name+suffix, the labels (and le when not empty) in
// braces unless there are none, and v.
func appendSample(b []byte, name, suffix string, names, values []string, le string, v float64) []byte {
	b = append(b, name...)
	b = append(b, suffix...)
	sep := byte('{')
	for i, n := range names {
		b = append(b, sep)
		b = append(b, n...)
		b = append(b, '=', '"')
		b = appendEscaped(b, values[i], true)
		b = append(b, '"')
		sep = ','
	}
	if le != "" {
		b = append(b, sep)
		b = append(b, `le="`...)
		b = append(b, le...)
		b = append(b, '"')
		sep = ','
	}
	if sep == ',' {
		b = append(b, '}')
	}
	b = append(b, ' ')
	b = appendFloat(b, v)
	return append(b, '\n')
}

// appendEscaped escapes backslash and newline, and the double quote too in label
// values (quoted true); HELP text keeps its quotes as the format says.
func appendEscaped(b []byte, s string, quoted bool) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b = append(b, '\\', '\\')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '"' && quoted:
			b = append(b, '\\', '"')
		default:
			b = append(b, c)
		}
	}
	return b
}

// maxExactInt is the largest magnitude below which every integer is a float64.
const maxExactInt = 1 << 53

// appendFloat writes v as Prometheus parses it: NaN, +Inf, -Inf, integers in plain
// decimal (no exponent, so a counter past a million still reads as a count), anything
// else in the shortest form that round-trips.
func appendFloat(b []byte, v float64) []byte {
	switch {
	case math.IsNaN(v):
		return append(b, "NaN"...)
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	case v == math.Trunc(v) && math.Abs(v) < maxExactInt:
		return strconv.AppendInt(b, int64(v), 10) // -0 becomes 0
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// Handler serves the exposition (any path: mount it at Config.Path). A non-empty token
// must come as "Authorization: Bearer <token>"; otherwise the answer is 401 in OpenAI's
// error shape, like a bad API key. The body is always the text format 0.0.4, whatever
// Accept asks for (every Prometheus server accepts it); it is gzipped when the client
// accepts gzip.
func (m *Metrics) Handler(token string) fasthttp.RequestHandler {
	want := []byte("Bearer " + token)
	var lastLen atomic.Int64 // size of the previous body: one allocation per scrape
	return func(ctx *fasthttp.RequestCtx) {
		if token != "" && subtle.ConstantTimeCompare(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization), want) != 1 {
			ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="metrics"`)
			ctx.SetStatusCode(fasthttp.StatusUnauthorized)
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"error":{"message":"A valid metrics token is required: send Authorization: Bearer <LLM_PROXY_METRICS_TOKEN>.","type":"invalid_request_error","param":null,"code":"invalid_metrics_token"}}`)
			return
		}
		body := appendExposition(make([]byte, 0, lastLen.Load()+512), m.collect())
		lastLen.Store(int64(len(body)))
		ctx.SetContentType(ContentType)
		ctx.Response.Header.Set(fasthttp.HeaderVary, fasthttp.HeaderAcceptEncoding)
		if ctx.Request.Header.HasAcceptEncoding("gzip") {
			ctx.Response.Header.Set(fasthttp.HeaderContentEncoding, "gzip")
			ctx.SetBody(fasthttp.AppendGzipBytes(nil, body))
			return
		}
		ctx.SetBody(body)
	}
}
