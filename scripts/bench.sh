#!/usr/bin/env bash
# Load test of the gateway against the reference proxy, on loopback only.
#
# Starts mockllm (the upstream), nginx (a plain reverse proxy with upstream
# keep-alive, started from the Debian package with a private config) and the
# gateway with 1 and with 2 workers, and drives each with wrk:
#
#   chat      non-streaming chat completion, BENCH_CONNECTIONS connections (64)
#   stream    streaming chat completion ("stream":true, BENCH_CHUNKS chunks), same connections
#   latency   non-streaming chat completion, 1 connection (p50 is the figure that matters)
#
# Targets: mockllm direct, nginx, the gateway with 1 and 2 workers, and gwcache: the
# gateway with 1 worker and LLM_PROXY_CACHE_MODE=exact, where every case repeats one
# request, so after the first answer each is an L1 cache hit (auth + lookup + response;
# streams are replayed from the cache). Its req/s is compared with nginx and with the
# non-cached pass-through (gw1).
#
# Pinning: the system under test (nginx, or the gateway's supervisor and
# workers) runs on CPU 0; wrk and mockllm share CPU 1. Reported per case and
# target: requests/s, p50/p99 latency, CPU seconds of the system under test per
# 1000 requests (utime+stime of its whole process tree, from /proc), its CPU
# use in % of one core, and errors (non-2xx answers and socket errors, which
# make the exit status 1); per target the peak RSS (VmHWM) of every process.
# Every figure also as a ratio to nginx. The report goes to stdout and to
# bench/results-latest.md.
#
# Environment:
#   BENCH_DURATION     seconds per case (default 10, 1..120)
#   BENCH_CONNECTIONS  connections for the chat and stream cases (default 64, 1..1024)
#   BENCH_CHUNKS       content chunks per streamed answer (default 20)
#   BENCH_TARGETS      subset of "direct nginx gw1 gw2 gwcache" (default: all five)
#   BENCH_MODEL        model name sent (default mock-1)
#   BENCH_SKIP_BUILD   1: use bin/llm-proxy and bin/mockllm as they are
#   BENCH_OUT          report file (default bench/results-latest.md)
#   BENCH_KEEP_TMP     1: keep the temporary directory (logs, configs, wrk output)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"

DURATION="${BENCH_DURATION:-10}"
CONNS="${BENCH_CONNECTIONS:-64}"
CHUNKS="${BENCH_CHUNKS:-20}"
TARGETS="${BENCH_TARGETS:-direct nginx gw1 gw2 gwcache}"
MODEL="${BENCH_MODEL:-mock-1}"
OUT="${BENCH_OUT:-bench/results-latest.md}"
WARMUP=1

die() {
	echo "bench: $*" >&2
	exit 1
}
is_int_in() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]; }

is_int_in "$DURATION" 1 120 || die "BENCH_DURATION must be 1..120 seconds, got '$DURATION'"
is_int_in "$CONNS" 1 1024 || die "BENCH_CONNECTIONS must be 1..1024, got '$CONNS'"
is_int_in "$CHUNKS" 1 10000 || die "BENCH_CHUNKS must be 1..10000, got '$CHUNKS'"
for t in $TARGETS; do
	case "$t" in direct | nginx | gw1 | gw2 | gwcache) ;; *) die "unknown target '$t' in BENCH_TARGETS (direct nginx gw1 gw2 gwcache)" ;; esac
done
for tool in wrk curl taskset getconf timeout awk; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool not found (scripts/install-test-deps.sh installs the tools)"
done
if [[ " $TARGETS " == *" nginx "* ]]; then
	command -v nginx >/dev/null 2>&1 || die "nginx not found (apt-get install nginx-light)"
fi

# The benchmark must not inherit the caller's gateway settings or provider key:
# every gateway here is configured below, and no request may leave 127.0.0.1.
while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep -E '^(LLM_PROXY_|MOCKLLM_|OPENAI_API_KEY$)' || true)

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
CLK_TCK="$(getconf CLK_TCK)"
NCPU="$(nproc)"
if [ "$NCPU" -ge 2 ]; then
	SUT_PIN=(taskset -c 0)
	CLIENT_PIN=(taskset -c 1)
	PINNING="system under test on CPU 0; wrk and mockllm on CPU 1"
