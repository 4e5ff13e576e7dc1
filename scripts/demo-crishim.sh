#!/usr/bin/env bash
# The CRI demo (make demo runs it when bin/crishim exists): in a throwaway node netns, crishim
# serves the CRI with the suite's plugins (bin/, the reference v1.9.1 filling in any not built
# yet); crictl runs a few pods, one serving HTTP with a hostPort; the demo shows their IPs,
# pod-to-pod and hostPort traffic, then removes everything and shows that nothing is left.
# Nothing outside the namespaces and the temp dir it creates is touched, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/bin"
CACHE="${CNI_SUITE_CACHE:-$HOME/.cache/cni-suite}"
REF="$CACHE/ref-v1.9.1"
CRICTL="$CACHE/tools/crictl"
if [ ! -x "$CRICTL" ]; then
  echo "building crictl v1.37.0 into $CACHE/tools (once, a few minutes)"
  mkdir -p "$CACHE/tools"
  (cd /tmp && GOBIN="$CACHE/tools" CGO_ENABLED=0 GOFLAGS= go install sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0)
fi
if [ ! -x "$REF/bridge" ]; then
  echo "building the reference plugins v1.9.1 into $REF (once)"
  mkdir -p "$REF"
  (cd /tmp && GOBIN="$REF" CGO_ENABLED=0 GOFLAGS= go install github.com/containernetworking/plugins/plugins/...@v1.9.1)
fi

id=$RANDOM
node=cnis-demo-node-$id
work=$(mktemp -d /tmp/crishim-demo-XXXXXX)
sock="$work/cri.sock"
shim_pid=
flags=(--listen "$sock" --state-dir "$work/state" --netns-dir "$work/netns" --cni-conf-dir "$work/net.d"
  --cni-bin-dir "$BIN:$REF")
cleanup() {
  set +e
  if [ -n "$shim_pid" ]; then kill "$shim_pid" 2>/dev/null; wait "$shim_pid" 2>/dev/null; fi
  # Removes any pod still there through the CNI, kills the shim's helpers, unmounts its netns.
  if [ -d "$work/state" ]; then nsenter --net="/run/netns/$node" "$BIN/crishim" teardown "${flags[@]}" >/dev/null 2>&1; fi
  awk -v w="$work" '$5 ~ "^"w {print $5}' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l
  ip netns del "$node" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
innode() { ip netns exec "$node" "$@"; }
crictl() { innode "$CRICTL" --config "$work/crictl.yaml" "$@"; }

ip netns add "$node"
ip -n "$node" link set lo up
mkdir -p "$work/net.d" "$work/logs"
printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\n' "$sock" "$sock" >"$work/crictl.yaml"
cat >"$work/net.d/10-cni-suite.conflist" <<JSON
{
  "cniVersion": "1.0.0", "cniVersions": ["1.0.0", "1.1.0"], "name": "cni-suite",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$work/ipam", "ranges": [[{"subnet": "10.88.0.0/24"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
  ]
}
JSON

step "crishim in node netns $node, plugins from: $(for p in bridge host-local portmap loopback; do
  if [ -x "$BIN/$p" ]; then printf '%s(suite) ' "$p"; else printf '%s(reference) ' "$p"; fi; done)"
nsenter --net="/run/netns/$node" "$BIN/crishim" "${flags[@]}" 2>"$work/crishim.log" &
shim_pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
crictl version
crictl info -o go-template --template '{{range .status.conditions}}{{.type}}={{.status}} {{end}}{{"\n"}}'

