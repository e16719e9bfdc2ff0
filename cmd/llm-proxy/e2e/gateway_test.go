package e2e

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// mainReply is the answer of the shared gateway's mockllm: 60 words, so a stream
// can be cut into 50 chunks.
var mainReply = reply(60)

// TestGateway runs the user-facing API checks against one gateway: two workers, a
// wildcard upstream "mock" (any model name is passed through, so mockllm's
// "model@fault" suffixes work), an upstream "dead" for model dead-1 on a closed
// port, and a 1 MiB body limit. The subtests share it and run in order; the ones
// that disturb it (revocation, kill -9) come last, and the log-file checks at the
// very end look for the kill in the error log.
func TestGateway(t *testing.T) {
	mock := startMock(t, "--reply", mainReply)
	g := newGateway(t, map[string]string{"LLM_PROXY_MAX_BODY_BYTES": strconv.Itoa(1 << 20)})
	g.cli(t, "upstreams", "add", "--name", "mock", "--base-url", mock.baseURL())
	g.cli(t, "upstreams", "add", "--name", "dead", "--models", "dead-1",
		"--base-url", "http://127.0.0.1:"+strconv.Itoa(freePort(t))+"/v1")
	// Keys exist before the workers start, so every worker knows them from its
	// first request; only the revocation is a change made while they run.
	var k keys
	k.mainID, k.main = g.createKey(t, "e2e")
	_, k.modelsOnly = g.createKey(t, "models-only", "--models", "mock-1,gpt-4o")
	_, k.restricted = g.createKey(t, "restricted", "--models", "mock-1")
	_, k.expired = g.createKey(t, "expired", "--expires", "2020-01-01")
	k.revokedID, k.revoked = g.createKey(t, "to-revoke")
	g.start(t)

	t.Run("chat", func(t *testing.T) { testChat(t, g, mock, k.main, k.mainID) })
	t.Run("stream", func(t *testing.T) { testStream(t, g, k.main, k.mainID) })
	t.Run("embeddings", func(t *testing.T) { testEmbeddings(t, g, mock, k.main, k.mainID) })
	t.Run("models", func(t *testing.T) { testModels(t, g, k.modelsOnly) })
	t.Run("errors", func(t *testing.T) { testErrors(t, g, mock, k) })
	t.Run("bad_request", func(t *testing.T) { testBadRequest(t, g, k.main) })
	t.Run("revoke", func(t *testing.T) { testRevoke(t, g, k.revoked, k.revokedID) })
	t.Run("disconnect", func(t *testing.T) { testDisconnect(t, g, mock, k.main) })
	var victim int
	t.Run("kill_worker", func(t *testing.T) { victim = testKillWorker(t, g, k.main) })
	t.Run("log_files", func(t *testing.T) { testLogFiles(t, g, k.main, victim) })
}

