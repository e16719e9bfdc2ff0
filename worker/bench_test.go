package worker

import (
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/llm-proxy/llm-proxy/routing"
	"github.com/llm-proxy/llm-proxy/routing/provider/openai"
	"github.com/llm-proxy/llm-proxy/store"
	"github.com/llm-proxy/llm-proxy/store/spool"
)

func benchKey(i int) string { return fmt.Sprintf("sk-bench-%06d-0123456789abcdefghijklmnop", i) }

// benchKeySnapshot builds a snapshot of n keys (every odd one with an allow-list)
// and the Authorization header of an allow-listed key in the middle.
func benchKeySnapshot(n int) (*keySnapshot, []byte) {
	keys := make([]store.APIKey, n)
	for i := range keys {
		k := benchKey(i)
		keys[i] = store.APIKey{ID: int64(i + 1), Name: k, Hash: sha256.Sum256([]byte(k))}
		if i%2 == 1 {
			keys[i].Models = []string{"gpt-4o", "gpt-4o-mini", "text-embedding-3-small"}
		}
	}
	return newKeySnapshot(keys, Config{}), []byte("Bearer " + benchKey(n/2+1))
}

// benchTable is the routing table the worker builds from three upstreams.
func benchTable() *routing.Table {
	var ups []store.Upstream
	for i := range 3 {
		ups = append(ups, store.Upstream{
			Name: fmt.Sprintf("up-%d", i), BaseURL: "http://127.0.0.1:9", Weight: i + 1, Enabled: true,
			Deployments: []store.Deployment{
				{PublicModel: "gpt-4o", UpstreamModel: "gpt-4o-2024-08-06", Weight: 1},
				{PublicModel: "gpt-4o-mini", UpstreamModel: "gpt-4o-mini", Weight: 1},
			},
		})
	}
	return buildTable(ups, nil, routing.Weighted, routing.NewBook(nil))
}

var benchBody = []byte(`{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write a haiku about proxies."}],"temperature":0.7,"stream":true}`)

// BenchmarkRequestPath measures the request path before the upstream call: auth
// hit in a 1000-key snapshot, routing lookup and pick, body scan and rewrite into
// a reused buffer. The bar is 0-2 allocs/op.
func BenchmarkRequestPath(b *testing.B) {
	snap, header := benchKeySnapshot(1000)
	table := benchTable()
	now := time.Now()

	b.Run("core", func(b *testing.B) {
		var req openai.Request
		buf := make([]byte, 0, 4096)
		b.ReportAllocs()
		for b.Loop() {
			key, res := snap.authenticate(header, now)
			if res != authOK {
				b.Fatal(res)
			}
			if err := openai.ScanRequest(benchBody, &req); err != nil {
				b.Fatal(err)
			}
			if !key.allows(req.Model) {
				b.Fatal("model not allowed")
			}
			pool := table.Lookup(string(req.Model))
			if pool == nil {
				b.Fatal("no pool")
			}
			dep := pool.Pick(0)
			buf = openai.AppendRewrite(buf[:0], benchBody, &req, dep.UpstreamModel, req.Stream)
		}
	})

	// as_served repeats what serveProxy does before it calls the upstream, with the
	// same pooled exchange, request id, record fields and record encoding.
	b.Run("as_served", func(b *testing.B) {
		w := &Worker{reqPrefix: "req_0123456789ab_"}
		w.keys.Store(snap)
		w.routes.Store(table)
		b.ReportAllocs()
		for b.Loop() {
			key, res := w.keys.Load().authenticate(header, now)
			if res != authOK {
				b.Fatal(res)
			}
			x := exchangePool.Get().(*exchange)
			x.rec = spool.Record{RequestID: w.newRequestID(), TsMs: now.UnixMilli(), KeyID: key.id, Endpoint: endpointChat.name}
			if err := openai.ScanRequest(benchBody, &x.req); err != nil {
				b.Fatal(err)
			}
			x.rec.Model = string(x.req.Model)
			if !key.allows(x.req.Model) {
				b.Fatal("model not allowed")
			}
			pool := w.routes.Load().Lookup(x.rec.Model)
			dep := pool.Pick(0)
			x.rec.Upstream = dep.Upstream.Name
			x.rec.UpstreamModel = dep.UpstreamModel
			x.body = openai.AppendRewrite(x.body[:0], benchBody, &x.req, dep.UpstreamModel, x.req.Stream)
			x.line = spool.AppendRecord(x.line[:0], &x.rec)
			x.rec = spool.Record{}
			exchangePool.Put(x)
		}
	})
}
