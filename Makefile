# llm-proxy build, run, test and benchmark entry points (GNU make).
#
#   make run     build and start the gateway on data/llm-proxy.db (foreground)
#   make demo    same, with mockllm as the "mock" upstream and a fresh API key
#   make test    install test tools, vet, gofmt check, staticcheck (pinned in go.mod), go test -race,
#                then every fuzz target for TEST_FUZZTIME (3s) each
#   make fuzz    every fuzz target for FUZZTIME (default 10m) each; crashers land in testdata/fuzz
#   make bench   scripts/bench.sh (wrk against mockllm, nginx and the gateway)

GO      ?= go
BIN     := bin
DIST    := dist
PKG     := ./cmd/llm-proxy
MOCKPKG := ./cmd/mockllm

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
DATE    ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
# Expand once, so both binaries of one build carry the same stamp.
VERSION := $(VERSION)
COMMIT  := $(COMMIT)
DATE    := $(DATE)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.buildDate=$(DATE)

# linux/darwin/windows x amd64/arm64
PLATFORMS := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64

.DEFAULT_GOAL := build
# Fuzzing: `make test` runs each target briefly, so a regression in a parser's
# invariants shows up in CI; `make fuzz` is the long run before a release.
TEST_FUZZTIME ?= 3s
FUZZTIME      ?= 10m

.PHONY: build ui run demo test fuzz bench static cross clean

# The web admin's vendor files (Alpine's CSP build, uPlot) come from npm, pinned in
# package-lock.json, and are copied into worker/admin/static/vendor/ for go:embed.
ui:
	npm ci --no-audit --no-fund
	scripts/build-ui.sh

build: ui
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/llm-proxy $(PKG)
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/mockllm $(MOCKPKG)

# The gateway's own defaults apply (data/llm-proxy.db, port 8000); a .env file,
# if present, fills in variables the environment does not already set.
run: build
	@mkdir -p data
	@scripts/dotenv.sh ./$(BIN)/llm-proxy

demo: build
	@scripts/dotenv.sh scripts/demo.sh

test:
	scripts/install-test-deps.sh
	$(MAKE) ui
	$(GO) vet ./...
	@unformatted="$$(gofmt -l $$(find . -name '*.go' -not -path './node_modules/*' -not -path './.git/*'))"; \
	if [ -n "$$unformatted" ]; then echo "gofmt: these files need formatting:"; echo "$$unformatted"; exit 1; fi
	$(GO) tool staticcheck ./...
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 15m ./...
	FUZZTIME=$(TEST_FUZZTIME) GO=$(GO) scripts/fuzz.sh

fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) scripts/fuzz.sh

bench:
	scripts/bench.sh

static: ui
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $(BIN)/llm-proxy $(PKG)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $(BIN)/mockllm $(MOCKPKG)

cross: ui
	@mkdir -p $(DIST)
	@set -e; for p in $(PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; ext=; [ "$$os" = windows ] && ext=.exe; \
		out=$(DIST)/llm-proxy-$$os-$$arch$$ext; echo "$$out"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $$out $(PKG); \
	done

clean:
	rm -rf $(BIN) $(DIST)
