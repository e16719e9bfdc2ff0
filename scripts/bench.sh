#!/usr/bin/env bash
# Load test of the gateway against the reference proxy, on loopback only.
#
#   scripts/bench.sh              the case report (below)
#   scripts/bench.sh --check      the same, then compare with bench/results.tsv (BENCH_CHECK=1)
#   scripts/bench.sh --scaling    the scaling and memory report (BENCH_MODE=scaling)
#
# Case report. Starts mockllm (the upstream), nginx (a plain reverse proxy with upstream
# keep-alive, started from the Debian package with a private config) and the gateway with
# 1 and with 2 workers, and drives each with wrk (1 thread):
#
#   chat      non-streaming chat completion, BENCH_CONNECTIONS connections (64)
#   stream    streaming chat completion ("stream":true, BENCH_CHUNKS chunks), same connections
#   embed     /v1/embeddings, same connections
#   nolimits  the chat request with a key without limits, in the same gateway and
#             run as chat (whose key has limits): what the limiter costs
#   cachehit  the chat request with a second key whose cache mode is exact (`keys update
#             --cache exact`), repeated: after the first answer every request is an L1 hit
#             (auth + lookup + response). mockllm and nginx have no cache: their rows are
#             their chat figures (the same request passed through)
#   invalid   the chat request with an unknown key: the gateway's 401 path, no upstream
#             (n/a for mockllm and nginx)
#   mixed     80% chat, 15% stream, 5% cache hit, chosen per request by a wrk Lua script
#             (for mockllm and nginx the cache-hit share is a plain chat request)
#   latency   non-streaming chat completion, 1 connection (p50 is the figure that matters)
#
# The gateway's client keys carry rpm/tpm/max-parallel limits far above the load, so the
# limiter runs on every request (BENCH_LIMITS=0: no key limits); request records are on
# (the default). Each case runs BENCH_RUNS times per target; the report shows the median
# run by requests/s, and the req/s of every run. All targets are up for the whole run and
# are measured in turn inside each case and run (direct, nginx, gw1, gw2, then the next
# case), so a busy minute of a shared machine falls on the reference and the gateway alike.
#
# Pinning: the system under test (nginx, or the gateway's supervisor and workers) runs on
# CPU 0; wrk and mockllm share CPU 1. Reported per case and target: requests/s, p50/p99
# latency, CPU seconds of the system under test per 1000 requests (utime+stime of its
# whole process tree, from /proc), its CPU use in % of one core, and errors (unexpected
# statuses and socket errors, which make the exit status 1); per target the idle and
# peak RSS of every process. Every figure also as a ratio to nginx.
#
# Output: the markdown report goes to stdout and to BENCH_OUT (bench/results-latest.md),
# a machine-readable table (target, case, req/s, p50 ms, p99 ms, CPU s per 1k requests)
# next to it (bench/results-latest.tsv). BENCH_SAVE=1 also copies both to
# bench/results.md and bench/results.tsv, the committed reference.
#
# Check (--check): after the run, each gateway case's req/s ratio to nginx is compared
# with the same ratio in BENCH_BASELINE (bench/results.tsv). Ratios, not absolute
# figures, because the machines are shared. Exit 1 listing every case whose ratio fell by
# more than BENCH_CHECK_TOLERANCE percent (10); exit 2 when the baseline is missing.
#
# Scaling (--scaling): the chat case with the gateway at 1, 2 and 4 workers (and nginx
# with 2 workers as the reference): req/s, CPU per request, idle and loaded RSS per
# worker. Pinning: the gateway on CPUs 0-1, wrk and mockllm on the others; with fewer
# than 3 CPUs nothing is pinned (the report says so). Then memory per worker (1 worker)
# with 1k keys (made with `llm-proxy keys create`), 100k keys (scripts/benchkeys, through
# the store package) and the L1 cache filled with BENCH_CACHE_ENTRIES distinct answers.
# Its section replaces the scaling section of BENCH_OUT (and, with BENCH_SAVE=1, of
# bench/results.md); the case report there is kept, and the case report keeps it.
#
# Environment:
#   BENCH_MODE         cases (default) or scaling
#   BENCH_CHECK        1: as --check
#   BENCH_RUNS         runs per case and target; the median is reported (default 3, 1..9)
#   BENCH_DURATION     seconds per run (default 10, 1..120)
#   BENCH_CONNECTIONS  connections for every case but latency (default 64, 1..1024)
#   BENCH_CHUNKS       content chunks per streamed answer (default 20)
#   BENCH_TARGETS      subset of "direct nginx gw1 gw2" (default: all four; cases mode)
#   BENCH_CASES        subset of "chat nolimits stream embed cachehit invalid mixed latency" (default: all)
#   BENCH_MODEL        model name sent (default mock-1)
#   BENCH_LIMITS       0: the gateway's keys have no limits (default 1)
#   BENCH_CACHE_ENTRIES  distinct answers put in the L1 cache in scaling mode (default 10000)
#   BENCH_SKIP_BUILD   1: use bin/llm-proxy, bin/mockllm and bin/benchkeys as they are
#   BENCH_OUT          report file (default bench/results-latest.md; the TSV is BENCH_OUT
#                      with .tsv instead of .md)
#   BENCH_SAVE         1: also write bench/results.md and bench/results.tsv
#   BENCH_BASELINE     the TSV --check compares with (default bench/results.tsv)
#   BENCH_CHECK_TOLERANCE  allowed drop of a ratio in percent (default 10)
#   BENCH_KEEP_TMP     1: keep the temporary directory (logs, configs, wrk output)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"

die() {
	echo "bench: $*" >&2
	exit 1
}
is_int_in() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]; }

MODE="${BENCH_MODE:-cases}"
CHECK="${BENCH_CHECK:-0}"
for arg in "$@"; do
	case "$arg" in
	--check) CHECK=1 ;;
	--scaling) MODE=scaling ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*) die "unknown argument '$arg' (--check, --scaling, --help)" ;;
	esac
done
case "$MODE" in cases | scaling) ;; *) die "BENCH_MODE must be cases or scaling, got '$MODE'" ;; esac
[ "$CHECK" = 1 ] && [ "$MODE" = scaling ] && die "--check compares the case report; it does not apply to --scaling"

RUNS="${BENCH_RUNS:-3}"
DURATION="${BENCH_DURATION:-10}"
CONNS="${BENCH_CONNECTIONS:-64}"
CHUNKS="${BENCH_CHUNKS:-20}"
TARGETS="${BENCH_TARGETS:-direct nginx gw1 gw2}"
ALL_CASES="chat nolimits stream embed cachehit invalid mixed latency"
CASES="${BENCH_CASES:-$ALL_CASES}"
MODEL="${BENCH_MODEL:-mock-1}"
LIMITS="${BENCH_LIMITS:-1}"
CACHE_ENTRIES="${BENCH_CACHE_ENTRIES:-10000}"
OUT="${BENCH_OUT:-bench/results-latest.md}"
TSV_OUT="${OUT%.md}.tsv"
SAVE_MD=bench/results.md
SAVE_TSV=bench/results.tsv
BASELINE="${BENCH_BASELINE:-$SAVE_TSV}"
TOLERANCE="${BENCH_CHECK_TOLERANCE:-10}"
WARMUP=1
# The L1 size every gateway here runs with: the idle-RSS bar allows for it.
L1_MB=64

is_int_in "$RUNS" 1 9 || die "BENCH_RUNS must be 1..9, got '$RUNS'"
is_int_in "$DURATION" 1 120 || die "BENCH_DURATION must be 1..120 seconds, got '$DURATION'"
is_int_in "$CONNS" 1 1024 || die "BENCH_CONNECTIONS must be 1..1024, got '$CONNS'"
is_int_in "$CHUNKS" 1 10000 || die "BENCH_CHUNKS must be 1..10000, got '$CHUNKS'"
is_int_in "$CACHE_ENTRIES" 1 1000000 || die "BENCH_CACHE_ENTRIES must be 1..1000000, got '$CACHE_ENTRIES'"
is_int_in "$TOLERANCE" 0 100 || die "BENCH_CHECK_TOLERANCE must be 0..100, got '$TOLERANCE'"
case "$LIMITS" in 0 | 1) ;; *) die "BENCH_LIMITS must be 0 or 1, got '$LIMITS'" ;; esac
for t in $TARGETS; do
	case "$t" in
	direct | nginx | gw1 | gw2) ;;
	gwcache) die "the gwcache target is now the cachehit case of gw1 and gw2 (BENCH_CASES=cachehit)" ;;
	*) die "unknown target '$t' in BENCH_TARGETS (direct nginx gw1 gw2)" ;;
	esac
done
for c in $CASES; do
	[[ " $ALL_CASES " == *" $c "* ]] || die "unknown case '$c' in BENCH_CASES ($ALL_CASES)"
done
if [ "$CHECK" = 1 ] && [ ! -f "$BASELINE" ]; then
	echo "bench: --check needs $BASELINE, the committed reference figures, and it does not exist." >&2
	echo "bench: make it with 'BENCH_SAVE=1 scripts/bench.sh' on a quiet machine (or set BENCH_BASELINE)." >&2
	exit 2
fi
for tool in wrk curl taskset getconf timeout awk sort; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool not found (scripts/install-test-deps.sh installs the tools)"
done
if [ "$MODE" = scaling ] || [[ " $TARGETS " == *" nginx "* ]]; then
	command -v nginx >/dev/null 2>&1 || die "nginx not found (apt-get install nginx-light)"
fi

# The benchmark must not inherit the caller's gateway settings or provider key:
# every gateway here is configured below, and no request may leave 127.0.0.1.
while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep -E '^(LLM_PROXY_|MOCKLLM_|OPENAI_API_KEY$)' || true)

