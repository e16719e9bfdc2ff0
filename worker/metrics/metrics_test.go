package metrics

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/store/shm"
	"github.com/llm-proxy/llm-proxy/store/spool"
)

// Child processes are this test binary re-executed with METRICS_TEST_CHILD set.
func TestMain(m *testing.M) {
	if mode := os.Getenv("METRICS_TEST_CHILD"); mode != "" {
		if err := runChild(mode); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const regionSize = 2 << 20

func runChild(mode string) error {
	r, err := shm.Open(os.Getenv("METRICS_TEST_PATH"), regionSize)
	if err != nil {
		return err
	}
	defer r.Close()
	m, err := New(r, nil)
	if err != nil {
		return err
	}
	switch mode {
	case "observe":
		// Four goroutines observe records [from, from+n) of the shared generator.
		from, _ := strconv.Atoi(os.Getenv("METRICS_TEST_FROM"))
		n, _ := strconv.Atoi(os.Getenv("METRICS_TEST_N"))
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := from + g; i < from+n; i += 4 {
					rec := testRecord(i)
					m.Observe(&rec)
				}
			}()
		}
		wg.Wait()
		for i := from; i < from+n; i++ {
			m.RateLimited(limitReasons[i%len(limitReasons)])
		}
		return nil
	case "circuit":
		// Open a circuit, say so, and stay alive until the parent kills us.
		m.SetCircuitOpen("openai", "gpt-4o", true)
		fmt.Println("ready")
		time.Sleep(time.Minute)
		return nil
	}
	return fmt.Errorf("unknown mode %q", mode)
}

var limitReasons = []string{"rpm", "tpm", "budget"}

// testRecord is the i-th record of a deterministic mix of label tuples, timings,
// tokens, costs and retries.
func testRecord(i int) spool.Record {
	r := spool.Record{
		Endpoint:     []string{"chat", "embeddings"}[i%2],
		Model:        []string{"gpt-4o", "mock-1", "gpt-4o-mini"}[i%3],
		Upstream:     []string{"openai", "azure"}[i%2],
		Status:       []int{200, 200, 429, 500, 200}[i%5],
		Cache:        []string{"", "miss", "hit-l1"}[i%3],
		LatencyUs:    int64(i%7) * 400_000, // 0 to 2.4 s: several buckets, 0 included
		PromptTokens: i % 11,
		CostMicroUSD: int64(i % 13),
		AttemptCount: 1 + i%3,
	}
	if i%4 != 0 {
		r.TtfbUs = int64(i%5)*30_000 + 1
		r.CompletionTokens = i % 17
	}
	if i%10 == 9 { // refused before routing: no upstream
		r.Upstream, r.Status, r.AttemptCount = "", 404, 0
	}
	return r
}

func openRegion(t testing.TB, path string) *shm.Region {
	t.Helper()
	r, err := shm.Open(path, regionSize)
	if err != nil {
		t.Fatalf("open region: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func newMetrics(t testing.TB, r *shm.Region) *Metrics {
	t.Helper()
	m, err := New(r, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

// child starts this test binary in mode; the test's cleanup kills it if still running.
func child(t *testing.T, path, mode string, env ...string) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, "METRICS_TEST_CHILD="+mode, "METRICS_TEST_PATH="+path)...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // fails harmlessly when the test waited for it already
		_ = cmd.Wait()
	})
	return cmd, bufio.NewReader(out)
}

// serve runs h on a real socket of 127.0.0.1 and returns its base URL.
func serve(t *testing.T, h fasthttp.RequestHandler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: h}
	go srv.Serve(ln) //nolint:errcheck // ends with Shutdown below
	t.Cleanup(func() { _ = srv.Shutdown() })
	return "http://" + ln.Addr().String()
}

// scrape GETs url with an optional bearer token and parses the text exposition.
func scrape(t *testing.T, url, token string) map[string]*dto.MetricFamily {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape status %d: %s", resp.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse exposition: %v", err)
	}
	return fams
}