else
	SUT_PIN=()
	CLIENT_PIN=()
	PINNING="not pinned: only $NCPU CPU"
	echo "bench: warning: $PINNING; figures are not comparable with pinned runs" >&2
fi

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

# wait_http URL PID LOG: until URL answers 2xx, failing if PID exits or 20 s pass.
wait_http() {
	local url="$1" pid="$2" log="$3" i
	for ((i = 0; i < 200; i++)); do
		if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then return 0; fi
		if ! alive "$pid"; then
			echo "bench: process $pid exited before $url answered; its log:" >&2
			tail -n 30 "$log" >&2 || true
			return 1
		fi
		sleep 0.1
	done
	echo "bench: $url did not answer within 20 s; log:" >&2
	tail -n 30 "$log" >&2 || true
	return 1
}

# ---------------------------------------------------------------- build

if [ "${BENCH_SKIP_BUILD:-}" != 1 ]; then
	echo "bench: building bin/llm-proxy and bin/mockllm" >&2
	mkdir -p bin
	go build -trimpath -o bin/llm-proxy ./cmd/llm-proxy
	go build -trimpath -o bin/mockllm ./cmd/mockllm
fi
[ -x bin/mockllm ] || die "bin/mockllm missing"

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

# ---------------------------------------------------------------- wrk scripts

CHAT_BODY="{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"Say hello in one short sentence.\"}],\"stream\":false}"
STREAM_BODY="{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"Say hello in one short sentence.\"}],\"stream\":true}"

# wrk_script FILE BODY KEY: a wrk script that POSTs BODY with the key. The
# request is set once in the globals, so wrk reuses one pre-built request and
# the client stays cheap.
wrk_script() {
	local body="${2//\\/\\\\}"
	body="${body//\'/\\\'}"
	cat >"$1" <<EOF
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $3"
EOF
}

# ---------------------------------------------------------------- targets

