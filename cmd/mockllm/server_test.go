package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

const defaultReply = "This is a mock answer from mockllm for your request."

// startServer runs the handler on a real 127.0.0.1 listener.
func startServer(t testing.TB, mutate func(*config)) (*server, string) {
	t.Helper()
	cfg, err := parseConfig(nil, io.Discard)
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	s := newServer(cfg)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	t.Cleanup(s.Close) // runs before ts.Close, so hanging requests end first
	return s, ts.URL
}

func do(t testing.TB, method, url, body string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp, b
}

func decodeJSON(t testing.TB, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
}

type chatCompletion struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index   int `json:"index"`
		Message struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
		Text         string  `json:"text"`
		FinishReason *string `json:"finish_reason"`
		Delta        *struct {
			Role    *string `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
}

type errorBody struct {
	Error *struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func TestChatNonStream(t *testing.T) {
	_, base := startServer(t, nil)
	tests := []struct {
		name       string
		body       string
		wantModel  string
		wantPrompt int
	}{
		{"string content", `{"model":"gpt-4o","messages":[{"role":"user","content":"hello there  world"}]}`, "gpt-4o", 3 + 3},
		{"parts and n", `{"model":"mock-1","n":3,"messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"one two"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"three"}]}]}`, "mock-1", 2 + 3 + 3 + 3},
		{"null content", `{"model":"m","messages":[{"role":"assistant","content":null}]}`, "m", 3},
		{"fault suffix stripped", `{"model":"gpt-4o@chunks=2","messages":[{"role":"user","content":"hi"}]}`, "gpt-4o", 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := do(t, "POST", base+"/v1/chat/completions", tt.body, nil)
			if resp.StatusCode != 200 {
				t.Fatalf("status = %d, body %s", resp.StatusCode, b)
			}
			if got := resp.Header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q", got)
			}
			var got chatCompletion
			decodeJSON(t, b, &got)
			if !strings.HasPrefix(got.ID, "chatcmpl-") || got.Object != "chat.completion" || got.Model != tt.wantModel {
				t.Errorf("id/object/model = %q/%q/%q", got.ID, got.Object, got.Model)
			}
			if d := time.Since(time.Unix(got.Created, 0)); d < 0 || d > time.Minute {
				t.Errorf("created = %d, not now", got.Created)
			}
			if len(got.Choices) != 1 {
				t.Fatalf("choices = %d, want 1", len(got.Choices))
			}
			ch := got.Choices[0]
			if ch.Message.Role != "assistant" || ch.Message.Content != defaultReply || ch.FinishReason == nil || *ch.FinishReason != "stop" {
				t.Errorf("choice = %+v", ch)
			}
			if got.Usage == nil || got.Usage.PromptTokens != tt.wantPrompt || got.Usage.CompletionTokens != 10 || got.Usage.TotalTokens != tt.wantPrompt+10 {
				t.Errorf("usage = %+v, want prompt %d completion 10", got.Usage, tt.wantPrompt)
			}
		})
	}
}

func TestLegacyCompletion(t *testing.T) {
	_, base := startServer(t, func(c *config) { c.Reply = "short reply" })
	tests := []struct {
		prompt     string
		wantPrompt int
	}{
		{`"say hi please"`, 3},
		{`["a b","c"]`, 3},
		{`[1,2,3,4]`, 4},
		{`[[1,2],[3]]`, 3},
	}
	for _, tt := range tests {
		resp, b := do(t, "POST", base+"/v1/completions", `{"model":"gpt-3.5-turbo-instruct","prompt":`+tt.prompt+`}`, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("prompt %s: status %d %s", tt.prompt, resp.StatusCode, b)
		}
		var got chatCompletion
		decodeJSON(t, b, &got)
		if got.Object != "text_completion" || !strings.HasPrefix(got.ID, "cmpl-") || len(got.Choices) != 1 || got.Choices[0].Text != "short reply" {
			t.Errorf("prompt %s: got %s", tt.prompt, b)
		}
		if got.Usage == nil || got.Usage.PromptTokens != tt.wantPrompt || got.Usage.CompletionTokens != 2 {
			t.Errorf("prompt %s: usage %+v, want prompt %d completion 2", tt.prompt, got.Usage, tt.wantPrompt)
		}
	}
}

