#!/usr/bin/env bash
# make bench: the Go benchmarks of the suite (against the reference where a benchmark has one).
set -euo pipefail
cd "$(dirname "$0")/.."
export CNI_SUITE_BIN="$PWD/bin"
go test -count=1 -run '^$' -bench "${BENCH:-.}" -benchtime "${BENCHTIME:-1x}" -timeout 60m ./...
