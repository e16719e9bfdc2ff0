package spool

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

func typicalRecord() Record {
	return Record{
		RequestID: "req_01HZX3K9V7Q2M8N4P6R5T1W0YB", TsMs: 1718000000123, Worker: 3, KeyID: 42,
		Endpoint: "chat", Model: "gpt-4o-mini", Upstream: "openai", UpstreamModel: "gpt-4o-mini-2024-07-18",
		Status: 200, Stream: true, LatencyUs: 812345, TtfbUs: 120034, PromptTokens: 123, CompletionTokens: 456,
	}
}

func TestAppendRecordRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   Record
		want Record // what ParseRecord must return
	}{
		{"typical", typicalRecord(), typicalRecord()},
		{"zero values", Record{RequestID: "r"}, Record{RequestID: "r"}},
		{"negative and extreme numbers", Record{RequestID: "r", TsMs: -1, KeyID: 1<<63 - 1, LatencyUs: -1 << 63},
			Record{RequestID: "r", TsMs: -1, KeyID: 1<<63 - 1, LatencyUs: -1 << 63}},
		{"escapes", Record{RequestID: "a\"b\\c", Model: "line\nbreak\r\ttab\x00\x1f\x7f", ErrorClass: "</script>"},
			Record{RequestID: "a\"b\\c", Model: "line\nbreak\r\ttab\x00\x1f\x7f", ErrorClass: "</script>"}},
		{"unicode kept", Record{RequestID: "r", Model: "модель-日本-😀\u2028"}, Record{RequestID: "r", Model: "модель-日本-😀\u2028"}},
		{"invalid utf-8 replaced", Record{RequestID: "r", Model: "a\xffb\xe2\x82c\xed\xa0\x80"},
			Record{RequestID: "r", Model: "a\ufffdb\ufffd\ufffdc\ufffd\ufffd\ufffd"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			line := AppendRecord([]byte("prefix"), &tt.in)
			if !bytes.HasPrefix(line, []byte("prefix")) {
				t.Fatalf("dst prefix lost: %q", line)
			}
			line = line[len("prefix"):]
			if bytes.Count(line, []byte("\n")) != 1 || line[len(line)-1] != '\n' {
				t.Fatalf("not exactly one line: %q", line)
			}
			if !json.Valid(line) {
				t.Fatalf("invalid JSON: %q", line)
			}
			got, err := ParseRecord(line)
			if err != nil {
				t.Fatalf("ParseRecord: %v", err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			// The hand-written encoder must agree with encoding/json on valid input.
			if tt.name != "invalid utf-8 replaced" {
				var viaStd Record
				if err := json.Unmarshal(line, &viaStd); err != nil || viaStd != tt.want {
					t.Errorf("encoding/json reads %+v (%v), want %+v", viaStd, err, tt.want)
				}
			}
		})
	}
}

func TestParseRecordRejects(t *testing.T) {
	for _, line := range []string{"", "{", "not json\n", `{"request_id":""}`, `{"ts_ms":1}`, `{"request_id":"r","status":"x"}`} {
		if _, err := ParseRecord([]byte(line)); err == nil {
			t.Errorf("ParseRecord(%q): got nil error, want ErrCorrupt", line)
		}
	}
}

func TestAppendRecordNoAllocs(t *testing.T) {
	r := typicalRecord()
	buf := make([]byte, 0, 1024)
	got := testing.AllocsPerRun(100, func() { buf = AppendRecord(buf[:0], &r) })
	if got != 0 {
		t.Errorf("allocs per AppendRecord into a reused buffer: got %v, want 0", got)
	}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// An active file ends in NUL padding (writer_unix.go): its data ends there.
	for i := 0; i < len(b); {
		if Padding(b[i:]) {
			b = b[:i]
			break
		}
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			break
		}
		i += j + 1
	}
	if len(b) == 0 {
		return nil
	}
	if b[len(b)-1] != '\n' {
		t.Fatalf("%s ends in a partial line", path)
	}
	return strings.Split(string(b[:len(b)-1]), "\n")
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func TestWriterSealAndPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	w, err := Create(dir, "0-123-456", 0)
	if err != nil {
		t.Fatal(err)
	}
	r := typicalRecord()
	line := AppendRecord(nil, &r)
	for i := 0; i < 3; i++ {
		if err := w.Append(line); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := listDir(t, dir), []string{"0-123-456.000000.spool"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("files while open: got %v, want %v", got, want)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Append(line); err != ErrClosed {
		t.Errorf("Append after Close: got %v, want ErrClosed", err)
	}
	if got, want := listDir(t, dir), []string{"0-123-456.000000.sealed"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("files after Close: got %v, want %v", got, want)
	}
	if got := len(readLines(t, filepath.Join(dir, "0-123-456.000000.sealed"))); got != 3 {
		t.Errorf("lines: got %d, want 3", got)
	}
	st, _ := os.Stat(dir)
	if got := st.Mode().Perm(); got != 0o700 {
		t.Errorf("dir mode: got %o, want 700", got)
	}
	st, _ = os.Stat(filepath.Join(dir, "0-123-456.000000.sealed"))
	if got := st.Mode().Perm(); got != 0o600 {
		t.Errorf("file mode: got %o, want 600", got)
	}

	// A second writer with the same name continues the sequence instead of reusing 0.
	w2, err := Create(dir, "0-123-456", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := filepath.Base(w2.Path()), "0-123-456.000001.spool"; got != want {
		t.Errorf("next file: got %s, want %s", got, want)
	}
	// Closing an empty writer leaves no file behind.
	if err := w2.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := listDir(t, dir), []string{"0-123-456.000000.sealed"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("files after empty Close: got %v, want %v", got, want)
	}
}

func TestWriterRejectsBadLines(t *testing.T) {
	w, err := Create(t.TempDir(), "w", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for _, line := range []string{"", "no newline", "two\nlines\n"} {
		if err := w.Append([]byte(line)); err != ErrBadLine {
			t.Errorf("Append(%q): got %v, want ErrBadLine", line, err)
		}
	}
	if _, err := Create(t.TempDir(), "a/b", 0); err == nil {
		t.Error("Create with a slash in the name: got nil error")
	}
}

func TestWriterRotation(t *testing.T) {
	dir := t.TempDir()
	r := typicalRecord()
	line := AppendRecord(nil, &r)
	w, err := Create(dir, "1-2-3", int64(len(line))*10) // exactly 10 lines per file
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 25; i++ {
		if err := w.Append(line); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"1-2-3.000000.sealed", "1-2-3.000001.sealed", "1-2-3.000002.spool"}
	if got := listDir(t, dir); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("files: got %v, want %v", got, want)
	}
	for i, wantLines := range []int{10, 10, 5} {
		if got := len(readLines(t, filepath.Join(dir, want[i]))); got != wantLines {
			t.Errorf("%s: got %d lines, want %d", want[i], got, wantLines)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestWriterConcurrentAppends(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(dir, "0-1-2", 64<<10) // small files so rotation races with appends
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, perG = 16, 500
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			var buf []byte
			for i := 0; i < perG; i++ {
				r := typicalRecord()
				r.RequestID = fmt.Sprintf("g%02d-%04d", g, i)
				r.Model = strings.Repeat("m", i%97) // vary the length
				buf = AppendRecord(buf[:0], &r)
				if err := w.Append(buf); err != nil {
					t.Error(err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	files := listDir(t, dir)
	if len(files) < 2 {
		t.Errorf("expected rotation, got files %v", files)
	}
	for _, name := range files {
		if !strings.HasSuffix(name, SealedSuffix) {
			t.Errorf("file %s not sealed after Close", name)
		}
		for _, l := range readLines(t, filepath.Join(dir, name)) {
			rec, err := ParseRecord([]byte(l))
			if err != nil {
				t.Fatalf("%s: torn line %q: %v", name, l, err)
			}
			if seen[rec.RequestID] {
				t.Errorf("duplicate %s", rec.RequestID)
			}
			seen[rec.RequestID] = true
		}
	}
	if got, want := len(seen), goroutines*perG; got != want {
		t.Errorf("records: got %d, want %d", got, want)
	}
}

func TestBaseNameAndWriterID(t *testing.T) {
	tests := []struct {
		file, base, id string
		ok             bool
	}{
		{"3-100-999.000007.spool", "3-100-999.000007", "3-100-999", true},
		{"3-100-999.000007.sealed", "3-100-999.000007", "3-100-999", true},
		{"notes.txt", "", "", false},
		{".spool", "", "", false},
	}
	for _, tt := range tests {
		base, ok := BaseName(tt.file)
		if base != tt.base || ok != tt.ok {
			t.Errorf("BaseName(%q): got %q,%v want %q,%v", tt.file, base, ok, tt.base, tt.ok)
		}
		if ok {
			if got := WriterID(base); got != tt.id {
				t.Errorf("WriterID(%q): got %q, want %q", base, got, tt.id)
			}
		}
	}
}

func BenchmarkAppend(b *testing.B) {
	w, err := Create(b.TempDir(), "0-1-2", 0)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	r := typicalRecord()
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.TsMs++
		buf = AppendRecord(buf[:0], &r)
		if err := w.Append(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendRecord(b *testing.B) {
	r := typicalRecord()
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf = AppendRecord(buf[:0], &r)
	}
}
