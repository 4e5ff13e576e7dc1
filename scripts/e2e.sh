#!/usr/bin/env bash
# make e2e: the end-to-end tests (cnitool, libcni) plus the long-running ones that make test skips.
set -euo pipefail
cd "$(dirname "$0")/.."
export CNI_SUITE_BIN="$PWD/bin" CNI_SUITE_LONG=1
go test -count=1 -timeout 60m -v ./test/...
