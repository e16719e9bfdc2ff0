//go:build !race

// The race detector makes sync.Pool drop items at random, so allocation counts
// are only meaningful without it.

package worker

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/routing/provider/openai"
)

// TestRequestPathAllocs holds the bar: auth hit, model lookup, pick and
// body rewrite allocate nothing beyond the reused buffers.
func TestRequestPathAllocs(t *testing.T) {
	snap, header := benchKeySnapshot(1000)
	table := benchTable()
	now := time.Now()
	var req openai.Request
	buf := make([]byte, 0, 4096)
	allocs := testing.AllocsPerRun(200, func() {
		key, res := snap.authenticate(header, now)
		if res != authOK {
			t.Fatal(res)
		}
		if err := openai.ScanRequest(benchBody, &req); err != nil {
			t.Fatal(err)
		}
		if !key.allows(req.Model) {
			t.Fatal("model not allowed")
		}
		dep := table.Lookup(string(req.Model)).Pick(0)
		buf = openai.AppendRewrite(buf[:0], benchBody, &req, dep.UpstreamModel, req.Stream)
	})
	if allocs != 0 {
		t.Errorf("request path allocates %.1f times per request, want 0", allocs)
	}
}

// A refused request (here an unknown key) allocates nothing: a flood of them must
// not drive the garbage collector, whose pauses every other request would feel.
func TestErrorAnswerAllocs(t *testing.T) {
	var ctx fasthttp.RequestCtx
	allocs := testing.AllocsPerRun(200, func() {
		writeError(&ctx, fasthttp.StatusUnauthorized, "invalid_request_error", "invalid_api_key", authInvalid.message())
	})
	if allocs != 0 {
		t.Errorf("an error answer allocates %.1f times, want 0", allocs)
	}
	checkErrorShape := string(ctx.Response.Body())
	if want := `{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`; checkErrorShape != want {
		t.Errorf("body = %s, want %s", checkErrorShape, want)
	}
}
