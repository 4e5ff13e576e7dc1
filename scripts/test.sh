#!/usr/bin/env bash
# make test: unit and netns integration tests against the built binaries, proving that the
# machine's root network namespace is the same after the run as before it.
set -euo pipefail
cd "$(dirname "$0")/.."
before=$(mktemp) after=$(mktemp)
trap 'rm -f "$before" "$after"' EXIT
scripts/rootns-snapshot.sh >"$before"
# Namespaces made by this run's tests carry its tag (pkg/testenv names them cnis-<run>-...).
export CNI_SUITE_RUN="r$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
export CNI_SUITE_BIN="$PWD/bin"
status=0
go test -count=1 -timeout 30m ${GOTESTFLAGS:-} ./... || status=$?
# Short fuzz runs of the config parsers (corpora under testdata/fuzz are run by go test too).
if [ "$status" -eq 0 ] && [ -f scripts/fuzz-targets ]; then
  while read -r pkg target; do
    [ -n "$pkg" ] || continue
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "${FUZZTIME:-20000x}" "$pkg" || status=$?
  done < scripts/fuzz-targets
fi
scripts/rootns-snapshot.sh >"$after"
if ! diff -u "$before" "$after"; then
  echo "FAIL: the root network namespace changed during the tests (diff above)" >&2
  status=1
else
  echo "root network namespace unchanged (links, addresses, iptables, nftables)"
fi
left=$(ip netns list 2>/dev/null | awk '{print $1}' | grep "^cnis-$CNI_SUITE_RUN-" || true)
if [ -n "$left" ]; then
  echo "FAIL: test network namespaces left behind:" >&2; echo "$left" >&2
  status=1
fi
exit $status
