package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// Zero-downtime operations seen from outside: SIGUSR2 onto a new binary at the same path,
// SIGHUP applying a changed setting, and `llm-proxy status` reporting each worker's version
// and requests served.

// rollBound is how long a roll of two workers may take, from the signal until every
// worker answering is a new one.
const rollBound = 20 * time.Second

// buildVersioned links llm-proxy with main.version set to version, into out. Only the link
// step differs from the harness's build, so the compile cache makes it quick.
func buildVersioned(out, version string) error {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("find the go tool: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-ldflags", "-X main.version="+version, "-o", out,
		"github.com/llm-proxy/llm-proxy/cmd/llm-proxy")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", version, err, b)
	}
	return nil
}

// liveStatus is the part of `llm-proxy status` about each worker's build and traffic.
type liveStatus struct {
	Workers []struct {
		PID     int    `json:"pid"`
		Version string `json:"version"`
		Stats   struct {
			Requests int64 `json:"requests"`
		} `json:"stats"`
	} `json:"workers"`
}

func (g *gateway) liveStatus(t *testing.T) liveStatus {
	t.Helper()
	out := g.cli(t, "status")
	var s liveStatus
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("llm-proxy status: %v\n%s", err, out)
	}
	return s
}

// served maps each worker pid in s to its requests served.
func (s liveStatus) served() map[int]int64 {
	m := make(map[int]int64, len(s.Workers))
	for _, w := range s.Workers {
		m[w.PID] = w.Stats.Requests
	}
	return m
}

func sameCounts(a, b map[int]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for pid, n := range a {
		if m, ok := b[pid]; !ok || m != n {
			return false
		}
	}
	return true
}

