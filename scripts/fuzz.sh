#!/usr/bin/env bash
# Runs every Go fuzz target (func FuzzXxx in a _test.go file) for FUZZTIME each,
# one after the other (go test -fuzz takes one target per run).
#
#   scripts/fuzz.sh                    every target, FUZZTIME (default 5s) each
#   FUZZTIME=10m scripts/fuzz.sh       the long run the release checklist asks for
#   FUZZ_TIME=10m scripts/fuzz.sh      the same (FUZZ_TIME is accepted as a spelling of FUZZTIME)
#   scripts/fuzz.sh ./store/spool      only the targets under these packages
#
# A crash makes go test write the input to <pkg>/testdata/fuzz/<Target>/ and
# this script exit non-zero; commit that file with the fix, so `go test` keeps
# replaying it as a regression test. Each target's execs/s is printed at the end.
set -euo pipefail

cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-${FUZZ_TIME:-5s}}
# One fuzz worker per core, but no more than 4: CI machines are shared.
PARALLEL=${FUZZ_PARALLEL:-$(( $(nproc 2>/dev/null || echo 2) < 4 ? $(nproc 2>/dev/null || echo 2) : 4 ))}

dirs=("$@")
[ ${#dirs[@]} -eq 0 ] && dirs=(.)

targets=()
while IFS= read -r line; do
	targets+=("$line")
done < <(grep -rIl --include='*_test.go' --exclude-dir=node_modules --exclude-dir=.git '^func Fuzz' "${dirs[@]}" |
	while IFS= read -r f; do
		pkg="./$(dirname "${f#./}")"
		grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //' | while IFS= read -r name; do
			echo "$pkg $name"
		done
	done | sort -u)

if [ ${#targets[@]} -eq 0 ]; then
	echo "fuzz.sh: no fuzz targets under ${dirs[*]}" >&2
	exit 1
fi

summary=()
status=0
for t in "${targets[@]}"; do
	pkg=${t% *}
	name=${t#* }
	echo "== $pkg $name ($FUZZTIME)"
	log=$(mktemp)
	if $GO test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -parallel "$PARALLEL" "$pkg" 2>&1 | tee "$log"; then
		result=ok
	else
		result=FAIL
		status=1
	fi
	# The last progress line: "fuzz: elapsed: 5s, execs: 123456 (24691/sec), ..."
	# A run that never got past gathering baseline coverage (a big cached corpus, a
	# short FUZZTIME) prints no execs line; that is no reason to stop the script.
	execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | awk '{print $2}' || true)
	secs=$(grep -o 'elapsed: [0-9]*s' "$log" | tail -1 | tr -dc '0-9' || true)
	rate=-
	if [ -n "${execs:-}" ] && [ -n "${secs:-}" ] && [ "$secs" -gt 0 ]; then
		rate=$(( execs / secs ))
	fi
	summary+=("$(printf '%-4s %-34s %-22s execs %-10s ~%s/s' "$result" "$pkg" "$name" "${execs:--}" "$rate")")
	rm -f "$log"
done

echo
echo "fuzz summary (FUZZTIME=$FUZZTIME, parallel $PARALLEL):"
printf '%s\n' "${summary[@]}"
exit $status