// sse is a parsed event stream: the data payloads in order and how the body
// ended (nil for a clean EOF).
type sse struct {
	data []string
	err  error
}

func readSSE(r io.Reader) sse {
	var out sse
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if err != io.EOF || line != "" {
				out.err = err
				if err == io.EOF {
					out.err = io.ErrUnexpectedEOF
				}
			}
			return out
		}
		line = strings.TrimRight(line, "\n")
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			out.data = append(out.data, d)
		} else if line != "" {
			out.data = append(out.data, "UNEXPECTED LINE "+line)
		}
	}
}

func streamRequest(t testing.TB, url, body string, hdr map[string]string) (*http.Response, sse) {
	t.Helper()
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp, readSSE(resp.Body)
}

// contentChunks parses data payloads that are completion chunks, checking
// id/created stay the same, and returns the content deltas in order.
func checkChunks(t *testing.T, data []string) (deltas []string, chunks []chatCompletion) {
	t.Helper()
	for _, d := range data {
		if d == "[DONE]" {
			continue
		}
		var c chatCompletion
		if err := json.Unmarshal([]byte(d), &c); err != nil {
			continue // malformed events are checked by their own test
		}
		if len(chunks) > 0 && (c.ID != chunks[0].ID || c.Created != chunks[0].Created) {
			t.Errorf("chunk id/created %s/%d differ from first %s/%d", c.ID, c.Created, chunks[0].ID, chunks[0].Created)
		}
		chunks = append(chunks, c)
		if len(c.Choices) == 1 && c.Choices[0].FinishReason == nil {
			if c.Choices[0].Delta != nil && c.Choices[0].Delta.Content != nil && c.Choices[0].Delta.Role == nil {
				deltas = append(deltas, *c.Choices[0].Delta.Content)
			} else if c.Choices[0].Delta == nil {
				deltas = append(deltas, c.Choices[0].Text)
			}
		}
	}
	return deltas, chunks
}

func TestStreamMatchesNonStream(t *testing.T) {
	tests := []struct {
		name       string
		reply      string
		path       string
		extra      string
		fault      string
		wantChunks int
		wantUsage  bool
	}{
		{"chat default", defaultReply, "/v1/chat/completions", `"messages":[{"role":"user","content":"a b"}]`, "", 10, false},
		{"chat usage", defaultReply, "/v1/chat/completions", `"messages":[{"role":"user","content":"a b"}],"stream_options":{"include_usage":true}`, "", 10, true},
		{"chat usage false", defaultReply, "/v1/chat/completions", `"messages":[{"role":"user","content":"a b"}],"stream_options":{"include_usage":false}`, "", 10, false},
		{"chat 3 chunks odd spacing", "  Hello,   wörld \n\t\"quoted\" 😀 end \u2028 tail  ", "/v1/chat/completions", `"messages":[]`, "chunks=3", 3, false},
		{"chat more chunks than words", "two words", "/v1/chat/completions", `"messages":[],"stream_options":{"include_usage":true}`, "chunks=7", 2, true},
		{"legacy", defaultReply, "/v1/completions", `"prompt":"x y z","stream_options":{"include_usage":true}`, "chunks=4,delay=1ms", 4, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, base := startServer(t, func(c *config) { c.Reply = tt.reply })
			hdr := map[string]string{"X-Mock-Fault": tt.fault}
			plainResp, plainBody := do(t, "POST", base+tt.path, `{"model":"gpt-4o",`+tt.extra+`}`, hdr)
			if plainResp.StatusCode != 200 {
				t.Fatalf("non-stream status %d: %s", plainResp.StatusCode, plainBody)
			}
			var plain chatCompletion
			decodeJSON(t, plainBody, &plain)
			want := plain.Choices[0].Message.Content + plain.Choices[0].Text
			if want != tt.reply {
				t.Fatalf("non-stream content = %q, want %q", want, tt.reply)
			}

			resp, got := streamRequest(t, base+tt.path, `{"model":"gpt-4o","stream":true,`+tt.extra+`}`, hdr)
			if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
				t.Errorf("Content-Type = %q", ct)
			}
			if got.err != nil {
				t.Fatalf("stream ended with %v", got.err)
			}
			if n := len(got.data); n == 0 || got.data[n-1] != "[DONE]" {
				t.Fatalf("last event is not [DONE]: %q", got.data)
			}
			deltas, chunks := checkChunks(t, got.data)
			if len(chunks) != len(got.data)-1 {
				t.Errorf("%d events are not JSON: %q", len(got.data)-1-len(chunks), got.data)
			}
			if len(deltas) != tt.wantChunks {
				t.Errorf("content chunks = %d, want %d: %q", len(deltas), tt.wantChunks, deltas)
			}
			if joined := strings.Join(deltas, ""); joined != want {
				t.Errorf("joined deltas = %q, want %q", joined, want)
			}
			wantObject := "chat.completion.chunk"
			if tt.path == "/v1/completions" {
				wantObject = "text_completion"
			} else if d := chunks[0].Choices[0].Delta; d == nil || d.Role == nil || *d.Role != "assistant" || d.Content == nil || *d.Content != "" {
				t.Errorf("first chunk delta = %+v, want role assistant and empty content", d)
			}
			for _, c := range chunks {
				if c.Object != wantObject || c.Model != "gpt-4o" {
					t.Errorf("chunk object/model = %q/%q", c.Object, c.Model)
				}
			}
			last := chunks[len(chunks)-1]
			if tt.wantUsage {
				if len(last.Choices) != 0 || last.Usage == nil || *last.Usage != *plain.Usage {
					t.Errorf("usage chunk = %+v, want empty choices and usage %+v", last, plain.Usage)
				}
				last = chunks[len(chunks)-2]
			}
			for _, c := range chunks[:len(chunks)-1] {
				if c.Usage != nil {
					t.Errorf("unexpected usage in chunk %+v", c)
				}
			}
			if len(last.Choices) != 1 || last.Choices[0].FinishReason == nil || *last.Choices[0].FinishReason != "stop" {
				t.Errorf("terminating chunk = %+v, want finish_reason stop", last)
			}
		})
	}
}

