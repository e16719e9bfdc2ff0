# syntax=docker/dockerfile:1

# ---- build: static binaries (pure-Go SQLite, so CGO is off) ----
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
ARG BUILD_DATE=unknown
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags="-s -w -X main.version=${VERSION} -X main.commit=${COMMIT} -X main.buildDate=${BUILD_DATE}" \
      -o /out/llm-proxy ./cmd/llm-proxy \
 && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/mockllm ./cmd/mockllm

# ---- runtime: debian-slim, for curl in the HEALTHCHECK and CA certificates ----
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 llmproxy \
 && useradd --system --uid 10001 --gid llmproxy --home-dir /data --shell /usr/sbin/nologin llmproxy \
 && mkdir -p /data /logs \
 && chown llmproxy:llmproxy /data /logs
COPY --from=build /out/llm-proxy /out/mockllm /usr/local/bin/

ENV LLM_PROXY_HOST=0.0.0.0 \
    LLM_PROXY_PORT=8000 \
    LLM_PROXY_DATABASE_PATH=/data/llm-proxy.db \
    LLM_PROXY_LOG_DIR=/logs
VOLUME ["/data", "/logs"]
WORKDIR /data
USER llmproxy:llmproxy
EXPOSE 8000
# SIGTERM drains in-flight requests and streams for LLM_PROXY_SHUTDOWN_TIMEOUT
# (30s): give `docker stop` a longer --time (compose: stop_grace_period).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${LLM_PROXY_PORT}/api/health" >/dev/null || exit 1
ENTRYPOINT ["llm-proxy"]
