#!/usr/bin/env bash
# Usage: scripts/dotenv.sh COMMAND [ARGS...]
# Runs COMMAND with the variables of ./.env (KEY=value lines, '#' comments)
# added to the environment. A variable already set in the environment wins,
# so `LLM_PROXY_PORT=9001 make run` overrides .env.
set -euo pipefail

file="${DOTENV_FILE:-.env}"
if [ -f "$file" ]; then
	while IFS= read -r line || [ -n "$line" ]; do
		line="${line%$'\r'}"
		# Skip blank lines and comments.
		[[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
		line="${line#export }"
		if [[ "$line" != *=* ]]; then
			echo "dotenv: $file: ignoring malformed line: $line" >&2
			continue
		fi
		key="${line%%=*}"
		val="${line#*=}"
		key="${key//[[:space:]]/}"
		if [[ ! "$key" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
			echo "dotenv: $file: ignoring malformed line: $line" >&2
			continue
		fi
		# Strip one pair of surrounding quotes.
		if [[ "$val" =~ ^\"(.*)\"$ ]] || [[ "$val" =~ ^\'(.*)\'$ ]]; then
			val="${BASH_REMATCH[1]}"
		fi
		if [ -z "${!key+x}" ]; then
			export "$key=$val"
		fi
	done <"$file"
fi
exec "$@"
