//go:build unix

package spool

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The helper process for TestAppendSurvivesKill: it appends SPOOL_KILL_LINES
// records, says so on stdout and waits to be killed.
func TestMain(m *testing.M) {
	if dir := os.Getenv("SPOOL_KILL_DIR"); dir != "" {
		n, _ := strconv.Atoi(os.Getenv("SPOOL_KILL_LINES"))
		w, err := Create(dir, "9-1-1", 16<<20)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		var buf []byte
		for i := range n {
			r := typicalRecord()
			r.RequestID = "killed-" + strconv.Itoa(i)
			buf = AppendRecord(buf[:0], &r)
			if err := w.Append(buf); err != nil {
				fmt.Println("error:", err)
				os.Exit(1)
			}
		}
		fmt.Println("appended")
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A record appended through the memory mapping is in the file even when the
// writer is killed with SIGKILL right after: it never was only in the process.
func TestAppendSurvivesKill(t *testing.T) {
	dir := t.TempDir()
	const lines = 5000
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "SPOOL_KILL_DIR="+dir, "SPOOL_KILL_LINES="+strconv.Itoa(lines))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "appended" {
		t.Fatalf("helper: %q %v", line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	files := listDir(t, dir)
	if len(files) != 1 || !strings.HasSuffix(files[0], ActiveSuffix) {
		t.Fatalf("files after the kill: %v, want one active file", files)
	}
	got := readLines(t, filepath.Join(dir, files[0]))
	if len(got) != lines {
		t.Fatalf("%d lines survived the kill, want %d", len(got), lines)
	}
	for i, l := range got {
		r, err := ParseRecord([]byte(l))
		if err != nil || r.RequestID != "killed-"+strconv.Itoa(i) {
			t.Fatalf("line %d: %+v %v", i, r, err)
		}
	}
}
