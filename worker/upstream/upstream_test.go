package upstream

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/valyala/fasthttp"
)

func TestKeepAliveAndConnectionClose(t *testing.T) {
	const n = 5
	tests := []struct {
		name        string
		handler     http.HandlerFunc
		reqClose    bool
		wantBody    string
		wantAccepts int64
	}{
		{"content-length reused", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hello")
		}, false, "hello", 1},
		{"chunked reused", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hel")
			w.(http.Flusher).Flush()
			io.WriteString(w, "lo")
		}, false, "hello", 1},
		{"response Connection: close", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			io.WriteString(w, "hello")
		}, false, "hello", n},
		{"request Connection: close", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hello")
		}, true, "hello", n},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newHTTPServer(t, false, tt.handler)
			c := New(Config{})
			defer c.CloseIdle()
			for i := 0; i < n; i++ {
				req := newRequest(t, "POST", srv.URL+"/v1/x", `{"a":1}`)
				if tt.reqClose {
					req.SetConnectionClose()
				}
				resp := newResponse(t)
				if _, err := c.Do(context.Background(), req, resp, false); err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				if got := string(resp.Body()); got != tt.wantBody {
					t.Fatalf("body = %q, want %q", got, tt.wantBody)
				}
			}
			if got := srv.accepts.Load(); got != tt.wantAccepts {
				t.Errorf("server accepted %d connections, want %d", got, tt.wantAccepts)
			}
		})
	}
}

func TestBodiesBufferedAndStreamed(t *testing.T) {
	large := strings.Repeat("0123456789abcdef", 1<<19) // 8 MiB
	tests := []struct {
		name    string
		body    string
		chunked bool
	}{
		{"empty content-length", "", false},
		{"small content-length", `{"id":"x"}`, false},
		{"small chunked", `{"id":"x"}`, true},
		{"large content-length", large, false},
		{"large chunked", large, true},
	}
	for _, tt := range tests {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s stream=%v", tt.name, stream), func(t *testing.T) {
				srv := newHTTPServer(t, false, func(w http.ResponseWriter, r *http.Request) {
					got, _ := io.ReadAll(r.Body)
					if string(got) != "request-body" {
						http.Error(w, "bad request body "+string(got), 400)
						return
					}
					if !tt.chunked {
						w.Header().Set("Content-Length", itoa(len(tt.body)))
					}
					// Write in pieces so chunked framing spans many chunks.
					for b := tt.body; len(b) > 0; {
						k := min(len(b), 100000)
						io.WriteString(w, b[:k])
						if tt.chunked {
							w.(http.Flusher).Flush()
						}
						b = b[k:]
					}
				})
				c := New(Config{})
				defer c.CloseIdle()
				for i := 0; i < 2; i++ { // the second runs on the reused connection
					req := newRequest(t, "POST", srv.URL, "request-body")
					resp := newResponse(t)
					s, err := c.Do(context.Background(), req, resp, stream)
					if err != nil {
						t.Fatal(err)
					}
					var got []byte
					if stream {
						got, err = io.ReadAll(s)
						s.Close()
						if err != nil {
							t.Fatal(err)
						}
					} else {
						got = resp.Body()
					}
					if resp.StatusCode() != 200 || string(got) != tt.body {
						t.Fatalf("status %d, body of %d bytes (want %d)", resp.StatusCode(), len(got), len(tt.body))
					}
				}
				if got := srv.accepts.Load(); got != 1 {
					t.Errorf("accepts = %d, want 1 (connection reused after a fully read body)", got)
				}
			})
		}
	}
}

