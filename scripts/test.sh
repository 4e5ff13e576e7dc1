#!/usr/bin/env bash
# make test: unit and netns integration tests against the built binaries, proving that the
# machine's root network namespace is the same after the run as before it.
set -euo pipefail
cd "$(dirname "$0")/.."
before=$(mktemp) after=$(mktemp)
trap 'rm -f "$before" "$after"' EXIT
scripts/rootns-snapshot.sh >"$before"
ns_before=$(ip netns list 2>/dev/null | awk '{print $1}' | sort)
export CNI_SUITE_BIN="$PWD/bin"
status=0
go test -count=1 -timeout 30m ${GOTESTFLAGS:-} ./... || status=$?
# Short fuzz runs of the config parsers (corpora under testdata/fuzz are run by go test too).
if [ "$status" -eq 0 ] && [ -f scripts/fuzz-targets ]; then
  while read -r pkg target; do
    [ -n "$pkg" ] || continue
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "${FUZZTIME:-10s}" "$pkg" || status=$?
  done < scripts/fuzz-targets
fi
scripts/rootns-snapshot.sh >"$after"
if ! diff -u "$before" "$after"; then
  echo "FAIL: the root network namespace changed during the tests (diff above)" >&2
  status=1
else
  echo "root network namespace unchanged (links, addresses, iptables, nftables)"
fi
# Namespaces this run made and did not remove (others' namespaces, present before, do not count).
left=$(comm -13 <(echo "$ns_before") <(ip netns list 2>/dev/null | awk '{print $1}' | sort) | grep '^cnis-' || true)
if [ -n "$left" ]; then
  echo "FAIL: test network namespaces left behind:" >&2; echo "$left" >&2
  status=1
fi
exit $status
