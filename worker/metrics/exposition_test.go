package metrics

import (
	"bytes"
	"compress/gzip"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/llm-proxy/llm-proxy/store/spool"
)

// goldenFixture records a fixed mix of series, labels needing escaping included.
func goldenFixture(m *Metrics) {
	for i := range 40 {
		rec := testRecord(i)
		m.Observe(&rec)
	}
	m.Observe(&spool.Record{Endpoint: "chat", Model: "quote\"back\\slash\nnewline", Upstream: "u\\1", Status: 200, LatencyUs: 5000, TtfbUs: 10000, CostMicroUSD: 1})
	m.Observe(&spool.Record{Endpoint: "chat", Model: "bad\xffutf8", Upstream: "u", Status: 201, LatencyUs: 300_000_000, TtfbUs: 60_000_000, PromptTokens: 3, CompletionTokens: 4, CostMicroUSD: 1_500_000})
	m.Observe(&spool.Record{Endpoint: "chat", Model: "big", Upstream: "u", Status: 200, LatencyUs: 1, TtfbUs: 1, PromptTokens: 999_999, CostMicroUSD: 123_456_789})
	m.RateLimited("rpm")
	m.RateLimited("rpm")
	m.RateLimited("budget")
	m.SetUpstreamHealth("openai", true)
	m.SetUpstreamHealth("azure", false)
	m.SetCircuitOpen("openai", "gpt-4o", true)
	m.SetCircuitOpen("azure", "gpt-4o", false)
	m.SetPrimaryEpoch(3)
	m.SetSpoolBacklog(4096)
	m.CacheWriteDropped()
	m.CacheWriteDropped()
}

