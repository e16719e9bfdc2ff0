package upstream

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// rawServer is a TCP server on 127.0.0.1 whose handler owns each connection,
// so tests can misbehave at the byte level. It counts accepted connections and
// the requests its handlers read with readRequest.
type rawServer struct {
	ln       net.Listener
	accepts  atomic.Int64
	requests atomic.Int64
	// closed receives the time a handler saw its connection closed by the
	// client (a read returning an error), when the handler waits for it.
	closed chan time.Time

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

// newRawServer starts a server calling handle(s, conn, reader, n) for the
// n-th accepted connection (from 1).
func newRawServer(t *testing.T, handle func(s *rawServer, c net.Conn, br *bufio.Reader, n int64)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln, closed: make(chan time.Time, 16)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := s.accepts.Add(1)
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				handle(s, c, bufio.NewReader(c), n)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *rawServer) url() string { return "http://" + s.ln.Addr().String() }

// readRequest reads one request with its body and counts it.
func (s *rawServer) readRequest(br *bufio.Reader) (*http.Request, []byte, error) {
	r, err := http.ReadRequest(br)
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, nil, err
	}
	s.requests.Add(1)
	return r, body, nil
}

// waitClosed blocks until the client closes c and reports when that was seen.
func (s *rawServer) waitClosed(c net.Conn, br *bufio.Reader) {
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.Copy(io.Discard, br)
	s.closed <- time.Now()
}

// okHandler answers every request on the connection with a fixed body.
func okHandler(body string) func(s *rawServer, c net.Conn, br *bufio.Reader, n int64) {
	return func(s *rawServer, c net.Conn, br *bufio.Reader, n int64) {
		for {
			if _, _, err := s.readRequest(br); err != nil {
				return
			}
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+itoa(len(body))+"\r\n\r\n"+body); err != nil {
				return
			}
		}
	}
}

func itoa(n int) string {
	var b [20]byte
	return string(fasthttp.AppendUint(b[:0], n))
}

// httpServer is an httptest server that counts accepted connections.
type httpServer struct {
	*httptest.Server
	accepts atomic.Int64
	active  atomic.Int64
	// maxActive is the most connections open at once.
	maxActive atomic.Int64
}

func newHTTPServer(t *testing.T, tlsOn bool, h http.HandlerFunc) *httpServer {
	t.Helper()
	s := &httpServer{}
	s.Server = httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			s.accepts.Add(1)
			n := s.active.Add(1)
			for {
				m := s.maxActive.Load()
				if n <= m || s.maxActive.CompareAndSwap(m, n) {
					break
				}
			}
		case http.StateClosed, http.StateHijacked:
			s.active.Add(-1)
		}
	}
	if tlsOn {
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

// newRequest builds a POST (or method) request to url with body.
func newRequest(t testing.TB, method, url, body string) *fasthttp.Request {
	t.Helper()
	req := fasthttp.AcquireRequest()
	req.Header.SetMethod(method)
	req.SetRequestURI(url)
	if body != "" {
		req.Header.SetContentType("application/json")
		req.SetBodyString(body)
	}
	t.Cleanup(func() { fasthttp.ReleaseRequest(req) })
	return req
}

func newResponse(t testing.TB) *fasthttp.Response {
	t.Helper()
	resp := fasthttp.AcquireResponse()
	t.Cleanup(func() { fasthttp.ReleaseResponse(resp) })
	return resp
}

// doBuffered runs one non-stream request and returns status and body.
func doBuffered(t *testing.T, c *Client, method, url, body string) (int, string, error) {
	t.Helper()
	req := newRequest(t, method, url, body)
	resp := newResponse(t)
	s, err := c.Do(context.Background(), req, resp, false)
	if s != nil {
		t.Fatalf("Do(stream=false) returned a Stream")
	}
	if err != nil {
		return 0, "", err
	}
	return resp.StatusCode(), string(resp.Body()), nil
}

// within fails the test unless got is at most limit.
func within(t *testing.T, what string, got, limit time.Duration) {
	t.Helper()
	if got > limit {
		t.Errorf("%s took %v, want at most %v", what, got, limit)
	}
}

// recvClosed waits for the server to report a closed connection.
func recvClosed(t *testing.T, s *rawServer) time.Time {
	t.Helper()
	select {
	case at := <-s.closed:
		return at
	case <-time.After(5 * time.Second):
		t.Fatal("server never saw the connection close")
		return time.Time{}
	}
}
