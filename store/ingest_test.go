package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"

	"github.com/llm-proxy/llm-proxy/store/spool"
)

// syncBuffer is a log sink safe for the concurrent writes of hclog.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// openMigratedStore opens a migrated store on a fresh file; logs go to the returned buffer.
func openMigratedStore(tb testing.TB, path string) (*Store, *syncBuffer) {
	tb.Helper()
	logs := &syncBuffer{}
	logger := hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug})
	if path == "" {
		path = filepath.Join(tb.TempDir(), "test.db")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, Config{Path: path, MaxOpenConns: 8, MaxIdleConns: 4}, nil, logger)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	if _, err := s.Migrate(ctx); err != nil {
		tb.Fatal(err)
	}
	return s, logs
}

func queryInt(t testing.TB, s *Store, q string, args ...any) int64 {
	t.Helper()
	var n int64
	err := s.read(context.Background(), func(conn *sqlite.Conn) error {
		return sqlitex.Execute(conn, q, &sqlitex.ExecOptions{Args: args,
			ResultFunc: func(st *sqlite.Stmt) error { n = st.ColumnInt64(0); return nil }})
	})
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func spoolRecord(id string) spool.Record {
	return spool.Record{RequestID: id, TsMs: time.Now().UnixMilli(), Worker: 1, KeyID: 7, Endpoint: "chat",
		Model: "m", Upstream: "u", UpstreamModel: "um", Status: 200, LatencyUs: 1000, PromptTokens: 3, CompletionTokens: 4}
}

// writeSpool appends n records named prefix-0..n-1 with a spool.Writer called name.
func writeSpool(t testing.TB, dir, name, prefix string, n int, seal bool) string {
	t.Helper()
	w, err := spool.Create(dir, name, 0)
	if err != nil {
		t.Fatal(err)
	}
	var buf []byte
	for i := 0; i < n; i++ {
		r := spoolRecord(fmt.Sprintf("%s-%d", prefix, i))
		buf = spool.AppendRecord(buf[:0], &r)
		if err := w.Append(buf); err != nil {
			t.Fatal(err)
		}
	}
	path := w.Path()
	if seal {
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return strings.TrimSuffix(path, spool.ActiveSuffix) + spool.SealedSuffix
	}
	return path
}

// appender writes at the end of an active spool file's data, over its NUL
// padding, the way a writer would (minus the memory mapping).
type appender struct {
	f   *os.File
	off int64
}

func (a *appender) Write(b []byte) (int, error) {
	n, err := a.f.WriteAt(b, a.off)
	a.off += int64(n)
	return n, err
}

func rawAppender(t *testing.T, path string) *appender {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	end := 0
	for end < len(b) && !spool.Padding(b[end:]) {
		i := bytes.IndexByte(b[end:], '\n')
		if i < 0 {
			t.Fatalf("%s: partial line at %d", path, end)
		}
		end += i + 1
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &appender{f: f, off: int64(end)}
}

// liveName is a worker id of this (live) test process.
func liveName(slot int) string {
	return fmt.Sprintf("%d-%d-%d", slot, os.Getpid(), time.Now().UnixNano())
}

// deadPID returns the pid of a process that has exited and been reaped.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func TestIngestExactlyOnce(t *testing.T) {
	s, _ := openMigratedStore(t, "")
	ctx := context.Background()
	dir := t.TempDir()
	path := writeSpool(t, dir, liveName(0), "a", 2500, false)
	base, _ := spool.BaseName(filepath.Base(path))
	size := rawAppender(t, path).off // the data, without the active file's padding

	steps := []struct {
		name string
		want IngestResult
	}{
		{"first pass", IngestResult{Rows: 2500, Files: 1, Backlog: size}},
		{"second pass inserts nothing", IngestResult{Files: 1}},
	}
	for _, st := range steps {
		got, err := s.IngestSpools(ctx, dir, 0, 1000)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got != st.want {
			t.Errorf("%s: got %+v, want %+v", st.name, got, st.want)
		}
		if n := queryInt(t, s, "SELECT count(*) FROM request_logs"); n != 2500 {
			t.Errorf("%s: rows: got %d, want 2500", st.name, n)
		}
		if off := queryInt(t, s, "SELECT offset FROM spool_offsets WHERE spool = ?", base); off != size {
			t.Errorf("%s: offset: got %d, want %d", st.name, off, size)
		}
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("a live writer's active spool must be kept: %v", err)
	}
	// An ingest that read a batch before another committed it (a second pass racing
	// the first) commits nothing: the offset moves only from where the batch was read.
	stale := []spool.Record{spoolRecord("a-0")}
	if n, err := s.commitBatch(ctx, base, stale, 0, 100, 0); !errors.Is(err, errOffsetMoved) || n != 0 {
		t.Errorf("stale batch: got %d rows, %v; want 0 and errOffsetMoved", n, err)
	}
	if n := queryInt(t, s, "SELECT count(*) FROM request_logs"); n != 2500 {
		t.Errorf("after a stale batch: rows: got %d, want 2500", n)
	}
	if off := queryInt(t, s, "SELECT offset FROM spool_offsets WHERE spool = ?", base); off != size {
		t.Errorf("after a stale batch: offset: got %d, want %d", off, size)
	}
	// Columns survive the trip, including key 0 → NULL.
	if n := queryInt(t, s, "SELECT count(*) FROM request_logs WHERE key_id = 7 AND prompt_tokens = 3 AND endpoint = 'chat'"); n != 2500 {
		t.Errorf("rows with the written values: got %d, want 2500", n)
	}
}

func TestIngestPartialLineWaits(t *testing.T) {
	s, _ := openMigratedStore(t, "")
	ctx := context.Background()
	dir := t.TempDir()
	path := writeSpool(t, dir, liveName(0), "p", 3, false)
	r := spoolRecord("p-3")
	line := spool.AppendRecord(nil, &r)
	f := rawAppender(t, path)
	if _, err := f.Write(line[:20]); err != nil {
		t.Fatal(err)
	}
	got, err := s.IngestSpools(ctx, dir, 0, 1000)
	if err != nil || got.Rows != 3 {
		t.Fatalf("with a partial line: got %+v, %v; want 3 rows", got, err)
	}
	if _, err := f.Write(line[20:]); err != nil {
		t.Fatal(err)
	}
	got, err = s.IngestSpools(ctx, dir, 0, 1000)
	if err != nil || got.Rows != 1 {
		t.Fatalf("after completing the line: got %+v, %v; want 1 row", got, err)
	}
	if n := queryInt(t, s, "SELECT count(*) FROM request_logs WHERE request_id = 'p-3'"); n != 1 {
		t.Errorf("completed record: got %d rows, want 1", n)
	}
}

func TestIngestDeletesFinishedFiles(t *testing.T) {
	s, _ := openMigratedStore(t, "")
	ctx := context.Background()
	dir := t.TempDir()
	dead := deadPID(t)
	sealed := writeSpool(t, dir, liveName(1), "sealed", 10, true)
	deadActive := writeSpool(t, dir, fmt.Sprintf("2-%d-1", dead), "dead", 10, false)
	// A dead writer's unterminated last line can never complete: it is dropped with the file.
	if f, err := os.OpenFile(deadActive, os.O_APPEND|os.O_WRONLY, 0); err == nil {
		f.WriteString(`{"request_id":"torn`)
		f.Close()
	}
	liveActive := writeSpool(t, dir, liveName(3), "live", 10, false)
	// A live row claims this id although its pid is dead: kept (another pid namespace).
	claimedID := fmt.Sprintf("4-%d-1", dead)
	claimed := writeSpool(t, dir, claimedID, "claimed", 10, false)
	if err := s.Heartbeat(ctx, WorkerRow{ID: claimedID, Slot: 4, PID: dead, StartedAt: time.Now(), BeatAt: time.Now(), Version: "t"}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "unrelated.txt"), []byte("x"), 0o600)

	got, err := s.IngestSpools(ctx, dir, 0, 4)
	if err != nil {
		t.Fatal(err)
	}
	got.Backlog = 0 // checked in TestIngestExactlyOnce
	if want := (IngestResult{Rows: 40, Files: 4, Deleted: 2}); got != want {
		t.Errorf("result: got %+v, want %+v", got, want)
	}
	for _, tc := range []struct {
		path   string
		exists bool
	}{{sealed, false}, {deadActive, false}, {liveActive, true}, {claimed, true}, {filepath.Join(dir, "unrelated.txt"), true}} {
		_, err := os.Stat(tc.path)
		if got := err == nil; got != tc.exists {
			t.Errorf("%s exists: got %v, want %v", filepath.Base(tc.path), got, tc.exists)
		}
	}
	if n := queryInt(t, s, "SELECT count(*) FROM spool_offsets"); n != 2 {
		t.Errorf("offset rows left: got %d, want 2 (the kept files)", n)
	}
}