# start_nginx: sets SUT_PID and BASE_URL.
start_nginx() {
	local dir="$TMP/nginx"
	mkdir -p "$dir"
	free_port
	cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
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

# start_gateway N NAME [VAR=VALUE...]: a gateway with N workers on a fresh data
# directory named NAME, with a "mock" upstream and a key made through the CLI, and
# extra environment. Sets SUT_PID, BASE_URL, KEY.
start_gateway() {
	local n="$1" dir="$TMP/$2" i
	shift 2
	mkdir -p "$dir"
	free_port
	local -a genv=(env
		LLM_PROXY_HOST=127.0.0.1
		LLM_PROXY_PORT="$PORT"
		LLM_PROXY_WORKERS="$n"
		LLM_PROXY_DATABASE_PATH="$dir/llm-proxy.db"
		LLM_PROXY_LOG_DIR="$dir/logs"
		LLM_PROXY_SHUTDOWN_TIMEOUT=5s
		"$@")
	"${genv[@]}" bin/llm-proxy migrate >"$dir/cli.log" 2>&1 || {
		cat "$dir/cli.log" >&2
		return 1
	}
	"${genv[@]}" bin/llm-proxy upstreams add --name mock --base-url "http://127.0.0.1:$MOCK_PORT/v1" \
		--models "$MODEL" >>"$dir/cli.log" 2>&1 || {
		cat "$dir/cli.log" >&2
		return 1
	}
	KEY="$("${genv[@]}" bin/llm-proxy keys create --name bench 2>>"$dir/cli.log" | tail -n 1)"
	[[ "$KEY" == sk-* ]] || {
		echo "bench: keys create printed '$KEY'" >&2
		cat "$dir/cli.log" >&2
		return 1
	}
	"${SUT_PIN[@]}" "${genv[@]}" bin/llm-proxy >"$dir/gateway.log" 2>&1 &
	SUT_PID=$!
	PIDS+=("$SUT_PID")
	SUT_LOG="$dir/gateway.log"
	BASE_URL="http://127.0.0.1:$PORT"
	wait_http "$BASE_URL/api/health" "$SUT_PID" "$SUT_LOG" || return 1
	# Health answers as soon as one worker is up; wait for all N.
	for ((i = 0; i < 100; i++)); do
		[ "$(wc -w <<<"$(tree_pids "$SUT_PID")")" -ge $((n + 1)) ] && break
		sleep 0.1
	done
	sleep 0.5
}

# sanity URL_BASE KEY: one chat and one stream request must succeed before a
# figure is taken.
sanity() {
	local base="$1" key="$2" code
	code="$(curl -sS -o "$TMP/sanity.out" -w '%{http_code}' --max-time 10 -X POST \
		-H 'Content-Type: application/json' -H "Authorization: Bearer $key" \
		--data "$CHAT_BODY" "$base/v1/chat/completions" || true)"
	if [ "$code" != 200 ] || ! grep -q '"choices"' "$TMP/sanity.out"; then
		echo "bench: sanity chat request to $base answered $code:" >&2
		head -c 600 "$TMP/sanity.out" >&2 || true
		echo >&2
		return 1
	fi
	code="$(curl -sS -N -o "$TMP/sanity.out" -w '%{http_code}' --max-time 10 -X POST \
		-H 'Content-Type: application/json' -H "Authorization: Bearer $key" \
		--data "$STREAM_BODY" "$base/v1/chat/completions" || true)"
	if [ "$code" != 200 ] || ! grep -q '^data: \[DONE\]' "$TMP/sanity.out"; then
		echo "bench: sanity stream request to $base answered $code:" >&2
		head -c 600 "$TMP/sanity.out" >&2 || true
		echo >&2
		return 1
	fi
}

# ---------------------------------------------------------------- measuring

declare -A RPS P50 P99 CPU CPUPCT ERR NOTE RSS RSSTOT IDLE IDLEWORKER
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

# measure TARGET CASE SCRIPT CONNS DURATION: runs wrk against the chat
# endpoint of BASE_URL and records the figures under "CASE/TARGET".
measure() {
	local target="$1" case="$2" script="$3" conns="$4" dur="$5" id="$2/$1"
	local out="$TMP/wrk-$1-$2.txt" tree before after reqs non2xx sockerr
	tree="$(tree_pids "$SUT_PID")"
	# shellcheck disable=SC2086
	before="$(cpu_ticks $tree)"
	if ! timeout $((dur + 30)) "${CLIENT_PIN[@]}" wrk -t1 -c"$conns" -d"${dur}s" --timeout 10s --latency \
		-s "$script" "$BASE_URL/v1/chat/completions" >"$out" 2>&1; then
		echo "bench: wrk failed for $id:" >&2
		cat "$out" >&2
		NOTE[$id]="wrk failed"
		ERRORS=$((ERRORS + 1))
		return 0
	fi
	# Processes that appeared during the run (a restarted worker) count too:
	# all their CPU time was spent within it.
	tree="$(printf '%s\n' $tree $(tree_pids "$SUT_PID") | sort -un)"
	# shellcheck disable=SC2086
	after="$(cpu_ticks $tree)"
	reqs="$(awk '/ requests in /{ print $1; exit }' "$out")"
	non2xx="$(awk '/Non-2xx or 3xx responses:/{ print $NF; exit }' "$out")"
	sockerr="$(awk '/Socket errors:/{ gsub(/,/, ""); print $4 + $6 + $8 + $10; exit }' "$out")"
	non2xx="${non2xx:-0}"
	sockerr="${sockerr:-0}"
	RPS[$id]="$(awk '/^Requests\/sec:/{ printf "%.0f", $2; exit }' "$out")"
	P50[$id]="$(to_ms "$(awk '$1 == "50%" { print $2; exit }' "$out")")"
	P99[$id]="$(to_ms "$(awk '$1 == "99%" { print $2; exit }' "$out")")"
	CPU[$id]="$(awk -v d="$((after - before))" -v hz="$CLK_TCK" -v n="${reqs:-0}" \
		'BEGIN { if (n > 0) printf "%.4f", d / hz / n * 1000 }')"
	CPUPCT[$id]="$(awk -v d="$((after - before))" -v hz="$CLK_TCK" -v s="$dur" \
		'BEGIN { printf "%.0f", d / hz / s * 100 }')"
	ERR[$id]=$((non2xx + sockerr))
	if [ "${ERR[$id]}" -gt 0 ]; then
		ERRORS=$((ERRORS + 1))
		NOTE[$id]="$non2xx non-2xx, $sockerr socket errors"
		echo "bench: $id: $non2xx non-2xx responses, $sockerr socket errors" >&2
	fi
	# A proxy that stalls completes no request and, with wrk's timeout longer
	# than the run, reports no socket error either.
	if [ "${reqs:-0}" -eq 0 ]; then
		ERRORS=$((ERRORS + 1))
		NOTE[$id]="no request completed"
		echo "bench: $id: no request completed in ${dur} s" >&2
	fi
	echo "bench: $id: ${RPS[$id]} req/s, p50 ${P50[$id]} ms, p99 ${P99[$id]} ms, ${ERR[$id]} errors" >&2
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

run_target() {
	local target="$1" key="none" r
	SUT_PID=""
	case "$target" in
	direct)
		SUT_PID="$MOCK_PID"
		BASE_URL="http://127.0.0.1:$MOCK_PORT"
		ROOT_LABEL="mockllm" CHILD_LABEL="child"
		;;
	nginx)
		ROOT_LABEL="master" CHILD_LABEL="worker"
		start_nginx || return 1
		;;
	gw1 | gw2)
		ROOT_LABEL="supervisor" CHILD_LABEL="worker"
		start_gateway "${target#gw}" "$target" || return 1
		key="$KEY"
		;;
	gwcache)
		ROOT_LABEL="supervisor" CHILD_LABEL="worker"
		start_gateway 1 "$target" LLM_PROXY_CACHE_MODE=exact || return 1
		key="$KEY"
		;;
	esac
	sanity "$BASE_URL" "$key" || return 1
	r="$(rss_list VmRSS)"
	IDLE[$target]="${r%%|*}"
	IDLEWORKER[$target]="${r##*|}"
	wrk_script "$TMP/chat-$target.lua" "$CHAT_BODY" "$key"
	wrk_script "$TMP/stream-$target.lua" "$STREAM_BODY" "$key"

	# Warm-up: fill the connection pools, fault in the code paths.
	timeout $((WARMUP + 30)) "${CLIENT_PIN[@]}" wrk -t1 -c"$CONNS" -d"${WARMUP}s" \
		-s "$TMP/chat-$target.lua" "$BASE_URL/v1/chat/completions" >/dev/null 2>&1 || true
	if [ "$target" = gwcache ]; then
		# The figures are only those of cache hits if the repeated request is one.
		local hit
		hit="$(curl -sS -o /dev/null -D - --max-time 10 -X POST -H 'Content-Type: application/json' \
			-H "Authorization: Bearer $key" --data "$CHAT_BODY" "$BASE_URL/v1/chat/completions" |
			awk -F': ' 'tolower($1) == "x-llm-proxy-cache" { gsub(/\r/, "", $2); print $2 }')"
		if [ "$hit" != hit-l1 ]; then
			echo "bench: gwcache: the repeated request answered X-LLM-Proxy-Cache '$hit', not hit-l1" >&2
			return 1
		fi
	fi

	measure "$target" chat "$TMP/chat-$target.lua" "$CONNS" "$DURATION"
	measure "$target" stream "$TMP/stream-$target.lua" "$CONNS" "$DURATION"
	measure "$target" latency "$TMP/chat-$target.lua" 1 "$DURATION"

	if [ "$target" != direct ] && [ -n "${NOTE[chat/$target]:-}${NOTE[stream/$target]:-}${NOTE[latency/$target]:-}" ]; then
		echo "bench: $target had errors; warnings and errors from its log:" >&2
		grep -E '\[(WARN|ERROR)\]|\[(warn|error)\]' "$SUT_LOG" | tail -n 20 >&2 || true
	fi
	r="$(rss_list VmHWM)"
	RSS[$target]="${r%%|*}"
	r="${r#*|}"
	RSSTOT[$target]="${r%|*}"
	if [ "$target" != direct ]; then
		stop_tree "$SUT_PID"
	fi
}

