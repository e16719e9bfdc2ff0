package store

import (
	"os"
	"path/filepath"
	"testing"
)

// TestIngestBodySpools: records are taken only when their line is complete, a pass
// after more was appended continues from the committed offset without duplicates,
// a replay of the same file inserts nothing twice, and a sealed file is removed
// once read to the end.
func TestIngestBodySpools(t *testing.T) {
	s := openTestStore(t, testConfig(t), nil)
	ctx := testContext(t)
	dir := t.TempDir()
	active := filepath.Join(dir, "0-1-2.000000.spool")
	// Its writer id "0-1-2" is no process of ours but pid 1 exists: "alive", kept.

	rec := func(id, req string) []byte {
		line, err := AppendBodyRecord(nil, &BodyRecord{RequestID: id, TsMs: 5, KeyID: 0, Request: req, Response: "ans\n\"q\""})
		if err != nil {
			t.Fatal(err)
		}
		return line
	}
	first, second := rec("r1", "hello"), rec("r2", "world")
	if err := os.WriteFile(active, append(append([]byte{}, first...), second[:10]...), 0o600); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name     string
		prepare  func()
		wantRows int
		wantDel  int
	}{
		{"complete line only", func() {}, 1, 0},
		{"rest of the second line", func() {
			f, err := os.OpenFile(active, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(second[10:]); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}, 1, 0},
		{"nothing new", func() {}, 0, 0},
		{"sealed", func() {
			if err := os.Rename(active, filepath.Join(dir, "0-1-2.000000.sealed")); err != nil {
				t.Fatal(err)
			}
		}, 0, 1},
	}
	for _, st := range steps {
		st.prepare()
		res, err := s.IngestBodySpools(ctx, dir, 0, 10)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if res.Rows != st.wantRows || res.Deleted != st.wantDel {
			t.Errorf("%s: %+v, want %d rows, %d deleted", st.name, res, st.wantRows, st.wantDel)
		}
	}
	for _, id := range []string{"r1", "r2"} {
		got, ok, err := s.RequestBody(ctx, id)
		if err != nil || !ok || got.Response != "ans\n\"q\"" {
			t.Errorf("RequestBody(%s) = %+v, %v, %v", id, got, ok, err)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("files left after the sealed file was ingested: %v", entries)
	}
}