func TestStreamDeliversChunksAsTheyArrive(t *testing.T) {
	const gap = 300 * time.Millisecond
	srv := newHTTPServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range []string{"data: 1\n\n", "data: 2\n\n", "data: [DONE]\n\n"} {
			io.WriteString(w, ev)
			w.(http.Flusher).Flush()
			time.Sleep(gap)
		}
	})
	c := New(Config{})
	defer c.CloseIdle()
	req := newRequest(t, "POST", srv.URL, "{}")
	resp := newResponse(t)
	start := time.Now()
	s, err := c.Do(context.Background(), req, resp, true)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := string(resp.Header.ContentType()); got != "text/event-stream" {
		t.Errorf("Content-Type = %q", got)
	}
	buf := make([]byte, 4096)
	var got []string
	var at []time.Duration
	for {
		n, err := s.Read(buf)
		if n > 0 {
			got = append(got, string(buf[:n]))
			at = append(at, time.Since(start))
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"data: 1\n\n", "data: 2\n\n", "data: [DONE]\n\n"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("reads = %q, want %q", got, want)
	}
	// Each event must be readable about when it was sent, not buffered until
	// the next one or the end.
	for i, d := range at {
		sent := time.Duration(i) * gap
		if d < sent || d > sent+gap/2 {
			t.Errorf("event %d read at %v, sent at %v", i, d, sent)
		}
	}
}

func TestCancel(t *testing.T) {
	tests := []struct {
		name string
		// respond is what the server sends before hanging.
		respond string
		stream  bool
	}{
		{"before headers", "", false},
		{"before headers stream", "", true},
		{"mid-stream", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n", true},
		{"mid buffered body", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan struct{})
			srv := newRawServer(t, func(s *rawServer, c net.Conn, br *bufio.Reader, n int64) {
				if _, _, err := s.readRequest(br); err != nil {
					return
				}
				io.WriteString(c, tt.respond)
				close(got)
				s.waitClosed(c, br)
			})
			c := New(Config{})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var canceledAt time.Time
			go func() {
				<-got
				if tt.respond == "" || !tt.stream {
					time.Sleep(50 * time.Millisecond)
					canceledAt = time.Now()
					cancel()
				}
			}()
			req := newRequest(t, "POST", srv.url(), "{}")
			resp := newResponse(t)
			s, err := c.Do(ctx, req, resp, tt.stream)
			if err == nil {
				// Mid-stream: the headers and the first chunk are here.
				buf := make([]byte, 64)
				n, rerr := s.Read(buf)
				if rerr != nil || string(buf[:n]) != "first" {
					t.Fatalf("first read = %q, %v", buf[:n], rerr)
				}
				canceledAt = time.Now()
				cancel()
				_, err = s.Read(buf)
				s.Close()
			}
			returned := time.Since(canceledAt)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
			if errors.Is(err, ErrDial) || isTimeout(err) {
				t.Errorf("cancellation looks like a dial error or timeout: %v", err)
			}
			within(t, "returning after cancel", returned, 100*time.Millisecond)
			within(t, "server seeing the close", recvClosed(t, srv).Sub(canceledAt), 100*time.Millisecond)
		})
	}
}

func TestResponseHeaderTimeout(t *testing.T) {
	srv := newRawServer(t, func(s *rawServer, c net.Conn, br *bufio.Reader, n int64) {
		if _, _, err := s.readRequest(br); err != nil {
			return
		}
		s.waitClosed(c, br)
	})
	c := New(Config{ResponseHeaderTimeout: 150 * time.Millisecond})
	start := time.Now()
	_, _, err := doBuffered(t, c, "POST", srv.url(), "{}")
	took := time.Since(start)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if errors.Is(err, ErrDial) || errors.Is(err, context.Canceled) {
		t.Errorf("timeout classified as dial error or cancel: %v", err)
	}
	if took < 150*time.Millisecond {
		t.Errorf("returned after %v, before the timeout", took)
	}
	within(t, "timeout", took, time.Second)
	recvClosed(t, srv)
	if got := srv.requests.Load(); got != 1 {
		t.Errorf("server got %d requests, want 1 (a timeout is never retried)", got)
	}
}

func TestDialErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()

	tlsSrv := newHTTPServer(t, true, func(w http.ResponseWriter, r *http.Request) {})

	tests := []struct {
		name string
		url  string
	}{
		{"refused", "http://" + closedAddr + "/"},
		{"untrusted certificate", tlsSrv.URL + "/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Config{})
			_, _, err := doBuffered(t, c, "POST", tt.url, "{}")
			if !errors.Is(err, ErrDial) {
				t.Fatalf("err = %v, want ErrDial", err)
			}
			var ne net.Error
			if errors.Is(err, context.Canceled) || (errors.As(err, &ne) && ne.Timeout()) {
				t.Errorf("dial error classified as cancel or timeout: %v", err)
			}
		})
	}
}