func TestIngestSealedBetweenPasses(t *testing.T) {
	s, _ := openMigratedStore(t, "")
	ctx := context.Background()
	dir := t.TempDir()
	w, err := spool.Create(dir, liveName(0), 0)
	if err != nil {
		t.Fatal(err)
	}
	var buf []byte
	for i := 0; i < 20; i++ {
		if i == 10 {
			if got, err := s.IngestSpools(ctx, dir, 0, 1000); err != nil || got.Rows != 10 {
				t.Fatalf("first pass: got %+v, %v", got, err)
			}
		}
		r := spoolRecord(fmt.Sprint("s-", i))
		buf = spool.AppendRecord(buf[:0], &r)
		if err := w.Append(buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := s.IngestSpools(ctx, dir, 0, 1000)
	got.Backlog = 0 // checked in TestIngestExactlyOnce
	if want := (IngestResult{Rows: 10, Files: 1, Deleted: 1}); err != nil || got != want {
		t.Errorf("after sealing: got %+v, %v; want %+v", got, err, want)
	}
	if n := queryInt(t, s, "SELECT count(*) FROM request_logs"); n != 20 {
		t.Errorf("rows: got %d, want 20", n)
	}
}

func TestIngestCorruptLineLoggedOnceAndSkipped(t *testing.T) {
	s, logs := openMigratedStore(t, "")
	ctx := context.Background()
	dir := t.TempDir()
	path := writeSpool(t, dir, liveName(0), "c", 2, false)
	f := rawAppender(t, path)
	f.Write([]byte("this is not json\n"))
	r := spoolRecord("c-after")
	f.Write(spool.AppendRecord(nil, &r))
	for pass := 0; pass < 2; pass++ {
		if _, err := s.IngestSpools(ctx, dir, 0, 1000); err != nil {
			t.Fatal(err)
		}
	}
	if n := queryInt(t, s, "SELECT count(*) FROM request_logs"); n != 3 {
		t.Errorf("rows: got %d, want 3 (the corrupt line skipped)", n)
	}
	if got := strings.Count(logs.String(), "skipping corrupt record"); got != 1 {
		t.Errorf("corrupt-record log lines: got %d, want 1\n%s", got, logs.String())
	}
}

func TestIngestFenced(t *testing.T) {
	s, _ := openMigratedStore(t, "")
	ctx := context.Background()
	dir := t.TempDir()
	writeSpool(t, dir, liveName(0), "f", 50, true)
	l, ok, err := s.TryAcquire(ctx, "w1", 1, 0, time.Now())
	if err != nil || !ok {
		t.Fatalf("TryAcquire: %v %v", ok, err)
	}
	stale := l.Epoch
	if err := s.Release(ctx, "w1", stale); err != nil {
		t.Fatal(err)
	}
	if l, ok, err = s.TryAcquire(ctx, "w2", 2, l.RenewSeq, time.Now()); err != nil || !ok {
		t.Fatalf("TryAcquire: %v %v", ok, err)
	}
	got, err := s.IngestSpools(ctx, dir, stale, 10)
	if !errors.Is(err, ErrFenced) {
		t.Errorf("stale epoch: got error %v, want ErrFenced", err)
	}
	if got.Rows != 0 || queryInt(t, s, "SELECT count(*) FROM request_logs") != 0 || queryInt(t, s, "SELECT count(*) FROM spool_offsets") != 0 {
		t.Errorf("stale epoch committed something: %+v", got)
	}
	got, err = s.IngestSpools(ctx, dir, l.Epoch, 10)
	got.Backlog = 0 // checked in TestIngestExactlyOnce
	if want := (IngestResult{Rows: 50, Files: 1, Deleted: 1}); err != nil || got != want {
		t.Errorf("current epoch: got %+v, %v; want %+v", got, err, want)
	}
}

func TestIngestMissingDir(t *testing.T) {
	s, _ := openMigratedStore(t, "")
	got, err := s.IngestSpools(context.Background(), filepath.Join(t.TempDir(), "none"), 0, 10)
	if err != nil || got != (IngestResult{}) {
		t.Errorf("got %+v, %v; want zero result and no error", got, err)
	}
}

// BenchmarkIngestSpools ingests 100k records from 4 sealed files per iteration and
// reports rows/s.
func BenchmarkIngestSpools(b *testing.B) {
	const files, perFile = 4, 25000
	var rows int
	var elapsed time.Duration
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s, _ := openMigratedStore(b, "")
		dir := b.TempDir()
		for f := 0; f < files; f++ {
			writeSpool(b, dir, fmt.Sprintf("%d-1-%d", f, i), fmt.Sprintf("b%d-%d", i, f), perFile, true)
		}
		b.StartTimer()
		start := time.Now()
		res, err := s.IngestSpools(context.Background(), dir, 0, 1000)
		elapsed += time.Since(start)
		if err != nil || res.Rows != files*perFile {
			b.Fatalf("got %+v, %v", res, err)
		}
		rows += res.Rows
	}
	b.ReportMetric(float64(rows)/elapsed.Seconds(), "rows/s")
}
