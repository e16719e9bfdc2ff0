package e2e

import (
	"flag"
	"os"
	"testing"
	"time"
)

// ingestLoadTime is the length of TestIngestKeepsUp's load. The suite runs 5 s; the
// figures of the closing note come from a run by hand:
//
//	go test -run TestIngestKeepsUp -v ./cmd/llm-proxy/e2e/ -args -ingest.duration=20s
//	go test -run TestIngestKeepsUp -v -timeout 10m ./cmd/llm-proxy/e2e/ -args -ingest.duration=2m
var ingestLoadTime = flag.Duration("ingest.duration", 5*time.Second, "length of TestIngestKeepsUp's load")

// TestIngestKeepsUp: two workers at the load generator's full rate. The primary's ingest
// keeps up (request_logs trails the requests served by about one ingest interval and
// catches up within 3 s of the load's end), and the WAL stays under 64 MiB throughout. It
// logs requests/s served, rows/s ingested, the largest lag and the largest WAL.
func TestIngestKeepsUp(t *testing.T) {
	const walLimit = 64 << 20
	g, key := coordGateway(t, 2, fastCoordination(nil))
	conn := g.openDB(t)
	l := g.startLoad(t, key, loadOptions{clients: 8})

	type sample struct {
		at      time.Time
		served  int64
		rows    int64
		walSize int64
	}
	var samples []sample
	take := func() sample {
		rows, err := countRows(conn)
		if err != nil {
			t.Fatalf("count request_logs: %v", err)
		}
		sm := sample{at: time.Now(), served: l.served.Load(), rows: rows}
		if fi, err := os.Stat(g.dbPath + "-wal"); err == nil {
			sm.walSize = fi.Size()
		}
		samples = append(samples, sm)
		return sm
	}
	start := take()
	for time.Since(start.at) < *ingestLoadTime {
		time.Sleep(250 * time.Millisecond)
		take()
	}
	l.halt()
	end := take()
	caughtUp := false
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		// Every served request plus the ones coordGateway made (none) is one row.
		if sm := take(); sm.rows >= end.served {
			caughtUp = true
			t.Logf("request_logs caught up %s after the load stopped", sm.at.Sub(end.at).Round(time.Millisecond))
			break
		}
	}
	var maxLag, maxWAL int64
	for _, sm := range samples {
		maxLag = max(maxLag, sm.served-sm.rows)
		maxWAL = max(maxWAL, sm.walSize)
	}
	secs := end.at.Sub(start.at).Seconds()
	reqRate := float64(end.served-start.served) / secs
	rowRate := float64(end.rows-start.rows) / secs
	t.Logf("%s load, 2 workers, 8 keep-alive clients: %.0f requests/s served, %.0f rows/s ingested; "+
		"largest lag %d rows (%.2f s of requests); largest WAL %.1f MiB; %d requests, %d failed",
		end.at.Sub(start.at).Round(time.Millisecond), reqRate, rowRate, maxLag, float64(maxLag)/max(reqRate, 1),
		float64(maxWAL)/(1<<20), end.served, len(l.failures()))
	if !caughtUp {
		last := samples[len(samples)-1]
		t.Errorf("request_logs has %d rows 3s after the load stopped, want %d (ingest does not keep up)", last.rows, end.served)
	}
	if maxWAL >= walLimit {
		t.Errorf("WAL reached %d bytes, want < 64 MiB", maxWAL)
	}
	for _, f := range l.failures() {
		t.Errorf("client %d: %v", f.client, f.err)
	}
}
