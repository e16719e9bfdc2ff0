package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// Semantic routing, end to end: a route configured with the CLI, requests through a real
// supervisor and workers (with the semantic cache on, so routing and the cache share one
// embedding), and mockllm saying which model each request reached.

// logRoute reads the route and model columns of requestID's request_logs row.
func (g *gateway) logRoute(t *testing.T, requestID string) (route, model string) {
	t.Helper()
	g.waitLogRow(t, requestID)
	conn, err := sqlite.OpenConn(g.dbPath, sqlite.OpenReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := sqlitex.ExecuteTransient(conn, "PRAGMA busy_timeout = 5000;", nil); err != nil {
		t.Fatal(err)
	}
	err = sqlitex.Execute(conn, `SELECT route, model FROM request_logs WHERE request_id = :id`, &sqlitex.ExecOptions{
		Named: map[string]any{":id": requestID},
		ResultFunc: func(stmt *sqlite.Stmt) error {
			route, model = stmt.ColumnText(0), stmt.ColumnText(1)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return route, model
}

func semanticTestdata(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "testdata", "semantic", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSemanticRoutingEndToEnd(t *testing.T) {
	mock := startMock(t)
	g := newGateway(t, map[string]string{"LLM_PROXY_CACHE_MODE": "semantic"})
	g.cli(t, "upstreams", "add", "--name", "mock", "--base-url", mock.baseURL(),
		"--models", "coder-model,support-model,cheap-model")
	// Thresholds far too high for the lexical embedder: everything goes to the default
	// until `routes fit` tunes them, while the gateway runs.
	g.cli(t, "routes", "semantic", "set", "--model", "auto", "--default", "cheap-model",
		"--target", "code=coder-model,threshold=0.9", "--target", "billing=support-model,threshold=0.9",
		"--utterances-file", semanticTestdata(t, "utterances.json"))
	_, key := g.createKey(t, "semantic")
	g.start(t)

	send := func(text string) rawAnswer {
		t.Helper()
		// Each prompt carries a marker so its request is found in mockllm's log, and so
		// no answer comes from the cache of an earlier run of the same text.
		body, _ := json.Marshal(map[string]any{"model": "auto",
			"messages": []map[string]string{{"role": "user", "content": text}}})
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		a, err := postChat(ctx, g.client, g, key, string(body))
		if err != nil || a.status != 200 {
			t.Fatalf("chat %q: status %d err %v body %s", text, a.status, err, a.body)
		}
		return a
	}
	check := func(a rawAnswer, text, wantModel, wantTarget string) {
		t.Helper()
		route := a.header.Get("X-LLM-Proxy-Route")
		if !strings.HasPrefix(route, "semantic:target="+wantTarget+" model="+wantModel+" score=") {
			t.Errorf("%q: X-LLM-Proxy-Route = %q, want target %s model %s", text, route, wantTarget, wantModel)
		}
		r, ok := mock.waitRequest(t, 5*time.Second, func(r mockRequest) bool { return strings.Contains(r.Body, text) })
		if !ok {
			t.Fatalf("%q never reached mockllm", text)
		}
		if r.Model != wantModel {
			t.Errorf("%q: mockllm received model %q, want %q", text, r.Model, wantModel)
		}
		gotRoute, gotModel := g.logRoute(t, a.header.Get("X-Request-Id"))
		if gotRoute != route || gotModel != wantModel {
			t.Errorf("%q: request_logs route %q model %q, want %q and %q", text, gotRoute, gotModel, route, wantModel)
		}
	}

	m := marker(t)
	codeBefore := "write a python function that reverses a list " + m + "a"
	check(send(codeBefore), codeBefore, "cheap-model", "default")

	out := g.cli(t, "routes", "fit", "--model", "auto", "--file", semanticTestdata(t, "labelled.jsonl"))
	if !strings.Contains(out, "accuracy after:  100.0%") {
		t.Fatalf("routes fit:\n%s", out)
	}

	tests := []struct{ text, model, target string }{
		{"write a python function that reverses a list " + m + "b", "coder-model", "code"},
		{"I was charged twice this month, please refund my subscription " + m + "c", "support-model", "billing"},
		{"what is the capital of France " + m + "d", "cheap-model", "default"},
	}
	// Every worker reloads the tuned thresholds within a second of the fit.
	deadline := time.Now().Add(3 * time.Second)
	for i := 0; ; i++ {
		a := send(fmt.Sprintf("write a python function that sorts a list %s-wait%d", m, i))
		if strings.Contains(a.header.Get("X-LLM-Proxy-Route"), "model=coder-model") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fitted thresholds did not reach the workers within 3 s: %q", a.header.Get("X-LLM-Proxy-Route"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, tt := range tests {
		check(send(tt.text), tt.text, tt.model, tt.target)
	}
}
