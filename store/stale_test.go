package store

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"
)

func TestRemoveDeadWorkers(t *testing.T) {
	me := os.Getpid()
	_, myStart, ok := procStat(me)
	if !ok {
		t.Fatalf("cannot read the start time of pid %d from /proc", me)
	}
	dead := deadPID(t) // from ingest_test.go: started and reaped
	if !processGone(dead) {
		t.Fatalf("pid %d still exists after its process was reaped", dead)
	}
	zombie := zombiePID(t)
	now := time.Now()
	// Worker ids as the coordinator builds them: "<slot>-<pid>-<start unix nanos>".
	id := func(slot, pid int, start time.Time) string {
		return fmt.Sprintf("%d-%d-%d", slot, pid, start.UnixNano())
	}
	var (
		deadRow   = WorkerRow{ID: id(0, dead, now.Add(-time.Hour)), Slot: 0, PID: dead, StartedAt: now.Add(-time.Hour)}
		zombieRow = WorkerRow{ID: id(7, zombie, now), Slot: 7, PID: zombie, StartedAt: now}
		liveRow   = WorkerRow{ID: id(1, me, now), Slot: 1, PID: me, StartedAt: now}
		reusedRow = WorkerRow{ID: id(2, me, myStart.Add(-2*time.Minute)), Slot: 2, PID: me, StartedAt: myStart.Add(-2 * time.Minute)}
		// Started 30 s before this process: within reuseSlack, so not provably another process.
		closeRow = WorkerRow{ID: id(3, me, myStart.Add(-30*time.Second)), Slot: 3, PID: me, StartedAt: myStart.Add(-30 * time.Second)}
		// An id that does not parse carries no start: a live pid is then always kept.
		oddRow = WorkerRow{ID: "legacy", Slot: 4, PID: me}
	)
	tests := []struct {
		name         string
		rows         []WorkerRow
		holder       string // "" leaves the lease free
		holderPID    int
		wantRemoved  []string
		wantReleased string
		wantHolder   string // after the call
	}{
		{"dead holder: row removed, lease freed", []WorkerRow{deadRow, liveRow}, deadRow.ID, dead,
			[]string{deadRow.ID}, deadRow.ID, ""},
		{"live holder: dead row removed, lease kept", []WorkerRow{deadRow, liveRow}, liveRow.ID, me,
			[]string{deadRow.ID}, "", liveRow.ID},
		{"free lease: only the dead rows removed", []WorkerRow{deadRow, liveRow, oddRow, zombieRow}, "", 0,
			[]string{deadRow.ID, zombieRow.ID}, "", ""},
		{"zombie holder: row removed, lease freed", []WorkerRow{zombieRow, liveRow}, zombieRow.ID, zombie,
			[]string{zombieRow.ID}, zombieRow.ID, ""},
		{"reused pid holder: row removed, lease freed", []WorkerRow{reusedRow, closeRow, liveRow}, reusedRow.ID, me,
			[]string{reusedRow.ID}, reusedRow.ID, ""},
		{"dead holder without a row: lease freed", []WorkerRow{liveRow}, id(5, dead, now), dead,
			nil, id(5, dead, now), ""},
		{"live holder without a row: lease kept", []WorkerRow{liveRow}, id(6, me, now), me,
			nil, "", id(6, me, now)},
		{"nothing dead: nothing changes", []WorkerRow{liveRow, closeRow, oddRow}, liveRow.ID, me,
			nil, "", liveRow.ID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := openMigratedStore(t, "")
			ctx := context.Background()
			for _, r := range tt.rows {
				r.BeatAt, r.Version = now, "test"
				if err := s.Heartbeat(ctx, r); err != nil {
					t.Fatal(err)
				}
			}
			var epoch int64
			if tt.holder != "" {
				l, won, err := s.TryAcquire(ctx, tt.holder, tt.holderPID, -1, now)
				if err != nil || !won {
					t.Fatalf("take lease: won=%v err=%v", won, err)
				}
				epoch = l.Epoch
			}

			got, err := s.RemoveDeadWorkers(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var removed []string
			for _, d := range got.Removed {
				removed = append(removed, d.ID)
			}
			if !slices.Equal(removed, tt.wantRemoved) {
				t.Errorf("removed: got %q, want %q", removed, tt.wantRemoved)
			}
			if got.Released.ID != tt.wantReleased {
				t.Errorf("released: got %q, want %q", got.Released.ID, tt.wantReleased)
			}

			st, err := s.Status(ctx, now)
			if err != nil {
				t.Fatal(err)
			}
			var left []string
			for _, w := range st.Workers {
				left = append(left, w.ID)
			}
			var wantLeft []string
			for _, r := range tt.rows {
				if !slices.Contains(tt.wantRemoved, r.ID) {
					wantLeft = append(wantLeft, r.ID)
				}
			}
			slices.Sort(left)
			slices.Sort(wantLeft)
			if !slices.Equal(left, wantLeft) {
				t.Errorf("status workers: got %q, want %q", left, wantLeft)
			}
			if st.Primary.Holder != tt.wantHolder || st.Primary.Epoch != epoch {
				t.Errorf("status primary: got %+v, want holder %q at epoch %d", st.Primary, tt.wantHolder, epoch)
			}
			if tt.wantHolder == "" && st.Primary.PID != 0 {
				t.Errorf("freed lease still names pid %d", st.Primary.PID)
			}

			// A freed lease is taken at once by a live worker whatever seq it saw, which
			// is what lets a new primary start within one lease poll.
			if tt.wantReleased != "" {
				l, won, err := s.TryAcquire(ctx, liveRow.ID, me, -1, now)
				if err != nil || !won || l.Epoch != epoch+1 {
					t.Errorf("take freed lease: got won=%v epoch=%d err=%v; want won at epoch %d", won, l.Epoch, err, epoch+1)
				}
			}
		})
	}
}