// labelsOf renders a metric's labels as name=value pairs joined by commas, in the
// order the exposition gives them (sorted by name).
func labelsOf(m *dto.Metric) string {
	var parts []string
	for _, l := range m.GetLabel() {
		parts = append(parts, l.GetName()+"="+l.GetValue())
	}
	return strings.Join(parts, ",")
}

// values maps each series of family name to its counter or gauge value.
func values(fams map[string]*dto.MetricFamily, name string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range fams[name].GetMetric() {
		switch {
		case m.Counter != nil:
			out[labelsOf(m)] = m.GetCounter().GetValue()
		case m.Gauge != nil:
			out[labelsOf(m)] = m.GetGauge().GetValue()
		}
	}
	return out
}

func single(t *testing.T, fams map[string]*dto.MetricFamily, name string) float64 {
	t.Helper()
	v, ok := values(fams, name)[""]
	if !ok {
		t.Fatalf("%s missing from the exposition", name)
	}
	return v
}

func compare(t *testing.T, name string, got, want map[string]float64) {
	t.Helper()
	for k, w := range want {
		if g, ok := got[k]; !ok || math.Abs(g-w) > 1e-9 {
			t.Errorf("%s{%s} = %v (present %t), want %v", name, k, g, ok, w)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s{%s} = %v, not expected", name, k, g)
		}
	}
}

type histWant struct {
	count      uint64
	sumSeconds float64
}

// checkHistograms checks every series of a histogram family: cumulative buckets never
// decrease, the count equals the last bucket plus what lies above it and equals want.
func checkHistograms(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]histWant) {
	t.Helper()
	got := map[string]bool{}
	for _, m := range fams[name].GetMetric() {
		l := labelsOf(m)
		got[l] = true
		h := m.GetHistogram()
		var prev uint64
		prevBound := math.Inf(-1)
		for _, b := range h.GetBucket() {
			if b.GetUpperBound() <= prevBound || b.GetCumulativeCount() < prev {
				t.Errorf("%s{%s}: bucket le=%v count %d after le=%v count %d: not monotonic",
					name, l, b.GetUpperBound(), b.GetCumulativeCount(), prevBound, prev)
			}
			prev, prevBound = b.GetCumulativeCount(), b.GetUpperBound()
		}
		if h.GetSampleCount() < prev {
			t.Errorf("%s{%s}: count %d below the last bucket %d", name, l, h.GetSampleCount(), prev)
		}
		w, ok := want[l]
		if !ok {
			t.Errorf("%s{%s}: not expected", name, l)
			continue
		}
		if h.GetSampleCount() != w.count || math.Abs(h.GetSampleSum()-w.sumSeconds) > 1e-6 {
			t.Errorf("%s{%s}: count %d sum %v, want %d %v", name, l, h.GetSampleCount(), h.GetSampleSum(), w.count, w.sumSeconds)
		}
	}
	for l := range want {
		if !got[l] {
			t.Errorf("%s{%s}: missing", name, l)
		}
	}
}

