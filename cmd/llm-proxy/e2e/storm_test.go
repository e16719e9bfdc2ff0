package e2e

import (
	"net"
	"testing"
	"time"
)

// TestElectionStorm: 16 workers started at once on a database with no lease holder and no
// worker rows elect exactly one primary within 2 s of the first worker's heartbeat, nobody
// takes the lease from it afterwards, no line at ERROR mentions SQLITE_BUSY or a locked
// database, and no client request fails meanwhile.
func TestElectionStorm(t *testing.T) {
	const workers = 16
	mock := startMock(t, "--reply", reply(20))
	g := newGateway(t, fastCoordination(map[string]string{"LLM_PROXY_WORKERS": "16"}))
	g.workers = workers
	g.cli(t, "upstreams", "add", "--name", "mock", "--base-url", mock.baseURL())
	_, key := g.createKey(t, "storm")
	s := g.startSampler(t)
	if sn := s.waitFor(t, 5*time.Second, "a first sample", func(snapshot) bool { return true }); sn.lease.Holder != "" || len(sn.workers) != 0 {
		t.Fatalf("database not empty before the start: %+v", sn)
	}

	// The load starts as soon as the supervisor's sockets accept: its connections queue
	// there until the workers accept them, and every request must succeed.
	g.launch(t)
	for deadline := time.Now().Add(startTimeout); ; time.Sleep(5 * time.Millisecond) {
		c, err := net.Dial("tcp", g.addr())
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the supervisor's socket does not accept within %s: %v", startTimeout, err)
		}
	}
	l := g.startLoad(t, key, loadOptions{clients: 4, fresh: true})
	g.waitWorkers(t, nil, startTimeout)
	elected := s.waitFor(t, 10*time.Second, "a primary", func(sn snapshot) bool { return sn.lease.Holder != "" })
	s.waitFor(t, 10*time.Second, "16 worker rows", func(sn snapshot) bool { return len(sn.workers) == workers })
	time.Sleep(3 * time.Second) // every worker polls the lease a few times
	l.halt()
	s.halt()

	var firstRow time.Time
	for _, sn := range s.all() {
		if len(sn.workers) > 0 {
			firstRow = sn.at
			break
		}
	}
	took := elected.at.Sub(firstRow)
	if took > 2*time.Second {
		t.Errorf("primary elected %s after the first worker row, want within 2s", took)
	}
	terms := s.checkOnePrimary(t)
	if len(terms) != 1 || terms[0].Epoch != 1 {
		t.Errorf("lease terms = %+v, want exactly one at epoch 1", terms)
	}
	last, _ := s.last()
	if p := last.primaries(); len(p) != 1 || p[0].PID != last.lease.PID {
		t.Errorf("primary rows at the end = %+v, want one, the lease holder pid %d", p, last.lease.PID)
	}
	for _, bad := range []string{"SQLITE_BUSY", "database is locked"} {
		if lines := g.logLines(t, "llm-proxy-error.log", "[ERROR]", bad); len(lines) > 0 {
			t.Errorf("%d ERROR lines mention %s, e.g. %s", len(lines), bad, lines[0])
		}
	}
	for _, f := range l.failures() {
		t.Errorf("client %d: request failed during the election: %v", f.client, f.err)
	}
	if l.served.Load() == 0 {
		t.Error("the load served nothing")
	}
	t.Logf("16 workers: primary pid %d elected %s after the first worker row; %d requests served, %d failed",
		elected.lease.PID, took.Round(time.Millisecond), l.served.Load(), len(l.failures()))
}
