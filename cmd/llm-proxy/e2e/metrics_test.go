package e2e

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metricsToken is LLM_PROXY_METRICS_TOKEN of TestMetrics's gateway.
const metricsToken = "e2e-metrics-token"

// TestMetrics: /metrics reports whole-server totals whichever worker answers. Requests
// go to both workers in turn over pinned connections, and after each pair /metrics is
// scraped from the worker that did not serve the last request, 20 times in all: the
// request total never decreases, equals the requests completed so far at every scrape,
// and ends at the number sent. The exposition is parsed with the Prometheus text parser.
func TestMetrics(t *testing.T) {
	mock := startMock(t, "--reply", reply(5))
	g := newGateway(t, map[string]string{"LLM_PROXY_METRICS_TOKEN": metricsToken})
	g.cli(t, "upstreams", "add", "--name", "mock", "--base-url", mock.baseURL())
	_, key := g.createKey(t, "metrics")
	g.start(t)

	pinned := g.pinWorkers(t)
	var pids []int
	for pid := range pinned {
		pids = append(pids, pid)
	}
	slices.Sort(pids)

	// Only the right bearer token reads the metrics.
	for _, auth := range []string{"", "Bearer wrong"} {
		if status, body := getMetrics(t, pinned[pids[0]], g, auth); status != http.StatusUnauthorized {
			t.Errorf("GET /metrics with Authorization %q: status %d, want 401: %.200s", auth, status, body)
		}
	}

	const scrapes = 20
	const perScrape = 2 // one request on each worker
	sent := 0
	last := -1.0
	var fams map[string]*dto.MetricFamily
	for i := range scrapes {
		for j := range perScrape {
			hc := pinned[pids[j%len(pids)]]
			ctx := ctxTimeout(t, requestTimeout)
			if _, err := g.sdk(key, hc).Chat.Completions.New(ctx, chatParams("mock-1", marker(t))); err != nil {
				t.Fatalf("request %d: %v", sent, err)
			}
			sent++
		}
		// Alternate the answering worker, so each one reports requests the other served.
		fams = scrapeMetrics(t, pinned[pids[i%len(pids)]], g)
		total := sumRequests(fams, "model", "mock-1")
		if total < last {
			t.Errorf("scrape %d: llm_proxy_requests_total fell from %v to %v", i, last, total)
		}
		if total != float64(sent) {
			t.Errorf("scrape %d (worker pid %d): llm_proxy_requests_total{model=mock-1} = %v, want %d",
				i, pids[i%len(pids)], total, sent)
		}
		last = total
	}

	// The last scrape's other families agree with the requests sent.
	if got := sumRequests(fams, "status", "200"); got != float64(sent) {
		t.Errorf("requests with status 200 = %v, want %d", got, sent)
	}
	var durations uint64
	for _, m := range fams["llm_proxy_request_duration_seconds"].GetMetric() {
		if hasLabel(m, "model", "mock-1") {
			durations += m.GetHistogram().GetSampleCount()
		}
	}
	if durations != uint64(sent) {
		t.Errorf("llm_proxy_request_duration_seconds count for mock-1 = %d, want %d", durations, sent)
	}
	var completion float64
	for _, m := range fams["llm_proxy_tokens_total"].GetMetric() {
		if hasLabel(m, "model", "mock-1") && hasLabel(m, "direction", "completion") {
			completion += m.GetCounter().GetValue()
		}
	}
	if completion < float64(sent) {
		t.Errorf("completion tokens for mock-1 = %v, want at least one per request (%d)", completion, sent)
	}
	if ws := fams["llm_proxy_workers"].GetMetric(); len(ws) != 1 || ws[0].GetGauge().GetValue() != float64(g.workers) {
		t.Errorf("llm_proxy_workers = %v, want %d", ws, g.workers)
	}
	// The primary feeds its epoch and the spool backlog at every ingest pass (1 s):
	// the first primary of a fresh database holds epoch 1, and with the traffic
	// stopped the backlog drains to 0.
	deadline := time.Now().Add(5 * time.Second)
	var epoch, backlog float64
	for {
		fams = scrapeMetrics(t, pinned[pids[0]], g)
		epoch = gaugeValue(fams, "llm_proxy_primary_epoch")
		backlog = gaugeValue(fams, "llm_proxy_spool_backlog_bytes")
		if (epoch == 1 && backlog == 0) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if epoch != 1 || backlog != 0 {
		t.Errorf("llm_proxy_primary_epoch = %v, llm_proxy_spool_backlog_bytes = %v; want 1 and 0 once ingest caught up", epoch, backlog)
	}
}

// gaugeValue is the value of an unlabelled gauge family (-1 if absent).
func gaugeValue(fams map[string]*dto.MetricFamily, name string) float64 {
	ms := fams[name].GetMetric()
	if len(ms) != 1 {
		return -1
	}
	return ms[0].GetGauge().GetValue()
}

// getMetrics GETs /metrics through hc with the given Authorization header value.
func getMetrics(t *testing.T, hc *http.Client, g *gateway, auth string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+g.addr()+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read /metrics: %v", err)
	}
	return resp.StatusCode, body
}

// scrapeMetrics reads /metrics with the token and parses it with the Prometheus text parser.
func scrapeMetrics(t *testing.T, hc *http.Client, g *gateway) map[string]*dto.MetricFamily {
	t.Helper()
	status, body := getMetrics(t, hc, g, "Bearer "+metricsToken)
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: status %d: %.300s", status, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams
}

// sumRequests adds llm_proxy_requests_total over the series whose label name is value.
func sumRequests(fams map[string]*dto.MetricFamily, name, value string) float64 {
	var sum float64
	for _, m := range fams["llm_proxy_requests_total"].GetMetric() {
		if hasLabel(m, name, value) {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue() == value
		}
	}
	return false
}