// TestTotalsAcrossProcesses: two processes observe records concurrently through the
// shared file; a third process, which observed nothing, scrapes totals equal to the
// sum of both, with consistent histograms.
func TestTotalsAcrossProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.shm")
	const perChild = 3000
	var cmds []*exec.Cmd
	for c := range 2 {
		cmd, _ := child(t, path, "observe", "METRICS_TEST_FROM="+strconv.Itoa(c*perChild), "METRICS_TEST_N="+strconv.Itoa(perChild))
		cmds = append(cmds, cmd)
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("child: %v", err)
		}
	}

	r := openRegion(t, path)
	m := newMetrics(t, r)
	fams := scrape(t, serve(t, m.Handler(""))+"/metrics", "")

	reqs := map[string]float64{}
	tokens := map[string]float64{}
	cost := map[string]float64{}
	limited := map[string]float64{}
	dur := map[string]histWant{}
	ttft := map[string]histWant{}
	var retries float64
	for i := range 2 * perChild {
		rec := testRecord(i)
		reqs[fmt.Sprintf("cache=%s,endpoint=%s,model=%s,status=%d,upstream=%s",
			cacheLabel(rec.Cache), rec.Endpoint, rec.Model, rec.Status, rec.Upstream)]++
		tokens["direction=prompt,model="+rec.Model] += float64(rec.PromptTokens)
		tokens["direction=completion,model="+rec.Model] += float64(rec.CompletionTokens)
		cost["model="+rec.Model] += float64(rec.CostMicroUSD) / 1e6
		d := dur["endpoint="+rec.Endpoint+",model="+rec.Model]
		d.count++
		d.sumSeconds += float64(rec.LatencyUs) / 1e6
		dur["endpoint="+rec.Endpoint+",model="+rec.Model] = d
		h := ttft["model="+rec.Model]
		if rec.TtfbUs > 0 {
			h.count++
			h.sumSeconds += float64(rec.TtfbUs) / 1e6
		}
		ttft["model="+rec.Model] = h
		retries += float64(max(rec.AttemptCount-1, 0))
		limited["reason="+limitReasons[i%len(limitReasons)]]++
	}
	compare(t, "llm_proxy_requests_total", values(fams, "llm_proxy_requests_total"), reqs)
	compare(t, "llm_proxy_tokens_total", values(fams, "llm_proxy_tokens_total"), tokens)
	compare(t, "llm_proxy_cost_usd_total", values(fams, "llm_proxy_cost_usd_total"), cost)
	compare(t, "llm_proxy_rate_limited_total", values(fams, "llm_proxy_rate_limited_total"), limited)
	checkHistograms(t, fams, "llm_proxy_request_duration_seconds", dur)
	checkHistograms(t, fams, "llm_proxy_time_to_first_token_seconds", ttft)
	if got := single(t, fams, "llm_proxy_retries_total"); got != retries {
		t.Errorf("llm_proxy_retries_total = %v, want %v", got, retries)
	}
	// The children closed their regions: only this process counts as a worker.
	if got := single(t, fams, "llm_proxy_workers"); got != 1 {
		t.Errorf("llm_proxy_workers = %v, want 1", got)
	}
	var total float64
	for _, v := range values(fams, "llm_proxy_requests_total") {
		total += v
	}
	if total != 2*perChild {
		t.Errorf("sum of llm_proxy_requests_total = %v, want %d", total, 2*perChild)
	}
}

// TestBuckets: an observation on a bucket's bound counts in that bucket (le is "less
// than or equal"), one just above it in the next.
func TestBuckets(t *testing.T) {
	r := openRegion(t, filepath.Join(t.TempDir(), "m.shm"))
	m := newMetrics(t, r)
	for _, us := range []int64{1_000_000, 1_000_001, 0, 400_000_000} {
		m.Observe(&spool.Record{Endpoint: "chat", Model: "b", Upstream: "u", Status: 200, LatencyUs: us, TtfbUs: us})
	}
	fams := scrape(t, serve(t, m.Handler(""))+"/metrics", "")
	tests := []struct {
		family string
		le     float64
		want   uint64
	}{
		{"llm_proxy_request_duration_seconds", 0.005, 1}, // the 0
		{"llm_proxy_request_duration_seconds", 1, 2},     // 0 and exactly 1 s
		{"llm_proxy_request_duration_seconds", 2.5, 3},   // and 1.000001 s
		{"llm_proxy_request_duration_seconds", 300, 3},   // 400 s is above every bound
		{"llm_proxy_time_to_first_token_seconds", 1, 1},  // TTFB 0 means none: not observed
		{"llm_proxy_time_to_first_token_seconds", 60, 2},
	}
	for _, tt := range tests {
		var got uint64
		found := false
		for _, b := range fams[tt.family].GetMetric()[0].GetHistogram().GetBucket() {
			if b.GetUpperBound() == tt.le {
				got, found = b.GetCumulativeCount(), true
			}
		}
		if !found || got != tt.want {
			t.Errorf("%s le=%v: got %d (found %t), want %d", tt.family, tt.le, got, found, tt.want)
		}
	}
	if c := fams["llm_proxy_request_duration_seconds"].GetMetric()[0].GetHistogram().GetSampleCount(); c != 4 {
		t.Errorf("duration count = %d, want 4", c)
	}
}

