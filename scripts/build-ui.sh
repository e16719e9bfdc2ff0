#!/usr/bin/env bash
# Copies the web admin's front-end files from node_modules (installed by `npm ci` from
# package-lock.json) into worker/admin/static/vendor/, which go:embed puts in the binary.
# The vendor folder is generated: it is gitignored and never committed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ ! -d node_modules/@alpinejs/csp ] || [ ! -d node_modules/uplot ]; then
	if ! command -v npm >/dev/null 2>&1; then
		echo "build-ui: npm not found; install Node.js and npm, then run npm ci" >&2
		exit 1
	fi
	npm ci --no-audit --no-fund
fi

out=worker/admin/static/vendor
mkdir -p "$out"
cp node_modules/@alpinejs/csp/dist/cdn.min.js "$out/alpine-csp.min.js"
cp node_modules/uplot/dist/uPlot.iife.min.js "$out/uPlot.iife.min.js"
cp node_modules/uplot/dist/uPlot.min.css "$out/uPlot.min.css"
echo "build-ui: copied Alpine (CSP build) and uPlot into $out"
