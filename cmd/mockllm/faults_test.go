package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestStatusFaults(t *testing.T) {
	_, base := startServer(t, nil)
	tests := []struct {
		name       string
		model      string
		header     string
		wantStatus int
		wantType   string
		wantCode   string // "" means null
		wantRetry  string
	}{
		{"429 by header", "gpt-4o", "status=429,retry_after=2", 429, "requests", "rate_limit_exceeded", "2"},
		{"503 by model", "gpt-4o@status=503,retry_after=7", "", 503, "server_error", "", "7"},
		{"500 no retry", "gpt-4o@status=500", "", 500, "server_error", "", ""},
		{"401", "gpt-4o", "status=401", 401, "invalid_request_error", "invalid_api_key", ""},
		{"both merged", "gpt-4o@retry_after=3", "status=502", 502, "server_error", "", "3"},
	}
	for _, tt := range tests {
		for _, stream := range []bool{false, true} {
			name := tt.name
			if stream {
				name += " stream"
			}
			t.Run(name, func(t *testing.T) {
				body, _ := json.Marshal(map[string]any{"model": tt.model, "stream": stream, "messages": []any{}})
				resp, b := do(t, "POST", base+"/v1/chat/completions", string(body), map[string]string{"X-Mock-Fault": tt.header})
				if resp.StatusCode != tt.wantStatus || resp.Header.Get("Retry-After") != tt.wantRetry {
					t.Errorf("status %d Retry-After %q, want %d %q", resp.StatusCode, resp.Header.Get("Retry-After"), tt.wantStatus, tt.wantRetry)
				}
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q", ct)
				}
				var e errorBody
				decodeJSON(t, b, &e)
				gotCode := ""
				if e.Error != nil && e.Error.Code != nil {
					gotCode = *e.Error.Code
				}
				if e.Error == nil || e.Error.Type != tt.wantType || gotCode != tt.wantCode || e.Error.Message == "" {
					t.Errorf("body = %s, want type %q code %q", b, tt.wantType, tt.wantCode)
				}
			})
		}
	}
}

func TestHangRecordsClientClose(t *testing.T) {
	_, base := startServer(t, nil)
	for _, path := range []string{"/v1/chat/completions", "/v1/embeddings"} {
		t.Run(path, func(t *testing.T) {
			do(t, "DELETE", base+"/debug/requests", "", nil)
			ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "POST", base+path,
				strings.NewReader(`{"model":"gpt-4o@hang","messages":[],"input":"x"}`))
			start := time.Now()
			_, err := http.DefaultClient.Do(req)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want deadline exceeded (no answer)", err)
			}
			waitFor(t, time.Second, "client_closed recorded", func() bool {
				got := requestsSince(t, base)
				return len(got) == 1 && got[0].ClientClosed && !got[0].InFlight
			})
			e := requestsSince(t, base)[0]
			if e.Status != 0 || e.Completed || e.ClosedAfterMS < 140 || e.ClosedAfterMS > time.Since(start).Seconds()*1000 {
				t.Errorf("entry = %+v, want no status, closed after ~150ms", e)
			}
			_, b := do(t, "GET", base+"/debug/stats", "", nil)
			var st stats
			decodeJSON(t, b, &st)
			if st.ClientClosed != 1 || st.InFlight != 0 {
				t.Errorf("stats = %+v, want client_closed 1, in_flight 0", st)
			}
		})
	}
}

