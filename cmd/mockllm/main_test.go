package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	t.Setenv("MOCKLLM_CHUNKS", "4")
	t.Setenv("MOCKLLM_REPLY", "from env")
	tests := []struct {
		args    []string
		check   func(config) bool
		wantErr bool
	}{
		{nil, func(c config) bool {
			return c.Addr == "127.0.0.1:9000" && c.Chunks == 4 && c.Reply == "from env" && c.EmbeddingDim == 16 && c.Record == 1000 && !c.LogRequests
		}, false},
		{[]string{"--chunks", "3", "--chunk-delay", "5ms", "--latency=1s", "--reply", "x y", "--embedding-dim", "4", "--record", "0", "--log-requests", "--addr", "127.0.0.1:0"}, func(c config) bool {
			return c.Chunks == 3 && c.ChunkDelay == 5*time.Millisecond && c.Latency == time.Second && c.Reply == "x y" &&
				c.EmbeddingDim == 4 && c.Record == 0 && c.LogRequests && c.Addr == "127.0.0.1:0"
		}, false},
		{[]string{"--chunks", "0"}, nil, true},
		{[]string{"--embedding-dim", "0"}, nil, true},
		{[]string{"--record", "-1"}, nil, true},
		{[]string{"--nope"}, nil, true},
		{[]string{"extra"}, nil, true},
	}
	for _, tt := range tests {
		got, err := parseConfig(tt.args, io.Discard)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseConfig(%q) error = %v, wantErr %v", tt.args, err, tt.wantErr)
			continue
		}
		if !tt.wantErr && !tt.check(got) {
			t.Errorf("parseConfig(%q) = %+v", tt.args, got)
		}
	}
}

// TestBinary builds the real binary, runs it, talks to it over 127.0.0.1 and
// stops it with SIGTERM while a request hangs.
func TestBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "mockllm")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--addr", "127.0.0.1:0", "--reply", "bin reply", "--log-requests")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})

	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	var addr string
	select {
	case l := <-lines:
		var ok bool
		if addr, ok = strings.CutPrefix(l, "mockllm listening on "); !ok || strings.HasSuffix(addr, ":0") {
			t.Fatalf("first line = %q", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no listening line within 10s")
	}
	base := "http://" + addr

	resp, b := do(t, "POST", base+"/v1/chat/completions", `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`, nil)
	var got chatCompletion
	decodeJSON(t, b, &got)
	if resp.StatusCode != 200 || got.Choices[0].Message.Content != "bin reply" {
		t.Fatalf("chat: status %d body %s", resp.StatusCode, b)
	}

	// A hanging request must not hold up shutdown.
	hung := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(`{"model":"m@hang","messages":[]}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			hung <- -1
			return
		}
		resp.Body.Close()
		hung <- resp.StatusCode
	}()
	waitFor(t, 2*time.Second, "hang in flight", func() bool {
		_, b := do(t, "GET", base+"/debug/stats", "", nil)
		return strings.Contains(string(b), `"in_flight":1`)
	})

	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lines: // drained; the reader goroutine now waits for exit
	case <-time.After(5 * time.Second):
	}
	var exitErr error
	select {
	case exitErr = <-exited:
		exited <- exitErr // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("mockllm did not exit within 5s of SIGTERM")
	}
	if exitErr != nil {
		t.Errorf("exit: %v\nstderr:\n%s", exitErr, stderr.String())
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	if code := <-hung; code != 503 {
		t.Errorf("hanging request got %d at shutdown, want 503", code)
	}
	if !strings.Contains(stderr.String(), "request") || !strings.Contains(stderr.String(), "path=/v1/chat/completions") {
		t.Errorf("--log-requests wrote no request line:\n%s", stderr.String())
	}
}
