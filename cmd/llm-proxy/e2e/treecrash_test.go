package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/llm-proxy/llm-proxy/store/spool"
)

// TestWholeTreeKill9: the supervisor and every worker die at once (kill -9 of the whole
// tree, as the OOM killer or a container's power loss does), so nobody releases the lease
// or removes the workers rows. The next start must clean that up itself: with the
// failover timeout at 30 s, a new primary is in place within 2 s of the new workers
// answering, `llm-proxy status` shows none of the dead pids, the dead workers' spool files
// are ingested and deleted, and request_logs holds exactly the requests the client saw
// completed before the crash and after the restart.
func TestWholeTreeKill9(t *testing.T) {
	// Stand in for an init that reaps orphans: the killed workers are reparented to this
	// process and waited for, as they would be under tini or systemd. (Unreaped, they stay
	// zombies; the start-up cleanup counts those as dead too, see store.RemoveDeadWorkers.)
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	t.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })

	env := map[string]string{
		// Only the start-up cleanup can meet the 2 s below: the old lease would be taken
		// over after this long.
		"LLM_PROXY_FAILOVER_TIMEOUT": "30s",
		"LLM_PROXY_SHUTDOWN_TIMEOUT": "10s",
	}
	g, key := coordGateway(t, 2, env)
	s := g.startSampler(t)
	waitPrimary(t, s, 5*time.Second)
	spoolDir := filepath.Join(filepath.Dir(g.dbPath), "spool")

	// Requests completed before the crash, one at a time so none is in flight when the
	// tree dies. The tree is frozen (SIGSTOP) right after the last answer, so the last
	// records are still only in the spools (ingest runs once a second); if ingest happened
	// to catch up in between, thaw and try again.
	seen := map[string]bool{}
	var (
		frozen  snapshot
		pending int64
		oldSup  = g.cmd.Process.Pid
		oldPIDs []int
	)
	for attempt := 1; ; attempt++ {
		for i := 0; i < 20; i++ {
			id, err := chatOnce(t.Context(), g.client, g.baseURL(), key)
			if err != nil {
				t.Fatalf("request %d before the crash: %v", i, err)
			}
			seen[id] = true
		}
		// Every worker pid that ever answered /api/health: no worker has been replaced.
		g.mu.Lock()
		oldPIDs = oldPIDs[:0]
		for pid := range g.pids {
			oldPIDs = append(oldPIDs, pid)
		}
		g.mu.Unlock()
		signalAll(t, syscall.SIGSTOP, append([]int{oldSup}, oldPIDs...))
		conn := g.openDB(t)
		logged, err := countRows(conn)
		if err != nil {
			t.Fatalf("count request_logs: %v", err)
		}
		if frozen, err = readSnapshot(conn); err != nil {
			t.Fatalf("snapshot of the frozen tree: %v", err)
		}
		pending = int64(len(seen)) - logged
		if pending > 0 || attempt == 5 {
			break
		}
		signalAll(t, syscall.SIGCONT, append(oldPIDs, oldSup))
	}
	if pending <= 0 {
		t.Fatalf("every record was ingested before each of 5 freezes; the crash would not test spool recovery")
	}
	if len(oldPIDs) != 2 || len(frozen.workers) != 2 || frozen.lease.Holder == "" {
		t.Fatalf("frozen state: workers %v, %+v; want 2 workers, 2 rows and a lease holder", oldPIDs, frozen)
	}
	oldSpools := spoolsOf(t, spoolDir, frozen)
	if len(oldSpools) == 0 {
		t.Fatalf("no spool file of the old workers %+v in %s", frozen.workers, spoolDir)
	}

	// The crash: SIGKILL while frozen, so no process runs a line of cleanup.
	signalAll(t, syscall.SIGKILL, append(oldPIDs, oldSup))
	select {
	case <-g.exited:
	case <-time.After(5 * time.Second):
		t.Fatalf("the supervisor %d outlived SIGKILL", oldSup)
	}
	reap(t, oldPIDs)
	t.Logf("killed supervisor %d and workers %v; %d of %d records still only spooled, lease %+v",
		oldSup, oldPIDs, pending, len(seen), frozen.lease)

	// The restart on the same data directory.
	old := map[int]bool{oldSup: true}
	for _, pid := range oldPIDs {
		old[pid] = true
	}
	g.errPath = filepath.Join(g.dir, "supervisor-restart.stderr")
	g.launch(t)
	newPIDs := g.waitWorkers(t, old, startTimeout)
	upAt := time.Now()
	after := s.waitFor(t, 5*time.Second, "a new primary", func(sn snapshot) bool {
		_, isNew := newPIDs[sn.lease.PID]
		return sn.lease.Holder != "" && isNew && sn.role(sn.lease.PID) == "primary"
	})
	took := after.at.Sub(upAt)
	if took > 2*time.Second {
		t.Errorf("new primary pid %d %s after the new workers answered, want within 2s (failover timeout is 30s)",
			after.lease.PID, took.Round(time.Millisecond))
	}
	t.Logf("new primary pid %d at epoch %d, %s after the new workers answered", after.lease.PID, after.lease.Epoch, took.Round(time.Millisecond))
	if after.lease.Epoch != frozen.lease.Epoch+1 {
		t.Errorf("epoch after the restart = %d, want %d", after.lease.Epoch, frozen.lease.Epoch+1)
	}

	// Status, from another process as an operator runs it: no dead pid anywhere.
	st := g.status(t)
	if _, isNew := newPIDs[st.Primary.PID]; !isNew {
		t.Errorf("llm-proxy status primary = %+v, want one of the new workers %v", st.Primary, newPIDs)
	}
	if len(st.Workers) != 2 {
		t.Errorf("llm-proxy status lists %d workers, want the 2 new ones: %+v", len(st.Workers), st.Workers)
	}
	for _, w := range st.Workers {
		if _, isNew := newPIDs[w.PID]; !isNew {
			t.Errorf("llm-proxy status lists worker %s (pid %d), want only the new pids %v", w.ID, w.PID, newPIDs)
		}
	}
	if n := strings.Count(readFile(t, g.errPath), "removed the worker row of a process that no longer exists"); n != 2 {
		t.Errorf("the restarted supervisor logged %d removed worker rows, want 2", n)
	}

	// The new primary ingests the dead workers' spools and, their writers gone, deletes them.
	deadline := time.Now().Add(10 * time.Second)
	for left := existing(oldSpools); len(left) > 0; left = existing(oldSpools) {
		if time.Now().After(deadline) {
			t.Fatalf("spool files of the dead workers still exist 10s after the restart: %v", left)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Serving goes on, and a graceful stop leaves no worker and no holder behind.
	id, err := chatOnce(t.Context(), g.client, g.baseURL(), key)
	if err != nil {
		t.Fatalf("request after the restart: %v", err)
	}
	seen[id] = true
	g.stopGracefully(t)
	if st := g.status(t); len(st.Workers) != 0 || st.Primary.Holder != "" {
		t.Errorf("llm-proxy status after a graceful stop = %+v, want no workers and no primary", st)
	}
	compareIDs(t, seen, g.requestIDs(t), 0, "")
}

// signalAll sends sig to every pid, in order.
func signalAll(t *testing.T, sig syscall.Signal, pids []int) {
	t.Helper()
	for _, pid := range pids {
		if err := syscall.Kill(pid, sig); err != nil {
			t.Fatalf("kill -%d %d: %v", sig, pid, err)
		}
	}
}

// reap waits for the killed workers, which became this (subreaper) process's children
// when their supervisor died.
func reap(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for {
			var ws unix.WaitStatus
			got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
			if err == nil && got == pid {
				break
			}
			if err != nil && !errors.Is(err, unix.EINTR) && !errors.Is(err, unix.ECHILD) {
				t.Fatalf("wait4 %d: %v", pid, err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("killed worker %d was not reaped within 5s (wait4: %d, %v)", pid, got, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// spoolsOf lists the spool files in dir written by the workers of sn.
func spoolsOf(t *testing.T, dir string, sn snapshot) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read spool dir: %v", err)
	}
	ids := map[string]bool{}
	for _, w := range sn.workers {
		ids[w.ID] = true
	}
	var out []string
	for _, e := range entries {
		if base, ok := spool.BaseName(e.Name()); ok && ids[spool.WriterID(base)] {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out
}

// existing returns the paths that still exist, under their name or sealed.
func existing(paths []string) []string {
	var out []string
	for _, p := range paths {
		sealed := strings.TrimSuffix(p, spool.ActiveSuffix) + spool.SealedSuffix
		for _, q := range []string{p, sealed} {
			if _, err := os.Stat(q); err == nil {
				out = append(out, q)
				break
			}
		}
	}
	return out
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return string(b)
}