func TestSplitReply(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want []string
	}{
		{"a b c d", 2, []string{"a b ", "c d"}},
		{"a b c d e", 2, []string{"a b ", "c d e"}},
		{"a b c", 5, []string{"a ", "b ", "c"}},
		{" lead  trail ", 2, []string{" lead  ", "trail "}},
		{"", 3, []string{""}},
		{"   ", 3, []string{"   "}},
		{"one", 1, []string{"one"}},
	}
	for _, tt := range tests {
		got := splitReply(tt.in, tt.n)
		if strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
			t.Errorf("splitReply(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

func TestAppendString(t *testing.T) {
	for _, in := range []string{"", "plain", "q\"b\\s/", "ctl\x00\x01\x1f\n\r\t", "ünï 😀", "bad\xff\xfeutf8", "js\u2028\u2029", "<html>&"} {
		var got string
		if err := json.Unmarshal(appendString(nil, in), &got); err != nil {
			t.Errorf("appendString(%q) = %s: not JSON: %v", in, appendString(nil, in), err)
			continue
		}
		want := strings.ToValidUTF8(in, "\ufffd")
		if in == "bad\xff\xfeutf8" {
			want = "bad\ufffd\ufffdutf8"
		}
		if got != want {
			t.Errorf("round trip of %q = %q, want %q", in, got, want)
		}
	}
}

func TestBadRequests(t *testing.T) {
	_, base := startServer(t, nil)
	tests := []struct {
		name, method, path, body, fault string
		wantStatus                      int
		wantType                        string
	}{
		{"bad json", "POST", "/v1/chat/completions", `{"model":`, "", 400, "invalid_request_error"},
		{"not json", "POST", "/v1/embeddings", `hello`, "", 400, "invalid_request_error"},
		{"empty body", "POST", "/v1/completions", ``, "", 400, "invalid_request_error"},
		{"missing model", "POST", "/v1/chat/completions", `{"messages":[]}`, "", 400, "invalid_request_error"},
		{"suffix only", "POST", "/v1/chat/completions", `{"model":"@status=500","messages":[]}`, "", 400, "invalid_request_error"},
		{"missing messages", "POST", "/v1/chat/completions", `{"model":"m"}`, "", 400, "invalid_request_error"},
		{"wrong type", "POST", "/v1/chat/completions", `{"model":"m","messages":[],"stream":"yes"}`, "", 400, "invalid_request_error"},
		{"unknown fault", "POST", "/v1/chat/completions", `{"model":"m","messages":[]}`, "explode", 400, "invalid_request_error"},
		{"bad fault value", "POST", "/v1/chat/completions", `{"model":"m@cut=x","messages":[]}`, "", 400, "invalid_request_error"},
		{"unknown path", "POST", "/v1/nope", `{}`, "", 404, "invalid_request_error"},
		{"get chat", "GET", "/v1/chat/completions", ``, "", 405, "invalid_request_error"},
		{"post models", "POST", "/v1/models", `{}`, "", 405, "invalid_request_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := do(t, tt.method, base+tt.path, tt.body, map[string]string{"X-Mock-Fault": tt.fault})
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d (%s)", resp.StatusCode, tt.wantStatus, b)
			}
			var e errorBody
			decodeJSON(t, b, &e)
			if e.Error == nil || e.Error.Message == "" || e.Error.Type != tt.wantType {
				t.Errorf("error body = %s", b)
			}
			var raw map[string]map[string]any
			decodeJSON(t, b, &raw)
			if _, ok := raw["error"]["code"]; !ok {
				t.Errorf("error body has no code key: %s", b)
			}
		})
	}
	// The bad-JSON error keeps code null, as OpenAI sends it.
	_, b := do(t, "POST", base+"/v1/chat/completions", `{bad`, nil)
	var e errorBody
	decodeJSON(t, b, &e)
	if e.Error == nil || e.Error.Code != nil {
		t.Errorf("bad JSON body = %s, want code null", b)
	}
}