START_TIME="$(date +%s)"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
CLK_TCK="$(getconf CLK_TCK)"
NCPU="$(nproc)"
if [ "$MODE" = scaling ]; then
	# 1, 2 and 4 workers on 2 cores: the gateway gets two CPUs, the load generator the rest.
	if [ "$NCPU" -ge 4 ]; then
		SUT_PIN=(taskset -c 0-1)
		CLIENT_PIN=(taskset -c 2-3)
		PINNING="gateway and nginx on CPUs 0-1; wrk and mockllm on CPUs 2-3"
	elif [ "$NCPU" -eq 3 ]; then
		SUT_PIN=(taskset -c 0-1)
		CLIENT_PIN=(taskset -c 2)
		PINNING="gateway and nginx on CPUs 0-1; wrk and mockllm on CPU 2"
	else
		SUT_PIN=()
		CLIENT_PIN=()
		PINNING="not pinned: this machine has $NCPU CPUs, none left for wrk and mockllm beside the 2 of the system under test; wrk and mockllm compete with it for the same cores"
		echo "bench: warning: $PINNING" >&2
	fi
elif [ "$NCPU" -ge 2 ]; then
	SUT_PIN=(taskset -c 0)
	CLIENT_PIN=(taskset -c 1)
	PINNING="system under test on CPU 0; wrk and mockllm on CPU 1"
else
	SUT_PIN=()
	CLIENT_PIN=()
	PINNING="not pinned: only $NCPU CPU"
	echo "bench: warning: $PINNING; figures are not comparable with pinned runs" >&2
fi

# ---------------------------------------------------------------- time estimate

# Per target: start-up, warm-up and checks take about 5 s besides the measured runs.
n_gw=0 n_ref=0 n_gwcases=0 n_refcases=0
for t in $TARGETS; do case "$t" in gw*) n_gw=$((n_gw + 1)) ;; *) n_ref=$((n_ref + 1)) ;; esac done
for c in $CASES; do
	n_gwcases=$((n_gwcases + 1))
	case "$c" in cachehit | invalid | nolimits) ;; *) n_refcases=$((n_refcases + 1)) ;; esac
done
if [ "$MODE" = scaling ]; then
	# 4 curve targets with RUNS runs, 4 memory set-ups with one loaded run each, key creation ~25 s.
	ESTIMATE=$((4 * (RUNS * DURATION + WARMUP + 5) + 4 * (DURATION + 6) + 25 + CACHE_ENTRIES / 1000))
else
	ESTIMATE=$(((n_gw * n_gwcases + n_ref * n_refcases) * RUNS * DURATION + (n_gw + n_ref) * (WARMUP + 5)))
fi
echo "bench: mode $MODE, $RUNS run(s) of ${DURATION} s per case; estimated total $((ESTIMATE / 60)) min $((ESTIMATE % 60)) s" >&2

TMP="$(mktemp -d "${TMPDIR:-/tmp}/llm-proxy-bench.XXXXXX")"
# nginx workers run as an unprivileged user when started by root; they must be
# able to reach their config directory.
chmod 0755 "$TMP"
PIDS=()

# ---------------------------------------------------------------- processes

