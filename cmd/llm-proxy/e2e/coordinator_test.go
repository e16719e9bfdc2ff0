package e2e

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// coordGateway starts a gateway of n workers in front of a fresh mockllm with the given
// coordination settings, waits for a primary and returns it with a client key.
func coordGateway(t *testing.T, n int, env map[string]string) (*gateway, string) {
	t.Helper()
	mock := startMock(t, "--reply", reply(50))
	env["LLM_PROXY_WORKERS"] = strconv.Itoa(n)
	g := newGateway(t, env)
	g.workers = n
	g.cli(t, "upstreams", "add", "--name", "mock", "--base-url", mock.baseURL())
	_, key := g.createKey(t, "coord")
	g.start(t)
	return g, key
}

// waitPrimary waits until the lease has a holder and that holder's row says primary.
func waitPrimary(t *testing.T, s *sampler, within time.Duration) snapshot {
	t.Helper()
	return s.waitFor(t, within, "a primary with its row", func(sn snapshot) bool {
		return sn.lease.Holder != "" && sn.role(sn.lease.PID) == "primary"
	})
}

// TestKill9UnderLoad: kill -9 of a worker under load, the primary and (separately) a
// non-primary. The load's connections to the victim lose at most their in-flight request,
// a new primary is in place within 2 s when the primary was killed, there are never two
// primaries, ingest resumes, and after a graceful stop request_logs holds exactly the
// request ids the load saw completed.
func TestKill9UnderLoad(t *testing.T) {
	for _, tc := range []struct {
		name        string
		killPrimary bool
	}{
		{"primary", true},
		{"worker", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, key := coordGateway(t, 3, fastCoordination(nil))
			s := g.startSampler(t)
			before := waitPrimary(t, s, 5*time.Second)

			// The victim and its request-id prefix, learned on a connection pinned to it.
			victim := before.lease.PID
			pinned := g.pinWorkers(t)
			if !tc.killPrimary {
				for pid := range pinned {
					if pid != victim {
						victim = pid
						break
					}
				}
			}
			prefix := requestPrefix(t, pinned[victim], g.baseURL(), key)
			if got := g.status(t); got.Primary.PID != before.lease.PID || got.Primary.Epoch != before.lease.Epoch {
				t.Errorf("llm-proxy status primary = %+v, want pid %d epoch %d", got.Primary, before.lease.PID, before.lease.Epoch)
			}

			l := g.startLoad(t, key, loadOptions{clients: 6, attribute: true})
			l.add(prefix + "1") // the request that taught us the prefix (the worker's first)
			l.waitServed(t, 300, 10*time.Second)
			if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
				t.Fatalf("kill -9 %d: %v", victim, err)
			}
			killedAt := time.Now()

			if tc.killPrimary {
				after := s.waitFor(t, 5*time.Second, "a new primary", func(sn snapshot) bool {
					return sn.lease.Holder != "" && sn.lease.Epoch > before.lease.Epoch
				})
				took := after.at.Sub(killedAt)
				if took > 2*time.Second {
					t.Errorf("new primary (pid %d, epoch %d) %s after the kill, want within 2s", after.lease.PID, after.lease.Epoch, took)
				}
				if after.lease.PID == victim || after.lease.Epoch != before.lease.Epoch+1 {
					t.Errorf("lease after the kill = %+v, want another pid at epoch %d", after.lease, before.lease.Epoch+1)
				}
				t.Logf("kill -9 of primary pid %d: pid %d primary at epoch %d %s later", victim, after.lease.PID, after.lease.Epoch, took.Round(time.Millisecond))
			}
			// A replacement worker joins and the load keeps being served.
			s.waitFor(t, 5*time.Second, "the victim's row gone and a replacement's row", func(sn snapshot) bool {
				return sn.role(victim) == "" && len(sn.workers) == 3
			})
			l.waitServed(t, 300, 10*time.Second)

			// Ingest resumes: a request made now reaches request_logs.
			id, err := chatOnce(context.Background(), freshClient(requestTimeout), g.baseURL(), key)
			if err != nil {
				t.Fatalf("request after the kill: %v", err)
			}
			l.add(id)
			g.waitLogRow(t, id)
			l.halt()

			st := g.status(t)
			if got := s.checkOnePrimary(t); len(got) != 1+btoi(tc.killPrimary) {
				t.Errorf("lease terms during the test = %+v, want %d", got, 1+btoi(tc.killPrimary))
			}
			if st.Primary.Holder == "" || st.Primary.PID == victim {
				t.Errorf("llm-proxy status after the kill: primary %+v", st.Primary)
			}

			// Failures: only requests on connections to the victim, at most one per client.
			perClient := map[int]int{}
			for _, f := range l.failures() {
				if f.pid != victim {
					t.Errorf("client %d: request failed on a connection to pid %d, not the victim: %v", f.client, f.pid, f.err)
					continue
				}
				perClient[f.client]++
			}
			for c, n := range perClient {
				if n > 1 {
					t.Errorf("client %d lost %d requests on the victim's connection, want at most 1", c, n)
				}
			}

			g.stopGracefully(t)
			compareIDs(t, l.seen(), g.requestIDs(t), len(l.failures()), prefix)
			t.Logf("%d requests served, %d failed on the victim's connections", l.served.Load(), len(l.failures()))
		})
	}
}