func TestTLS(t *testing.T) {
	var mu sync.Mutex
	var protos []string
	srv := newHTTPServer(t, true, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		protos = append(protos, r.Proto+" "+r.TLS.NegotiatedProtocol)
		mu.Unlock()
		io.WriteString(w, "secure")
	})
	roots := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	c := New(Config{RootCAs: roots})
	defer c.CloseIdle()
	for _, stream := range []bool{false, true, false} {
		req := newRequest(t, "POST", srv.URL+"/v1/chat/completions", "{}")
		resp := newResponse(t)
		s, err := c.Do(context.Background(), req, resp, stream)
		if err != nil {
			t.Fatal(err)
		}
		var body []byte
		if stream {
			body, _ = io.ReadAll(s)
			s.Close()
		} else {
			body = resp.Body()
		}
		if string(body) != "secure" {
			t.Fatalf("body = %q", body)
		}
	}
	if got := srv.accepts.Load(); got != 1 {
		t.Errorf("accepts = %d, want 1", got)
	}
	for _, p := range protos {
		if p != "HTTP/1.1 http/1.1" {
			t.Errorf("server saw %q, want HTTP/1.1 over ALPN http/1.1", p)
		}
	}
}

func TestHostHeaderAndNoRedirect(t *testing.T) {
	var gotHost, gotPath string
	srv := newRawServer(t, func(s *rawServer, c net.Conn, br *bufio.Reader, n int64) {
		r, _, err := s.readRequest(br)
		if err != nil {
			return
		}
		gotHost, gotPath = r.Host, r.URL.RequestURI()
		io.WriteString(c, "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/elsewhere\r\nContent-Length: 0\r\n\r\n")
		s.waitClosed(c, br)
	})
	c := New(Config{})
	defer c.CloseIdle()
	status, _, err := doBuffered(t, c, "POST", srv.url()+"/v1/chat/completions?x=1", "{}")
	if err != nil {
		t.Fatal(err)
	}
	if status != 302 {
		t.Errorf("status = %d, want the 302 itself", status)
	}
	if want := srv.ln.Addr().String(); gotHost != want || gotPath != "/v1/chat/completions?x=1" {
		t.Errorf("server saw Host %q path %q, want %q and the request path", gotHost, gotPath, want)
	}
	if got := srv.requests.Load(); got != 1 {
		t.Errorf("requests = %d, want 1", got)
	}
}

// TestStaleConnection covers the one retry: an upstream that closes an idle
// keep-alive connection as the next request arrives.
func TestStaleConnectionRetried(t *testing.T) {
	tests := []struct {
		name  string
		reset bool // close with unread data as a reset, else a FIN after reading it
	}{
		{"EOF", false},
		{"reset", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newRawServer(t, func(s *rawServer, c net.Conn, br *bufio.Reader, n int64) {
				if n > 1 {
					okHandler("second")(s, c, br, n)
					return
				}
				if _, _, err := s.readRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
				// Idle close racing the next request: close once it arrives,
				// without handling it; with linger 0 the close is a reset.
				if _, err := br.Peek(1); err != nil {
					return
				}
				if tt.reset {
					c.(*net.TCPConn).SetLinger(0)
				}
			})
			c := New(Config{})
			defer c.CloseIdle()
			for i, want := range []string{"first", "second"} {
				status, body, err := doBuffered(t, c, "POST", srv.url(), "{}")
				if err != nil || status != 200 || body != want {
					t.Fatalf("request %d: %d %q %v, want 200 %q", i, status, body, err, want)
				}
			}
			if got := c.Retries(); got != 1 {
				t.Errorf("retries = %d, want 1", got)
			}
			if got := srv.requests.Load(); got != 2 {
				t.Errorf("server handled %d requests, want 2", got)
			}
			if got := srv.accepts.Load(); got != 2 {
				t.Errorf("accepts = %d, want 2", got)
			}
		})
	}
}