for target in $TARGETS; do
	echo "bench: target $target" >&2
	if ! run_target "$target"; then
		FAILED+=("$target")
		ERRORS=$((ERRORS + 1))
		echo "bench: target $target failed; see above" >&2
		[ -n "${SUT_LOG:-}" ] && [ "$target" != direct ] && tail -n 20 "$SUT_LOG" >&2 || true
		[ -n "$SUT_PID" ] && [ "$target" != direct ] && stop_tree "$SUT_PID" || true
	fi
	SUT_LOG=""
done

# ---------------------------------------------------------------- report

# ratio VALUE REF: VALUE/REF as "0.85x", or "-" when either is missing.
ratio() {
	awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2fx", a / b }'
}
fmt() { if [ -n "${1:-}" ]; then echo "$1"; else echo "-"; fi; }

declare -A NAMES=([direct]="mockllm direct" [nginx]="nginx" [gw1]="gateway 1 worker" [gw2]="gateway 2 workers"
	[gwcache]="gateway 1 worker, cache hits (L1)")
REPORT="$TMP/report.md"
{
	echo "# llm-proxy benchmark"
	echo
	echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), $(awk -F': ' '/^model name/{ print $2; exit }' /proc/cpuinfo), $NCPU CPUs; $PINNING."
	echo "wrk 1 thread, ${DURATION} s per case after a ${WARMUP} s warm-up; $CONNS connections for chat and stream, 1 for latency;"
	echo "streamed answers have $CHUNKS content chunks; model \`$MODEL\`; $(nginx -v 2>&1 | sed 's/^nginx version: //')."
	echo "CPU s/1k req and CPU % are those of the system under test (mockllm itself in the direct row)."
	echo "Load average before the run: $LOAD_BEFORE (other work on the machine skews every figure)."
	for case in chat stream latency; do
		echo
		case "$case" in
		chat) echo "## Non-streaming chat, $CONNS connections" ;;
		stream) echo "## Streaming chat, $CONNS connections" ;;
		latency) echo "## Non-streaming chat, 1 connection" ;;
		esac
		echo
		if [ "$case" = latency ]; then
			echo "| target | req/s | p50 ms | ×nginx | added p50 ms | ×nginx | p99 ms | ×nginx | CPU s/1k req | ×nginx | errors |"
			echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
		else
			echo "| target | req/s | ×nginx | p50 ms | ×nginx | p99 ms | ×nginx | CPU s/1k req | ×nginx | CPU % | errors |"
			echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
		fi
		n="$case/nginx"
		d="$case/direct"
		added_ref="$(awk -v a="${P50[$n]:-}" -v b="${P50[$d]:-}" 'BEGIN { if (a != "" && b != "") printf "%.3f", a - b }')"
		for target in $TARGETS; do
			id="$case/$target"
			errs="$(fmt "${ERR[$id]:-}")"
			[ -n "${NOTE[$id]:-}" ] && errs="**${NOTE[$id]}**"
			[[ " ${FAILED[*]:-} " == *" $target "* ]] && errs="**target failed**"
			if [ "$case" = latency ]; then
				added="$(awk -v a="${P50[$id]:-}" -v b="${P50[$d]:-}" 'BEGIN { if (a != "" && b != "") printf "%.3f", a - b }')"
				[ "$target" = direct ] && added=""
				echo "| ${NAMES[$target]} | $(fmt "${RPS[$id]:-}") | $(fmt "${P50[$id]:-}") | $(ratio "${P50[$id]:-}" "${P50[$n]:-}") | $(fmt "$added") | $(ratio "$added" "$added_ref") | $(fmt "${P99[$id]:-}") | $(ratio "${P99[$id]:-}" "${P99[$n]:-}") | $(fmt "${CPU[$id]:-}") | $(ratio "${CPU[$id]:-}" "${CPU[$n]:-}") | $errs |"
			else
				echo "| ${NAMES[$target]} | $(fmt "${RPS[$id]:-}") | $(ratio "${RPS[$id]:-}" "${RPS[$n]:-}") | $(fmt "${P50[$id]:-}") | $(ratio "${P50[$id]:-}" "${P50[$n]:-}") | $(fmt "${P99[$id]:-}") | $(ratio "${P99[$id]:-}" "${P99[$n]:-}") | $(fmt "${CPU[$id]:-}") | $(ratio "${CPU[$id]:-}" "${CPU[$n]:-}") | $(fmt "${CPUPCT[$id]:-}") | $errs |"
			fi
		done
	done
	echo
	echo "## Memory (MiB)"
	echo
	echo "| target | idle RSS per process | peak RSS (VmHWM) per process | peak total | ×nginx |"
	echo "|---|---|---|---:|---:|"
	for target in $TARGETS; do
		echo "| ${NAMES[$target]} | $(fmt "${IDLE[$target]:-}") | $(fmt "${RSS[$target]:-}") | $(fmt "${RSSTOT[$target]:-}") | $(ratio "${RSSTOT[$target]:-}" "${RSSTOT[nginx]:-}") |"
	done
	if [[ " $TARGETS " == *" nginx "* && " $TARGETS " == *" gw1 "* && " $TARGETS " == *" direct "* ]]; then
		echo
		echo "## Bars (gateway with 1 worker)"
		echo
		echo "| bar | measured | met |"
		echo "|---|---:|---|"
		bar() { # LABEL VALUE OP LIMIT
			awk -v l="$1" -v v="${2:-}" -v op="$3" -v lim="$4" 'BEGIN {
				if (v == "") { printf "| %s | - | no figure |\n", l; exit }
				ok = (op == ">=") ? (v + 0 >= lim + 0) : (op == "<") ? (v + 0 < lim + 0) : (v + 0 <= lim + 0)
				printf "| %s | %.2f | %s |\n", l, v, ok ? "yes" : "**no**"
			}'
		}
		q() { awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a != "" && b != "" && b + 0 != 0) printf "%.4f", a / b }'; }
		bar "non-streaming req/s ≥ 0.5× nginx (ratio)" "$(q "${RPS[chat/gw1]:-}" "${RPS[chat/nginx]:-}")" ">=" 0.5
		bar "streaming req/s ≥ 0.5× nginx (ratio)" "$(q "${RPS[stream/gw1]:-}" "${RPS[stream/nginx]:-}")" ">=" 0.5
		added_gw="$(awk -v a="${P50[latency/gw1]:-}" -v b="${P50[latency/direct]:-}" 'BEGIN { if (a != "" && b != "") printf "%.4f", a - b }')"
		added_ng="$(awk -v a="${P50[latency/nginx]:-}" -v b="${P50[latency/direct]:-}" 'BEGIN { if (a != "" && b != "") printf "%.4f", a - b }')"
		bar "added p50 at 1 connection ≤ 1.5× nginx's (ratio)" "$(q "$added_gw" "$added_ng")" "<=" 1.5
		bar "idle worker RSS < 30 MiB (MiB)" "${IDLEWORKER[gw1]:-}" "<" 30
		if [[ " $TARGETS " == *" gwcache "* ]]; then
			bar "L1 cache-hit req/s ≥ 3× non-cached pass-through (ratio)" "$(q "${RPS[chat/gwcache]:-}" "${RPS[chat/gw1]:-}")" ">=" 3
			echo "| L1 cache-hit req/s vs nginx (ratio) | $(ratio "${RPS[chat/gwcache]:-}" "${RPS[chat/nginx]:-}") | - |"
		fi
	fi
	if [ "$ERRORS" -gt 0 ]; then
		echo
		echo "**$ERRORS case(s) or target(s) had errors; their figures are not valid.**"
	fi
} >"$REPORT"

mkdir -p "$(dirname "$OUT")"
cp "$REPORT" "$OUT"
cat "$REPORT"
echo >&2
echo "bench: report written to $OUT" >&2
[ "$ERRORS" -eq 0 ] || exit 1