func TestModels(t *testing.T) {
	_, base := startServer(t, nil)
	do(t, "POST", base+"/v1/chat/completions", `{"model":"my-model@chunks=2","messages":[]}`, nil)
	resp, b := do(t, "GET", base+"/v1/models", "", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var got struct {
		Object string `json:"object"`
		Data   []struct {
			ID     string `json:"id"`
			Object string `json:"object"`
		} `json:"data"`
	}
	decodeJSON(t, b, &got)
	var ids []string
	for _, m := range got.Data {
		if m.Object != "model" {
			t.Errorf("model object = %q", m.Object)
		}
		ids = append(ids, m.ID)
	}
	want := []string{"gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "mock-1", "my-model"}
	if got.Object != "list" || strings.Join(ids, ",") != strings.Join(want, ",") {
		t.Errorf("models = %s %v, want list %v", got.Object, ids, want)
	}

	resp, b = do(t, "GET", base+"/v1/models", "", map[string]string{"X-Mock-Fault": "status=500"})
	if resp.StatusCode != 500 || !strings.Contains(string(b), `"server_error"`) {
		t.Errorf("models with status=500 fault: %d %s", resp.StatusCode, b)
	}
	for _, tt := range []struct {
		id   string
		want int
	}{{"mock-1", 200}, {"my-model", 200}, {"never-seen", 404}} {
		resp, b := do(t, "GET", base+"/v1/models/"+tt.id, "", nil)
		if resp.StatusCode != tt.want {
			t.Errorf("GET model %s = %d, want %d (%s)", tt.id, resp.StatusCode, tt.want, b)
		}
	}
}

// requestsSince fetches GET /debug/requests.
func requestsSince(t testing.TB, base string) []entry {
	t.Helper()
	_, b := do(t, "GET", base+"/debug/requests", "", nil)
	var got struct {
		Requests []entry `json:"requests"`
	}
	decodeJSON(t, b, &got)
	return got.Requests
}

// waitFor polls cond every 10 ms up to d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDebugEndpoints(t *testing.T) {
	_, base := startServer(t, func(c *config) { c.Record = 3 })
	body := `{"model":"gpt-4o@status=503","messages":[{"role":"user","content":"hi"}]}`
	do(t, "POST", base+"/v1/chat/completions", body, map[string]string{"Authorization": "Bearer sk-upstream-123"})
	do(t, "GET", base+"/v1/models", "", nil)

	got := requestsSince(t, base)
	if len(got) != 2 {
		t.Fatalf("recorded %d requests, want 2 (debug requests are not recorded): %+v", len(got), got)
	}
	e := got[0]
	if e.Seq != 1 || e.Method != "POST" || e.Path != "/v1/chat/completions" || e.Body != body || e.Model != "gpt-4o" ||
		e.Fault != "status=503" || e.Status != 503 || !e.Completed || e.ClientClosed || e.InFlight || e.Stream {
		t.Errorf("entry = %+v", e)
	}
	if e.Headers["Authorization"] != "Bearer sk-upstream-123" || e.Headers["Content-Type"] != "application/json" {
		t.Errorf("headers = %v", e.Headers)
	}
	if time.Since(e.Time) > time.Minute || e.DurationMS < 0 {
		t.Errorf("time/duration = %v/%v", e.Time, e.DurationMS)
	}
	if got[1].Seq != 2 || got[1].Path != "/v1/models" || got[1].Status != 200 {
		t.Errorf("second entry = %+v", got[1])
	}

	// The ring keeps only the newest --record entries.
	for range 3 {
		do(t, "POST", base+"/v1/embeddings", `{"model":"e","input":"x"}`, nil)
	}
	got = requestsSince(t, base)
	var seqs []uint64
	for _, e := range got {
		seqs = append(seqs, e.Seq)
	}
	if len(seqs) != 3 || seqs[0] != 3 || seqs[2] != 5 {
		t.Errorf("kept seqs = %v, want [3 4 5]", seqs)
	}
	_, b := do(t, "GET", base+"/debug/requests?since=4", "", nil)
	if !strings.Contains(string(b), `"seq":5`) || strings.Contains(string(b), `"seq":4`) {
		t.Errorf("since=4 = %s", b)
	}

	_, b = do(t, "GET", base+"/debug/stats", "", nil)
	var st stats
	decodeJSON(t, b, &st)
	wantStats := stats{Total: 5, ByPath: map[string]uint64{"/v1/chat/completions": 1, "/v1/models": 1, "/v1/embeddings": 3}}
	if st.Total != wantStats.Total || st.InFlight != 0 || st.ClientClosed != 0 || len(st.ByPath) != 3 ||
		st.ByPath["/v1/embeddings"] != 3 || st.ByPath["/v1/models"] != 1 {
		t.Errorf("stats = %+v, want %+v", st, wantStats)
	}

	resp, _ := do(t, "DELETE", base+"/debug/requests", "", nil)
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("DELETE status = %d", resp.StatusCode)
	}
	if got := requestsSince(t, base); len(got) != 0 {
		t.Errorf("after DELETE: %d requests", len(got))
	}
	do(t, "GET", base+"/v1/models", "", nil)
	if got := requestsSince(t, base); len(got) != 1 || got[0].Seq != 6 {
		t.Errorf("after DELETE and one request: %+v", got)
	}
	resp, _ = do(t, "GET", base+"/debug/nope", "", nil)
	if resp.StatusCode != 404 {
		t.Errorf("unknown debug path status = %d", resp.StatusCode)
	}
}

