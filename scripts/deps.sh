#!/usr/bin/env bash
# Installs what the tests, demo and benchmarks need, when missing (Debian, apt-get).
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip || need+=(iproute2)
have iptables-restore || need+=(iptables)
have nft || need+=(nftables)
have ping || need+=(iputils-ping)
have curl || need+=(curl)
have file || need+=(file)
have socat || need+=(socat)
have conntrack || need+=(conntrack)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "deps.sh: missing ${need[*]}; run as root to install them" >&2
  exit 0
fi
echo "deps.sh: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