// TestLabels: labels come back as observed, cut to their bound, made valid UTF-8;
// unrouted requests with made-up models stop adding series at MaxUnroutedSeries.
func TestLabels(t *testing.T) {
	r := openRegion(t, filepath.Join(t.TempDir(), "m.shm"))
	m := newMetrics(t, r)
	long := strings.Repeat("m", 200)
	m.Observe(&spool.Record{Endpoint: "chat", Model: long, Upstream: "u", Status: 200})
	m.Observe(&spool.Record{Endpoint: "chat", Model: "bad\xffname", Upstream: "u", Status: 200})
	for i := range MaxUnroutedSeries + 50 {
		m.Observe(&spool.Record{Endpoint: "chat", Model: "junk-" + strconv.Itoa(i), Status: 404})
	}
	// Routed requests keep their labels past the bound.
	m.Observe(&spool.Record{Endpoint: "chat", Model: "after-bound", Upstream: "u", Status: 200})
	fams := scrape(t, serve(t, m.Handler(""))+"/metrics", "")
	got := values(fams, "llm_proxy_requests_total")
	tests := []struct {
		series string
		want   float64
	}{
		{"cache=none,endpoint=chat,model=" + long[:128] + ",status=200,upstream=u", 1},
		{"cache=none,endpoint=chat,model=bad\uFFFDname,status=200,upstream=u", 1},
		{"cache=none,endpoint=chat,model=junk-0,status=404,upstream=", 1},
		{"cache=none,endpoint=chat,model=junk-" + strconv.Itoa(MaxUnroutedSeries-1) + ",status=404,upstream=", 1},
		{"cache=none,endpoint=chat,model=" + OtherModel + ",status=404,upstream=", 50},
		{"cache=none,endpoint=chat,model=after-bound,status=200,upstream=u", 1},
	}
	for _, tt := range tests {
		if got[tt.series] != tt.want {
			t.Errorf("requests_total{%s} = %v, want %v", tt.series, got[tt.series], tt.want)
		}
	}
	if n := len(got); n != 3+MaxUnroutedSeries+1 {
		t.Errorf("%d request series, want %d", n, 3+MaxUnroutedSeries+1)
	}
}

