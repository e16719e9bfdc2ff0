package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"zombiezen.com/go/sqlite"

	"github.com/llm-proxy/llm-proxy/store/spool"
)

// ErrFenced is returned by primary-only writes whose lease epoch is no longer the current
// one: another process took the lease, and this one must stop acting as primary.
var ErrFenced = errors.New("store: fenced: lease epoch changed")

// IngestResult counts what one IngestSpools pass did.
type IngestResult struct {
	Rows    int // request_logs rows inserted
	Files   int // spool files read
	Deleted int // spool files removed after being fully ingested
	// Backlog is how many bytes of records this pass found waiting and took:
	// about one interval of traffic when ingest keeps up, more when it lags.
	Backlog int64
}

// maxLineBytes bounds one record; a longer "line" is corrupt (records are < 1 KiB).
const maxLineBytes = 1 << 20

// IngestSpools moves the records of every *.spool and *.sealed file in dir into
// request_logs. Each file is read from its committed offset (spool_offsets, keyed by the
// name without its suffix, so sealing between two passes is harmless); only complete lines
// are taken, so a record being written is picked up by the next pass. At most maxBatch rows
// go into each BEGIN IMMEDIATE transaction together with the new offset, which moves only
// from the offset the batch was read at: every record is inserted exactly once, and a
// batch read by an ingest that lost a race commits nothing (errOffsetMoved).
//
// If epoch > 0 every transaction first checks leader.epoch = epoch and returns ErrFenced,
// committing nothing, when it differs. A corrupt line is logged and skipped.
//
// A file is removed, with its offset row, once everything in it is ingested and it is
// sealed or its writer is gone (see writerGone); a dead writer's unfinished last line can
// never complete, so it is counted as corrupt then.
func (s *Store) IngestSpools(ctx context.Context, dir string, epoch int64, maxBatch int) (IngestResult, error) {
	var res IngestResult
	maxBatch = max(maxBatch, 1)
	err := s.eachSpool(ctx, dir, &res, func(path, base string, finished bool) (int, bool, error) {
		return s.ingestFile(ctx, path, base, finished, epoch, maxBatch, &res.Backlog)
	})
	return res, err
}

// eachSpool calls ingest for every spool file in dir, in write order (the
// sequence numbers are zero-padded), with whether the file is finished: sealed,
// or its writer gone (writerGone), so nothing more will be appended. It counts
// the files, rows and deletions into res. A missing dir holds nothing. ingest's
// errors come back as they are (ErrFenced among them); its own are wrapped.
func (s *Store) eachSpool(ctx context.Context, dir string, res *IngestResult,
	ingest func(path, base string, finished bool) (rows int, deleted bool, err error)) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: read spool dir: %w", err)
	}
	var names []string
	for _, e := range entries {
		if _, ok := spool.BaseName(e.Name()); ok && e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	var live map[string]bool
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("store: spool ingest: %w", err)
		}
		base, _ := spool.BaseName(name)
		finished := strings.HasSuffix(name, spool.SealedSuffix)
		if !finished {
			if live == nil {
				if live, err = s.liveWorkerIDs(ctx); err != nil {
					return err
				}
			}
			finished = writerGone(spool.WriterID(base), live)
		}
		rows, deleted, err := ingest(filepath.Join(dir, name), base, finished)
		res.Rows += rows
		if err != nil {
			return err
		}
		res.Files++
		if deleted {
			res.Deleted++
		}
	}
	return nil
}

// liveWorkerIDs returns the ids of every workers row, for writerGone.
func (s *Store) liveWorkerIDs(ctx context.Context) (map[string]bool, error) {
	ids := map[string]bool{}
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		stmt := conn.Prep("SELECT id FROM workers")
		defer stmt.Reset()
		for {
			row, err := stmt.Step()
			if err != nil || !row {
				return err
			}
			ids[stmt.ColumnText(0)] = true
		}
	})
	if err != nil {
		return nil, fmt.Errorf("store: ingest: list workers: %w", err)
	}
	return ids, nil
}