// TestIdleCloseSeenBeforeReuse: an upstream that closed an idle connection is noticed
// before anything is written when the connection has been idle alivePeekAfter or more
// (no retry), and by the one retry when it was reused sooner (not peeked at).
func TestIdleCloseSeenBeforeReuse(t *testing.T) {
	for _, tt := range []struct {
		name        string
		idle        time.Duration
		wantRetries int64
	}{
		{"idle long enough to be peeked at", alivePeekAfter, 0},
		{"reused at once, not peeked at", 0, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newRawServer(t, func(s *rawServer, c net.Conn, br *bufio.Reader, n int64) {
				if _, _, err := s.readRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				if n == 1 {
					return // closes the idle connection
				}
				okHandler("ok")(s, c, br, n)
			})
			c := New(Config{})
			defer c.CloseIdle()
			var mu sync.Mutex
			now := time.Now()
			c.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
			for i := 0; i < 2; i++ {
				if _, _, err := doBuffered(t, c, "POST", srv.url(), "{}"); err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				time.Sleep(50 * time.Millisecond) // let the FIN arrive
				mu.Lock()
				now = now.Add(tt.idle)
				mu.Unlock()
			}
			if got := c.Retries(); got != tt.wantRetries {
				t.Errorf("retries = %d, want %d", got, tt.wantRetries)
			}
			if got := srv.requests.Load(); got != 2 {
				t.Errorf("requests = %d, want 2 (the closed connection carried nothing)", got)
			}
		})
	}
}

// TestNoRetryAfterUpstreamReadRequest: failures that may mean the upstream
// handled the request are returned, never sent again.
func TestNoRetryAfterUpstreamReadRequest(t *testing.T) {
	tests := []struct {
		name string
		// first answers the warm-up request (connection reused) or "" for a
		// fresh connection.
		warm string
		// then is written after reading the request under test, before closing.
		then         string
		wantRequests int64
	}{
		{"fresh connection, closed without answer", "", "", 1},
		{"reused connection, closed mid-status-line", "ok", "HTTP/1.1 20", 2},
		{"reused connection, closed mid-body", "ok", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newRawServer(t, func(s *rawServer, c net.Conn, br *bufio.Reader, n int64) {
				if tt.warm != "" {
					if _, _, err := s.readRequest(br); err != nil {
						return
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"+tt.warm)
				}
				if _, _, err := s.readRequest(br); err != nil {
					return
				}
				io.WriteString(c, tt.then)
			})
			c := New(Config{})
			defer c.CloseIdle()
			if tt.warm != "" {
				if _, _, err := doBuffered(t, c, "POST", srv.url(), "{}"); err != nil {
					t.Fatal(err)
				}
			}
			_, _, err := doBuffered(t, c, "POST", srv.url(), "{}")
			if err == nil {
				t.Fatal("want an error")
			}
			if errors.Is(err, ErrDial) || errors.Is(err, context.Canceled) || isTimeout(err) {
				t.Errorf("err = %v, want a broken exchange (502)", err)
			}
			if got := srv.requests.Load(); got != tt.wantRequests {
				t.Errorf("server read %d requests, want %d", got, tt.wantRequests)
			}
			if got := c.Retries(); got != 0 {
				t.Errorf("retries = %d, want 0", got)
			}
		})
	}
}

func TestMaxResponseBytes(t *testing.T) {
	body := strings.Repeat("x", 2000)
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			srv := newHTTPServer(t, false, func(w http.ResponseWriter, r *http.Request) {
				if !chunked {
					w.Header().Set("Content-Length", itoa(len(body)))
				}
				io.WriteString(w, body[:1000])
				if chunked {
					w.(http.Flusher).Flush()
				}
				io.WriteString(w, body[1000:])
			})
			c := New(Config{MaxResponseBytes: 1000})
			defer c.CloseIdle()
			_, _, err := doBuffered(t, c, "POST", srv.URL, "{}")
			if !errors.Is(err, fasthttp.ErrBodyTooLarge) {
				t.Fatalf("err = %v, want ErrBodyTooLarge", err)
			}
			// A stream is not bounded.
			req := newRequest(t, "POST", srv.URL, "{}")
			resp := newResponse(t)
			s, err := c.Do(context.Background(), req, resp, true)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(s)
			s.Close()
			if err != nil || len(got) != len(body) {
				t.Fatalf("stream read %d bytes, %v", len(got), err)
			}
			if got := srv.accepts.Load(); got != 2 {
				t.Errorf("accepts = %d, want 2 (the connection with the refused body is closed)", got)
			}
		})
	}
}

