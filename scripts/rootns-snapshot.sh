#!/usr/bin/env bash
# Prints the root network namespace's links, addresses, iptables and nftables rules, without the
# parts that change by themselves (comment lines, packet counters, link statistics), so two
# snapshots taken around a test run must be equal.
set -uo pipefail
echo "## links"; ip -o link show | sed -E 's/ qlen [0-9]+//' | sort
echo "## addrs"; ip -o addr show | sed -E 's/(valid_lft|preferred_lft) [^ ]+//g' | sort
for t in iptables-save ip6tables-save; do
  echo "## $t"
  command -v $t >/dev/null && $t 2>/dev/null | grep -v '^#' | sed -E 's/\[[0-9]+:[0-9]+\]/[0:0]/'
done
echo "## nft"
command -v nft >/dev/null && nft list ruleset 2>/dev/null | sed -E 's/counter packets [0-9]+ bytes [0-9]+/counter/'
exit 0