# tree_pids PID: PID and all its descendants, from /proc.
tree_pids() {
	local root="$1" f stat rest pid
	local -a fields
	local -A kids=()
	for f in /proc/[0-9]*/stat; do
		{ read -r stat <"$f"; } 2>/dev/null || continue
		pid="${stat%% *}"
		rest="${stat##*) }" # comm may contain spaces and parentheses
		read -r -a fields <<<"$rest"
		kids[${fields[1]}]+=" $pid"
	done
	local -a queue=("$root") out=()
	while [ ${#queue[@]} -gt 0 ]; do
		pid="${queue[0]}"
		queue=("${queue[@]:1}")
		out+=("$pid")
		# shellcheck disable=SC2206
		[ -n "${kids[$pid]:-}" ] && queue+=(${kids[$pid]})
	done
	echo "${out[@]}"
}

# cpu_ticks PID...: utime+stime+cutime+cstime summed. Counting reaped children
# (cutime/cstime) keeps the figure right if a worker is restarted mid-run.
cpu_ticks() {
	local total=0 pid stat rest
	local -a fields
	for pid in "$@"; do
		{ read -r stat <"/proc/$pid/stat"; } 2>/dev/null || continue
		rest="${stat##*) }"
		read -r -a fields <<<"$rest"
		total=$((total + fields[11] + fields[12] + fields[13] + fields[14]))
	done
	echo "$total"
}

# status_kib PID FIELD: VmHWM / VmRSS of one process in KiB.
status_kib() {
	awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || true
}

alive() { kill -0 "$1" 2>/dev/null; }

# stop_tree PID: SIGTERM to PID, then SIGKILL to whatever of its tree is left
# after 10 s.
stop_tree() {
	local pid="$1" tree i p
	alive "$pid" || return 0
	tree="$(tree_pids "$pid")"
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		alive "$pid" || break
		sleep 0.1
	done
	for p in $tree; do kill -KILL "$p" 2>/dev/null || true; done
	wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
	local i
	set +e
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_tree "${PIDS[$i]}"; done
	if [ "${BENCH_KEEP_TMP:-}" = 1 ]; then
		echo "bench: logs and configs kept in $TMP" >&2
	else
		rm -rf "$TMP"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

USED_PORTS=" "
# free_port: sets PORT to a port on 127.0.0.1 nobody listens on.
free_port() {
	local p i
	for ((i = 0; i < 500; i++)); do
		p=$((20000 + RANDOM % 40000))
		[[ "$USED_PORTS" == *" $p "* ]] && continue
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			USED_PORTS+="$p "
			PORT="$p"
			return 0
		fi
	done
	die "no free port found"
}

# wait_http URL PID LOG: until URL answers 2xx, failing if PID exits or 30 s pass.
wait_http() {
	local url="$1" pid="$2" log="$3" i
	for ((i = 0; i < 300; i++)); do
		if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then return 0; fi
		if ! alive "$pid"; then
			echo "bench: process $pid exited before $url answered; its log:" >&2
			tail -n 30 "$log" >&2 || true
			return 1
		fi
		sleep 0.1
	done
	echo "bench: $url did not answer within 30 s; log:" >&2
	tail -n 30 "$log" >&2 || true
	return 1
}

# ---------------------------------------------------------------- build

if [ "${BENCH_SKIP_BUILD:-}" != 1 ]; then
	echo "bench: building bin/llm-proxy and bin/mockllm$([ "$MODE" = scaling ] && echo " and bin/benchkeys")" >&2
	mkdir -p bin
	go build -trimpath -o bin/llm-proxy ./cmd/llm-proxy
	go build -trimpath -o bin/mockllm ./cmd/mockllm
	[ "$MODE" = scaling ] && go build -trimpath -o bin/benchkeys ./scripts/benchkeys
fi
[ -x bin/mockllm ] || die "bin/mockllm missing"
[ -x bin/llm-proxy ] || die "bin/llm-proxy missing"
[ "$MODE" != scaling ] || [ -x bin/benchkeys ] || die "bin/benchkeys missing"

# ---------------------------------------------------------------- mockllm

free_port
MOCK_PORT="$PORT"
# mockllm streams at most one chunk per word of its reply: make the reply
# exactly CHUNKS words long. Recording is off so it costs nothing per request.
REPLY="$(for ((i = 1; i <= CHUNKS; i++)); do printf 'word%d ' "$i"; done)"
"${CLIENT_PIN[@]}" bin/mockllm --addr "127.0.0.1:$MOCK_PORT" --chunks "$CHUNKS" --chunk-delay 0s \
	--record 0 --reply "${REPLY% }" >"$TMP/mockllm.log" 2>&1 &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
wait_http "http://127.0.0.1:$MOCK_PORT/v1/models" "$MOCK_PID" "$TMP/mockllm.log" || die "mockllm did not start"

# ---------------------------------------------------------------- requests

CHAT_PATH=/v1/chat/completions
EMBED_PATH=/v1/embeddings
CHAT_BODY="{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"Say hello in one short sentence.\"}],\"stream\":false}"
STREAM_BODY="{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"Say hello in one short sentence.\"}],\"stream\":true}"
EMBED_BODY="{\"model\":\"$MODEL\",\"input\":\"Say hello in one short sentence.\"}"
# A well-formed key that no database holds.
INVALID_KEY="sk-benchInvalidKey0000000000000000000"

# wrk_script FILE BODY KEY: a wrk script that POSTs BODY with the key. The
# request is set once in the globals, so wrk reuses one pre-built request and
# the client stays cheap. Lua long brackets keep the JSON as it is.
wrk_script() {
	cat >"$1" <<EOF
wrk.method = "POST"
wrk.body = [==[$2]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $3"
EOF
}

# wrk_mixed FILE KEY CACHEKEY: 80% chat, 15% stream, 5% chat with CACHEKEY, in a fixed
# interleaved cycle of 20 so every run sends exactly that mix. The requests are built
# once in init; only the choice runs per request.
wrk_mixed() {
	cat >"$1" <<EOF
local reqs = {}
-- 1 chat, 2 stream, 3 cache hit: 16, 3 and 1 of 20
local cycle = {1, 1, 1, 2, 1, 1, 1, 1, 1, 3, 1, 1, 1, 2, 1, 1, 1, 1, 2, 1}
local i = 0
function init(args)
	local function post(body, key)
		return wrk.format("POST", "$CHAT_PATH",
			{["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. key}, body)
	end
	reqs[1] = post([==[$CHAT_BODY]==], "$2")
	reqs[2] = post([==[$STREAM_BODY]==], "$2")
	reqs[3] = post([==[$CHAT_BODY]==], "$3")
end
function request()
	i = i % #cycle + 1
	return reqs[cycle[i]]
end
EOF
}

# wrk_fill FILE KEY N MARK: N distinct cacheable chat requests, twice over (the second
# pass stores what the first one's bounded write-behind queue dropped, and is otherwise
# L1 hits); after 2N answers it creates the file MARK. wrk itself only ends after its
# duration, so the caller stops it when MARK appears.
wrk_fill() {
	cat >"$1" <<EOF
local n = $3
local sent, got = 0, 0
function request()
	sent = sent % n + 1
	local body = '{"model":"$MODEL","messages":[{"role":"user","content":"fill ' .. sent .. '"}]}'
	return wrk.format("POST", "$CHAT_PATH",
		{["Content-Type"] = "application/json", ["Authorization"] = "Bearer $2"}, body)
end
function response(status, headers, body)
	got = got + 1
	if got == 2 * n then
		local f = io.open("$4", "w")
		if f then f:close() end
		wrk.thread:stop()
	end
end
EOF
}

# post URL KEY BODY OUTFILE [HEADERS_FILE]: one POST with curl; prints the status.
post() {
	local -a hdr=()
	[ -n "${5:-}" ] && hdr=(-D "$5")
	curl -sS -N -o "$4" "${hdr[@]}" -w '%{http_code}' --max-time 10 -X POST \
		-H 'Content-Type: application/json' -H "Authorization: Bearer $2" \
		--data "$3" "$1" || true
}

# ---------------------------------------------------------------- targets

# start_nginx WORKERS: sets SUT_PID and BASE_URL.
start_nginx() {
	local dir="$TMP/nginx-$1"
	mkdir -p "$dir"
	free_port
	cat >"$dir/nginx.conf" <<EOF
worker_processes $1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 100000;
    upstream mockllm {
        server 127.0.0.1:$MOCK_PORT;
        keepalive 128;
        keepalive_requests 100000;
    }
    server {
        listen 127.0.0.1:$PORT;
        location / {
            proxy_pass http://mockllm;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
	"${SUT_PIN[@]}" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/stdout.log" 2>&1 &
	SUT_PID=$!
	PIDS+=("$SUT_PID")
	SUT_LOG="$dir/error.log"
	BASE_URL="http://127.0.0.1:$PORT"
	wait_http "$BASE_URL/v1/models" "$SUT_PID" "$dir/stdout.log"
}

# gw_cli ARGS...: the CLI against the gateway being prepared (GENV), output appended
# to its cli.log.
gw_cli() { "${GENV[@]}" bin/llm-proxy "$@" 2>>"$GW_DIR/cli.log"; }

# gw_key NAME: creates a key through the CLI (with the bench limits); sets NEW_KEY and
# NEW_KEY_ID.
gw_key() {
	local out
	local -a lim=()
	[ "$LIMITS" = 1 ] && lim=(--rpm 1000000000 --tpm 1000000000000 --max-parallel 100000)
	out="$(gw_cli keys create --name "$1" "${lim[@]}")" || {
		cat "$GW_DIR/cli.log" >&2
		return 1
	}
	NEW_KEY="$(tail -n 1 <<<"$out")"
	NEW_KEY_ID="$(sed -n 's/^created key \([0-9][0-9]*\) .*/\1/p' <<<"$out")"
	[[ "$NEW_KEY" == sk-* && -n "$NEW_KEY_ID" ]] || {
		echo "bench: keys create printed '$out'" >&2
		cat "$GW_DIR/cli.log" >&2
		return 1
	}
}

# start_gateway N NAME [VAR=VALUE...]: a gateway with N workers on a fresh data
# directory named NAME, with a "mock" upstream, a key made through the CLI (KEY), a key
# whose cache mode is exact (CACHE_KEY) and extra environment. GW_PREP, when set, is a
# command run before the gateway starts (more keys). Sets SUT_PID, BASE_URL, GW_DIR, GENV.
start_gateway() {
	local n="$1" i
	GW_DIR="$TMP/$2"
	shift 2
	mkdir -p "$GW_DIR"
	free_port
	GENV=(env
		LLM_PROXY_HOST=127.0.0.1
		LLM_PROXY_PORT="$PORT"
		LLM_PROXY_WORKERS="$n"
		LLM_PROXY_DATABASE_PATH="$GW_DIR/llm-proxy.db"
		LLM_PROXY_LOG_DIR="$GW_DIR/logs"
		LLM_PROXY_SHUTDOWN_TIMEOUT=5s
		LLM_PROXY_CACHE_L1_MB="$L1_MB"
		"$@")
	gw_cli migrate >/dev/null || {
		cat "$GW_DIR/cli.log" >&2
		return 1
	}
	gw_cli upstreams add --name mock --base-url "http://127.0.0.1:$MOCK_PORT/v1" --models "$MODEL" >/dev/null || {
		cat "$GW_DIR/cli.log" >&2
		return 1
	}
	gw_key bench || return 1
	KEY="$NEW_KEY"
	# The same chat with a key without limits, in the same gateway and run: what
	# the limiter costs (nolimits case).
	local saved="$LIMITS"
	LIMITS=0
	gw_key bench-nolimits || return 1
	LIMITS="$saved"
	NOLIM_KEY="$NEW_KEY"
	gw_key bench-cache || return 1
	CACHE_KEY="$NEW_KEY"
	gw_cli keys update "$NEW_KEY_ID" --cache exact >/dev/null || {
		cat "$GW_DIR/cli.log" >&2
		return 1
	}
	if [ -n "${GW_PREP:-}" ]; then
		$GW_PREP || return 1
	fi
	"${SUT_PIN[@]}" "${GENV[@]}" bin/llm-proxy >"$GW_DIR/gateway.log" 2>&1 &
	SUT_PID=$!
	PIDS+=("$SUT_PID")
	SUT_LOG="$GW_DIR/gateway.log"
	BASE_URL="http://127.0.0.1:$PORT"
	wait_http "$BASE_URL/api/health" "$SUT_PID" "$SUT_LOG" || return 1
	# Health answers as soon as one worker is up; wait for all N.
	for ((i = 0; i < 100; i++)); do
		[ "$(wc -w <<<"$(tree_pids "$SUT_PID")")" -ge $((n + 1)) ] && break
		sleep 0.1
	done
	sleep 0.5
}

# sanity BASE KEY: one chat, one stream and one embeddings request must succeed before
# a figure is taken.
sanity() {
	local base="$1" key="$2" code
	code="$(post "$base$CHAT_PATH" "$key" "$CHAT_BODY" "$TMP/sanity.out")"
	if [ "$code" != 200 ] || ! grep -q '"choices"' "$TMP/sanity.out"; then
		echo "bench: sanity chat request to $base answered $code:" >&2
		head -c 600 "$TMP/sanity.out" >&2 || true
		echo >&2
		return 1
	fi
	code="$(post "$base$CHAT_PATH" "$key" "$STREAM_BODY" "$TMP/sanity.out")"
	if [ "$code" != 200 ] || ! grep -q '^data: \[DONE\]' "$TMP/sanity.out"; then
		echo "bench: sanity stream request to $base answered $code:" >&2
		head -c 600 "$TMP/sanity.out" >&2 || true
		echo >&2
		return 1
	fi
	code="$(post "$base$EMBED_PATH" "$key" "$EMBED_BODY" "$TMP/sanity.out")"
	if [ "$code" != 200 ] || ! grep -q '"embedding"' "$TMP/sanity.out"; then
		echo "bench: sanity embeddings request to $base answered $code:" >&2
		head -c 600 "$TMP/sanity.out" >&2 || true
		echo >&2
		return 1
	fi
}

# cache_header BASE KEY: the X-LLM-Proxy-Cache header of one chat request.
cache_header() {
	post "$1$CHAT_PATH" "$2" "$CHAT_BODY" "$TMP/hit.out" "$TMP/hit.hdr" >/dev/null
	awk -F': ' 'tolower($1) == "x-llm-proxy-cache" { gsub(/\r/, "", $2); print $2 }' "$TMP/hit.hdr"
}

# ---------------------------------------------------------------- measuring

declare -A RPS P50 P99 CPU CPUPCT ERR NOTE RUNLIST RSS RSSTOT IDLE IDLEWORKER ROWS CATCHUP WALMAX
ERRORS=0
FAILED=()

# to_ms VALUE: wrk's "812.00us" / "1.23ms" / "2.00s" / "1.00m" in ms.
to_ms() {
	awk -v v="$1" 'BEGIN {
		if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
		else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
		else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
		else if (v ~ /h$/) { sub(/h$/, "", v); printf "%.3f", v * 3600000 }
		else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
		else printf ""
	}'
}

# log_rows: rows in the gateway's request_logs (empty without the sqlite3 CLI).
log_rows() {
	command -v sqlite3 >/dev/null 2>&1 || return 0
	sqlite3 -readonly "$SUT_DB" 'SELECT count(*) FROM request_logs' 2>/dev/null || true
}

# wal_monitor FILE OUT: writes the largest size FILE reaches to OUT, sampling every
# 0.25 s until killed.
wal_monitor() {
	local max=0 size
	while :; do
		size="$(stat -c %s "$1" 2>/dev/null || echo 0)"
		if [ "$size" -gt "$max" ]; then
			max="$size"
			echo "$max" >"$2"
		fi
		sleep 0.25
	done
}

# ingest_catchup ID ROWS0 REQS: waits (up to 30 s) until request_logs holds REQS rows
# more than ROWS0, i.e. the primary has ingested every request wrk saw completed, and
# records how long after the end of the run that took. A primary whose ingest keeps
# up needs about one ingest interval (1 s); one that falls behind needs time in
# proportion to the run.
ingest_catchup() {
	local id="$1" rows0="$2" reqs="$3" start now n
	[ -n "$rows0" ] || return 0
	start="$(date +%s.%N)"
	while :; do
		n="$(log_rows)"
		now="$(date +%s.%N)"
		if [ -n "$n" ] && [ $((n - rows0)) -ge "$reqs" ]; then
			ROWS[$id]=$((n - rows0))
			CATCHUP[$id]="$(awk -v s="$start" -v e="$now" 'BEGIN { printf "%.1f", e - s }')"
			return 0
		fi
		if awk -v s="$start" -v e="$now" 'BEGIN { exit !(e - s > 30) }'; then
			ROWS[$id]=$((${n:-0} - rows0))
			CATCHUP[$id]=">30"
			echo "bench: $id: request_logs holds ${ROWS[$id]} new rows 30 s after the run, wrk completed $reqs requests" >&2
			return 0
		fi
		sleep 0.1
	done
}

# measure ID SCRIPT CONNS DURATION PATH [EXPECT]: runs wrk against PATH of BASE_URL
# and records the figures under ID. EXPECT is 2xx (default) or "non2xx" for a case
# whose every answer must be an error status (the invalid key).
measure() {
	local id="$1" script="$2" conns="$3" dur="$4" path="$5" expect="${6:-2xx}"
	local out="$TMP/wrk-${id//[\/#]/-}.txt" tree before after reqs non2xx sockerr bad
	tree="$(tree_pids "$SUT_PID")"
	# The gateway's request log: rows before the run and the WAL's size during it
	# (refused keys are not recorded, so the invalid case is left out).
	local rows0="" walmon=""
	if [ -n "${SUT_DB:-}" ] && [ "$expect" = 2xx ]; then
		rows0="$(log_rows)"
		rm -f "$TMP/walmax"
		wal_monitor "$SUT_DB-wal" "$TMP/walmax" &
		walmon=$!
	fi
	# shellcheck disable=SC2086
	before="$(cpu_ticks $tree)"
	if ! timeout $((dur + 30)) "${CLIENT_PIN[@]}" wrk -t1 -c"$conns" -d"${dur}s" --timeout 10s --latency \
		-s "$script" "$BASE_URL$path" >"$out" 2>&1; then
		echo "bench: wrk failed for $id:" >&2
		cat "$out" >&2
		NOTE[$id]="wrk failed"
		ERRORS=$((ERRORS + 1))
		[ -n "$walmon" ] && kill "$walmon" 2>/dev/null
		return 0
	fi
	# Processes that appeared during the run (a restarted worker) count too:
	# all their CPU time was spent within it.
	# shellcheck disable=SC2046,SC2086
	tree="$(printf '%s\n' $tree $(tree_pids "$SUT_PID") | sort -un)"
	# shellcheck disable=SC2086
	after="$(cpu_ticks $tree)"
	reqs="$(awk '/ requests in /{ print $1; exit }' "$out")"
	non2xx="$(awk '/Non-2xx or 3xx responses:/{ print $NF; exit }' "$out")"
	sockerr="$(awk '/Socket errors:/{ gsub(/,/, ""); print $4 + $6 + $8 + $10; exit }' "$out")"
	reqs="${reqs:-0}"
	non2xx="${non2xx:-0}"
	sockerr="${sockerr:-0}"
	if [ -n "$walmon" ]; then
		ingest_catchup "$id" "$rows0" "$reqs"
		kill "$walmon" 2>/dev/null
		wait "$walmon" 2>/dev/null || true
		[ -f "$TMP/walmax" ] && WALMAX[$id]="$(awk '{ printf "%.1f", $1 / 1048576 }' "$TMP/walmax")"
	fi
	RPS[$id]="$(awk '/^Requests\/sec:/{ printf "%.0f", $2; exit }' "$out")"
	P50[$id]="$(to_ms "$(awk '$1 == "50%" { print $2; exit }' "$out")")"
	P99[$id]="$(to_ms "$(awk '$1 == "99%" { print $2; exit }' "$out")")"
	CPU[$id]="$(awk -v d="$((after - before))" -v hz="$CLK_TCK" -v n="$reqs" \
		'BEGIN { if (n > 0) printf "%.4f", d / hz / n * 1000 }')"
	CPUPCT[$id]="$(awk -v d="$((after - before))" -v hz="$CLK_TCK" -v s="$dur" \
		'BEGIN { printf "%.0f", d / hz / s * 100 }')"
	if [ "$expect" = non2xx ]; then
		bad=$((reqs - non2xx))
		ERR[$id]=$((bad + sockerr))
		[ "${ERR[$id]}" -gt 0 ] && NOTE[$id]="$bad 2xx/3xx, $sockerr socket errors"
	else
		ERR[$id]=$((non2xx + sockerr))
		[ "${ERR[$id]}" -gt 0 ] && NOTE[$id]="$non2xx non-2xx, $sockerr socket errors"
	fi
	if [ "${ERR[$id]}" -gt 0 ]; then
		ERRORS=$((ERRORS + 1))
		echo "bench: $id: ${NOTE[$id]}" >&2
	fi
	# A proxy that stalls completes no request and, with wrk's timeout longer
	# than the run, reports no socket error either.
	if [ "$reqs" -eq 0 ]; then
		ERRORS=$((ERRORS + 1))
		NOTE[$id]="no request completed"
		echo "bench: $id: no request completed in ${dur} s" >&2
	fi
	echo "bench: $id: ${RPS[$id]:-?} req/s, p50 ${P50[$id]:-?} ms, p99 ${P99[$id]:-?} ms, CPU ${CPU[$id]:-?} s/1k, ${ERR[$id]} errors" >&2
}

# pick_median ID: from the runs ID#1..ID#RUNS, copies the run with the median req/s
# (the lower one of the middle two for an even count) to ID; errors are summed over
# the runs, and RUNLIST holds every run's req/s.
pick_median() {
	local id="$1" r list="" runs="" notes="" errs=0 n pick
	for ((r = 1; r <= RUNS; r++)); do
		runs+="${runs:+ / }${RPS[$id#$r]:--}"
		[ -n "${RPS[$id#$r]:-}" ] && list+="${RPS[$id#$r]} $r"$'\n'
		errs=$((errs + ${ERR[$id#$r]:-0}))
		[ -n "${NOTE[$id#$r]:-}" ] && notes+="${notes:+; }run $r: ${NOTE[$id#$r]}"
	done
	RUNLIST[$id]="$runs"
	ERR[$id]="$errs"
	[ -n "$notes" ] && NOTE[$id]="$notes"
	[ -n "$list" ] || return 0
	n="$(printf '%s' "$list" | wc -l)"
	pick="$(printf '%s' "$list" | sort -n -k1,1 | sed -n "$(((n + 1) / 2))p" | awk '{ print $2 }')"
	RPS[$id]="${RPS[$id#$pick]}"
	P50[$id]="${P50[$id#$pick]:-}"
	P99[$id]="${P99[$id#$pick]:-}"
	CPU[$id]="${CPU[$id#$pick]:-}"
	CPUPCT[$id]="${CPUPCT[$id#$pick]:-}"
	# The request log: the worst run counts (slowest catch-up, largest WAL).
	local c w
	for ((r = 1; r <= RUNS; r++)); do
		c="${CATCHUP[$id#$r]:-}" w="${WALMAX[$id#$r]:-}"
		if [ -n "$c" ]; then
			if [ "$c" = ">30" ] || [ "${CATCHUP[$id]:-}" = ">30" ]; then
				CATCHUP[$id]=">30"
			elif [ -z "${CATCHUP[$id]:-}" ] || awk -v a="$c" -v b="${CATCHUP[$id]}" 'BEGIN { exit !(a > b) }'; then
				CATCHUP[$id]="$c"
			fi
			ROWS[$id]=$((${ROWS[$id]:-0} + ${ROWS[$id#$r]:-0}))
		fi
		if [ -n "$w" ] && { [ -z "${WALMAX[$id]:-}" ] || awk -v a="$w" -v b="${WALMAX[$id]}" 'BEGIN { exit !(a > b) }'; }; then
			WALMAX[$id]="$w"
		fi
	done
}

# copy_figures FROM TO: the cachehit rows of mockllm and nginx repeat their chat figures.
copy_figures() {
	local a
	for a in RPS P50 P99 CPU CPUPCT ERR NOTE RUNLIST; do
		declare -n arr="$a"
		[ -n "${arr[$1]:-}" ] && arr[$2]="${arr[$1]}"
		unset -n arr
	done
}

# rss_list FIELD: "per-process list|total|largest child" in MiB, for VmHWM
# (peak) or VmRSS (now) of the SUT's process tree.
rss_list() {
	local field="$1" pid kib list="" total=0 first=1 label maxchild=0
	for pid in $(tree_pids "$SUT_PID"); do
		kib="$(status_kib "$pid" "$field")"
		[ -n "$kib" ] || continue
		if [ $first = 1 ]; then
			label="$ROOT_LABEL"
		else
			label="$CHILD_LABEL"
			[ "$kib" -gt "$maxchild" ] && maxchild="$kib"
		fi
		first=0
		list+="${list:+, }$label $(awk -v k="$kib" 'BEGIN { printf "%.1f", k / 1024 }')"
		total=$((total + kib))
	done
	echo "$list|$(awk -v k="$total" 'BEGIN { printf "%.1f", k / 1024 }')|$(awk -v k="$maxchild" 'BEGIN { printf "%.1f", k / 1024 }')"
}

has_case() { [[ " $CASES " == *" $1 "* ]]; }

# Every target is started before the first measurement and stays up until the last:
# the runs go target by target inside each case, so nginx and a gateway are measured
# seconds apart and a slow minute of the shared machine falls on both. The targets
# not being measured sit idle on the same CPU (a gateway's primary wakes once a
# second to look for spooled records).
declare -A T_PID T_URL T_DB T_LOG T_GW T_ROOT T_CHILD

# setup_target TARGET: starts the target, checks it, writes its wrk scripts, warms it
# up and records its idle memory and its state for use_target.
setup_target() {
	local target="$1" key="none" ckey="none" nkey="" r gw=0 hit code
	SUT_PID="" SUT_DB="" SUT_LOG=""
	case "$target" in
	direct)
		SUT_PID="$MOCK_PID"
		BASE_URL="http://127.0.0.1:$MOCK_PORT"
		ROOT_LABEL="mockllm" CHILD_LABEL="child"
		;;
	nginx)
		ROOT_LABEL="master" CHILD_LABEL="worker"
		start_nginx 1 || return 1
		;;
	gw1 | gw2)
		ROOT_LABEL="supervisor" CHILD_LABEL="worker"
		start_gateway "${target#gw}" "$target" || return 1
		SUT_DB="$GW_DIR/llm-proxy.db"
		key="$KEY"
		ckey="$CACHE_KEY"
		nkey="$NOLIM_KEY"
		gw=1
		;;
	esac
	T_PID[$target]="$SUT_PID" T_URL[$target]="$BASE_URL" T_DB[$target]="$SUT_DB" T_LOG[$target]="$SUT_LOG"
	T_GW[$target]="$gw" T_ROOT[$target]="$ROOT_LABEL" T_CHILD[$target]="$CHILD_LABEL"
	sanity "$BASE_URL" "$key" || return 1
	r="$(rss_list VmRSS)"
	IDLE[$target]="${r%%|*}"
	IDLEWORKER[$target]="${r##*|}"
	wrk_script "$TMP/chat-$target.lua" "$CHAT_BODY" "$key"
	wrk_script "$TMP/stream-$target.lua" "$STREAM_BODY" "$key"
	wrk_script "$TMP/embed-$target.lua" "$EMBED_BODY" "$key"
	wrk_script "$TMP/cachehit-$target.lua" "$CHAT_BODY" "$ckey"
	wrk_script "$TMP/nolimits-$target.lua" "$CHAT_BODY" "${nkey:-$key}"
	wrk_script "$TMP/invalid-$target.lua" "$CHAT_BODY" "$INVALID_KEY"
	# Without a cache the cache-hit share of the mix is the plain chat request.
	if [ $gw = 1 ]; then wrk_mixed "$TMP/mixed-$target.lua" "$key" "$ckey"; else wrk_mixed "$TMP/mixed-$target.lua" "$key" "$key"; fi

	if [ $gw = 1 ]; then
		code="$(post "$BASE_URL$CHAT_PATH" "$INVALID_KEY" "$CHAT_BODY" "$TMP/sanity.out")"
		if [ "$code" != 401 ]; then
			echo "bench: $target: a request with an unknown key answered $code, not 401" >&2
			return 1
		fi
		# The first request with the cache key is a miss whose answer is written behind
		# it; the figures are only those of cache hits if the next one is a hit.
		cache_header "$BASE_URL" "$ckey" >/dev/null
		for ((r = 0; r < 20; r++)); do
			hit="$(cache_header "$BASE_URL" "$ckey")"
			[ "$hit" = hit-l1 ] && break
			sleep 0.1
		done
		if [ "$hit" != hit-l1 ]; then
			echo "bench: $target: the repeated request with the cache key answered X-LLM-Proxy-Cache '$hit', not hit-l1" >&2
			return 1
		fi
	fi

	# Warm-up: fill the connection pools, fault in the code paths.
	timeout $((WARMUP + 30)) "${CLIENT_PIN[@]}" wrk -t1 -c"$CONNS" -d"${WARMUP}s" \
		-s "$TMP/chat-$target.lua" "$BASE_URL$CHAT_PATH" >/dev/null 2>&1 || true
}

# use_target TARGET: makes TARGET the system under test of measure and rss_list.
use_target() {
	SUT_PID="${T_PID[$1]}" BASE_URL="${T_URL[$1]}" SUT_DB="${T_DB[$1]}" SUT_LOG="${T_LOG[$1]}"
	ROOT_LABEL="${T_ROOT[$1]}" CHILD_LABEL="${T_CHILD[$1]}"
}

# measure_case TARGET CASE RUN: one run of one case against TARGET.
measure_case() {
	local target="$1" c="$2" r="$3" gw="${T_GW[$1]}"
	use_target "$target"
	case "$c" in
	chat | stream | mixed) measure "$c/$target#$r" "$TMP/$c-$target.lua" "$CONNS" "$DURATION" "$CHAT_PATH" ;;
	embed) measure "$c/$target#$r" "$TMP/$c-$target.lua" "$CONNS" "$DURATION" "$EMBED_PATH" ;;
	latency) measure "$c/$target#$r" "$TMP/chat-$target.lua" 1 "$DURATION" "$CHAT_PATH" ;;
	cachehit | nolimits) [ "$gw" = 1 ] && measure "$c/$target#$r" "$TMP/$c-$target.lua" "$CONNS" "$DURATION" "$CHAT_PATH" ;;
	invalid) [ "$gw" = 1 ] && measure "$c/$target#$r" "$TMP/$c-$target.lua" "$CONNS" "$DURATION" "$CHAT_PATH" non2xx ;;
	esac
	return 0
}

# finish_target TARGET: the medians, the peak memory, and the target stopped.
finish_target() {
	local target="$1" r c gw="${T_GW[$1]}"
	use_target "$target"
	for c in $CASES; do pick_median "$c/$target"; done
	[ "$gw" = 0 ] && has_case cachehit && copy_figures "chat/$target" "cachehit/$target"
	[ "$gw" = 0 ] && has_case nolimits && copy_figures "chat/$target" "nolimits/$target"

	if [ "$target" != direct ]; then
		local any=""
		for c in $CASES; do any+="${NOTE[$c/$target]:-}"; done
		if [ -n "$any" ]; then
			echo "bench: $target had errors; warnings and errors from its log:" >&2
			grep -E '\[(WARN|ERROR)\]|\[(warn|error)\]' "$SUT_LOG" | tail -n 20 >&2 || true
		fi
	fi
	r="$(rss_list VmHWM)"
	RSS[$target]="${r%%|*}"
	r="${r#*|}"
	RSSTOT[$target]="${r%|*}"
	if [ "$target" != direct ]; then
		stop_tree "$SUT_PID"
	fi
}

# ---------------------------------------------------------------- report helpers

# ratio VALUE REF: VALUE/REF as "0.85x", or "-" when either is missing.
ratio() {
	awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2fx", a / b }'
}
fmt() { if [ -n "${1:-}" ]; then echo "$1"; else echo "-"; fi; }
# q A B: A/B with 4 decimals, empty when either is missing.
q() { awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a != "" && b != "" && b + 0 != 0) printf "%.4f", a / b }'; }
# bar LABEL VALUE OP LIMIT: one row of a bars table.
bar() {
	awk -v l="$1" -v v="${2:-}" -v op="$3" -v lim="$4" 'BEGIN {
		if (v == "") { printf "| %s | - | no figure |\n", l; exit }
		ok = (op == ">=") ? (v + 0 >= lim + 0) : (op == "<") ? (v + 0 < lim + 0) : (v + 0 <= lim + 0)
		printf "| %s | %.3f | %s |\n", l, v, ok ? "yes" : "**no**"
	}'
}

SCALING_BEGIN="<!-- bench.sh scaling: begin -->"
SCALING_END="<!-- bench.sh scaling: end -->"

# splice FILE PART NEW: writes FILE as its current content with PART (cases: everything
# outside the scaling markers; scaling: the part between them) replaced by file NEW. The
# case report and the scaling section come from different runs of this script and live in
# the same file.
splice() {
	local file="$1" part="$2" new="$3" tmp="$TMP/splice.md" main="" scaling=""
	if [ -f "$file" ]; then
		main="$(awk -v b="$SCALING_BEGIN" -v e="$SCALING_END" '$0 == b { s = 1; next } $0 == e { s = 0; next } !s' "$file")"
		scaling="$(awk -v b="$SCALING_BEGIN" -v e="$SCALING_END" '$0 == b { s = 1; next } $0 == e { s = 0; next } s' "$file")"
	fi
	if [ "$part" = cases ]; then main="$(cat "$new")"; else scaling="$(cat "$new")"; fi
	{
		if [ -n "$main" ]; then printf '%s\n' "$main"; fi
		if [ -n "$scaling" ]; then
			[ -n "$main" ] && echo
			echo "$SCALING_BEGIN"
			printf '%s\n' "$scaling"
			echo "$SCALING_END"
		fi
	} >"$tmp"
	mkdir -p "$(dirname "$file")"
	cp "$tmp" "$file"
}

header_lines() {
	echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), $(awk -F': ' '/^model name/{ print $2; exit }' /proc/cpuinfo), $NCPU CPUs; $PINNING."
	echo "wrk 1 thread, $RUNS run(s) of ${DURATION} s per case after a ${WARMUP} s warm-up, median run by req/s;"
	echo "streamed answers have $CHUNKS content chunks; model \`$MODEL\`; $(nginx -v 2>&1 | sed 's/^nginx version: //')."
	if [ "$LIMITS" = 1 ]; then
		echo "Gateway keys have rpm, tpm and max-parallel limits far above the load (the limiter runs); request records on."
	else
		echo "Gateway keys have no limits (BENCH_LIMITS=0); request records on."
	fi
	echo "Load average before the run: $LOAD_BEFORE (other work on the machine skews every figure)."
}

# ================================================================ scaling mode

if [ "$MODE" = scaling ]; then
	declare -A S_IDLE S_LOADED S_LIST
	SCASE=chat

	# scale_target NAME: measures the chat case RUNS times on the running SUT, with
	# idle and loaded RSS per worker.
	scale_target() {
		local name="$1" key="$2" r
		sanity "$BASE_URL" "$key" || return 1
		r="$(rss_list VmRSS)"
		S_IDLE[$name]="${r##*|}"
		wrk_script "$TMP/chat-$name.lua" "$CHAT_BODY" "$key"
		timeout $((WARMUP + 30)) "${CLIENT_PIN[@]}" wrk -t1 -c"$CONNS" -d"${WARMUP}s" \
			-s "$TMP/chat-$name.lua" "$BASE_URL$CHAT_PATH" >/dev/null 2>&1 || true
		for ((r = 1; r <= RUNS; r++)); do
			measure "$SCASE/$name#$r" "$TMP/chat-$name.lua" "$CONNS" "$DURATION" "$CHAT_PATH"
		done
		pick_median "$SCASE/$name"
		r="$(rss_list VmHWM)"
		S_LOADED[$name]="${r##*|}"
		S_LIST[$name]="${r%%|*}"
		stop_tree "$SUT_PID"
	}

	ROOT_LABEL="master" CHILD_LABEL="worker"
	echo "bench: scaling: nginx, 2 workers" >&2
	if ! { start_nginx 2 && scale_target nginx none; }; then
		FAILED+=(nginx)
		ERRORS=$((ERRORS + 1))
		[ -n "${SUT_PID:-}" ] && stop_tree "$SUT_PID"
	fi
	ROOT_LABEL="supervisor" CHILD_LABEL="worker"
	for n in 1 2 4; do
		echo "bench: scaling: gateway, $n worker(s)" >&2
		if ! { start_gateway "$n" "scale-gw$n" && scale_target "gw$n" "$KEY"; }; then
			FAILED+=("gw$n")
			ERRORS=$((ERRORS + 1))
			[ -n "${SUT_PID:-}" ] && stop_tree "$SUT_PID"
		fi
	done

	# ------------------------------------------------ memory per worker (1 worker)

	declare -A M_IDLE M_LOADED M_RPS M_NOTE
	# keys_cli: 998 more keys through the CLI, one process each (with the two of
	# start_gateway: 1000).
	# shellcheck disable=SC2317 # invoked through GW_PREP
	keys_cli() {
		local i
		echo "bench: creating 1k keys with llm-proxy keys create" >&2
		for ((i = 1; i <= 998; i++)); do
			gw_cli keys create --name "bench-$i" >/dev/null || {
				tail -n 5 "$GW_DIR/cli.log" >&2
				return 1
			}
		done
	}
	# shellcheck disable=SC2317 # invoked through GW_PREP
	keys_bulk() {
		echo "bench: creating 100k keys with scripts/benchkeys" >&2
		bin/benchkeys --db "$GW_DIR/llm-proxy.db" --n 99998 >&2
	}

	# mem_target NAME: idle RSS of the one worker, then one chat run and its peak RSS.
	mem_target() {
		local name="$1" r
		sanity "$BASE_URL" "$KEY" || return 1
		sleep 1
		r="$(rss_list VmRSS)"
		M_IDLE[$name]="${r##*|}"
		wrk_script "$TMP/chat-$name.lua" "$CHAT_BODY" "$KEY"
		measure "chat/$name#1" "$TMP/chat-$name.lua" "$CONNS" "$DURATION" "$CHAT_PATH"
		M_RPS[$name]="${RPS[chat/$name#1]:-}"
		r="$(rss_list VmHWM)"
		M_LOADED[$name]="${r##*|}"
	}

	MEMROWS="keys2 keys1k keys100k"
	for m in $MEMROWS; do
		case "$m" in
		keys2) GW_PREP="" ;;
		keys1k) GW_PREP=keys_cli ;;
		keys100k) GW_PREP=keys_bulk ;;
		esac
		echo "bench: memory: $m" >&2
		if ! { start_gateway 1 "mem-$m" && mem_target "$m"; }; then
			M_NOTE[$m]="failed"
			ERRORS=$((ERRORS + 1))
		fi
		[ -n "${SUT_PID:-}" ] && stop_tree "$SUT_PID"
		SUT_PID=""
	done
	GW_PREP=""

	# The L1 cache: idle, then filled with CACHE_ENTRIES distinct answers.
	echo "bench: memory: L1 cache with $CACHE_ENTRIES entries" >&2
	CACHE_STORED="" CACHE_FILL_S="" CACHE_SPOT=""
	if start_gateway 1 mem-cache LLM_PROXY_CACHE_MODE=exact && sanity "$BASE_URL" "$KEY"; then
		sleep 1
		r="$(rss_list VmRSS)"
		M_IDLE[cache0]="${r##*|}"
		wrk_fill "$TMP/fill.lua" "$KEY" "$CACHE_ENTRIES" "$TMP/fill.done"
		fill_start="$(date +%s.%N)"
		# Few connections: answers are written to the cache behind the response through a
		# bounded queue, and a flood would drop some of them.
		fill_to=$((CACHE_ENTRIES / 50 + 60))
		"${CLIENT_PIN[@]}" wrk -t1 -c4 -d"${fill_to}s" --timeout 10s \
			-s "$TMP/fill.lua" "$BASE_URL$CHAT_PATH" >"$TMP/wrk-fill.txt" 2>&1 &
		fill_pid=$!
		PIDS+=("$fill_pid")
		for ((i = 0; i < fill_to * 10; i++)); do
			[ -e "$TMP/fill.done" ] && break
			alive "$fill_pid" || break
			sleep 0.1
		done
		[ -e "$TMP/fill.done" ] || M_NOTE[cache]="the fill did not complete within ${fill_to} s"
		stop_tree "$fill_pid"
		CACHE_FILL_S="$(awk -v s="$fill_start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')"
		sleep 2 # the write-behind queue drains
		r="$(rss_list VmRSS)"
		M_IDLE[cachefull]="${r##*|}"
		r="$(rss_list VmHWM)"
		M_LOADED[cachefull]="${r##*|}"
		if command -v sqlite3 >/dev/null 2>&1; then
			# Read-only count of the L2 rows: every answer goes to L1 first, then to L2.
			CACHE_STORED="$(sqlite3 -readonly "$GW_DIR/llm-proxy.db" 'SELECT count(*) FROM cache_entries' 2>/dev/null || true)"
		fi
		CACHE_SPOT="$(curl -sS -o /dev/null -D - --max-time 10 -X POST -H 'Content-Type: application/json' \
			-H "Authorization: Bearer $KEY" --data "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"fill 1\"}]}" \
			"$BASE_URL$CHAT_PATH" | awk -F': ' 'tolower($1) == "x-llm-proxy-cache" { gsub(/\r/, "", $2); print $2 }')"
		stop_tree "$SUT_PID"
	else
		M_NOTE[cache]="failed"
		ERRORS=$((ERRORS + 1))
		[ -n "${SUT_PID:-}" ] && stop_tree "$SUT_PID"
	fi

	REPORT="$TMP/scaling.md"
	{
		echo "## Scaling and memory per worker"
		echo
		header_lines
		echo "Non-streaming chat at $CONNS connections; CPU s/1k req and CPU % (of one core) are those of the whole"
		echo "system under test. RSS per worker in MiB: idle after start-up, loaded = peak (VmHWM) after the runs;"
		echo "the largest worker is shown, every process in the last column."
		echo
		echo "### Requests/s and CPU per request by workers"
		echo
		echo "| target | req/s | ×nginx | runs (req/s) | p50 ms | p99 ms | CPU s/1k req | ×nginx | CPU % | idle RSS/worker | loaded RSS/worker | peak RSS per process | errors |"
		echo "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"
		for name in nginx gw1 gw2 gw4; do
			id="$SCASE/$name"
			case "$name" in nginx) label="nginx, 2 workers" ;; gw1) label="gateway 1 worker" ;; *) label="gateway ${name#gw} workers" ;; esac
			errs="$(fmt "${ERR[$id]:-}")"
			[ -n "${NOTE[$id]:-}" ] && errs="**${NOTE[$id]}**"
			[[ " ${FAILED[*]:-} " == *" $name "* ]] && errs="**target failed**"
			echo "| $label | $(fmt "${RPS[$id]:-}") | $(ratio "${RPS[$id]:-}" "${RPS[$SCASE/nginx]:-}") | $(fmt "${RUNLIST[$id]:-}") | $(fmt "${P50[$id]:-}") | $(fmt "${P99[$id]:-}") | $(fmt "${CPU[$id]:-}") | $(ratio "${CPU[$id]:-}" "${CPU[$SCASE/nginx]:-}") | $(fmt "${CPUPCT[$id]:-}") | $(fmt "${S_IDLE[$name]:-}") | $(fmt "${S_LOADED[$name]:-}") | $(fmt "${S_LIST[$name]:-}") | $errs |"
		done
		echo
		echo "### Memory per worker (1 worker, L1 cache ${L1_MB} MiB configured)"
		echo
		echo "| set-up | idle RSS MiB | loaded RSS MiB (peak) | req/s of the loaded run | note |"
		echo "|---|---:|---:|---:|---|"
		for m in $MEMROWS; do
			case "$m" in keys2) label="2 API keys" ;; keys1k) label="1k API keys (llm-proxy keys create)" ;; keys100k) label="100k API keys (scripts/benchkeys)" ;; esac
			echo "| $label | $(fmt "${M_IDLE[$m]:-}") | $(fmt "${M_LOADED[$m]:-}") | $(fmt "${M_RPS[$m]:-}") | $(fmt "${M_NOTE[$m]:-}") |"
		done
		echo "| L1 cache mode exact, empty | $(fmt "${M_IDLE[cache0]:-}") | - | - | - |"
		note="filled in ${CACHE_FILL_S:-?} s (2 passes, 4 connections); $(fmt "$CACHE_STORED") L2 rows (the fill and the sanity requests); first request again: $(fmt "$CACHE_SPOT")${M_NOTE[cache]:+; **${M_NOTE[cache]}**}"
		echo "| L1 cache after $CACHE_ENTRIES distinct answers | $(fmt "${M_IDLE[cachefull]:-}") | $(fmt "${M_LOADED[cachefull]:-}") | - | $note |"
		echo
		echo "### Bars"
		echo
		echo "| bar | measured | met |"
		echo "|---|---:|---|"
		bar "idle worker RSS ≤ 20 MiB + L1 ${L1_MB} MiB (MiB, 2 keys)" "${M_IDLE[keys2]:-}" "<=" $((20 + L1_MB))
		bar "100k API keys add ≤ 30 MiB per worker (idle MiB over 2 keys)" \
			"$(awk -v a="${M_IDLE[keys100k]:-}" -v b="${M_IDLE[keys2]:-}" 'BEGIN { if (a != "" && b != "") printf "%.1f", a - b }')" "<=" 30
		bar "100k API keys add ≤ 30 MiB per worker (loaded MiB over 2 keys)" \
			"$(awk -v a="${M_LOADED[keys100k]:-}" -v b="${M_LOADED[keys2]:-}" 'BEGIN { if (a != "" && b != "") printf "%.1f", a - b }')" "<=" 30
		if [ "$ERRORS" -gt 0 ]; then
			echo
			echo "**$ERRORS case(s) or set-up(s) had errors; their figures are not valid.**"
		fi
	} >"$REPORT"
	splice "$OUT" scaling "$REPORT"
	[ "${BENCH_SAVE:-}" = 1 ] && splice "$SAVE_MD" scaling "$REPORT"
	cat "$REPORT"
	echo >&2
	echo "bench: scaling section written to $OUT$([ "${BENCH_SAVE:-}" = 1 ] && echo " and $SAVE_MD") in $(($(date +%s) - START_TIME)) s" >&2
	[ "$ERRORS" -eq 0 ] || exit 1
	exit 0