func TestHangIsInFlight(t *testing.T) {
	s, base := startServer(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/chat/completions", strings.NewReader(`{"model":"m","messages":[]}`))
		req.Header.Set("X-Mock-Fault", "hang")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	// While it hangs, the request is listed with its body and counted.
	waitFor(t, time.Second, "hanging request in flight", func() bool {
		got := requestsSince(t, base)
		return len(got) == 1 && got[0].Fault == "hang" && got[0].InFlight && got[0].Body == `{"model":"m","messages":[]}`
	})
	_, b := do(t, "GET", base+"/debug/stats", "", nil)
	var st stats
	decodeJSON(t, b, &st)
	if st.InFlight != 1 {
		t.Errorf("in_flight = %d, want 1", st.InFlight)
	}
	// Close (as on SIGTERM) answers hanging requests with 503.
	s.Close()
	waitFor(t, time.Second, "hang ended by Close", func() bool {
		got := requestsSince(t, base)
		return len(got) == 1 && !got[0].InFlight && got[0].Status == 503 && got[0].Completed
	})
}

func TestSlowFirst(t *testing.T) {
	_, base := startServer(t, nil)
	tests := []struct {
		fault  string
		stream bool
	}{
		{"slow_first=120ms", true},
		{"slow_first=0.12", false},
		{"latency=120ms", false},
		{"latency=120ms", true},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest("POST", base+"/v1/chat/completions",
			strings.NewReader(`{"model":"m","messages":[],"stream":`+map[bool]string{true: "true", false: "false"}[tt.stream]+`}`))
		req.Header.Set("X-Mock-Fault", tt.fault)
		start := time.Now()
		resp, err := http.DefaultClient.Do(req) // returns once headers arrive
		if err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got < 120*time.Millisecond || got > 2*time.Second {
			t.Errorf("%s stream=%v: headers after %v, want >= 120ms", tt.fault, tt.stream, got)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), "request.") {
			t.Errorf("%s: status %d body %s", tt.fault, resp.StatusCode, b)
		}
	}

	// A client that gives up during slow_first is recorded as closed.
	do(t, "DELETE", base+"/debug/requests", "", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/chat/completions", strings.NewReader(`{"model":"m@slow_first=5s","messages":[]}`))
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("want timeout")
	}
	waitFor(t, time.Second, "client_closed during slow_first", func() bool {
		got := requestsSince(t, base)
		return len(got) == 1 && got[0].ClientClosed && got[0].Status == 0
	})
}

func TestCut(t *testing.T) {
	_, base := startServer(t, nil)
	tests := []struct {
		path, fault string
		wantChunks  int
	}{
		{"/v1/chat/completions", "cut=3", 3},
		{"/v1/chat/completions", "cut=0", 0},
		{"/v1/chat/completions", "chunks=2,cut=5", 2}, // past the end: no finish chunk either
		{"/v1/completions", "cut=4", 4},
	}
	for _, tt := range tests {
		t.Run(tt.path+" "+tt.fault, func(t *testing.T) {
			do(t, "DELETE", base+"/debug/requests", "", nil)
			resp, got := streamRequest(t, base+tt.path, `{"model":"m","stream":true,"messages":[],"prompt":"p"}`, map[string]string{"X-Mock-Fault": tt.fault})
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if !errors.Is(got.err, io.ErrUnexpectedEOF) {
				t.Errorf("stream ended with %v, want unexpected EOF (connection cut)", got.err)
			}
			deltas, chunks := checkChunks(t, got.data)
			if len(deltas) != tt.wantChunks {
				t.Errorf("content chunks = %d, want %d (%q)", len(deltas), tt.wantChunks, got.data)
			}
			for _, d := range got.data {
				if d == "[DONE]" {
					t.Errorf("got [DONE] after a cut")
				}
			}
			for _, c := range chunks {
				if len(c.Choices) == 1 && c.Choices[0].FinishReason != nil {
					t.Errorf("got a finish chunk after a cut: %+v", c)
				}
			}
			waitFor(t, time.Second, "cut recorded", func() bool {
				e := requestsSince(t, base)
				return len(e) == 1 && !e[0].InFlight && e[0].Status == 200 && !e[0].Completed && e[0].Stream
			})
		})
	}
}

func TestMalformed(t *testing.T) {
	_, base := startServer(t, nil)
	for _, tt := range []struct {
		fault   string
		wantPos int // index in data of the bad event
	}{
		{"malformed=2", 3}, // role chunk, 2 content chunks, bad
		{"malformed=0", 1},
		{"chunks=2,malformed=9", 3},
	} {
		_, got := streamRequest(t, base+"/v1/chat/completions", `{"model":"m","stream":true,"messages":[]}`, map[string]string{"X-Mock-Fault": tt.fault})
		if got.err != nil {
			t.Fatalf("%s: stream error %v", tt.fault, got.err)
		}
		if len(got.data) <= tt.wantPos || got.data[tt.wantPos] != "{not json" {
			t.Fatalf("%s: data[%d] of %q is not the malformed event", tt.fault, tt.wantPos, got.data)
		}
		deltas, _ := checkChunks(t, got.data)
		if strings.Join(deltas, "") != defaultReply || got.data[len(got.data)-1] != "[DONE]" {
			t.Errorf("%s: stream did not continue normally: %q", tt.fault, got.data)
		}
	}
}