func TestStreamNotReadToEndClosesConnection(t *testing.T) {
	srv := newHTTPServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		// The rest comes later, after the client has given up on the body.
		time.Sleep(50 * time.Millisecond)
		io.WriteString(w, "rest")
	})
	c := New(Config{})
	defer c.CloseIdle()
	for i := 0; i < 3; i++ {
		req := newRequest(t, "POST", srv.URL, "{}")
		resp := newResponse(t)
		s, err := c.Do(context.Background(), req, resp, true)
		if err != nil {
			t.Fatal(err)
		}
		// Read exactly the first chunk: nothing of the body is left buffered,
		// the rest is still to come.
		buf := make([]byte, 64)
		n, err := s.Read(buf)
		if err != nil || string(buf[:n]) != "partial" {
			t.Fatalf("first read = %q, %v", buf[:n], err)
		}
		s.Close()
		if _, err := s.Read(buf); err == nil {
			t.Fatal("Read after Close succeeded")
		}
	}
	if got := srv.accepts.Load(); got != 3 {
		t.Errorf("accepts = %d, want 3", got)
	}
}

func TestIdleTimeout(t *testing.T) {
	srv := newRawServer(t, func(s *rawServer, c net.Conn, br *bufio.Reader, n int64) {
		okHandler("ok")(s, c, br, n)
		s.closed <- time.Now()
	})
	const idle = 200 * time.Millisecond
	c := New(Config{IdleTimeout: idle})
	defer c.CloseIdle()
	if _, _, err := doBuffered(t, c, "POST", srv.url(), "{}"); err != nil {
		t.Fatal(err)
	}
	done := time.Now()
	// The reaper closes the idle connection without any further request.
	closedAt := recvClosed(t, srv)
	if d := closedAt.Sub(done); d < idle || d > 3*idle {
		t.Errorf("idle connection closed after %v, want between %v and %v", d, idle, 3*idle)
	}
	if _, _, err := doBuffered(t, c, "POST", srv.url(), "{}"); err != nil {
		t.Fatal(err)
	}
	if got := srv.accepts.Load(); got != 2 {
		t.Errorf("accepts = %d, want 2", got)
	}
}

// TestIdleExpiryOnReuse: a connection idle past IdleTimeout is not reused
// even when the reaper has not run yet.
func TestIdleExpiryOnReuse(t *testing.T) {
	srv := newRawServer(t, func(s *rawServer, c net.Conn, br *bufio.Reader, n int64) {
		okHandler("ok")(s, c, br, n)
		s.closed <- time.Now()
	})
	c := New(Config{IdleTimeout: time.Hour})
	defer c.CloseIdle()
	var mu sync.Mutex
	now := time.Now()
	c.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	for i, age := range []time.Duration{0, 59 * time.Minute, 61 * time.Minute} {
		mu.Lock()
		now = now.Add(age)
		mu.Unlock()
		if _, _, err := doBuffered(t, c, "POST", srv.url(), "{}"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if got := srv.accepts.Load(); got != 2 {
		t.Errorf("accepts = %d, want 2 (reused at 59m idle, replaced at 61m)", got)
	}
	recvClosed(t, srv) // the expired connection was closed, not just dropped
}

func TestMaxConnsPerHostWaits(t *testing.T) {
	srv := newHTTPServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})
	c := New(Config{MaxConnsPerHost: 1})
	defer c.CloseIdle()
	req := newRequest(t, "POST", srv.URL, "{}")
	resp := newResponse(t)
	s, err := c.Do(context.Background(), req, resp, true)
	if err != nil {
		t.Fatal(err)
	}
	// The only connection is busy: a second request waits until its context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req2 := newRequest(t, "POST", srv.URL, "{}")
	resp2 := newResponse(t)
	if _, err := c.Do(ctx, req2, resp2, false); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded while waiting for a connection", err)
	}
	// A waiter gets the connection as soon as the stream ends.
	result := make(chan error, 1)
	go func() {
		_, err := c.Do(context.Background(), req2, resp2, false)
		result <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if _, err := io.ReadAll(s); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := <-result; err != nil || string(resp2.Body()) != "ok" {
		t.Fatalf("waiting request: %q %v", resp2.Body(), err)
	}
	if got := srv.accepts.Load(); got != 1 {
		t.Errorf("accepts = %d, want 1", got)
	}
}

