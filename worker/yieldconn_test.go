package worker

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// TestYieldConn: accepted connections keep working both ways through the wrapper, and
// stay syscall.Conns, so a client that goes away mid-request is still noticed
// (watchDisconnect cancels the upstream call).
func TestYieldConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	yl := yieldListener{ln}
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	sc, err := yl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if _, ok := sc.(*yieldConn); !ok {
		t.Fatalf("accepted %T, want *yieldConn", sc)
	}

	// Two keep-alive rounds: request in, answer out, then the next read.
	buf := make([]byte, 16)
	for _, msg := range []string{"first", "second"} {
		if _, err := client.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		n, err := io.ReadAtLeast(sc, buf, len(msg))
		if err != nil || string(buf[:n]) != msg {
			t.Fatalf("server read %q, %v; want %q", buf[:n], err, msg)
		}
		if _, err := sc.Write([]byte("ok:" + msg)); err != nil {
			t.Fatal(err)
		}
		n, err = io.ReadAtLeast(client, buf, len("ok:"+msg))
		if err != nil || string(buf[:n]) != "ok:"+msg {
			t.Fatalf("client read %q, %v", buf[:n], err)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch := watchDisconnect(sc, cancel)
	if watch == nil {
		t.Fatal("watchDisconnect: nil watch, the wrapped connection hides its socket")
	}
	defer watch.stop()
	client.Close()
	select {
	case <-ctx.Done():
	case <-time.After(5 * disconnectPoll):
		t.Fatal("client close not noticed through the wrapped connection")
	}
	if !watch.gone() {
		t.Error("watch.gone() = false after the client closed")
	}
}
