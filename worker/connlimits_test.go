package worker

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A header block over LLM_PROXY_MAX_HEADER_BYTES gets 431 in OpenAI's error
// shape and the connection is closed; one just under it is served.
func TestHeaderLimit(t *testing.T) {
	h := newHarness(t, harnessOptions{cfg: func(c *Config) { c.MaxHeaderBytes = 8 << 10 }})
	send := func(pad int) (*http.Response, error) {
		conn, err := net.Dial("tcp", h.addr)
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nX-Pad: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
			keyAll, strings.Repeat("p", pad), len(okChat), okChat)
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return nil, err
		}
		body := make([]byte, 4096)
		n, _ := resp.Body.Read(body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			checkError(t, resp, body[:n], resp.StatusCode, "headers_too_large")
			// The gateway closes the connection after refusing the headers.
			if _, err := br.ReadByte(); err == nil {
				t.Error("connection still open after the 431")
			}
		}
		return resp, nil
	}
	tests := []struct {
		pad  int
		want int
	}{
		{6 << 10, 200},
		{64 << 10, 431},
	}
	for _, tt := range tests {
		resp, err := send(tt.pad)
		if err != nil {
			t.Fatalf("%d-byte header: %v", tt.pad, err)
		}
		if resp.StatusCode != tt.want {
			t.Errorf("%d-byte header: status %d, want %d", tt.pad, resp.StatusCode, tt.want)
		}
	}
}

// LLM_PROXY_MAX_CONNS_PER_IP: connections past the limit from one address are
// refused with 429 while those within it keep working.
func TestMaxConnsPerIP(t *testing.T) {
	h := newHarness(t, harnessOptions{cfg: func(c *Config) { c.MaxConnsPerIP = 3 }})
	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for range 3 {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}
	// Let the server accept the three before the fourth arrives.
	time.Sleep(100 * time.Millisecond)
	extra, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	_ = extra.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(extra, "GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", keyAll)
	resp, err := http.ReadResponse(bufio.NewReader(extra), nil)
	if err != nil {
		t.Fatalf("fourth connection: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("fourth connection: status %d, want 429", resp.StatusCode)
	}
	// The first three still serve.
	c := open[0]
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", keyAll)
	resp, err = http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("first connection: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("first connection: status %d, want 200", resp.StatusCode)
	}
}

func TestBadHeaderFraming(t *testing.T) {
	tests := []struct {
		raw  string
		want bool
	}{
		{"Host: x\r\nAuthorization: Bearer k\r\n\r\n", false},
		{"Host: x\r\n", false},
		{"", false},
		{"Host: x\nInjected: y\r\n\r\n", true},
		{"Host: x\r\nX-A: a\r\n folded\r\n\r\n", true},
		{"Host: x\r\nX-A: a\r\n\tfolded\r\n\r\n", true},
		{"\nHost: x\r\n", true},
	}
	for _, tt := range tests {
		if got := badHeaderFraming([]byte(tt.raw)); got != tt.want {
			t.Errorf("badHeaderFraming(%q) = %v, want %v", tt.raw, got, tt.want)
		}
	}
}