// writerGone reports whether the worker "<slot>-<pid>-<startnanos>" that wrote a spool
// file has exited: kill(pid, 0) says ESRCH (or /proc shows a zombie) and no workers row
// claims the id. We do not
// compare /proc/<pid>/stat start times: deleting the file of a live writer would lose the
// records it appends afterwards, while a wrong "alive" only leaves a fully ingested file
// behind. So every doubt answers "alive": a pid reused by another process, a stale workers
// row (rows are removed on clean exit and by ReleasePID), an id we cannot parse. The row
// check covers a writer whose pid we cannot see (another pid namespace sharing the dir).
func writerGone(id string, live map[string]bool) bool {
	if live[id] {
		return false
	}
	parts := strings.Split(id, "-")
	if len(parts) != 3 {
		return false
	}
	pid, err := strconv.Atoi(parts[1])
	if err != nil || pid <= 0 {
		return false
	}
	if processGone(pid) {
		return true
	}
	// A zombie has exited for good; under an init that does not reap orphans (a
	// container's pid 1 after a whole-tree crash) it stays one indefinitely.
	state, _, ok := procStat(pid)
	return ok && (state == 'Z' || state == 'X')
}

// ingestFile ingests one file from its committed offset. finished means nothing more will
// be appended (sealed, or its writer is gone): then the file is deleted once read to the end.
func (s *Store) ingestFile(ctx context.Context, path, base string, finished bool, epoch int64, maxBatch int, backlog *int64) (rows int, deleted bool, err error) {
	offset, err := s.spoolOffset(ctx, base)
	if err != nil {
		return 0, false, err
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) && !finished {
		// Sealed (renamed) since we listed the directory: the next pass reads it under
		// its new name from the same offset.
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("store: ingest: open spool: %w", err)
	}
	defer f.Close()
	start := offset
	// What this pass takes from the file was waiting for it (an active file's size
	// includes its padding, so the size says nothing).
	defer func() { *backlog += offset - start }()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return 0, false, fmt.Errorf("store: ingest: seek spool: %w", err)
	}
	br := bufio.NewReaderSize(f, 256<<10)
	batch := make([]spool.Record, 0, min(maxBatch, 4096))
	// The batch's lines, which its records' strings point into (ParseRecordShared):
	// kept until the batch commits, then reused.
	lines := make([]byte, 0, 128<<10)
	var long []byte   // a line longer than br's buffer, being assembled (capped at maxLineBytes)
	var longLen int64 // bytes of that line consumed so far, which is what the offset counts
	atEOF := false
	for !atEOF {
		batch, lines = batch[:0], lines[:0]
		next := offset
		for len(batch) < maxBatch {
			if longLen == 0 {
				if b, _ := br.Peek(1); spool.Padding(b) {
					// The padding after the last line of an active (or killed)
					// writer's file: the end of its data for now.
					atEOF = true
					break
				}
			}
			line, err := br.ReadSlice('\n')
			if errors.Is(err, bufio.ErrBufferFull) {
				if len(long)+len(line) <= maxLineBytes {
					long = append(long, line...)
				}
				longLen += int64(len(line))
				continue
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return rows, false, fmt.Errorf("store: ingest: read spool: %w", err)
			}
			size := longLen + int64(len(line))
			if errors.Is(err, io.EOF) {
				atEOF = true
				if size > 0 && finished {
					// The writer will never finish this line.
					s.logger.Warn("spool: skipping unterminated last line", "spool", base, "offset", next)
					next += size
				}
				break
			}
			if longLen > 0 {
				line = append(long, line...)
				long, longLen = long[:0], 0
			}
			lineOffset := next
			next += size
			lines = append(lines, line...)
			rec, perr := spool.ParseRecordShared(lines[len(lines)-len(line):])
			if perr != nil {
				// Logged once: the offset moves past it with the next commit.
				s.logger.Warn("spool: skipping corrupt record", "spool", base, "offset", lineOffset, "error", perr)
				continue
			}
			batch = append(batch, rec)
		}
		if next == offset {
			break
		}
		n, err := s.commitBatch(ctx, base, batch, offset, next, epoch)
		if err != nil {
			return rows, false, err
		}
		rows += n
		offset = next
		// Let request goroutines run between batches: with GOMAXPROCS=1 (a worker
		// pinned to one core) a long ingest would otherwise hold the CPU for a whole
		// 10 ms scheduler slice and show up in the primary's tail latency.
		runtime.Gosched()
	}
	if !finished {
		return rows, false, nil
	}
	if err := s.removeSpool(ctx, path, base, epoch); err != nil {
		return rows, false, err
	}
	return rows, true, nil
}

