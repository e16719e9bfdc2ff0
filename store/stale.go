package store

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// Why a process named by a workers row or the lease is provably gone.
const (
	GoneNoProcess = "no such process" // kill(pid, 0) answers ESRCH
	GoneExited    = "exited"          // a zombie: dead, but its parent (or an init that does not reap) has not waited for it
	GonePIDReused = "pid reused"      // the process now at pid started well after the row's worker
)

// reuseSlack is how much later than a row's start the process now holding its pid must
// have started before we call the pid reused. The comparison mixes two wall clocks (the
// row's, and boot time plus the kernel's start ticks), each good to about a second; the
// slack also absorbs a small clock step. A dead worker whose pid was taken again within
// this window is kept: its row then waits for the failover timeout as before.
const reuseSlack = time.Minute

// userHZ is the unit of the start time in /proc/<pid>/stat. It is fixed at 100 in the
// kernel's user ABI on every architecture this runs on; reuseSlack dwarfs any error.
const userHZ = 100

// DeadWorker is a workers row, or the lease holder, whose process no longer exists.
type DeadWorker struct {
	ID     string
	Slot   int
	PID    int
	Reason string // GoneNoProcess, GoneExited or GonePIDReused
}

// DeadWorkers is what RemoveDeadWorkers cleaned.
type DeadWorkers struct {
	Removed []DeadWorker // deleted workers rows
	// Released is the dead holder whose lease was freed; ID is "" when the lease was
	// free, held by a live process, or held by one we cannot prove dead.
	Released DeadWorker
}

// RemoveDeadWorkers deletes the workers rows of processes that provably no longer exist
// and frees the lease if its holder is such a process, so that after a crash of the whole
// process tree (no supervisor left to call ReleasePID) a new primary is elected within a
// lease poll and the dead writers' spool files count as finished.
//
// A process is provably gone when kill(pid, 0) answers ESRCH, when it is a zombie, or
// when the process now at pid started more than reuseSlack after the row's worker did
// (read from /proc; where that is unreadable only ESRCH counts). Everything else is kept: a live pid that is not
// ours may be another supervisor's worker on the same database, and deleting its row
// would let ingest treat its open spool as finished. Like the spool ingest and the shared
// counters, this assumes every process using the data directory shares one pid namespace.
//
// Rows are judged and deleted inside one BEGIN IMMEDIATE transaction, so a row inserted
// meanwhile is never removed unseen, and deletion is by id, never by pid.
func (s *Store) RemoveDeadWorkers(ctx context.Context) (DeadWorkers, error) {
	var out DeadWorkers
	err := s.writeRetry(ctx, func(conn *sqlite.Conn) error {
		out = DeadWorkers{} // a BUSY retry starts over
		rows, err := readWorkers(conn)
		if err != nil {
			return err
		}
		lease, err := readLease(conn)
		if err != nil {
			return err
		}
		holderRow := false
		for _, r := range rows {
			holder := r.ID == lease.Holder
			holderRow = holderRow || holder
			reason, gone := workerGone(r.PID, workerStart(r.ID, r.StartedAt))
			if !gone {
				continue
			}
			dead := DeadWorker{ID: r.ID, Slot: r.Slot, PID: r.PID, Reason: reason}
			if err := sqlitex.Execute(conn, "DELETE FROM workers WHERE id = :id",
				&sqlitex.ExecOptions{Named: map[string]any{":id": r.ID}}); err != nil {
				return err
			}
			out.Removed = append(out.Removed, dead)
			if holder {
				out.Released = dead
			}
		}
		if lease.Holder != "" && !holderRow {
			// A holder with no row (removed by a supervisor that then died, or a beat that
			// never landed): judge it by the lease's pid and the start in its id.
			slot, _, start := parseWorkerID(lease.Holder)
			if reason, gone := workerGone(lease.PID, start); gone {
				out.Released = DeadWorker{ID: lease.Holder, Slot: slot, PID: lease.PID, Reason: reason}
			}
		}
		if out.Released.ID == "" {
			return nil
		}
		// Epoch unchanged and no bump: nobody held the lease after the dead holder, and the
		// next taker's TryAcquire bumps it as for any free lease.
		return sqlitex.Execute(conn, `UPDATE leader SET holder = '', pid = 0
			WHERE id = 1 AND holder = :holder AND epoch = :epoch`,
			&sqlitex.ExecOptions{Named: map[string]any{":holder": lease.Holder, ":epoch": lease.Epoch}})
	})
	if err != nil {
		return DeadWorkers{}, fmt.Errorf("store: remove dead workers: %w", err)
	}
	return out, nil
}