fi

# ================================================================ cases mode

UP=""
for target in $TARGETS; do
	echo "bench: starting $target" >&2
	if setup_target "$target"; then
		UP+=" $target"
	else
		FAILED+=("$target")
		ERRORS=$((ERRORS + 1))
		echo "bench: target $target failed; see above" >&2
		if [ "$target" != direct ]; then
			if [ -n "${SUT_LOG:-}" ]; then tail -n 20 "$SUT_LOG" >&2 || true; fi
			if [ -n "$SUT_PID" ]; then stop_tree "$SUT_PID"; fi
		fi
	fi
done
for ((run = 1; run <= RUNS; run++)); do
	[ "$RUNS" -gt 1 ] && echo "bench: run $run of $RUNS" >&2
	for c in $CASES; do
		for target in $UP; do measure_case "$target" "$c" "$run"; done
	done
done
for target in $UP; do finish_target "$target"; done
SUT_LOG=""

declare -A NAMES=([direct]="mockllm direct" [nginx]="nginx" [gw1]="gateway 1 worker" [gw2]="gateway 2 workers")
declare -A TITLES=([chat]="Non-streaming chat, $CONNS connections" [stream]="Streaming chat ($CHUNKS chunks), $CONNS connections"
	[embed]="Embeddings, $CONNS connections" [cachehit]="Cache hit (L1), $CONNS connections"
	[invalid]="Invalid key (401, no upstream), $CONNS connections" [mixed]="Mixed: 80% chat, 15% stream, 5% cache hit, $CONNS connections"
	[latency]="Non-streaming chat, 1 connection" [nolimits]="Non-streaming chat with a key without limits, $CONNS connections")
