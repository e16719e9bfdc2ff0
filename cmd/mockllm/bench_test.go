package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

const benchChat = `{"model":"gpt-4o","messages":[{"role":"system","content":"You are helpful."},{"role":"user","content":"Say something short about benchmarks."}]}`

// BenchmarkChatHandler measures the handler alone: decode, record, encode.
func BenchmarkChatHandler(b *testing.B) {
	cfg, err := parseConfig(nil, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	s := newServer(cfg)
	body := []byte(benchChat)
	req := httptest.NewRequest("POST", "/v1/chat/completions", nil)
	req.Header.Set("Authorization", "Bearer sk-bench")
	req.Header.Set("Content-Type", "application/json")
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		req.Body = io.NopCloser(bytes.NewReader(body))
		w.status = 0
		s.ServeHTTP(w, req)
		if w.status != 200 {
			b.Fatalf("status %d", w.status)
		}
	}
}

// BenchmarkChatStreamHandler measures one streamed answer (12 events).
func BenchmarkChatStreamHandler(b *testing.B) {
	cfg, err := parseConfig(nil, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	s := newServer(cfg)
	body := []byte(`{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	req := httptest.NewRequest("POST", "/v1/chat/completions", nil)
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		req.Body = io.NopCloser(bytes.NewReader(body))
		s.ServeHTTP(w, req)
	}
	if got := s.rec.snapshot(0, ""); len(got) == 0 || !got[len(got)-1].Completed {
		b.Fatalf("last stream not completed: %+v", got)
	}
}

// BenchmarkChatHTTP measures full keep-alive round trips over 127.0.0.1.
func BenchmarkChatHTTP(b *testing.B) {
	_, base := startServer(b, nil)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	url := base + "/v1/chat/completions"
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Post(url, "application/json", bytes.NewReader([]byte(benchChat)))
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(status int)      { w.status = status }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) Flush()                      {}