// waitRollDone waits for one more "rolling restart done" line than before.
func (g *gateway) waitRollDone(t *testing.T, before int, cause string) {
	t.Helper()
	deadline := time.Now().Add(rollBound)
	for len(g.logLines(t, "llm-proxy.log", "rolling restart done")) == before {
		if time.Now().After(deadline) {
			t.Fatalf("no \"rolling restart done\" within %s of %s", rollBound, cause)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestUpgradeInPlace: the gateway runs from a file; a build with another version is renamed
// over that file and the supervisor gets SIGUSR2. Under a bounded load, every worker (in
// `llm-proxy status` and in /api/health on the listening port) reports the new version
// within rollBound, the old processes have exited, and no client request fails. Afterwards status
// counts each worker's requests exactly: the requests sent to each after the roll.
func TestUpgradeInPlace(t *testing.T) {
	binaries(t) // the compile cache the two links below reuse
	stamp := time.Now().Format("150405.000")
	oldVersion, newVersion := "e2e-old-"+stamp, "e2e-new-"+stamp
	binDir := t.TempDir()
	path := filepath.Join(binDir, "llm-proxy")
	staged := filepath.Join(binDir, ".llm-proxy.next")
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, b := range []struct{ out, version string }{{path, oldVersion}, {staged, newVersion}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = buildVersioned(b.out, b.version)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	mock := startMock(t, "--reply", reply(20))
	g := newGateway(t, fastCoordination(map[string]string{"LLM_PROXY_WORKERS": "2"}))
	g.workers = 2
	g.cli(t, "upstreams", "add", "--name", "mock", "--base-url", mock.baseURL())
	_, key := g.createKey(t, "upgrade")
	g.launchBinary(t, path)
	oldPIDs := g.waitWorkers(t, nil, startTimeout)

	// Every worker row carries the build it runs (the first beat is written at start).
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := g.liveStatus(t)
		ok := len(st.Workers) == g.workers
		for _, w := range st.Workers {
			ok = ok && w.Version == oldVersion
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status before the upgrade: %+v, want %d workers at %s", st.Workers, g.workers, oldVersion)
		}
		time.Sleep(100 * time.Millisecond)
	}

	l := g.startLoad(t, key, loadOptions{clients: 4, maxPerClient: 20000})
	l.waitServed(t, 100, 10*time.Second)

	// The upgrade as a package manager does it: the new file renamed over the old one.
	if err := os.Rename(staged, path); err != nil {
		t.Fatal(err)
	}
	rollsBefore := len(g.logLines(t, "llm-proxy.log", "rolling restart done"))
	if err := g.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	sigAt := time.Now()

	var newPIDs map[int]int64
	for {
		st := g.liveStatus(t)
		ok := len(st.Workers) == g.workers
		for _, w := range st.Workers {
			_, old := oldPIDs[w.PID]
			ok = ok && !old && w.Version == newVersion
		}
		if ok {
			newPIDs = st.served()
			break
		}
		if time.Since(sigAt) > rollBound {
			t.Fatalf("status %s after SIGUSR2: %+v; want %d new workers at %s", rollBound, st.Workers, g.workers, newVersion)
		}
		time.Sleep(100 * time.Millisecond)
	}
	g.waitRollDone(t, rollsBefore, "SIGUSR2")
	g.waitExited(t, oldPIDs, rollBound-time.Since(sigAt))
	took := time.Since(sigAt)
	if took > rollBound {
		t.Errorf("upgrade took %s, want within %s", took, rollBound)
	}
	// What answers on the port is the new build only.
	hc := freshClient(5 * time.Second)
	for i := 0; i < 20; i++ {
		h, err := g.health(context.Background(), hc)
		if err != nil {
			t.Fatalf("health after the upgrade: %v", err)
		}
		if _, isNew := newPIDs[h.PID]; !isNew || h.Version != newVersion {
			t.Fatalf("GET /api/health after the upgrade: pid %d version %q; want one of %v at %q", h.PID, h.Version, newPIDs, newVersion)
		}
	}
	l.waitServed(t, 100, 10*time.Second)
	l.halt()
	for _, f := range l.failures() {
		t.Errorf("client %d: request failed during the upgrade: %v", f.client, f.err)
	}
	t.Logf("upgrade %s -> %s: old workers gone after %s; %d requests served, %d failed",
		oldVersion, newVersion, took.Round(time.Millisecond), l.served.Load(), len(l.failures()))

	checkServedCounts(t, g, key, newVersion)
	g.stopGracefully(t)
}

// checkServedCounts: with no other traffic, sending k requests to each worker raises its
// "requests" in `llm-proxy status` by exactly k (so the sum by k × workers), and every row
// reports version.
func checkServedCounts(t *testing.T, g *gateway, key, version string) {
	t.Helper()
	const k = 15
	// The load has stopped: wait until two reads more than a heartbeat apart agree.
	base := g.liveStatus(t).served()
	for deadline := time.Now().Add(10 * time.Second); ; {
		time.Sleep(1200 * time.Millisecond)
		next := g.liveStatus(t).served()
		if len(next) == g.workers && sameCounts(base, next) {
			break
		}
		base = next
		if time.Now().After(deadline) {
			t.Fatalf("status request counts still moving 10s after the load stopped: %v", next)
		}
	}
	pinned := g.pinWorkers(t)
	for pid, hc := range pinned {
		if _, ok := base[pid]; !ok {
			t.Fatalf("worker pid %d answers but has no row in status %v", pid, base)
		}
		for i := 0; i < k; i++ {
			if _, err := chatOnce(context.Background(), hc, g.baseURL(), key); err != nil {
				t.Fatalf("request %d to pid %d: %v", i, pid, err)
			}
		}
	}
	want := make(map[int]int64, len(base))
	var wantSum int64
	for pid, n := range base {
		want[pid] = n + k
		wantSum += n + k
	}
	var got liveStatus
	for deadline := time.Now().Add(5 * time.Second); ; {
		got = g.liveStatus(t)
		if sameCounts(got.served(), want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status requests served: got %v, want %v (baseline %v plus %d each)", got.served(), want, base, k)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var sum int64
	for _, w := range got.Workers {
		sum += w.Stats.Requests
		if w.Stats.Requests <= 0 || w.Version != version {
			t.Errorf("status worker pid %d: requests %d, version %q; want > 0 and %q", w.PID, w.Stats.Requests, w.Version, version)
		}
	}
	if sum != wantSum {
		t.Errorf("status requests served, summed: got %d, want %d", sum, wantSum)
	}
}

// waitExited waits until none of pids runs the gateway's binary any more.
func (g *gateway) waitExited(t *testing.T, pids map[int]int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for pid := range pids {
		for isWorker(pid, g.cmd.Path) {
			if time.Now().After(deadline) {
				t.Fatalf("old worker pid %d still runs %s after the roll", pid, within)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// setSetting stores a setting as the admin's settings page does, from a connection of
// the test's own (no CLI command writes settings).
func (g *gateway) setSetting(t *testing.T, key, value string) {
	t.Helper()
	conn, err := sqlite.OpenConn(g.dbPath, sqlite.OpenReadWrite)
	if err != nil {
		t.Fatalf("open %s: %v", g.dbPath, err)
	}
	defer conn.Close()
	if err := sqlitex.ExecuteTransient(conn, "PRAGMA busy_timeout = 5000", nil); err != nil {
		t.Fatal(err)
	}
	err = sqlitex.Execute(conn, `INSERT INTO settings(key, value, updated_at) VALUES (:key, :value, :now)
		ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
		&sqlitex.ExecOptions{Named: map[string]any{":key": key, ":value": value, ":now": time.Now().Unix()}})
	if err != nil {
		t.Fatalf("store setting %s: %v", key, err)
	}
}

// bigChat sends a chat whose body is about 8 KiB and returns the status and response body.
func bigChat(hc *http.Client, baseURL, key string) (int, string, error) {
	body := `{"model":"mock-1","messages":[{"role":"user","content":"` + strings.Repeat("x", 8000) + `"}]}`
	req, err := http.NewRequest(http.MethodPost, baseURL+"/chat/completions", strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestSettingsChangeRollsWorkers: LLM_PROXY_MAX_BODY_BYTES is stored in the settings table
// while the gateway runs, as the web admin does, and nobody signals the supervisor. Within
// rollBound it notices the change, re-reads the settings and rolls the workers: every new
// worker refuses an 8 KiB body with 413 naming the new limit, and the load of small
// requests running throughout has no failure. SIGHUP still re-reads and rolls on demand.
func TestSettingsChangeRollsWorkers(t *testing.T) {
	g, key := coordGateway(t, 2, fastCoordination(nil))
	oldPIDs := g.waitWorkers(t, nil, startTimeout)
	l := g.startLoad(t, key, loadOptions{clients: 2, maxPerClient: 20000})
	l.waitServed(t, 50, 10*time.Second)
	for pid, hc := range g.pinWorkers(t) {
		code, body, err := bigChat(hc, g.baseURL(), key)
		if err != nil || code != http.StatusOK {
			t.Fatalf("8 KiB chat to pid %d before the change: %d %v %.200s; want 200", pid, code, err, body)
		}
	}

	rollsBefore := len(g.logLines(t, "llm-proxy.log", "rolling restart done"))
	g.setSetting(t, "MAX_BODY_BYTES", "2048")
	setAt := time.Now()
	g.waitRollDone(t, rollsBefore, "the settings change")
	t.Logf("roll done %s after the settings change", time.Since(setAt).Round(time.Millisecond))
	if n := len(g.logLines(t, "llm-proxy.log", "settings changed: settings reloaded, rolling workers")); n != 1 {
		t.Errorf("\"settings changed: settings reloaded\" lines: got %d, want 1", n)
	}

	// "Roll done" means every slot has a ready new worker and the old ones were told to
	// drain; wait until they are gone, so every connection below reaches a new worker.
	g.waitExited(t, oldPIDs, 15*time.Second)
	t.Logf("old workers gone %s after the settings change", time.Since(setAt).Round(time.Millisecond))
	after := g.pinWorkers(t)
	for pid, hc := range after {
		if _, old := oldPIDs[pid]; old {
			t.Errorf("pid %d answers after the roll; it ran before it", pid)
			continue
		}
		code, body, err := bigChat(hc, g.baseURL(), key)
		if err != nil || code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "2048") {
			t.Errorf("8 KiB chat to new pid %d after the change: %d %v %.200s; want 413 naming the 2048-byte limit", pid, code, err, body)
		}
	}

	rollsBefore = len(g.logLines(t, "llm-proxy.log", "rolling restart done"))
	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	g.waitRollDone(t, rollsBefore, "SIGHUP")
	if n := len(g.logLines(t, "llm-proxy.log", "SIGHUP: settings reloaded, rolling workers")); n != 1 {
		t.Errorf("\"SIGHUP: settings reloaded\" lines: got %d, want 1", n)
	}
	l.waitServed(t, 50, 10*time.Second)
	l.halt()
	for _, f := range l.failures() {
		t.Errorf("client %d: request failed during the reload: %v", f.client, f.err)
	}
	g.stopGracefully(t)
}
