package upstream

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

const (
	benchReqBody  = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in one short sentence, please."}],"max_tokens":16}`
	benchRespBody = `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}`
)

// benchServerEnv makes the test binary a benchmark upstream (see TestMain).
const benchServerEnv = "LLM_PROXY_UPSTREAM_BENCH_SERVER"

// TestMain runs the benchmark upstream when the test binary is started as
// one: a fasthttp server on 127.0.0.1 answering every request with
// benchRespBody, in its own process so that the benchmark's CPU time is the
// client's alone. It prints its address and serves until stdin closes.
func TestMain(m *testing.M) {
	if os.Getenv(benchServerEnv) == "" {
		m.Run()
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			ctx.SetContentType("application/json")
			ctx.SetBodyString(benchRespBody)
		},
	}
	go func() { _ = srv.Serve(ln) }()
	fmt.Println(ln.Addr().String())
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = srv.Shutdown()
}

// startFastServer starts the benchmark upstream process and returns its URL.
func startFastServer(b *testing.B) string {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchServerEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("benchmark upstream: %v", err)
	}
	return "http://" + strings.TrimSpace(addr) + "/v1/chat/completions"
}

// cpuTime is the process's user plus system CPU time.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the client's CPU time per request, the number that
// matters for a gateway (ns/op is mostly loopback latency).
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/op")
}

// BenchmarkDo compares this client with net/http's Transport on the same
// non-stream request over a reused connection. "upstream/cancel-ctx" is the
// gateway's case: a cancellable context, so context.AfterFunc is registered.
func BenchmarkDo(b *testing.B) {
	url := startFastServer(b)

	b.Run("upstream", func(b *testing.B) {
		benchUpstream(b, url, context.Background())
	})
	b.Run("upstream/cancel-ctx", func(b *testing.B) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		benchUpstream(b, url, ctx)
	})
	b.Run("net-http", func(b *testing.B) {
		tr := &http.Transport{
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		body := []byte(benchReqBody)
		var rd bytes.Reader
		var out bytes.Buffer
		b.ReportAllocs()
		cpu0 := cpuTime(b)
		for b.Loop() {
			rd.Reset(body)
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, &rd)
			if err != nil {
				b.Fatal(err)
			}
			req.Header = http.Header{"Content-Type": {"application/json"}}
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			out.Reset()
			_, err = out.ReadFrom(resp.Body)
			resp.Body.Close()
			if err != nil || out.Len() != len(benchRespBody) {
				b.Fatalf("read %d bytes: %v", out.Len(), err)
			}
		}
		reportCPU(b, cpu0)
	})
}

func benchUpstream(b *testing.B, url string, ctx context.Context) {
	c := New(Config{})
	defer c.CloseIdle()
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	body := []byte(benchReqBody)
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	for b.Loop() {
		req.Reset()
		req.Header.SetMethod(fasthttp.MethodPost)
		req.SetRequestURI(url)
		req.Header.SetContentType("application/json")
		req.SetBodyRaw(body)
		if _, err := c.Do(ctx, req, resp, false); err != nil {
			b.Fatal(err)
		}
		if len(resp.Body()) != len(benchRespBody) {
			b.Fatalf("read %d bytes", len(resp.Body()))
		}
	}
	reportCPU(b, cpu0)
}

// BenchmarkDoStream measures the stream path: Do, read to EOF, Close.
func BenchmarkDoStream(b *testing.B) {
	url := startFastServer(b)
	c := New(Config{})
	defer c.CloseIdle()
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	buf := make([]byte, 4096)
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	for b.Loop() {
		req.Reset()
		req.Header.SetMethod(fasthttp.MethodPost)
		req.SetRequestURI(url)
		req.SetBodyString(benchReqBody)
		s, err := c.Do(ctx, req, resp, true)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			k, err := s.Read(buf)
			n += k
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		s.Close()
		if n != len(benchRespBody) {
			b.Fatalf("read %d bytes", n)
		}
	}
	reportCPU(b, cpu0)
}

// BenchmarkDoParallel is BenchmarkDo with 8 requests in flight per CPU, where
// net/http's per-connection goroutines hand every request over twice.
func BenchmarkDoParallel(b *testing.B) {
	url := startFastServer(b)
	body := []byte(benchReqBody)
	b.Run("upstream", func(b *testing.B) {
		c := New(Config{})
		defer c.CloseIdle()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		b.ReportAllocs()
		b.SetParallelism(8)
		cpu0 := cpuTime(b)
		b.RunParallel(func(pb *testing.PB) {
			req := fasthttp.AcquireRequest()
			resp := fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for pb.Next() {
				req.Reset()
				req.Header.SetMethod(fasthttp.MethodPost)
				req.SetRequestURI(url)
				req.Header.SetContentType("application/json")
				req.SetBodyRaw(body)
				if _, err := c.Do(ctx, req, resp, false); err != nil || len(resp.Body()) != len(benchRespBody) {
					b.Errorf("Do: %v", err)
					return
				}
			}
		})
		reportCPU(b, cpu0)
	})
	b.Run("net-http", func(b *testing.B) {
		tr := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		b.ReportAllocs()
		b.SetParallelism(8)
		cpu0 := cpuTime(b)
		b.RunParallel(func(pb *testing.PB) {
			var rd bytes.Reader
			var out bytes.Buffer
			for pb.Next() {
				rd.Reset(body)
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, &rd)
				if err != nil {
					b.Error(err)
					return
				}
				req.Header = http.Header{"Content-Type": {"application/json"}}
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				out.Reset()
				_, err = out.ReadFrom(resp.Body)
				resp.Body.Close()
				if err != nil || out.Len() != len(benchRespBody) {
					b.Errorf("read %d bytes: %v", out.Len(), err)
					return
				}
			}
		})
		reportCPU(b, cpu0)
	})
}
