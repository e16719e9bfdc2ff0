//go:build unix

package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestLogReopenOnSIGUSR1 does what logrotate does without copytruncate: rename the
// files, send SIGUSR1, and expect new lines in new files under the old names, with
// nothing lost or duplicated across the two generations.
func TestLogReopenOnSIGUSR1(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "logs")
	var stderr lockedBuffer
	logger, closeLogs, err := newRootLogger("INFO", dir, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer closeLogs()
	logger.Info("line-before")
	logger.Warn("warn-before")
	for _, name := range []string{logFileAll, logFileError} {
		if err := os.Rename(filepath.Join(dir, name), filepath.Join(dir, name+".1")); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	// The reopen runs on its own goroutine; log numbered lines until one lands in
	// the new file (bounded).
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		return string(b)
	}
	var n int
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(read(logFileAll), "log files reopened") {
		if time.Now().After(deadline) {
			t.Fatalf("no reopen within 5 s of SIGUSR1; new file:\n%s", read(logFileAll))
		}
		n++
		logger.Info(fmt.Sprintf("line-during-%d", n))
		time.Sleep(5 * time.Millisecond)
	}
	logger.Info("line-after")
	logger.Error("error-after")

	oldAll, newAll := read(logFileAll+".1"), read(logFileAll)
	oldErr, newErr := read(logFileError+".1"), read(logFileError)
	checks := []struct {
		where, text string
		want, not   []string
	}{
		{"rotated " + logFileAll, oldAll, []string{"line-before", "warn-before"}, []string{"line-after", "log files reopened"}},
		{"new " + logFileAll, newAll, []string{"line-after", "error-after", "log files reopened"}, []string{"line-before"}},
		{"rotated " + logFileError, oldErr, []string{"warn-before"}, []string{"error-after"}},
		{"new " + logFileError, newErr, []string{"error-after"}, []string{"warn-before", "line-after"}},
	}
	for _, c := range checks {
		for _, w := range c.want {
			if !strings.Contains(c.text, w) {
				t.Errorf("%s lacks %q:\n%s", c.where, w, c.text)
			}
		}
		for _, w := range c.not {
			if strings.Contains(c.text, w) {
				t.Errorf("%s has %q:\n%s", c.where, w, c.text)
			}
		}
	}
	// Every line written while the reopen happened is in exactly one generation.
	for i := 1; i <= n; i++ {
		line := fmt.Sprintf("line-during-%d\n", i)
		if got := strings.Count(oldAll, line) + strings.Count(newAll, line); got != 1 {
			t.Errorf("%q appears %d times across the two files, want once", line, got)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, logFileAll))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got&^0o640 != 0 {
		t.Errorf("reopened file mode %v, want at most 0640", got)
	}
}

// With the directory gone (a broken rotation), the logger keeps writing to the
// files it has instead of losing lines.
func TestLogReopenFailureKeepsOldFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "logs")
	var stderr lockedBuffer
	logger, closeLogs, err := newRootLogger("INFO", dir, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer closeLogs()
	moved := dir + ".moved"
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(stderr.String(), "cannot reopen the log files") {
		if time.Now().After(deadline) {
			t.Fatalf("no reopen error reported within 5 s; stderr:\n%s", stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	logger.Info("still-logged")
	b, err := os.ReadFile(filepath.Join(moved, logFileAll))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "still-logged") {
		t.Errorf("after a failed reopen the old file lacks new lines:\n%s", b)
	}
}

// lockedBuffer is a bytes.Buffer the test may read while the logger's signal
// goroutine writes to it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