// keys are the API keys of TestGateway's gateway.
type keys struct {
	main       string // any model
	mainID     int64
	modelsOnly string // mock-1 and gpt-4o
	restricted string // mock-1 only
	expired    string // expired in 2020
	revoked    string // revoked by the revoke subtest
	revokedID  int64
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// testChat: a non-streaming chat answers what the upstream answered, with usage
// and a request id, and its request record names the model, upstream and tokens.
func testChat(t *testing.T, g *gateway, mock *mockServer, key string, keyID int64) {
	ctx := ctxTimeout(t, requestTimeout)
	prompt := marker(t)
	var resp *http.Response
	got, err := g.sdk(key, nil).Chat.Completions.New(ctx, chatParams("mock-1", prompt), option.WithResponseInto(&resp))
	if err != nil {
		t.Fatalf("chat through the gateway: %v", err)
	}
	if len(got.Choices) != 1 {
		t.Fatalf("choices = %d, want 1", len(got.Choices))
	}
	if c := got.Choices[0].Message.Content; c != mainReply {
		t.Errorf("content = %q, want mockllm's answer %q", c, mainReply)
	}
	if got.Model != "mock-1" {
		t.Errorf("model = %q, want mock-1", got.Model)
	}
	if got.Usage.PromptTokens == 0 || got.Usage.CompletionTokens == 0 {
		t.Errorf("usage = %+v, want non-zero token counts", got.Usage)
	}
	reqID := resp.Header.Get("X-Request-Id")
	if reqID == "" {
		t.Errorf("no X-Request-Id header; headers: %v", resp.Header)
	}

	// The client's key must not reach the upstream (it has no key of its own here).
	up, ok := mock.waitRequest(t, 5*time.Second, func(r mockRequest) bool { return strings.Contains(r.Body, prompt) })
	if !ok {
		t.Errorf("mockllm never received the gateway's request")
	} else if a := up.Headers["Authorization"]; a != "" {
		t.Errorf("Authorization %q reached an upstream that has no key (client key leaked: %t)", a, strings.Contains(a, key))
	}
	// The same request sent to mockllm directly is the reference answer.
	direct, err := mock.sdk().Chat.Completions.New(ctx, chatParams("mock-1", prompt))
	if err != nil {
		t.Fatalf("chat with mockllm directly: %v", err)
	}
	if c := got.Choices[0].Message.Content; c != direct.Choices[0].Message.Content {
		t.Errorf("content = %q, mockllm answers %q", c, direct.Choices[0].Message.Content)
	}
	if got.Usage.PromptTokens != direct.Usage.PromptTokens || got.Usage.CompletionTokens != direct.Usage.CompletionTokens {
		t.Errorf("usage = %+v, mockllm's is %+v", got.Usage, direct.Usage)
	}

	row := g.waitLogRow(t, reqID)
	want := logRow{KeyID: keyID, Endpoint: "chat", Model: "mock-1", Upstream: "mock", UpstreamModel: "mock-1",
		Status: 200, PromptTokens: int(got.Usage.PromptTokens), CompletionTokens: int(got.Usage.CompletionTokens)}
	if row != want {
		t.Errorf("request_logs row = %+v, want %+v", row, want)
	}
}

// streamResult is what a client assembled from one SDK stream.
type streamResult struct {
	content   string
	chunks    int
	usage     *openai.CompletionUsage // from the chunk that carried usage, if any
	usageSeen int                     // chunks whose JSON had a "usage" member
	finish    string
	requestID string
}

// readStream consumes an SDK stream to its end.
func readStream(ctx context.Context, t *testing.T, c *openai.Client, params openai.ChatCompletionNewParams) streamResult {
	t.Helper()
	var resp *http.Response
	s := c.Chat.Completions.NewStreaming(ctx, params, option.WithResponseInto(&resp))
	defer s.Close()
	var r streamResult
	var b strings.Builder
	for s.Next() {
		ch := s.Current()
		r.chunks++
		if strings.Contains(ch.RawJSON(), `"usage"`) {
			r.usageSeen++
			if ch.JSON.Usage.Valid() {
				u := ch.Usage
				r.usage = &u
			}
		}
		for _, choice := range ch.Choices {
			b.WriteString(choice.Delta.Content)
			if choice.FinishReason != "" {
				r.finish = choice.FinishReason
			}
		}
	}
	if err := s.Err(); err != nil {
		t.Fatalf("stream: %v (after %d chunks)", err, r.chunks)
	}
	r.content = b.String()
	if resp != nil {
		r.requestID = resp.Header.Get("X-Request-Id")
	}
	return r
}

// testStream: the SDK's streaming API assembles the same answer as a plain call;
// the usage chunk arrives only when the client asked for it, and the request record
// has the tokens either way.
func testStream(t *testing.T, g *gateway, key string, keyID int64) {
	ctx := ctxTimeout(t, requestTimeout)
	c := g.sdk(key, nil)
	prompt := marker(t)
	plain, err := c.Chat.Completions.New(ctx, chatParams("mock-1", prompt))
	if err != nil {
		t.Fatalf("non-streaming chat: %v", err)
	}
	want := plain.Choices[0].Message.Content

	t.Run("without_usage", func(t *testing.T) {
		r := readStream(ctx, t, c, chatParams("mock-1@chunks=12", prompt))
		if r.content != want {
			t.Errorf("streamed content = %q, want the non-streamed %q", r.content, want)
		}
		if r.chunks < 12 {
			t.Errorf("got %d chunks, want at least the 12 content chunks mockllm sent", r.chunks)
		}
		if r.finish != "stop" {
			t.Errorf("finish_reason = %q, want stop", r.finish)
		}
		if r.usageSeen != 0 {
			t.Errorf("%d chunks carried usage although the client did not ask for it", r.usageSeen)
		}
		row := g.waitLogRow(t, r.requestID)
		wantRow := logRow{KeyID: keyID, Endpoint: "chat", Model: "mock-1@chunks=12", Upstream: "mock",
			UpstreamModel: "mock-1@chunks=12", Status: 200, Stream: true,
			PromptTokens: int(plain.Usage.PromptTokens), CompletionTokens: int(plain.Usage.CompletionTokens)}
		if row != wantRow {
			t.Errorf("request_logs row = %+v, want %+v", row, wantRow)
		}
	})

	t.Run("with_usage", func(t *testing.T) {
		params := chatParams("mock-1", prompt)
		params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		r := readStream(ctx, t, c, params)
		if r.content != want {
			t.Errorf("streamed content = %q, want %q", r.content, want)
		}
		if r.usage == nil {
			t.Fatalf("no usage chunk although stream_options.include_usage was true")
		}
		if r.usage.PromptTokens != plain.Usage.PromptTokens || r.usage.CompletionTokens != plain.Usage.CompletionTokens {
			t.Errorf("stream usage = %+v, want %+v", *r.usage, plain.Usage)
		}
		if r.usageSeen != 1 {
			t.Errorf("%d chunks carried usage, want exactly 1", r.usageSeen)
		}
	})
}

// testEmbeddings: embeddings pass through unchanged (mockllm's vectors are
// deterministic) and are recorded with their prompt tokens.
func testEmbeddings(t *testing.T, g *gateway, mock *mockServer, key string, keyID int64) {
	ctx := ctxTimeout(t, requestTimeout)
	params := openai.EmbeddingNewParams{
		Model: openai.EmbeddingModel("text-embedding-3-small"),
		Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"first " + marker(t), "second input"}},
	}
	var resp *http.Response
	got, err := g.sdk(key, nil).Embeddings.New(ctx, params, option.WithResponseInto(&resp))
	if err != nil {
		t.Fatalf("embeddings through the gateway: %v", err)
	}
	direct, err := mock.sdk().Embeddings.New(ctx, params)
	if err != nil {
		t.Fatalf("embeddings from mockllm directly: %v", err)
	}
	if len(got.Data) != 2 {
		t.Fatalf("got %d embeddings, want 2", len(got.Data))
	}
	for i := range got.Data {
		if len(got.Data[i].Embedding) == 0 || !slices.Equal(got.Data[i].Embedding, direct.Data[i].Embedding) {
			t.Errorf("embedding %d = %v, want mockllm's %v", i, got.Data[i].Embedding, direct.Data[i].Embedding)
		}
	}
	if slices.Equal(got.Data[0].Embedding, got.Data[1].Embedding) {
		t.Errorf("two different inputs got the same vector")
	}
	if got.Usage.PromptTokens == 0 || got.Usage.PromptTokens != direct.Usage.PromptTokens {
		t.Errorf("usage = %+v, want mockllm's %+v", got.Usage, direct.Usage)
	}
	row := g.waitLogRow(t, resp.Header.Get("X-Request-Id"))
	want := logRow{KeyID: keyID, Endpoint: "embeddings", Model: "text-embedding-3-small", Upstream: "mock",
		UpstreamModel: "text-embedding-3-small", Status: 200, PromptTokens: int(got.Usage.PromptTokens)}
	if row != want {
		t.Errorf("request_logs row = %+v, want %+v", row, want)
	}
}

