#!/usr/bin/env bash
# make bench: test/bench drives bridge + host-local + portmap through libcni, as a runtime does,
# with the suite's plugins (bin/) and the reference plugins v1.9.1 in the same run, and prints
# the comparison table (see test/bench/README.md). Flags go in BENCH_ARGS, e.g.
#   make bench BENCH_ARGS="-scale"            # also the 1,000-pod scale run
#   make bench BENCH_ARGS="-json" > out.json  # machine-readable
#   make bench BENCH_ARGS="-backend nftables" # the nftables backends (ours: issue 17)
# Then the packages' Go micro-benchmarks (go test -bench; GOBENCH=0 skips them).
# Like make test, it proves the root network namespace is unchanged afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
export CNI_SUITE_BIN="$PWD/bin"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
scripts/rootns-snapshot.sh >"$tmp/before"
CGO_ENABLED=0 go build -o "$tmp/bench" ./test/bench
status=0
# shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
"$tmp/bench" ${BENCH_ARGS:-} "$@" || status=$?
if [ "$status" -eq 0 ] && [ "${GOBENCH:-1}" != 0 ]; then
  go test -count=1 -run '^$' -bench "${BENCH:-.}" -benchtime "${BENCHTIME:-1x}" -timeout 60m ./... >&2 || status=$?
fi
scripts/rootns-snapshot.sh >"$tmp/after"
if ! diff -u "$tmp/before" "$tmp/after" >&2; then
  echo "FAIL: the root network namespace changed during the benchmark (diff above)" >&2
  status=1
fi
if ip netns list | grep -qE '^cnis-b(node|pod|probe|hl)-'; then
  echo "FAIL: benchmark namespaces left behind:" >&2; ip netns list | grep -E '^cnis-b' >&2
  status=1
fi
exit $status