func TestRecordDisabled(t *testing.T) {
	_, base := startServer(t, func(c *config) { c.Record = 0 })
	resp, _ := do(t, "GET", base+"/v1/models", "", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := requestsSince(t, base); len(got) != 0 {
		t.Errorf("recorded %d with --record 0", len(got))
	}
	_, b := do(t, "GET", base+"/debug/stats", "", nil)
	var st stats
	decodeJSON(t, b, &st)
	if st.Total != 1 {
		t.Errorf("stats total = %d, want 1 (stats count even without recording)", st.Total)
	}
}

func TestGlobalLatency(t *testing.T) {
	_, base := startServer(t, func(c *config) { c.Latency = 80 * time.Millisecond })
	start := time.Now()
	resp, _ := do(t, "GET", base+"/v1/models", "", nil)
	if got := time.Since(start); resp.StatusCode != 200 || got < 80*time.Millisecond {
		t.Errorf("status %d after %v, want 200 after >= 80ms", resp.StatusCode, got)
	}
}

func TestClientCloseDuringStream(t *testing.T) {
	_, base := startServer(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/chat/completions",
		strings.NewReader(`{"model":"m@delay=50ms","stream":true,"messages":[]}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil { // the role chunk
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	waitFor(t, time.Second, "client_closed on the stream", func() bool {
		got := requestsSince(t, base)
		return len(got) == 1 && got[0].ClientClosed && !got[0].Completed && got[0].Status == 200 && !got[0].InFlight
	})
}