func TestFailFirst(t *testing.T) {
	_, base := startServer(t, nil)
	send := func(model, key string) int {
		hdr := map[string]string{}
		if key != "" {
			hdr["X-Mock-Key"] = key
		}
		resp, _ := do(t, "POST", base+"/v1/chat/completions", `{"model":"`+model+`","messages":[]}`, hdr)
		return resp.StatusCode
	}
	steps := []struct {
		model, key string
		want       int
	}{
		{"m@fail_first=2", "a", 503},
		{"m@fail_first=2", "b", 503},
		{"m@fail_first=2", "a", 503},
		{"m@fail_first=2", "a", 200},
		{"m@fail_first=2", "b", 503},
		{"m@fail_first=2", "b", 200},
		{"x@fail_first=1", "", 503}, // keyed by model when X-Mock-Key is absent
		{"y@fail_first=1", "", 503},
		{"x@fail_first=1", "", 200},
	}
	for i, st := range steps {
		if got := send(st.model, st.key); got != st.want {
			t.Errorf("step %d (%s key %q): status %d, want %d", i, st.model, st.key, got, st.want)
		}
	}
	// DELETE /debug/requests also resets the counters.
	do(t, "DELETE", base+"/debug/requests", "", nil)
	if got := send("x@fail_first=1", ""); got != 503 {
		t.Errorf("after reset: status %d, want 503", got)
	}
}

func TestChunkDelay(t *testing.T) {
	_, base := startServer(t, func(c *config) { c.ChunkDelay = 20 * time.Millisecond; c.Chunks = 4 })
	for _, tt := range []struct {
		fault    string
		min, max time.Duration
	}{
		{"", 60 * time.Millisecond, time.Second}, // 3 gaps of 20ms
		{"delay=0", 0, 50 * time.Millisecond},    // overridden
		{"chunks=2,delay=50ms", 50 * time.Millisecond, time.Second},
	} {
		req, _ := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(`{"model":"m","stream":true,"messages":[]}`))
		req.Header.Set("X-Mock-Fault", tt.fault)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(resp.Body)
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, _ = io.Copy(io.Discard, br)
		resp.Body.Close()
		if got := time.Since(start); got < tt.min || got > tt.max {
			t.Errorf("%q: stream took %v after the first event, want [%v, %v]", tt.fault, got, tt.min, tt.max)
		}
	}
}

func TestParseFaults(t *testing.T) {
	tests := []struct {
		spec    string
		want    faults
		wantErr bool
	}{
		{"", noFaults(), false},
		{"status=429, retry_after=2", faults{status: 429, retryAfter: "2", cut: -1, malformed: -1}, false},
		{"hang,cut=0,malformed=3,chunks=5,delay=10ms,fail_first=2", faults{hang: true, cut: 0, malformed: 3, chunks: 5, delay: 10 * time.Millisecond, delaySet: true, failFirst: 2}, false},
		{"slow_first=1.5", faults{slowFirst: 1500 * time.Millisecond, cut: -1, malformed: -1}, false},
		{"status=200", faults{}, true},
		{"hang=1", faults{}, true},
		{"delay=-1s", faults{}, true},
		{"chunks=0", faults{}, true},
		{"boom", faults{}, true},
	}
	for _, tt := range tests {
		got := noFaults()
		err := parseFaults(&got, tt.spec)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseFaults(%q) error = %v, wantErr %v", tt.spec, err, tt.wantErr)
			continue
		}
		if !tt.wantErr && got != tt.want {
			t.Errorf("parseFaults(%q) = %+v, want %+v", tt.spec, got, tt.want)
		}
	}
}
