package spool

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// Appending many MiB does not make the pages resident in the writer: written
// pages are released as the file grows.
func TestAppendReleasesWrittenPages(t *testing.T) {
	w, err := Create(t.TempDir(), "0-1-2", 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	before := rssFileKiB(t)
	r := typicalRecord()
	var buf []byte
	written := 0
	for written < 32<<20 {
		buf = AppendRecord(buf[:0], &r)
		if err := w.Append(buf); err != nil {
			t.Fatal(err)
		}
		written += len(buf)
	}
	after := rssFileKiB(t)
	if growth := after - before; growth > 4<<10 {
		t.Errorf("file-backed RSS grew by %d KiB after appending 32 MiB, want < 4 MiB", growth)
	}
}

func rssFileKiB(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}
