package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestRollUnderLoad: SIGHUP (reload and roll) and then SIGUSR2 (roll onto the binary on
// disk) while keep-alive clients send non-streaming requests and 20 streams are open. No
// request fails, every stream ends with [DONE], and request_logs ends up with exactly the
// completed requests.
func TestRollUnderLoad(t *testing.T) {
	const streams = 20
	g, key := coordGateway(t, 2, fastCoordination(nil))
	l := g.startLoad(t, key, loadOptions{clients: 6})
	l.waitServed(t, 200, 10*time.Second)

	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR2} {
		t.Run(sig.String(), func(t *testing.T) {
			rollsBefore := len(g.logLines(t, "llm-proxy.log", "rolling restart done"))
			// 40 chunks 100 ms apart: each stream lasts about 4 s, longer than the roll.
			var wg sync.WaitGroup
			var started sync.WaitGroup
			var doneCount atomic.Int32
			errs := make(chan error, streams)
			started.Add(streams)
			for i := 0; i < streams; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					id, err := openStream(g, key, started.Done)
					l.add(id)
					if err != nil {
						errs <- fmt.Errorf("stream %d: %w", i, err)
						return
					}
					doneCount.Add(1)
				}()
			}
			waitGroupTimeout(t, &started, 10*time.Second, "20 streams carrying their first chunk")
			if err := g.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			sigAt := time.Now()
			deadline := time.Now().Add(20 * time.Second)
			for len(g.logLines(t, "llm-proxy.log", "rolling restart done")) == rollsBefore {
				if time.Now().After(deadline) {
					t.Fatalf("no \"rolling restart done\" within 20s of %s", sig)
				}
				time.Sleep(20 * time.Millisecond)
			}
			rolledIn := time.Since(sigAt)
			openAtRollEnd := streams - int(doneCount.Load())
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if openAtRollEnd == 0 {
				t.Errorf("every stream had ended when the roll finished (%s); they did not span it", rolledIn)
			}
			if n := doneCount.Load(); n != streams {
				t.Errorf("%d/%d streams ended with [DONE]", n, streams)
			}
			t.Logf("%s: roll done in %s with %d streams still open; %d/%d streams ended with [DONE]",
				sig, rolledIn.Round(time.Millisecond), openAtRollEnd, doneCount.Load(), streams)
			l.waitServed(t, 100, 10*time.Second)
		})
	}
	l.halt()
	for _, f := range l.failures() {
		t.Errorf("client %d: request failed during the rolls: %v", f.client, f.err)
	}
	g.stopGracefully(t)
	compareIDs(t, l.seen(), g.requestIDs(t), 0, "")
	t.Logf("%d non-streaming requests served across both rolls, %d failed", l.served.Load(), len(l.failures()))
}

// openStream runs one streaming chat of 40 chunks 100 ms apart on its own connection,
// calls first once the first chunk arrived, and returns an error unless the stream ended
// with [DONE] after the whole answer.
func openStream(g *gateway, key string, first func()) (id string, err error) {
	firstDone := false
	defer func() {
		if !firstDone {
			first()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	body := `{"model":"mock-1@chunks=40,delay=100ms","stream":true,"messages":[{"role":"user","content":"roll"}]}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.baseURL()+"/chat/completions", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	hc := freshClient(0)
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	id = resp.Header.Get("X-Request-Id")
	if resp.StatusCode != http.StatusOK {
		return id, fmt.Errorf("status %d", resp.StatusCode)
	}
	br := bufio.NewReader(resp.Body)
	events := 0
	for {
		line, err := br.ReadString('\n')
		if data, ok := strings.CutPrefix(line, "data:"); ok {
			data = strings.TrimSpace(data)
			if data == "[DONE]" {
				if events < 40 {
					return id, fmt.Errorf("[DONE] after only %d events", events)
				}
				return id, nil
			}
			if strings.Contains(data, `"error"`) {
				return id, fmt.Errorf("error event %s", data)
			}
			events++
			if !firstDone {
				firstDone = true
				first()
			}
		}
		if err != nil {
			return id, fmt.Errorf("stream ended without [DONE] after %d events: %w", events, err)
		}
	}
}

func waitGroupTimeout(t *testing.T, wg *sync.WaitGroup, d time.Duration, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s: not within %s", what, d)
	}
}