// TestGauges: health and epoch are last-writer-wins; a circuit counts the live workers
// that have it open, and a killed worker stops counting at the next scrape.
func TestGauges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.shm")
	r := openRegion(t, path)
	m := newMetrics(t, r)
	url := serve(t, m.Handler(""))
	m.SetUpstreamHealth("openai", true)
	m.SetUpstreamHealth("azure", true)
	m.SetUpstreamHealth("azure", false)
	m.SetPrimaryEpoch(7)
	m.SetSpoolBacklog(12345)
	m.SetCircuitOpen("openai", "gpt-4o", true)
	m.SetCircuitOpen("azure", "gpt-4o", true)
	m.SetCircuitOpen("azure", "gpt-4o", false)

	cmd, out := child(t, path, "circuit")
	if line, err := out.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("child: %q %v", line, err)
	}
	fams := scrape(t, url+"/metrics", "")
	compare(t, "llm_proxy_upstream_healthy", values(fams, "llm_proxy_upstream_healthy"),
		map[string]float64{"upstream=openai": 1, "upstream=azure": 0})
	compare(t, "llm_proxy_circuit_open", values(fams, "llm_proxy_circuit_open"),
		map[string]float64{"model=gpt-4o,upstream=openai": 2, "model=gpt-4o,upstream=azure": 0})
	for name, want := range map[string]float64{"llm_proxy_workers": 2, "llm_proxy_primary_epoch": 7, "llm_proxy_spool_backlog_bytes": 12345} {
		if got := single(t, fams, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	fams = scrape(t, url+"/metrics", "")
	if got := values(fams, "llm_proxy_circuit_open")["model=gpt-4o,upstream=openai"]; got != 1 {
		t.Errorf("circuit_open after the child was killed = %v, want 1", got)
	}
	if got := single(t, fams, "llm_proxy_workers"); got != 1 {
		t.Errorf("llm_proxy_workers after the child was killed = %v, want 1", got)
	}
}

// TestToken: with a token set, only "Bearer <token>" reads the metrics; anything else
// gets 401 in OpenAI's error shape.
func TestToken(t *testing.T) {
	r := openRegion(t, filepath.Join(t.TempDir(), "m.shm"))
	m := newMetrics(t, r)
	m.Observe(&spool.Record{Endpoint: "chat", Model: "x", Upstream: "u", Status: 200})
	open := serve(t, m.Handler(""))
	locked := serve(t, m.Handler("s3cret"))
	tests := []struct {
		name, url, auth string
		want            int
	}{
		{"no token configured", open, "", 200},
		{"no token configured, any header", open, "Bearer whatever", 200},
		{"right token", locked, "Bearer s3cret", 200},
		{"missing", locked, "", 401},
		{"wrong", locked, "Bearer s3cre", 401},
		{"longer", locked, "Bearer s3cret2", 401},
		{"no scheme", locked, "s3cret", 401},
		{"basic scheme", locked, "Basic s3cret", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, tt.url+"/metrics", nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.want, body)
			}
			if tt.want == 200 {
				if !strings.Contains(string(body), "llm_proxy_requests_total{") {
					t.Errorf("body has no requests_total series:\n%s", body)
				}
				return
			}
			var e struct {
				Error struct{ Message, Type, Code string }
			}
			if err := json.Unmarshal(body, &e); err != nil || e.Error.Code != "invalid_metrics_token" || e.Error.Message == "" {
				t.Errorf("401 body %s: not the error shape (%v)", body, err)
			}
			if strings.Contains(string(body), "llm_proxy_") {
				t.Errorf("401 body leaks metrics: %s", body)
			}
		})
	}
}

// TestObserveAllocs: once a tuple is known, Observe allocates nothing.
func TestObserveAllocs(t *testing.T) {
	r := openRegion(t, filepath.Join(t.TempDir(), "m.shm"))
	m := newMetrics(t, r)
	rec := testRecord(1)
	m.Observe(&rec)
	if n := testing.AllocsPerRun(1000, func() { m.Observe(&rec) }); n != 0 {
		t.Errorf("Observe allocates %v times per call, want 0", n)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		path string
		ok   bool
	}{{"/metrics", true}, {"/internal/prom", true}, {"", false}, {"metrics", false}}
	for _, tt := range tests {
		if err := (Config{Path: tt.path}).Validate(); (err == nil) != tt.ok {
			t.Errorf("Validate(%q) = %v, want ok %t", tt.path, err, tt.ok)
		}
	}
}

func BenchmarkObserve(b *testing.B) {
	r := openRegion(b, filepath.Join(b.TempDir(), "m.shm"))
	m := newMetrics(b, r)
	recs := make([]spool.Record, 16)
	for i := range recs {
		recs[i] = testRecord(i)
		m.Observe(&recs[i])
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			m.Observe(&recs[i&15])
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				m.Observe(&recs[i&15])
			}
		})
	})
}

func BenchmarkScrape(b *testing.B) {
	r := openRegion(b, filepath.Join(b.TempDir(), "m.shm"))
	m := newMetrics(b, r)
	for i := range 500 {
		rec := testRecord(i)
		rec.Model += strconv.Itoa(i % 50)
		m.Observe(&rec)
	}
	h := m.Handler("")
	var ctx fasthttp.RequestCtx
	b.ReportAllocs()
	for b.Loop() {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.Request.SetRequestURI("/metrics")
		h(&ctx)
		if ctx.Response.StatusCode() != 200 {
			b.Fatal(ctx.Response.StatusCode())
		}
	}
}
