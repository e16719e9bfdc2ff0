#!/usr/bin/env bash
# `make demo`: the gateway with mockllm as its upstream, no provider account needed.
#
# Starts mockllm in the background (MOCKLLM_ADDR, default 127.0.0.1:9000),
# makes sure an upstream named "mock" points at it (model mock-1), creates a
# client key, prints curl commands that work with that key, then runs the
# gateway in the foreground on its usual database (data/llm-proxy.db unless
# LLM_PROXY_DATABASE_PATH says otherwise). Ctrl-C stops both.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

MOCK_ADDR="${MOCKLLM_ADDR:-127.0.0.1:9000}"
MODEL=mock-1
PORT="${LLM_PROXY_PORT:-8000}"

if [ ! -x bin/llm-proxy ] || [ ! -x bin/mockllm ]; then
	make build
fi
command -v curl >/dev/null 2>&1 || {
	echo "demo: curl is needed (apt-get install curl)" >&2
	exit 1
}

if curl -fsS -o /dev/null --max-time 1 "http://$MOCK_ADDR/v1/models" 2>/dev/null; then
	echo "demo: something already answers on $MOCK_ADDR; stop it or set MOCKLLM_ADDR" >&2
	exit 1
fi

MOCK_PID=""
cleanup() {
	if [ -n "$MOCK_PID" ] && kill -0 "$MOCK_PID" 2>/dev/null; then
		kill -TERM "$MOCK_PID" 2>/dev/null || true
		wait "$MOCK_PID" 2>/dev/null || true
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "${LLM_PROXY_LOG_DIR:-logs}"
MOCK_LOG="${LLM_PROXY_LOG_DIR:-logs}/mockllm.log"
# MOCKLLM_ADDR is also mockllm's own variable; the flag states it explicitly.
bin/mockllm --addr "$MOCK_ADDR" >"$MOCK_LOG" 2>&1 &
MOCK_PID=$!
for ((i = 0; i < 100; i++)); do
	curl -fsS -o /dev/null --max-time 1 "http://$MOCK_ADDR/v1/models" 2>/dev/null && break
	if ! kill -0 "$MOCK_PID" 2>/dev/null; then
		echo "demo: mockllm exited; its log ($MOCK_LOG):" >&2
		cat "$MOCK_LOG" >&2
		exit 1
	fi
	sleep 0.1
done

# Re-create the mock upstream so it points at this mockllm even if an
# earlier demo used another address.
if bin/llm-proxy upstreams list --json | grep -Eq '"name": *"mock"'; then
	bin/llm-proxy upstreams remove mock >/dev/null
fi
bin/llm-proxy upstreams add --name mock --base-url "http://$MOCK_ADDR/v1" --models "$MODEL" >/dev/null
KEY="$(bin/llm-proxy keys create --name demo | tail -n 1)"

cat <<EOF

  llm-proxy demo: upstream "mock" -> mockllm on http://$MOCK_ADDR/v1 (model $MODEL)
  API key (shown once): $KEY

  Try, from another terminal:

  curl http://localhost:$PORT/v1/chat/completions \\
    -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" \\
    -d '{"model":"$MODEL","messages":[{"role":"user","content":"Hello!"}]}'

  Streaming:

  curl -N http://localhost:$PORT/v1/chat/completions \\
    -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" \\
    -d '{"model":"$MODEL","stream":true,"messages":[{"role":"user","content":"Hello!"}]}'

  Health: curl http://localhost:$PORT/api/health
  Starting the gateway now; Ctrl-C stops it and mockllm.

EOF

bin/llm-proxy