na() { [[ "$1" == invalid && ( "$2" == direct || "$2" == nginx ) ]]; }

# TSV: every measured case and target, median run.
TSV="$TMP/results.tsv"
{
	printf 'target\tcase\treq_per_s\tp50_ms\tp99_ms\tcpu_s_per_1k\n'
	for target in $TARGETS; do
		for case in $CASES; do
			id="$case/$target"
			na "$case" "$target" && continue
			[ -n "${RPS[$id]:-}" ] || continue
			printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$case" "${RPS[$id]}" "$(fmt "${P50[$id]:-}")" "$(fmt "${P99[$id]:-}")" "$(fmt "${CPU[$id]:-}")"
		done
	done
} >"$TSV"

# Regression check: each gateway case's req/s ratio to nginx against the baseline's.
CHECK_LINES=()
DROPS=()
if [ "$CHECK" = 1 ]; then
	declare -A BASE
	while IFS=$'\t' read -r t c rps _; do
		[ "$t" = target ] && continue
		BASE[$c/$t]="$rps"
	done <"$BASELINE"
	for target in $TARGETS; do
		[[ "$target" == gw* ]] || continue
		for case in $CASES; do
			[ "$case" = invalid ] && continue # nothing to compare with: nginx has no 401 path
			now="$(q "${RPS[$case/$target]:-}" "${RPS[$case/nginx]:-}")"
			was="$(q "${BASE[$case/$target]:-}" "${BASE[$case/nginx]:-}")"
			if [ -z "$now" ] || [ -z "$was" ]; then
				CHECK_LINES+=("| ${NAMES[$target]} | $case | $(fmt "$was") | $(fmt "$now") | - | not compared (no figure) |")
				continue
			fi
			change="$(awk -v a="$now" -v b="$was" 'BEGIN { printf "%+.1f%%", (a / b - 1) * 100 }')"
			if awk -v a="$now" -v b="$was" -v t="$TOLERANCE" 'BEGIN { exit !(a < b * (1 - t / 100)) }'; then
				DROPS+=("$case/$target: ratio to nginx $was -> $now ($change)")
				CHECK_LINES+=("| ${NAMES[$target]} | $case | $was | $now | $change | **dropped** |")
			else
				CHECK_LINES+=("| ${NAMES[$target]} | $case | $was | $now | $change | ok |")
			fi
		done
	done