// workerGone reports whether the worker process pid that started at start (zero: unknown)
// provably no longer exists, and why.
func workerGone(pid int, start time.Time) (string, bool) {
	if pid <= 0 {
		// kill(0 or negative) addresses process groups: never a proof about one worker.
		return "", false
	}
	if processGone(pid) {
		return GoneNoProcess, true
	}
	state, now, ok := procStat(pid)
	switch {
	case !ok:
		return "", false
	case state == 'Z' || state == 'X':
		// kill(pid, 0) succeeds on a zombie; after a tree crash under an init that does
		// not reap orphans the dead workers stay zombies indefinitely.
		return GoneExited, true
	case !start.IsZero() && now.Sub(start) > reuseSlack:
		return GonePIDReused, true
	}
	return "", false
}

// workerStart is when the worker of a row started: the nanoseconds in its id
// ("<slot>-<pid>-<start unix nanos>"), else the row's second-precision started_at.
func workerStart(id string, startedAt time.Time) time.Time {
	if _, _, start := parseWorkerID(id); !start.IsZero() {
		return start
	}
	if startedAt.Unix() <= 0 {
		return time.Time{}
	}
	return startedAt
}

// parseWorkerID splits "<slot>-<pid>-<start unix nanos>"; zero values for what is missing.
func parseWorkerID(id string) (slot, pid int, start time.Time) {
	parts := strings.Split(id, "-")
	if len(parts) != 3 {
		return 0, 0, time.Time{}
	}
	slot, _ = strconv.Atoi(parts[0])
	pid, _ = strconv.Atoi(parts[1])
	if ns, err := strconv.ParseInt(parts[2], 10, 64); err == nil && ns > 0 {
		start = time.Unix(0, ns)
	}
	return slot, pid, start
}

// procStat returns the state (field 3) of process pid and when it started, on the wall
// clock: boot time from /proc/stat plus field 22 of /proc/<pid>/stat. ok is false where
// /proc cannot tell (not Linux, hidden pids, the process gone meanwhile).
func procStat(pid int) (state byte, start time.Time, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, time.Time{}, false
	}
	// The command name (field 2) may hold spaces and parentheses: skip past the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, time.Time{}, false
	}
	fields := bytes.Fields(b[i+1:])
	if len(fields) < 20 || len(fields[0]) != 1 { // fields[0] is field 3, so field 22 is fields[19]
		return 0, time.Time{}, false
	}
	ticks, err := strconv.ParseInt(string(fields[19]), 10, 64)
	if err != nil || ticks < 0 {
		return 0, time.Time{}, false
	}
	boot, ok := bootTime()
	if !ok {
		return 0, time.Time{}, false
	}
	return fields[0][0], boot.Add(time.Duration(ticks) * (time.Second / userHZ)), true
}

// bootTime reads the "btime" line of /proc/stat.
func bootTime() (time.Time, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, false
	}
	for line := range bytes.SplitSeq(b, []byte{'\n'}) {
		if v, ok := bytes.CutPrefix(line, []byte("btime ")); ok {
			sec, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			if err != nil || sec <= 0 {
				return time.Time{}, false
			}
			return time.Unix(sec, 0), true
		}
	}
	return time.Time{}, false
}