// get GETs url with the given request headers, without the transport's transparent
// gzip, and returns the response and its raw body.
func get(t *testing.T, url string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// TestExpositionGolden: the whole text exposition of a fixed state, byte for byte.
// testdata/exposition.golden was written by the Prometheus client library's handler
// (client_golang 1.25) on this fixture before the exposition was written here, so
// names, labels, HELP texts, ordering, escaping and number formats stay as they were.
// llm_proxy_cache_writes_dropped_total came later and was added by hand in that format.
func TestExpositionGolden(t *testing.T) {
	r := openRegion(t, filepath.Join(t.TempDir(), "m.shm"))
	m := newMetrics(t, r)
	goldenFixture(m)
	resp, got := get(t, serve(t, m.Handler(""))+"/metrics", map[string]string{"Accept-Encoding": "identity"})
	want, err := os.ReadFile(filepath.Join("testdata", "exposition.golden"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("exposition differs from the golden file:\n--- got\n%s\n--- want\n%s", got, want)
	}
	if ce := resp.Header.Get("Content-Encoding"); ce != "" {
		t.Errorf("Content-Encoding %q without gzip in Accept-Encoding", ce)
	}
}

// TestHandlerNegotiation: the body is always the text format 0.0.4, gzipped exactly
// when the client accepts gzip.
func TestHandlerNegotiation(t *testing.T) {
	r := openRegion(t, filepath.Join(t.TempDir(), "m.shm"))
	m := newMetrics(t, r)
	goldenFixture(m)
	url := serve(t, m.Handler("")) + "/metrics"
	want, err := os.ReadFile(filepath.Join("testdata", "exposition.golden"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		header   map[string]string
		wantGzip bool
	}{
		{"no headers", nil, false},
		{"gzip", map[string]string{"Accept-Encoding": "gzip"}, true},
		{"gzip among others", map[string]string{"Accept-Encoding": "br, gzip;q=0.5, deflate"}, true},
		{"gzip refused", map[string]string{"Accept-Encoding": "gzip;q=0"}, false},
		{"protobuf asked, text given", map[string]string{"Accept": "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"}, false},
		{"openmetrics asked, text given", map[string]string{"Accept": "application/openmetrics-text;version=1.0.0"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := get(t, url, tt.header)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/plain; version=0.0.4; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			if got := resp.Header.Get("Content-Encoding") == "gzip"; got != tt.wantGzip {
				t.Fatalf("gzipped %t, want %t", got, tt.wantGzip)
			}
			if tt.wantGzip {
				zr, err := gzip.NewReader(bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				if body, err = io.ReadAll(zr); err != nil {
					t.Fatal(err)
				}
			}
			if string(body) != string(want) {
				t.Errorf("body differs from the golden exposition:\n%s", body)
			}
		})
	}
}

func TestAppendFloat(t *testing.T) {
	tests := []struct {
		in   float64
		want string
	}{
		{0, "0"},
		{math.Copysign(0, -1), "0"},
		{1, "1"},
		{-1, "-1"},
		{42, "42"},
		{999_999, "999999"},
		{1_000_000, "1000000"}, // the library wrote 1e+06
		{123_456_789, "123456789"},
		{-5_000_000, "-5000000"},
		{1<<53 - 1, "9007199254740991"},
		{1 << 53, "9.007199254740992e+15"}, // past exact integers: shortest round-trip form
		{1e300, "1e+300"},
		{0.005, "0.005"},
		{2.5, "2.5"},
		{-2.5, "-2.5"},
		{123.456789, "123.456789"},
		{7.8e-05, "7.8e-05"},
		{1e-06, "1e-06"},
		{1234567.5, "1.2345675e+06"},
		{math.NaN(), "NaN"},
		{math.Inf(1), "+Inf"},
		{math.Inf(-1), "-Inf"},
	}
	for _, tt := range tests {
		got := string(appendFloat(nil, tt.in))
		if got != tt.want {
			t.Errorf("appendFloat(%v) = %q, want %q", tt.in, got, tt.want)
		}
		back, err := strconv.ParseFloat(got, 64)
		if err != nil || (back != tt.in && !(math.IsNaN(back) && math.IsNaN(tt.in))) {
			t.Errorf("appendFloat(%v) = %q reads back as %v (%v)", tt.in, got, back, err)
		}
	}
}

// parse reads an exposition with the Prometheus text parser.
func parse(t *testing.T, b []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, b)
	}
	return fams
}

// TestEscaping: label values escape backslash, double quote and newline; HELP text
// escapes backslash and newline and keeps quotes. What the Prometheus parser reads
// back is what went in.
func TestEscaping(t *testing.T) {
	tests := []struct {
		name, value, help string
		wantLabel         string // the label as written
		wantHelp          string // the HELP line as written
	}{
		{"plain", "gpt-4o", "plain help", `v="gpt-4o"`, "# HELP t_plain plain help\n"},
		{"quote", `say "hi"`, `say "hi"`, `v="say \"hi\""`, "# HELP t_quote say \"hi\"\n"},
		{"backslash", `C:\path\`, `a\b`, `v="C:\\path\\"`, "# HELP t_backslash a\\\\b\n"},
		{"newline", "two\nlines", "two\nlines", `v="two\nlines"`, "# HELP t_newline two\\nlines\n"},
		{"escape lookalike", `\n`, `\n`, `v="\\n"`, "# HELP t_escape_lookalike \\\\n\n"},
		{"all", "\\\"\n", "\\\"\n", `v="\\\"\n"`, "# HELP t_all \\\\\"\\n\n"},
		{"empty", "", "", `v=""`, "# HELP t_empty \n"},
		{"utf8", "modèle→✓", "héllo", `v="modèle→✓"`, "# HELP t_utf8 héllo\n"},
		{"braces and commas", `a},b="c`, "x", `v="a},b=\"c"`, "# HELP t_braces_and_commas x\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &desc{name: "t_" + strings.ReplaceAll(tt.name, " ", "_"), help: tt.help, typ: typeGauge, labels: []string{"v"}}
			out := appendExposition(nil, []famSamples{{d, []sample{{labels: []string{tt.value}, value: 3}}}})
			wantLine := d.name + "{" + tt.wantLabel + "} 3\n"
			if !bytes.HasPrefix(out, []byte(tt.wantHelp)) || !bytes.HasSuffix(out, []byte(wantLine)) {
				t.Errorf("exposition\n%s\nwant HELP %q and series %q", out, tt.wantHelp, wantLine)
			}
			f := parse(t, out)[d.name]
			if f.GetHelp() != tt.help {
				t.Errorf("help reads back as %q, want %q", f.GetHelp(), tt.help)
			}
			if got := f.GetMetric()[0].GetLabel()[0].GetValue(); got != tt.value {
				t.Errorf("label reads back as %q, want %q", got, tt.value)
			}
		})
	}
}

// TestHistogramLines: buckets are cumulative in bound order with le last among the
// labels, +Inf counts everything, and _sum and _count follow.
func TestHistogramLines(t *testing.T) {
	d := &desc{name: "t_seconds", help: "h", typ: typeHistogram, labels: []string{"a", "b"}}
	h := &hist{sumUs: 7_250_000, buckets: []uint64{2, 0, 3, 1}}
	out := appendExposition(nil, []famSamples{{d, []sample{{labels: []string{"x", "y"}, hist: h, les: les([]int64{5e3, 1e6, 2.5e6})}}}})
	want := `# HELP t_seconds h
# TYPE t_seconds histogram
t_seconds_bucket{a="x",b="y",le="0.005"} 2
t_seconds_bucket{a="x",b="y",le="1"} 2
t_seconds_bucket{a="x",b="y",le="2.5"} 5
t_seconds_bucket{a="x",b="y",le="+Inf"} 6
t_seconds_sum{a="x",b="y"} 7.25
t_seconds_count{a="x",b="y"} 6
`
	if string(out) != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
	hg := parse(t, out)["t_seconds"].GetMetric()[0].GetHistogram()
	var got []string
	for _, b := range hg.GetBucket() {
		got = append(got, strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64)+":"+strconv.FormatUint(b.GetCumulativeCount(), 10))
	}
	if g, w := strings.Join(got, " "), "0.005:2 1:2 2.5:5 +Inf:6"; g != w {
		t.Errorf("parsed buckets %s, want %s", g, w)
	}
	if hg.GetSampleCount() != 6 || hg.GetSampleSum() != 7.25 {
		t.Errorf("parsed count %d sum %v, want 6 7.25", hg.GetSampleCount(), hg.GetSampleSum())
	}

	// Without labels, le is the only one.
	d = &desc{name: "t_bare", help: "h", typ: typeHistogram}
	out = appendExposition(nil, []famSamples{{d, []sample{{hist: &hist{buckets: []uint64{0, 0}}, les: les([]int64{60e6})}}}})
	for _, line := range []string{"t_bare_bucket{le=\"60\"} 0\n", "t_bare_bucket{le=\"+Inf\"} 0\n", "t_bare_sum 0\n", "t_bare_count 0\n"} {
		if !bytes.Contains(out, []byte(line)) {
			t.Errorf("no line %q in\n%s", line, out)
		}
	}
}

// TestOrdering: families by name, series by label values in label-name order,
// families without series left out, unlabelled series without braces.
func TestOrdering(t *testing.T) {
	two := &desc{name: "b_total", help: "b", typ: typeCounter, labels: []string{"k", "m"}}
	one := &desc{name: "a_gauge", help: "a", typ: typeGauge}
	none := &desc{name: "c_empty", help: "c", typ: typeCounter, labels: []string{"x"}}
	out := appendExposition(nil, []famSamples{
		{two, []sample{
			{labels: []string{"z", "a"}, value: 1},
			{labels: []string{"a", "b"}, value: 2},
			{labels: []string{"a", "a"}, value: 3},
			{labels: []string{"", "q"}, value: 4},
		}},
		{none, nil},
		{one, []sample{{value: 5}}},
	})
	want := `# HELP a_gauge a
# TYPE a_gauge gauge
a_gauge 5
# HELP b_total b
# TYPE b_total counter
b_total{k="",m="q"} 4
b_total{k="a",m="a"} 3
b_total{k="a",m="b"} 2
b_total{k="z",m="a"} 1
`
	if string(out) != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
}

// TestDescs: every family's label names are sorted (the exposition writes them in
// that order) and every name is a valid Prometheus name.
func TestDescs(t *testing.T) {
	for _, d := range []*desc{descRequests, descDuration, descTTFT, descTokens, descCost, descHealthy,
		descCircuit, descRetries, descLimited, descWorkers, descEpoch, descBacklog, descCacheDropped} {
		if !model.LegacyValidation.IsValidMetricName(d.name) {
			t.Errorf("%s: not a valid metric name", d.name)
		}
		for i, l := range d.labels {
			if !model.LegacyValidation.IsValidLabelName(l) || l == "le" {
				t.Errorf("%s: label %q not valid", d.name, l)
			}
			if i > 0 && d.labels[i-1] >= l {
				t.Errorf("%s: labels %v not sorted", d.name, d.labels)
			}
		}
	}
}