pod_json() { # name [hostPort containerPort]
  local ports=""
  [ -n "${2:-}" ] && ports=", \"port_mappings\": [{\"protocol\": 0, \"container_port\": $3, \"host_port\": $2}]"
  cat >"$work/$1.pod.json" <<JSON
{"metadata": {"name": "$1", "namespace": "demo", "uid": "uid-$1"}, "hostname": "$1",
 "log_directory": "$work/logs/$1", "labels": {"app": "$1"},
 "dns_config": {"servers": ["10.96.0.10"], "searches": ["demo.svc.cluster.local"]}$ports}
JSON
  echo "$work/$1.pod.json"
}
ctr_json() { # name command...
  local name=$1; shift
  local cmd; cmd=$(printf '"%s",' "$@"); cmd=${cmd%,}
  cat >"$work/$name.ctr.json" <<JSON
{"metadata": {"name": "$name"}, "image": {"image": "busybox"}, "command": [$cmd], "log_path": "$name.log"}
JSON
  echo "$work/$name.ctr.json"
}
run() { # pod-json name command...
  local podjson=$1 name=$2; shift 2
  local pod ctr
  pod=$(crictl runp "$podjson")
  ctr=$(crictl create "$pod" "$(ctr_json "$name" "$@")" "$podjson")
  crictl start "$ctr" >/dev/null
  echo "$pod $ctr"
}

step "three pods: web serves HTTP on 8080 (hostPort 30080), two clients"
read -r web_pod web_ctr < <(run "$(pod_json web 30080 8080)" httpd sh -c \
  "echo web: serving HTTP on :8080; exec socat -d -d TCP-LISTEN:8080,fork,reuseaddr 'SYSTEM:echo HTTP/1.0 200 OK; echo; echo hello from \$(hostname)'")
read -r c1_pod c1_ctr < <(run "$(pod_json client-1)" shell sleep 3600)
read -r c2_pod c2_ctr < <(run "$(pod_json client-2)" shell sleep 3600)
crictl pods
printf '\n%-10s %-14s %s\n' POD IP ID
for p in "$web_pod" "$c1_pod" "$c2_pod"; do
  crictl inspectp -o go-template --template '{{.status.metadata.name}} {{.status.network.ip}} {{.status.id}}' "$p" |
    awk 'NF {printf "%-10s %-14s %.13s\n", $1, $2, $3}'
done
web_ip=$(crictl inspectp -o go-template --template '{{.status.network.ip}}' "$web_pod")
gw=${web_ip%.*}.1

step "pod to pod: client-1 -> web ($web_ip:8080), through crictl exec (the streaming server)"
for _ in $(seq 50); do crictl exec "$c1_ctr" curl -s -m 2 "http://$web_ip:8080/" 2>/dev/null && break; sleep 0.1; done
step "client-2 sees its own hostname and DNS config"
crictl exec "$c2_ctr" sh -c 'echo "hostname: $(hostname)"; cat /etc/resolv.conf'
step "hostPort from the node: 127.0.0.1:30080 and the bridge address $gw:30080"
innode curl -s -m 5 http://127.0.0.1:30080/
innode curl -s -m 5 "http://$gw:30080/"
step "web's log, as kubectl logs reads it"
crictl logs "$web_ctr" 2>&1 | head -4
echo "-- the file, in the CRI log format:"
head -4 "$work/logs/web/httpd.log"

step "remove every pod"
for p in "$web_pod" "$c1_pod" "$c2_pod"; do crictl stopp "$p" >/dev/null; crictl rmp "$p"; done
step "what is left"
echo "pods:          $(crictl pods -q | wc -l)"
echo "pod netns:     $(find "$work/netns" -mindepth 1 | wc -l)"
echo "veths on node: $(ip -n "$node" -o link show type veth | wc -l)"
echo "reservations:  $(find "$work/ipam" -type f -name '10.*' | wc -l)"
echo "pod NAT rules: $(innode iptables-save -t nat | grep -c -e 'CNI-DN-' -e 'id: "' || true)"
helpers=0
for c in /proc/[0-9]*/cmdline; do
  p=${c#/proc/}; p=${p%/cmdline}
  [ "$p" = "$shim_pid" ] && continue
  tr '\0' '\n' <"$c" 2>/dev/null | grep -qxF "$work/state" && helpers=$((helpers + 1))
done
echo "pod processes: $helpers"
step "done; the node netns and $work go away now"