func TestWorkerGone(t *testing.T) {
	me := os.Getpid()
	_, myStart, ok := procStat(me)
	if !ok {
		t.Fatal("cannot read this process's start time")
	}
	if d := time.Since(myStart); d < 0 || d > 10*time.Minute {
		t.Fatalf("start time of this process read as %v (%v ago)", myStart, d)
	}
	dead := deadPID(t) // from ingest_test.go: started and reaped
	if !processGone(dead) {
		t.Fatalf("pid %d still exists after its process was reaped", dead)
	}
	zombie := zombiePID(t)
	tests := []struct {
		name       string
		pid        int
		start      time.Time
		wantReason string
		wantGone   bool
	}{
		{"reaped pid", dead, time.Time{}, GoneNoProcess, true},
		{"reaped pid with a start", dead, myStart, GoneNoProcess, true},
		{"zombie", zombie, time.Time{}, GoneExited, true},
		{"live pid, unknown start", me, time.Time{}, "", false},
		{"live pid started before the row", me, myStart.Add(time.Second), "", false},
		{"live pid started within the slack after the row", me, myStart.Add(-reuseSlack / 2), "", false},
		{"live pid started long after the row", me, myStart.Add(-2 * reuseSlack), GonePIDReused, true},
		{"pid 0 is never judged", 0, time.Time{}, "", false},
		{"negative pid is never judged", -1, time.Time{}, "", false},
	}
	for _, tt := range tests {
		reason, gone := workerGone(tt.pid, tt.start)
		if reason != tt.wantReason || gone != tt.wantGone {
			t.Errorf("%s: got (%q, %v), want (%q, %v)", tt.name, reason, gone, tt.wantReason, tt.wantGone)
		}
	}
}

// zombiePID starts a process that exits at once and is not waited for until the test
// ends, so its pid names a zombie: kill(pid, 0) still succeeds on it.
func zombiePID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Wait() })
	pid := cmd.Process.Pid
	for deadline := time.Now().Add(5 * time.Second); ; {
		if state, _, ok := procStat(pid); ok && state == 'Z' {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d did not become a zombie", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestParseWorkerID(t *testing.T) {
	tests := []struct {
		id        string
		slot, pid int
		start     int64
	}{
		{"2-4711-1700000000123456789", 2, 4711, 1700000000123456789},
		{"legacy", 0, 0, 0},
		{"1-2", 0, 0, 0},
		{"1-2-x", 1, 2, 0},
	}
	for _, tt := range tests {
		slot, pid, start := parseWorkerID(tt.id)
		var ns int64
		if !start.IsZero() {
			ns = start.UnixNano()
		}
		if slot != tt.slot || pid != tt.pid || ns != tt.start {
			t.Errorf("parseWorkerID(%q): got %d %d %d, want %d %d %d", tt.id, slot, pid, ns, tt.slot, tt.pid, tt.start)
		}
	}
}

// A leftover row of a dead writer keeps ingest from finishing its spool file; once
// RemoveDeadWorkers has removed the row the next pass deletes the file.
func TestDeadWorkerSpoolDeletedAfterCleanup(t *testing.T) {
	s, _ := openMigratedStore(t, "")
	ctx := context.Background()
	dir := t.TempDir()
	dead := deadPID(t)
	start := time.Now().Add(-time.Minute)
	id := fmt.Sprintf("0-%d-%d", dead, start.UnixNano())
	path := writeSpool(t, dir, id, "d", 5, false)
	if err := s.Heartbeat(ctx, WorkerRow{ID: id, PID: dead, StartedAt: start, BeatAt: start, Version: "test"}); err != nil {
		t.Fatal(err)
	}

	steps := []struct {
		name      string
		cleanup   bool
		want      IngestResult
		wantExist bool
	}{
		{"row left: ingested, kept", false, IngestResult{Rows: 5, Files: 1}, true},
		{"row removed: deleted", true, IngestResult{Files: 1, Deleted: 1}, false},
	}
	for _, st := range steps {
		if st.cleanup {
			got, err := s.RemoveDeadWorkers(ctx)
			if err != nil || len(got.Removed) != 1 || got.Removed[0].ID != id || got.Removed[0].Reason != GoneNoProcess {
				t.Fatalf("%s: RemoveDeadWorkers got %+v, %v; want %s removed", st.name, got, err, id)
			}
		}
		got, err := s.IngestSpools(ctx, dir, 0, 100)
		got.Backlog = 0
		if err != nil || got != st.want {
			t.Errorf("%s: ingest got %+v, %v; want %+v", st.name, got, err, st.want)
		}
		if _, err := os.Stat(path); (err == nil) != st.wantExist {
			t.Errorf("%s: spool file exists=%v, want %v", st.name, err == nil, st.wantExist)
		}
	}
	if n := queryInt(t, s, "SELECT count(*) FROM request_logs"); n != 5 {
		t.Errorf("request_logs rows: got %d, want 5", n)
	}
}