fi

REPORT="$TMP/report.md"
{
	echo "# llm-proxy benchmark"
	echo
	header_lines
	echo "CPU s/1k req and CPU % (of one core) are those of the system under test (mockllm itself in the direct row)."
	if has_case cachehit; then
		echo "Cache hit: mockllm and nginx have no cache; their rows repeat their chat figures (the same request passed through)."
	fi
	if has_case mixed; then
		echo "Mixed: for mockllm and nginx the 5% cache-hit share is a plain chat request."
	fi
	if [ ${#TARGETS} -gt 0 ] && [[ " $TARGETS " == *" nginx "* ]]; then
		echo
		echo "## Summary: req/s as a ratio to nginx"
		echo
		printf '| case |'
		for target in $TARGETS; do printf ' %s |' "${NAMES[$target]}"; done
		echo
		printf '|---|'
		for target in $TARGETS; do printf -- '---:|'; done
		echo
		for case in $CASES; do
			printf '| %s |' "$case"
			for target in $TARGETS; do
				if na "$case" "$target"; then
					printf ' n/a |'
				elif [ "$case" = invalid ]; then
					printf ' %s req/s |' "$(fmt "${RPS[$case/$target]:-}")" # nginx has no 401 path to compare with
				else
					printf ' %s |' "$(ratio "${RPS[$case/$target]:-}" "${RPS[$case/nginx]:-}")"
				fi
			done
			echo
		done
	fi
	for case in $CASES; do
		echo
		echo "## ${TITLES[$case]}"
		echo
		if [ "$case" = latency ]; then
			echo "| target | req/s | runs (req/s) | p50 ms | ×nginx | added p50 ms | ×nginx | p99 ms | ×nginx | CPU s/1k req | ×nginx | errors |"
			echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
		else
			echo "| target | req/s | ×nginx | runs (req/s) | p50 ms | ×nginx | p99 ms | ×nginx | CPU s/1k req | ×nginx | CPU % | errors |"
			echo "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
		fi
		n="$case/nginx"
		d="$case/direct"
		added_ref="$(awk -v a="${P50[$n]:-}" -v b="${P50[$d]:-}" 'BEGIN { if (a != "" && b != "") printf "%.3f", a - b }')"
		for target in $TARGETS; do
			id="$case/$target"
			if na "$case" "$target"; then
				echo "| ${NAMES[$target]} | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a |"
				continue
			fi
			errs="$(fmt "${ERR[$id]:-}")"
			[ -n "${NOTE[$id]:-}" ] && errs="**${NOTE[$id]}**"
			[[ " ${FAILED[*]:-} " == *" $target "* ]] && errs="**target failed**"
			if [ "$case" = latency ]; then
				added="$(awk -v a="${P50[$id]:-}" -v b="${P50[$d]:-}" 'BEGIN { if (a != "" && b != "") printf "%.3f", a - b }')"
				[ "$target" = direct ] && added=""
				echo "| ${NAMES[$target]} | $(fmt "${RPS[$id]:-}") | $(fmt "${RUNLIST[$id]:-}") | $(fmt "${P50[$id]:-}") | $(ratio "${P50[$id]:-}" "${P50[$n]:-}") | $(fmt "$added") | $(ratio "$added" "$added_ref") | $(fmt "${P99[$id]:-}") | $(ratio "${P99[$id]:-}" "${P99[$n]:-}") | $(fmt "${CPU[$id]:-}") | $(ratio "${CPU[$id]:-}" "${CPU[$n]:-}") | $errs |"
			else
				echo "| ${NAMES[$target]} | $(fmt "${RPS[$id]:-}") | $(ratio "${RPS[$id]:-}" "${RPS[$n]:-}") | $(fmt "${RUNLIST[$id]:-}") | $(fmt "${P50[$id]:-}") | $(ratio "${P50[$id]:-}" "${P50[$n]:-}") | $(fmt "${P99[$id]:-}") | $(ratio "${P99[$id]:-}" "${P99[$n]:-}") | $(fmt "${CPU[$id]:-}") | $(ratio "${CPU[$id]:-}" "${CPU[$n]:-}") | $(fmt "${CPUPCT[$id]:-}") | $errs |"
			fi
		done
	done
	echo
	declare -A LOGWORST=()
	if [[ " $TARGETS " == *" gw"* ]]; then
		echo "## Request log ingest"
		echo
		echo "Every request a gateway answers is a row in request_logs, ingested by the primary from the"
		echo "workers' spools once a second on the same CPU. Rows: the new rows of all runs of the case"
		echo "(at least the requests wrk saw completed). Caught up: seconds after the end of a run until"
		echo "request_logs held every request wrk completed (worst run); about one ingest interval (1 s)"
		echo "means ingest keeps up with the load, a backlog would take time in proportion to the run."
		echo "WAL: the largest size of the -wal file seen during the runs and the catch-up."
		if ! command -v sqlite3 >/dev/null 2>&1; then
			echo
			echo "_sqlite3 is not installed: no row counts (apt-get install sqlite3)._"
		fi
		echo
		echo "| target | case | req/s | rows | caught up (s) | WAL MiB |"
		echo "|---|---|---:|---:|---:|---:|"
		for target in $TARGETS; do
			case "$target" in gw*) ;; *) continue ;; esac
			for c in $CASES; do
				id="$c/$target"
				[ -n "${CATCHUP[$id]:-}${WALMAX[$id]:-}" ] || continue
				echo "| ${NAMES[$target]} | $c | $(fmt "${RPS[$id]:-}") | $(fmt "${ROWS[$id]:-}") | $(fmt "${CATCHUP[$id]:-}") | $(fmt "${WALMAX[$id]:-}") |"
				local_c="${CATCHUP[$id]:-}"
				[ "$local_c" = ">30" ] && local_c=31
				if [ -n "$local_c" ] && { [ -z "${LOGWORST[catchup]:-}" ] || awk -v a="$local_c" -v b="${LOGWORST[catchup]}" 'BEGIN { exit !(a > b) }'; }; then
					LOGWORST[catchup]="$local_c"
				fi
				if [ -n "${WALMAX[$id]:-}" ] && { [ -z "${LOGWORST[wal]:-}" ] || awk -v a="${WALMAX[$id]}" -v b="${LOGWORST[wal]}" 'BEGIN { exit !(a > b) }'; }; then
					LOGWORST[wal]="${WALMAX[$id]}"
				fi
			done
		done
		echo
	fi
	echo "## Memory (MiB)"
	echo
	echo "| target | idle RSS per process | peak RSS (VmHWM) per process | peak total | ×nginx |"
	echo "|---|---|---|---:|---:|"
	for target in $TARGETS; do
		echo "| ${NAMES[$target]} | $(fmt "${IDLE[$target]:-}") | $(fmt "${RSS[$target]:-}") | $(fmt "${RSSTOT[$target]:-}") | $(ratio "${RSSTOT[$target]:-}" "${RSSTOT[nginx]:-}") |"
	done
	if [[ " $TARGETS " == *" nginx "* && " $TARGETS " == *" gw1 "* ]]; then
		echo
		echo "## Bars (gateway with 1 worker)"
		echo
		echo "| bar | measured | met |"
		echo "|---|---:|---|"
		has_case chat && bar "non-streaming req/s ≥ 0.8× nginx, goal 1.0× (ratio)" "$(q "${RPS[chat/gw1]:-}" "${RPS[chat/nginx]:-}")" ">=" 0.8
		has_case stream && bar "streaming req/s ≥ 0.8× nginx (ratio)" "$(q "${RPS[stream/gw1]:-}" "${RPS[stream/nginx]:-}")" ">=" 0.8
		if has_case latency && [[ " $TARGETS " == *" direct "* ]]; then
			over="$(awk -v g="${P50[latency/gw1]:-}" -v n="${P50[latency/nginx]:-}" 'BEGIN { if (g != "" && n != "") printf "%.4f", g - n }')"
			bar "added p50 at 1 connection ≤ nginx's + 0.020 ms (ms over nginx's)" "$over" "<=" 0.020
		fi
		has_case cachehit && has_case chat &&
			bar "cache-hit req/s ≥ 2× nginx's for the same request (ratio)" "$(q "${RPS[cachehit/gw1]:-}" "${RPS[chat/nginx]:-}")" ">=" 2
		[ "$LIMITS" = 1 ] && has_case nolimits && has_case chat &&
			bar "limits on: chat req/s ≥ 0.95× the same gateway's without key limits (ratio)" "$(q "${RPS[chat/gw1]:-}" "${RPS[nolimits/gw1]:-}")" ">=" 0.95
		bar "idle worker RSS ≤ 20 MiB + L1 ${L1_MB} MiB (MiB)" "${IDLEWORKER[gw1]:-}" "<=" $((20 + L1_MB))
		echo
		echo "Earlier issues' bars, from the same run:"
		echo
		echo "| bar | measured | met |"
		echo "|---|---:|---|"
		has_case chat && bar "#2: non-streaming req/s ≥ 0.5× nginx (ratio)" "$(q "${RPS[chat/gw1]:-}" "${RPS[chat/nginx]:-}")" ">=" 0.5
		has_case stream && bar "#2: streaming req/s ≥ 0.5× nginx (ratio)" "$(q "${RPS[stream/gw1]:-}" "${RPS[stream/nginx]:-}")" ">=" 0.5
		if has_case latency && [[ " $TARGETS " == *" direct "* ]]; then
			bar "#2: added p50 at 1 connection ≤ 1.5× nginx's (ratio of added p50s)" \
				"$(q "$(awk -v g="${P50[latency/gw1]:-}" -v d="${P50[latency/direct]:-}" 'BEGIN { if (g != "" && d != "") printf "%.4f", g - d }')" \
					"$(awk -v n="${P50[latency/nginx]:-}" -v d="${P50[latency/direct]:-}" 'BEGIN { if (n != "" && d != "") printf "%.4f", n - d }')")" "<=" 1.5
		fi
		bar "#2: idle worker RSS < 30 MiB (MiB)" "${IDLEWORKER[gw1]:-}" "<" 30
		has_case cachehit && has_case chat &&
			bar "#5: cache-hit req/s ≥ 3× the gateway's own pass-through (ratio)" "$(q "${RPS[cachehit/gw1]:-}" "${RPS[chat/gw1]:-}")" ">=" 3
		if [ -n "${LOGWORST[catchup]:-}" ]; then
			bar "#3: request log caught up ≤ 2 s after every run (s, worst case and run)" "${LOGWORST[catchup]}" "<=" 2
			bar "#3: WAL ≤ 64 MiB over the whole load (MiB, largest seen)" "${LOGWORST[wal]:-}" "<=" 64
		fi
	fi
	if [ "$CHECK" = 1 ]; then
		echo
		echo "## Regression check against $BASELINE"
		echo
		echo "Gateway req/s as a ratio to nginx, baseline and now; a fall of more than ${TOLERANCE}% fails."
		echo
		echo "| target | case | baseline | now | change | result |"
		echo "|---|---|---:|---:|---:|---|"
		for l in "${CHECK_LINES[@]}"; do echo "$l"; done
	fi
	if [ "$ERRORS" -gt 0 ]; then
		echo
		echo "**$ERRORS case(s) or target(s) had errors; their figures are not valid.**"
	fi
} >"$REPORT"

splice "$OUT" cases "$REPORT"
cp "$TSV" "$TSV_OUT"
saved=""
if [ "${BENCH_SAVE:-}" = 1 ]; then
	splice "$SAVE_MD" cases "$REPORT"
	cp "$TSV" "$SAVE_TSV"
	saved=" and $SAVE_MD, $SAVE_TSV"
fi
cat "$REPORT"
echo >&2
echo "bench: report written to $OUT and $TSV_OUT$saved in $(($(date +%s) - START_TIME)) s" >&2
status=0
if [ "$ERRORS" -gt 0 ]; then
	echo "bench: $ERRORS case(s) or target(s) had errors" >&2
	status=1
fi
if [ "$CHECK" = 1 ]; then
	if [ ${#DROPS[@]} -gt 0 ]; then
		echo "bench: check FAILED: req/s ratio to nginx fell by more than ${TOLERANCE}% against $BASELINE in:" >&2
		for l in "${DROPS[@]}"; do echo "bench:   $l" >&2; done
		status=1
	else
		echo "bench: check passed: no gateway req/s ratio to nginx fell by more than ${TOLERANCE}% against $BASELINE" >&2
	fi
fi
exit "$status"
