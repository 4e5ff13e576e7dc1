#!/usr/bin/env bash
# make demo: runs the suite's plugins by hand with cnitool inside throwaway namespaces and shows
# what they did. Nothing outside the namespaces it creates is touched; they are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# The showcase: pods run through the CRI (crishim, driven by crictl) on the suite's plugins.
# DEMO=cnitool gives the plugin-by-plugin demo below instead.
if [ -x bin/crishim ] && [ "${DEMO:-cri}" = cri ]; then exec scripts/demo-crishim.sh; fi
BIN="$PWD/bin"
CACHE="${CNI_SUITE_CACHE:-$HOME/.cache/cni-suite}"
CNITOOL="$CACHE/tools/cnitool"
if [ ! -x "$CNITOOL" ]; then
  echo "building cnitool v1.3.1 into $CACHE/tools"
  mkdir -p "$CACHE/tools"
  (cd /tmp && GOBIN="$CACHE/tools" CGO_ENABLED=0 go install github.com/containernetworking/cni/cnitool@v1.3.1)
fi
id=$RANDOM
node=cnis-demo-node-$id
pods=()
work=$(mktemp -d)
cleanup() {
  for p in "${pods[@]}"; do ip netns del "$p" 2>/dev/null || true; done
  ip netns del "$node" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$node"
ip -n "$node" link set lo up
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
innode() { ip netns exec "$node" "$@"; }
tool() { innode env NETCONFPATH="$work/net.d" CNI_PATH="$BIN" "$CNITOOL" "$@"; }
mkdir -p "$work/net.d"

if [ -x "$BIN/bridge" ] && [ -x "$BIN/host-local" ] && [ -x "$BIN/portmap" ]; then
  . scripts/demo-bridge.sh
else
  step "loopback only (bridge/host-local/portmap not built yet)"
  cat >"$work/net.d/10-lo.conflist" <<'JSON'
{"cniVersion":"1.0.0","cniVersions":["1.0.0","1.1.0"],"name":"lo-only","plugins":[{"type":"loopback"}]}
JSON
  pod=cnis-demo-pod-$id; pods+=("$pod"); ip netns add "$pod"
  echo "before: $(ip -n "$pod" -o link show lo | cut -c1-80)"
  tool add lo-only "/run/netns/$pod"
  echo "after ADD: $(ip -n "$pod" -o link show lo | cut -c1-80)"
  ip netns exec "$pod" ping -c1 -W1 127.0.0.1 | grep -E 'received'
  tool del lo-only "/run/netns/$pod"
  echo "after DEL: $(ip -n "$pod" -o link show lo | cut -c1-80)"
fi
step "done; namespaces removed"