// TestPrimaryFrozen: SIGSTOP of the primary for less than the watchdog and failover
// timeouts changes nothing; SIGSTOP for good is ended by the watchdog, and a new primary
// is in place within the watchdog timeout + 2 s (well before the failover timeout).
func TestPrimaryFrozen(t *testing.T) {
	const watchdog = 3 * time.Second
	g, _ := coordGateway(t, 2, fastCoordination(map[string]string{
		"LLM_PROXY_WATCHDOG_TIMEOUT": watchdog.String(),
		// Longer than watchdog + 2 s, so a takeover in time can only be the watchdog's.
		"LLM_PROXY_FAILOVER_TIMEOUT": "10s",
	}))
	s := g.startSampler(t)
	before := waitPrimary(t, s, 5*time.Second)
	primary := before.lease.PID
	continueOnCleanup(t, primary)

	t.Run("short_freeze", func(t *testing.T) {
		if err := syscall.Kill(primary, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(watchdog / 2)
		if err := syscall.Kill(primary, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		// Renewals resume: the renew counter moves again under the same holder and epoch.
		after := s.waitFor(t, 5*time.Second, "renewals after SIGCONT", func(sn snapshot) bool {
			return sn.lease.RenewSeq > before.lease.RenewSeq+1
		})
		time.Sleep(2 * time.Second) // a late takeover would show here
		last, _ := s.last()
		for _, sn := range []snapshot{after, last} {
			if sn.lease.Holder != before.lease.Holder || sn.lease.Epoch != before.lease.Epoch {
				t.Errorf("lease after a %s freeze = %+v, want holder %s epoch %d unchanged", watchdog/2, sn.lease, before.lease.Holder, before.lease.Epoch)
			}
		}
		if !isWorker(primary, g.cmd.Path) {
			t.Errorf("the primary pid %d is gone after a freeze shorter than the watchdog timeout", primary)
		}
	})

	t.Run("frozen_for_good", func(t *testing.T) {
		if err := syscall.Kill(primary, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		stoppedAt := time.Now()
		after := s.waitFor(t, watchdog+5*time.Second, "a new primary", func(sn snapshot) bool {
			return sn.lease.Holder != "" && sn.lease.Epoch > before.lease.Epoch
		})
		took := after.at.Sub(stoppedAt)
		if took > watchdog+2*time.Second {
			t.Errorf("new primary %s after SIGSTOP, want within watchdog %s + 2s", took, watchdog)
		}
		if after.lease.PID == primary {
			t.Errorf("lease still names the frozen pid: %+v", after.lease)
		}
		if isWorker(primary, g.cmd.Path) {
			t.Errorf("the frozen primary pid %d still exists; the watchdog should have killed it", primary)
		}
		if lines := g.logLines(t, "llm-proxy-error.log", "worker unresponsive, killing it", "pid="+itoa(primary)); len(lines) == 0 {
			t.Errorf("no ERROR line about the watchdog killing pid %d", primary)
		}
		t.Logf("frozen primary pid %d replaced by pid %d (epoch %d) %s after SIGSTOP", primary, after.lease.PID, after.lease.Epoch, took.Round(time.Millisecond))
	})
	s.halt()
	if terms := s.checkOnePrimary(t); len(terms) != 2 {
		t.Errorf("lease terms = %+v, want 2", terms)
	}
}

// TestLeaseAloneFencesFrozenPrimary: with the watchdog off nothing but the lease replaces
// a frozen primary (as when the supervisor itself is frozen). The takeover comes after the
// failover timeout measured from the last renewal, not before; the resumed old primary
// steps down, its heartbeat row turns to worker, and its fenced writes change nothing:
// request_logs ends with exactly the requests served.
func TestLeaseAloneFencesFrozenPrimary(t *testing.T) {
	const failover = 4 * time.Second
	g, key := coordGateway(t, 2, fastCoordination(map[string]string{
		"LLM_PROXY_WATCHDOG_TIMEOUT": "0",
		"LLM_PROXY_FAILOVER_TIMEOUT": failover.String(),
	}))
	s := g.startSampler(t)
	before := waitPrimary(t, s, 5*time.Second)
	old := before.lease

	// The load runs on the other worker only, so records keep piling up in a spool
	// while the primary is frozen and no request waits on the frozen process.
	var other int
	pinned := g.pinWorkers(t)
	for pid := range pinned {
		if pid != old.PID {
			other = pid
		}
	}
	// A request served by the old primary before the freeze leaves a record in its spool.
	if _, err := chatOnce(context.Background(), pinned[old.PID], g.baseURL(), key); err != nil {
		t.Fatal(err)
	}
	l := g.startLoadOn(t, key, pinned[other], 2)
	l.waitServed(t, 100, 10*time.Second)

	continueOnCleanup(t, old.PID)
	if err := syscall.Kill(old.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stoppedAt := time.Now()
	after := s.waitFor(t, failover+5*time.Second, "a takeover", func(sn snapshot) bool {
		return sn.lease.Epoch > old.Epoch && sn.lease.Holder != ""
	})
	// The last renewal the sampler saw before the takeover.
	var lastRenew time.Time
	for _, sn := range s.all() {
		if sn.lease.Epoch == old.Epoch && sn.lease.Holder == old.Holder {
			if sn.lease.RenewSeq != old.RenewSeq || lastRenew.IsZero() {
				old.RenewSeq, lastRenew = sn.lease.RenewSeq, sn.at
			}
		}
	}
	sinceRenew := after.at.Sub(lastRenew)
	sinceStop := after.at.Sub(stoppedAt)
	// The sampler sees a renewal up to 100 ms late, hence the slack.
	if sinceRenew < failover-200*time.Millisecond {
		t.Errorf("takeover %s after the last renewal, before the %s failover timeout", sinceRenew, failover)
	}
	if sinceStop > failover+2*time.Second {
		t.Errorf("takeover %s after SIGSTOP, want within the failover timeout %s + 2s", sinceStop, failover)
	}
	if after.lease.PID != other {
		t.Errorf("new holder pid %d, want the other worker %d", after.lease.PID, other)
	}
	t.Logf("takeover %s after SIGSTOP, %s after the last renewal seen", sinceStop.Round(time.Millisecond), sinceRenew.Round(time.Millisecond))

	// Let the new primary ingest what piled up, then wake the old one.
	l.waitServed(t, 100, 10*time.Second)
	if err := syscall.Kill(old.PID, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, 5*time.Second, "the old primary's row back to worker", func(sn snapshot) bool {
		return sn.role(old.PID) == "worker"
	})
	time.Sleep(2 * time.Second) // several of the woken process's polls and ingest passes
	l.halt()

	last, _ := s.last()
	if last.lease.Holder != after.lease.Holder || last.lease.Epoch != after.lease.Epoch {
		t.Errorf("lease after SIGCONT = %+v, want %+v unchanged (the old primary must not take it back)", last.lease, after.lease)
	}
	st := g.status(t)
	var primaries []int
	for _, w := range st.Workers {
		if w.Role == "primary" {
			primaries = append(primaries, w.PID)
		}
	}
	if len(primaries) != 1 || primaries[0] != other || st.Primary.PID != other {
		t.Errorf("llm-proxy status: primary rows %v, lease pid %d; want only pid %d", primaries, st.Primary.PID, other)
	}
	// The woken process noticed it was no longer primary.
	stepped := append(g.logLines(t, "llm-proxy.log", "pid="+itoa(old.PID), "stopping primary duties"),
		g.logLines(t, "llm-proxy.log", "pid="+itoa(old.PID), "stepping down")...)
	stepped = append(stepped, g.logLines(t, "llm-proxy.log", old.Holder, "stopping primary duties")...)
	stepped = append(stepped, g.logLines(t, "llm-proxy.log", old.Holder, "stepping down")...)
	if len(stepped) == 0 {
		t.Errorf("no log line of worker %s stepping down after SIGCONT", old.Holder)
	}
	if terms := s.checkOnePrimary(t); len(terms) != 2 {
		t.Errorf("lease terms = %+v, want 2", terms)
	}

	g.stopGracefully(t)
	seen := l.seen()
	logged := g.requestIDs(t)
	// The pinned request to the old primary is in the log too; count it as seen.
	if got, want := len(logged), len(seen)+1; got != want {
		t.Errorf("request_logs has %d rows, want %d (requests served)", got, want)
	}
	for id := range seen {
		if !logged[id] {
			t.Errorf("request %s served but not in request_logs", id)
			break
		}
	}
}

// startLoadOn runs a load of clients goroutines over one pinned client (one worker).
func (g *gateway) startLoadOn(t *testing.T, key string, hc *http.Client, clients int) *load {
	t.Helper()
	return g.startLoad(t, key, loadOptions{clients: clients, pinned: hc})
}

// TestPrimaryFrozenInWriteTransaction: the primary is frozen while it holds SQLite's write
// lock. Client traffic to the other workers never fails (the request path does not touch
// SQLite), the watchdog kills the frozen process, a new primary takes over, and the
// database passes PRAGMA integrity_check.
//
// Determinism: the test does not guess when the primary writes. It watches the WAL write
// lock byte of the -shm file with F_GETLK, which names the pid holding it; when that is the
// primary it sends SIGSTOP and then checks again that the now frozen process still holds
// the lock (a frozen process cannot release it). If the write ended in between, it
// continues the process and tries again. A test holding BEGIN IMMEDIATE itself would only
// prove that a lock held by someone else is survivable, not that a frozen primary's is.
func TestPrimaryFrozenInWriteTransaction(t *testing.T) {
	const watchdog = 2 * time.Second
	g, key := coordGateway(t, 3, fastCoordination(map[string]string{
		"LLM_PROXY_WATCHDOG_TIMEOUT": watchdog.String(),
		"LLM_PROXY_FAILOVER_TIMEOUT": "10s",
	}))
	probe := g.newWriteLockProbe(t)
	s := g.startSampler(t)
	before := waitPrimary(t, s, 5*time.Second)
	primary := before.lease.PID
	continueOnCleanup(t, primary)

	// Load through every worker but the primary: their records are what the primary's
	// ingest writes, and their requests must keep succeeding throughout.
	pinned := g.pinWorkers(t)
	var others []*load
	for pid, hc := range pinned {
		if pid != primary {
			others = append(others, g.startLoad(t, key, loadOptions{clients: 2, pinned: hc}))
		}
	}
	for _, l := range others {
		l.waitServed(t, 50, 10*time.Second)
	}

	frozen := false
	deadline := time.Now().Add(20 * time.Second)
	for attempt := 0; !frozen; attempt++ {
		if time.Now().After(deadline) {
			t.Fatalf("the primary pid %d was never caught holding the write lock in %d attempts", primary, attempt)
		}
		pid, err := probe.holder()
		if err != nil {
			t.Fatal(err)
		}
		if pid != primary {
			time.Sleep(200 * time.Microsecond)
			continue
		}
		if err := syscall.Kill(primary, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		waitStopped(t, primary)
		if pid, err = probe.holder(); err != nil {
			t.Fatal(err)
		}
		if pid == primary {
			frozen = true
			t.Logf("primary pid %d frozen holding the write lock after %d attempts", primary, attempt+1)
			break
		}
		_ = syscall.Kill(primary, syscall.SIGCONT)
	}
	stoppedAt := time.Now()
	servedAtFreeze := make([]int64, len(others))
	for i, l := range others {
		servedAtFreeze[i] = l.served.Load()
	}

	after := s.waitFor(t, watchdog+8*time.Second, "a new primary", func(sn snapshot) bool {
		return sn.lease.Holder != "" && sn.lease.Epoch > before.lease.Epoch
	})
	took := after.at.Sub(stoppedAt)
	if took > watchdog+2*time.Second {
		t.Errorf("new primary %s after the freeze, want within watchdog %s + 2s", took, watchdog)
	}
	if isWorker(primary, g.cmd.Path) {
		t.Errorf("the frozen primary pid %d still runs", primary)
	}
	for i, l := range others {
		if l.served.Load() <= servedAtFreeze[i] {
			t.Errorf("load %d served nothing while the primary was frozen with the write lock", i)
		}
		l.waitServed(t, 50, 10*time.Second)
		l.halt()
		for _, f := range l.failures() {
			t.Errorf("a request to a live worker failed while the primary was frozen: %v", f.err)
		}
	}
	t.Logf("new primary pid %d (epoch %d) %s after the freeze", after.lease.PID, after.lease.Epoch, took.Round(time.Millisecond))
	if got := g.integrityCheck(t); got != "ok" {
		t.Errorf("PRAGMA integrity_check = %q, want ok", got)
	}
	// Ingest works after the frozen writer's transaction was rolled back.
	id, err := chatOnce(context.Background(), freshClient(requestTimeout), g.baseURL(), key)
	if err != nil {
		t.Fatal(err)
	}
	g.waitLogRow(t, id)
	s.halt()
	s.checkOnePrimary(t)
	for _, bad := range []string{"SQLITE_BUSY", "database is locked"} {
		if lines := g.logLines(t, "llm-proxy-error.log", "[ERROR]", bad); len(lines) > 0 {
			t.Errorf("ERROR lines mention %s: %v", bad, lines[:min(3, len(lines))])
		}
	}
	g.stopGracefully(t)
	if got := g.integrityCheck(t); got != "ok" {
		t.Errorf("PRAGMA integrity_check after stop = %q, want ok", got)
	}
}

// waitStopped waits until /proc says pid is stopped ("T"), so the lock check after SIGSTOP
// looks at a process that can no longer change it.
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if procState(pid) == 'T' {
			return
		}
		time.Sleep(100 * time.Microsecond)
	}
	t.Fatalf("pid %d is not stopped 100ms after SIGSTOP (state %c)", pid, procState(pid))
}

func itoa(n int) string { return strconv.Itoa(n) }

// procState is the state letter of /proc/<pid>/stat ('R', 'S', 'T', 'Z', ...), 0 if gone.
func procState(pid int) byte {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2]
	}
	return 0
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