func TestConcurrentUse(t *testing.T) {
	const maxConns = 4
	srv := newHTTPServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Query().Get("chunked") != "" {
			w.Write(b[:1])
			w.(http.Flusher).Flush()
			w.Write(b[1:])
			return
		}
		w.Write(b)
	})
	c := New(Config{MaxConnsPerHost: maxConns})
	defer c.CloseIdle()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 40; i++ {
				stream := (g+i)%2 == 0
				url := srv.URL
				if i%3 == 0 {
					url += "/?chunked=1"
				}
				want := fmt.Sprintf("g%d-i%d", g, i)
				req := fasthttp.AcquireRequest()
				resp := fasthttp.AcquireResponse()
				req.Header.SetMethod("POST")
				req.SetRequestURI(url)
				req.SetBodyString(want)
				s, err := c.Do(context.Background(), req, resp, stream)
				var got []byte
				if err == nil && stream {
					got, err = io.ReadAll(s)
					s.Close()
				} else if err == nil {
					got = resp.Body()
				}
				if err == nil && !bytes.Equal(got, []byte(want)) {
					err = fmt.Errorf("body %q, want %q", got, want)
				}
				fasthttp.ReleaseRequest(req)
				fasthttp.ReleaseResponse(resp)
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := srv.maxActive.Load(); got > maxConns {
		t.Errorf("server saw %d connections open at once, want at most %d", got, maxConns)
	}
}

func TestBadRequests(t *testing.T) {
	c := New(Config{})
	tests := []struct{ name, url string }{
		{"unknown scheme", "ftp://127.0.0.1:1/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := doBuffered(t, c, "POST", tt.url, "{}")
			if err == nil {
				t.Fatal("want an error")
			}
		})
	}
	// An already cancelled context fails before dialling.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Do(ctx, newRequest(t, "POST", "http://127.0.0.1:1/", "{}"), newResponse(t), false)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrDial) {
		t.Errorf("err = %v, want context.Canceled and not ErrDial", err)
	}
}

// TestConfigTags: the envconfig defaults are the ones New applies to zero
// fields, so an unset environment and a zero Config behave the same.
func TestConfigTags(t *testing.T) {
	var fromEnv Config
	if err := envconfig.Process("LLM_PROXY_UPSTREAM_TEST_UNSET", &fromEnv); err != nil {
		t.Fatal(err)
	}
	got, want := fromEnv.withDefaults(), Config{}.withDefaults()
	if got != want {
		t.Errorf("envconfig defaults %+v, want %+v", got, want)
	}
	if fromEnv != want {
		t.Errorf("envconfig gives %+v before defaults, want the same values %+v", fromEnv, want)
	}
}

func TestTLSCancel(t *testing.T) {
	serverSawClose := make(chan time.Time, 1)
	srv := newHTTPServer(t, true, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // the server notices the client's close
		serverSawClose <- time.Now()
	})
	roots := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	c := New(Config{RootCAs: roots})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := c.Do(ctx, newRequest(t, "POST", srv.URL, "{}"), newResponse(t), true)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	buf := make([]byte, 64)
	if n, err := s.Read(buf); err != nil || string(buf[:n]) != "data: 1\n\n" {
		t.Fatalf("first read = %q, %v", buf[:n], err)
	}
	canceledAt := time.Now()
	cancel()
	_, err = s.Read(buf)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	within(t, "read returning after cancel", time.Since(canceledAt), 100*time.Millisecond)
	select {
	case at := <-serverSawClose:
		within(t, "server seeing the close", at.Sub(canceledAt), 500*time.Millisecond)
	case <-time.After(5 * time.Second):
		t.Fatal("server never saw the close")
	}
}
