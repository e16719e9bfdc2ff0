package worker

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/store/shm"
	"github.com/llm-proxy/llm-proxy/worker/metrics"
)

// TestCacheWriteDropped: answers the full write queue turns away are counted in
// /metrics, and the log says so once, not once per answer.
func TestCacheWriteDropped(t *testing.T) {
	region, err := shm.Open(filepath.Join(t.TempDir(), "m.shm"), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer region.Close()
	m, err := metrics.New(region, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	logs := &bytes.Buffer{} // cacheWriteDropped logs synchronously
	w := &Worker{deps: Deps{Metrics: m}, cacheJobs: make(chan cacheJob, 1),
		logger: hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug})}
	for range 3 {
		w.cacheWriteDropped()
	}
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/metrics")
	m.Handler("")(&ctx)
	if body := string(ctx.Response.Body()); !strings.Contains(body, "\nllm_proxy_cache_writes_dropped_total 3\n") {
		t.Errorf("/metrics has no llm_proxy_cache_writes_dropped_total 3:\n%s", body)
	}
	if n := strings.Count(logs.String(), "cache write queue full"); n != 1 {
		t.Errorf("warnings: got %d, want 1:\n%s", n, logs.String())
	}
}