// testModels: GET /v1/models lists exactly the models a restricted key may use.
func testModels(t *testing.T, g *gateway, key string) {
	ctx := ctxTimeout(t, requestTimeout)
	page, err := g.sdk(key, nil).Models.List(ctx)
	if err != nil {
		t.Fatalf("list models: %v", err)
	}
	var ids []string
	for _, m := range page.Data {
		ids = append(ids, m.ID)
	}
	slices.Sort(ids)
	if want := []string{"gpt-4o", "mock-1"}; !slices.Equal(ids, want) {
		t.Errorf("models = %v, want %v", ids, want)
	}
}

// testErrors: every error a client can meet, through the SDK, with its status and
// OpenAI's error shape.
func testErrors(t *testing.T, g *gateway, mock *mockServer, k keys) {
	key := k.main
	big := strings.Repeat("x", 3<<19) // 1.5 MiB, over the 1 MiB limit

	tests := []struct {
		name       string
		key        string // "" sends no Authorization header
		model      string
		prompt     string
		wantStatus int
		wantCode   string // "" skips the check
		wantMsg    string // substring of the message
		retryAfter string // wanted Retry-After header ("" skips the check)
		passed     bool   // an upstream error: the body must be mockllm's, byte for byte
		// opts shape the SDK's request beyond chatParams; prompt is the call's own.
		opts     func(prompt string) []option.RequestOption
		wantType string // "" skips the check
		refused  bool   // the gateway refuses it itself: the upstream must never see it
	}{
		{name: "missing key", model: "mock-1", wantStatus: 401, wantCode: "missing_api_key"},
		{name: "invalid key", key: "sk-not-a-key-of-this-gateway", model: "mock-1", wantStatus: 401, wantCode: "invalid_api_key"},
		{name: "expired key", key: k.expired, model: "mock-1", wantStatus: 401, wantCode: "invalid_api_key", wantMsg: "expired"},
		{name: "model not allowed", key: k.restricted, model: "gpt-4o", wantStatus: 403, wantCode: "model_not_allowed"},
		{name: "body over limit", key: key, model: "mock-1", prompt: big, wantStatus: 413, wantCode: "request_too_large"},
		{name: "upstream unreachable", key: key, model: "dead-1", wantStatus: 502, wantCode: "upstream_unreachable"},
		{name: "upstream 503", key: key, model: "mock-1@status=503,retry_after=2", wantStatus: 503,
			wantMsg: "mockllm: injected server error (status=503).", retryAfter: "2", passed: true},
		{name: "upstream 429", key: key, model: "mock-1@status=429,retry_after=3", wantStatus: 429,
			wantCode: "rate_limit_exceeded", wantMsg: "mockllm: injected rate limit", retryAfter: "3", passed: true},
		// 400s as the SDK meets them: its *openai.Error carries status and type.
		{name: "400 empty model", key: key, model: "", wantStatus: 400, wantType: "invalid_request_error",
			wantCode: "invalid_request", wantMsg: "you must provide a model parameter", refused: true},
		{name: "400 upstream override", key: key, model: "mock-1", wantStatus: 400, wantType: "invalid_request_error",
			wantCode: "invalid_request", wantMsg: "'api_base' is not accepted", refused: true,
			opts: func(string) []option.RequestOption {
				return []option.RequestOption{option.WithJSONSet("api_base", "http://127.0.0.1:1/v1")}
			}},
		{name: "400 messages not an array", key: key, model: "mock-1", wantStatus: 400, wantType: "invalid_request_error",
			wantCode: "invalid_request", wantMsg: "'messages' must be an array", refused: true,
			opts: func(prompt string) []option.RequestOption {
				return []option.RequestOption{option.WithJSONSet("messages", prompt)}
			}},
		{name: "400 malformed body", key: key, model: "mock-1", wantStatus: 400, wantType: "invalid_request_error",
			wantCode: "invalid_request", wantMsg: "not valid JSON", refused: true,
			opts: func(prompt string) []option.RequestOption {
				// Cut off mid-array, the raw bytes replacing the body the SDK built.
				body := `{"model":"mock-1","messages":[{"role":"user","content":"` + prompt + `"}`
				return []option.RequestOption{option.WithRequestBody("application/json", []byte(body))}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := ctxTimeout(t, requestTimeout)
			opts := []option.RequestOption{}
			if tt.key == "" {
				opts = append(opts, option.WithHeaderDel("Authorization"))
			}
			prompt := tt.prompt
			if prompt == "" {
				prompt = marker(t)
			}
			if tt.opts != nil {
				opts = append(opts, tt.opts(prompt)...)
			}
			_, err := g.sdk(tt.key, nil, opts...).Chat.Completions.New(ctx, chatParams(tt.model, prompt))
			ae := apiError(t, err, tt.wantStatus)
			if tt.wantType != "" && ae.Type != tt.wantType {
				t.Errorf("type = %q, want %q (body %s)", ae.Type, tt.wantType, ae.RawJSON())
			}
			if tt.wantCode != "" && ae.Code != tt.wantCode {
				t.Errorf("code = %q, want %q (body %s)", ae.Code, tt.wantCode, ae.RawJSON())
			}
			if !strings.Contains(ae.Message, tt.wantMsg) {
				t.Errorf("message = %q, want it to contain %q", ae.Message, tt.wantMsg)
			}
			if tt.retryAfter != "" {
				if got := ae.Response.Header.Get("Retry-After"); got != tt.retryAfter {
					t.Errorf("Retry-After = %q, want %q", got, tt.retryAfter)
				}
			}
			if tt.refused {
				// Refused before dispatch, so the answer above means it is already settled.
				reqs, err := mock.requests(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range reqs {
					if strings.Contains(r.Body, prompt) {
						t.Errorf("the refused request reached the upstream: %s", r.Body)
					}
				}
			}
			if tt.passed {
				_, derr := mock.sdk().Chat.Completions.New(ctx, chatParams(tt.model, prompt))
				de := apiError(t, derr, tt.wantStatus)
				if got, want := errorBody(t, ae), errorBody(t, de); got != want {
					t.Errorf("body = %s, want mockllm's %s", got, want)
				}
			}
		})
	}
}

// testBadRequest: bodies the SDK would never send, as raw HTTP. testErrors sends
// 400s through the SDK; these are the byte-level cases a plain client can hit.
func testBadRequest(t *testing.T, g *gateway, key string) {
	tests := []struct {
		name string
		body string
	}{
		{"malformed JSON", `{"model": "mock-1", "messages": [`},
		{"not an object", `["mock-1"]`},
		{"missing model", `{"messages": [{"role": "user", "content": "hi"}]}`},
		{"model not a string", `{"model": 7, "messages": []}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := ctxTimeout(t, requestTimeout)
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.baseURL()+"/chat/completions", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+key)
			req.Header.Set("Content-Type", "application/json")
			resp, err := g.client.Do(req)
			if err != nil {
				t.Fatalf("POST: %v", err)
			}
			defer resp.Body.Close()
			body := readAll(t, resp)
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("status = %d, want 400 (body %s)", resp.StatusCode, body)
			}
			checkErrorShape(t, body)
		})
	}
}
