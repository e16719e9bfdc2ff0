// Package e2e holds the end-to-end tests of the gateway: they build the real
// llm-proxy and mockllm binaries, start a supervisor with two workers on a free
// port of 127.0.0.1 against a real SQLite file and a mockllm upstream, and drive
// it with the official OpenAI Go SDK the way a user's application would.
//
// The package has no non-test code; `go test ./cmd/llm-proxy/e2e/` runs it. The
// binaries are built once per test run (without -race, so the processes under
// test run at production speed); every process a test starts is stopped by the
// test's cleanup, and a worker that outlives its supervisor fails the test.
package e2e
