// Command mockllm is an OpenAI-compatible fake LLM upstream for tests,
// benchmarks (wrk) and demos. It answers every request with a fixed reply,
// streams it as server-sent events, computes usage, and injects faults chosen
// per request. It serves tens of thousands of small requests per second on
// one core.
//
//	mockllm --addr 127.0.0.1:9000
//
// Point a client (or llm-proxy's upstream) at the base URL
// http://127.0.0.1:9000/v1 with any API key. Once listening, mockllm prints
// exactly one line to stdout, "mockllm listening on HOST:PORT" (with the real
// port when --addr ends in :0). SIGTERM or SIGINT stops it: requests in the
// hang fault get 503 at once, others may finish for up to 5 s.
//
// # Flags
//
// Each flag can also be set by an environment variable (in brackets); the
// flag wins.
//
//	--addr ADDR           listen address (default 127.0.0.1:9000) [MOCKLLM_ADDR]
//	--chunks N            content chunks per streamed answer (default 10) [MOCKLLM_CHUNKS]
//	--chunk-delay DUR     pause between content chunks (default 0) [MOCKLLM_CHUNK_DELAY]
//	--latency DUR         pause before every /v1 response (default 0) [MOCKLLM_LATENCY]
//	--reply TEXT          the answer (default "This is a mock answer from mockllm for your request.") [MOCKLLM_REPLY]
//	--embedding-dim N     embedding length when a request has no "dimensions" (default 16) [MOCKLLM_EMBEDDING_DIM]
//	--record N            requests kept for /debug/requests, 0 disables (default 1000) [MOCKLLM_RECORD]
//	--log-requests        log one line per request to stderr [MOCKLLM_LOG_REQUESTS]
//
// # Endpoints
//
//	POST /v1/chat/completions   chat.completion, or chat.completion.chunk events with "stream": true
//	POST /v1/completions        text_completion (legacy), streamed the same way with choices[0].text
//	POST /v1/embeddings         deterministic unit vectors; "dimensions" and encoding_format "base64" honoured
//	GET  /v1/models             gpt-4o, gpt-4o-mini, text-embedding-3-small, mock-1, then every model seen
//	GET  /v1/models/{model}     one of those, or 404 model_not_found
//
// Usage is counted in words (whitespace-separated): prompt_tokens is the words
// of all message contents (strings or text parts) plus 3 per message;
// completion_tokens is the words of the reply; for embeddings and legacy
// prompts every token of a token array counts as one word. "n" is ignored
// (always one choice). Embeddings hash each input (a token array is hashed as
// its numbers joined by spaces), so the same input always gives the same
// vector.
//
// A stream is: a first chunk with delta {"role":"assistant","content":""}
// (chat only); the reply cut at word boundaries into --chunks pieces (at most
// one per word) whose concatenation equals the non-streamed content exactly,
// separated by --chunk-delay; a chunk with an empty delta and finish_reason
// "stop"; a chunk with "choices":[] and usage only when the request has
// stream_options.include_usage true; then "data: [DONE]". Every chunk has the
// same id and created.
//
// Errors use OpenAI's shape, {"error":{"message","type","param","code"}}:
// invalid JSON, a missing model, messages, prompt or input, and an unknown
// fault are 400 invalid_request_error; unknown paths 404; wrong methods 405.
//
// # Faults
//
// A request picks faults in the X-Mock-Fault header or in a suffix of its
// model after "@" (model "gpt-4o@status=503,retry_after=2"; the suffix is
// stripped from the echoed and recorded model). Both may be used; items are
// comma-separated and an unknown item is a 400, so typos do not go unnoticed.
//
//	status=N        answer status N (400-599) with an OpenAI error body:
//	                429 is type "requests", code "rate_limit_exceeded"; 5xx type "server_error"
//	retry_after=S   add Retry-After: S to injected errors (status, fail_first)
//	hang            never answer, until the client goes away
//	slow_first=DUR  wait DUR before the response headers
//	latency=DUR     the same as slow_first (for a plain answer, the whole answer waits)
//	cut=K           stream: after K content chunks close the connection abruptly
//	                (no finish chunk, no [DONE], no end of the chunked body)
//	malformed=K     stream: after K content chunks send "data: {not json", then go on normally
//	chunks=N        content chunks for this request
//	delay=DUR       inter-chunk delay for this request
//	fail_first=N    the first N requests per X-Mock-Key header value (per model
//	                when the header is absent) get 503; later ones succeed
//
// DUR is a Go duration ("250ms", "2s") or a number of seconds ("0.5"). K past
// the last content chunk means "after all content chunks". Faults apply in
// this order: --latency, slow_first/latency, hang, fail_first, status.
//
// # Debug endpoints
//
// These are not recorded themselves.
//
//	GET    /debug/requests[?since=SEQ][&path=/v1/...]
//	       {"requests":[...]} oldest first; each: seq, time (RFC 3339, ns), method,
//	       path, headers (first value of each, Authorization as received), body
//	       (up to 1 MiB, body_truncated if cut), model, fault, stream, in_flight,
//	       status (0 if none was sent), completed (whole response written),
//	       client_closed and closed_after_ms (client left before the end),
//	       duration_ms. In-flight requests are listed with in_flight true.
//	DELETE /debug/requests
//	       forget recorded requests, the totals below and the fail_first counters
//	GET    /debug/stats
//	       {"total":N,"in_flight":N,"client_closed":N,"by_path":{"/v1/chat/completions":N,...}}
//
// Memory stays bounded: the ring holds --record entries, and the sets of seen
// models (1024) and fail_first keys (65536) are capped.
package main