func (s *Store) spoolOffset(ctx context.Context, base string) (int64, error) {
	var off int64
	err := s.read(ctx, func(conn *sqlite.Conn) (err error) {
		off, err = readSpoolOffset(conn, base)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: ingest: read offset: %w", err)
	}
	return off, nil
}

// readSpoolOffset is how far spool base is ingested; 0 before its first batch.
func readSpoolOffset(conn *sqlite.Conn, base string) (int64, error) {
	stmt := conn.Prep("SELECT offset FROM spool_offsets WHERE spool = :spool")
	defer stmt.Reset()
	stmt.SetText(":spool", base)
	row, err := stmt.Step()
	if err != nil || !row {
		return 0, err
	}
	return stmt.ColumnInt64(0), nil
}

// checkEpoch returns ErrFenced unless leader.epoch = epoch; epoch <= 0 skips the check.
func checkEpoch(conn *sqlite.Conn, epoch int64) error {
	if epoch <= 0 {
		return nil
	}
	stmt := conn.Prep("SELECT epoch FROM leader WHERE id = 1")
	defer stmt.Reset()
	row, err := stmt.Step()
	if err != nil {
		return err
	}
	if !row || stmt.ColumnInt64(0) != epoch {
		return ErrFenced
	}
	return nil
}

// errOffsetMoved: a batch's spool offset moved after the batch was read, so another
// ingest took these records first.
var errOffsetMoved = errors.New("spool offset moved since the batch was read")

// commitBatch inserts batch, read from base at offset from, and moves base's offset to next,
// in one transaction that commits nothing unless the offset is still from.
func (s *Store) commitBatch(ctx context.Context, base string, batch []spool.Record, from, next, epoch int64) (int, error) {
	var inserted int
	err := s.writeRetry(ctx, func(conn *sqlite.Conn) error {
		inserted = 0
		if err := checkEpoch(conn, epoch); err != nil {
			return err
		}
		if off, err := readSpoolOffset(conn, base); err != nil {
			return err
		} else if off != from {
			return fmt.Errorf("%w: %s is at %d, the batch starts at %d", errOffsetMoved, base, off, from)
		}
		// Rows go in insertRows at a time: a statement's cursors on the table and its
		// indexes are opened and closed once per execution, which per row cost as
		// much as an index insert. Parameters are positional: binding by name costs a
		// lookup per column per row.
		many := conn.Prep(insertLogsMany)
		for len(batch) >= insertRows {
			for i := range insertRows {
				bindLogRow(many, i*logColumns, &batch[i])
			}
			n, err := stepInsert(conn, many)
			if err != nil {
				return err
			}
			inserted += n
			batch = batch[insertRows:]
		}
		if len(batch) > 0 {
			one := conn.Prep(insertLogsOne)
			for i := range batch {
				bindLogRow(one, 0, &batch[i])
				n, err := stepInsert(conn, one)
				if err != nil {
					return err
				}
				inserted += n
			}
		}
		return saveSpoolOffset(conn, base, next)
	})
	if errors.Is(err, ErrFenced) {
		return 0, ErrFenced
	}
	if err != nil {
		return 0, fmt.Errorf("store: ingest: commit batch: %w", err)
	}
	return inserted, nil
}

// insertRows is how many rows one execution of insertLogsMany inserts.
const insertRows = 32

// logColumns is how many parameters one row binds.
const logColumns = 21

const insertLogsHead = `INSERT INTO request_logs
	(request_id, ts_ms, worker, key_id, endpoint, model, upstream, upstream_model, status, stream,
	 latency_us, ttfb_us, prompt_tokens, completion_tokens, error_class,
	 attempts, attempt_count, cache, route, tokens_estimated, cost_micro_usd) VALUES `

var (
	insertLogsOne  = insertLogsHead + logValues(1)
	insertLogsMany = insertLogsHead + logValues(insertRows)
)

// logValues is the VALUES list of n rows with numbered parameters (?1 to ?n*logColumns).
func logValues(n int) string {
	var b strings.Builder
	for r := range n {
		if r > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('(')
		for c := range logColumns {
			if c > 0 {
				b.WriteByte(',')
			}
			b.WriteByte('?')
			b.WriteString(strconv.Itoa(r*logColumns + c + 1))
		}
		b.WriteByte(')')
	}
	return b.String()
}

// bindLogRow binds r to the logColumns parameters after base, in insertLogsHead's order.
func bindLogRow(ins *sqlite.Stmt, base int, r *spool.Record) {
	ins.BindText(base+1, r.RequestID)
	ins.BindInt64(base+2, r.TsMs)
	ins.BindInt64(base+3, int64(r.Worker))
	if r.KeyID == 0 {
		ins.BindNull(base + 4)
	} else {
		ins.BindInt64(base+4, r.KeyID)
	}
	ins.BindText(base+5, r.Endpoint)
	ins.BindText(base+6, r.Model)
	ins.BindText(base+7, r.Upstream)
	ins.BindText(base+8, r.UpstreamModel)
	ins.BindInt64(base+9, int64(r.Status))
	ins.BindBool(base+10, r.Stream)
	ins.BindInt64(base+11, r.LatencyUs)
	ins.BindInt64(base+12, r.TtfbUs)
	ins.BindInt64(base+13, int64(r.PromptTokens))
	ins.BindInt64(base+14, int64(r.CompletionTokens))
	ins.BindText(base+15, r.ErrorClass)
	if r.Attempts == "" {
		ins.BindText(base+16, "[]")
	} else {
		ins.BindText(base+16, r.Attempts)
	}
	ins.BindInt64(base+17, int64(r.AttemptCount))
	ins.BindText(base+18, r.Cache)
	ins.BindText(base+19, r.Route)
	ins.BindBool(base+20, r.TokensEstimated)
	ins.BindInt64(base+21, r.CostMicroUSD)
}

// stepInsert runs a bound insert and returns the rows it inserted.
func stepInsert(conn *sqlite.Conn, ins *sqlite.Stmt) (int, error) {
	if _, err := ins.Step(); err != nil {
		ins.Reset()
		return 0, fmt.Errorf("insert request log: %w", err)
	}
	n := conn.Changes()
	if err := ins.Reset(); err != nil {
		return 0, fmt.Errorf("insert request log: %w", err)
	}
	return n, nil
}

// saveSpoolOffset records how far spool key is ingested, in the transaction of the
// rows it covers.
func saveSpoolOffset(conn *sqlite.Conn, key string, next int64) error {
	up := conn.Prep(`INSERT INTO spool_offsets (spool, offset, updated_at) VALUES (:spool, :off, :now)
		ON CONFLICT(spool) DO UPDATE SET offset = excluded.offset, updated_at = excluded.updated_at`)
	defer up.Reset()
	up.SetText(":spool", key)
	up.SetInt64(":off", next)
	up.SetInt64(":now", time.Now().Unix())
	_, err := up.Step()
	return err
}

// removeSpool deletes a fully ingested file and its offset row. The file goes first, inside
// the fenced transaction: if the commit then fails, only a stale offset row for a file
// that no longer exists is left, which nothing reads.
func (s *Store) removeSpool(ctx context.Context, path, base string, epoch int64) error {
	err := s.writeRetry(ctx, func(conn *sqlite.Conn) error {
		if err := checkEpoch(conn, epoch); err != nil {
			return err
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		stmt := conn.Prep("DELETE FROM spool_offsets WHERE spool = :spool")
		defer stmt.Reset()
		stmt.SetText(":spool", base)
		_, err := stmt.Step()
		return err
	})
	if errors.Is(err, ErrFenced) {
		return ErrFenced
	}
	if err != nil {
		return fmt.Errorf("store: ingest: remove spool: %w", err)
	}
	return nil
}
