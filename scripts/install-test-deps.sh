#!/usr/bin/env bash
# Installs the system tools the test suite and the benchmark use, with apt-get,
# and only the ones that are missing, so a second run does nothing.
#
# Required (the script fails without them): a C compiler, because `go test -race`
# needs cgo; npm, which fetches the web admin's front-end packages; and Chromium, which
# the web admin's browser test drives (cmd/llm-proxy/e2e/admin_browser_test.go).
# Optional (a warning if they cannot be installed, e.g. offline): wrk and nginx,
# used by scripts/bench.sh, curl, used by scripts/demo.sh and bench.sh, and sqlite3,
# which bench.sh uses to count request-log rows.
set -euo pipefail

# command name -> Debian package
declare -A REQUIRED=([gcc]=gcc [npm]=npm [chromium]=chromium)
declare -A OPTIONAL=([wrk]=wrk [nginx]=nginx-light [curl]=curl [taskset]=util-linux [sqlite3]=sqlite3)

missing_required=()
missing_optional=()
for cmd in "${!REQUIRED[@]}"; do
	command -v "$cmd" >/dev/null 2>&1 || missing_required+=("${REQUIRED[$cmd]}")
done
for cmd in "${!OPTIONAL[@]}"; do
	# nginx lives in /usr/sbin, which is not on every user's PATH.
	command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing_optional+=("${OPTIONAL[$cmd]}")
done
# The race detector also needs the C library headers next to gcc.
if [ ! -e /usr/include/stdlib.h ]; then
	missing_required+=(libc6-dev)
fi

if [ ${#missing_required[@]} -eq 0 ] && [ ${#missing_optional[@]} -eq 0 ]; then
	exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO=(sudo)
	fi
fi

apt_install() {
	if ! command -v apt-get >/dev/null 2>&1; then
		echo "install-test-deps: apt-get not found; install these packages by hand: $*" >&2
		return 1
	fi
	if [ -z "${APT_UPDATED:-}" ]; then
		"${SUDO[@]}" apt-get update -qq || return 1
		APT_UPDATED=1
	fi
	DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if [ ${#missing_required[@]} -gt 0 ]; then
	echo "install-test-deps: installing ${missing_required[*]}" >&2
	# Chromium needs a font to render text in the screenshots.
	if [[ " ${missing_required[*]} " == *" chromium "* ]]; then
		missing_required+=(fonts-dejavu-core)
	fi
	if ! apt_install "${missing_required[@]}"; then
		echo "install-test-deps: could not install ${missing_required[*]} (needed by go test -race)" >&2
		exit 1
	fi
fi

if [ ${#missing_optional[@]} -gt 0 ]; then
	echo "install-test-deps: installing ${missing_optional[*]}" >&2
	if ! apt_install "${missing_optional[@]}"; then
		echo "install-test-deps: warning: could not install ${missing_optional[*]}; scripts/bench.sh needs them, the Go tests do not" >&2
	fi
fi
