#!/usr/bin/env bash
# Builds, from the Go module proxy, the Kubernetes components make e2e-k8s runs: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kubectl (one pinned release) and crictl, into
# $K8S_CACHE/bin. Rebuilt only when a binary is missing or the pinned version changes (a stamp file
# records what was built). A cold build takes about 10 minutes on 2 cores, so progress is printed
# (on stderr); the last line on stdout is the bin directory.
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces every k8s.io/* staging module with
# ./staging/src/..., so a scratch module requires it and replaces each staging module with its
# published v0.<minor>.<patch> twin instead.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
CRICTL_VERSION=${CRICTL_VERSION:-v1.34.0}
K8S_CACHE=${K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cni-suite/k8s-$K8S_VERSION}
GO=${GO:-go}
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

bin=$K8S_CACHE/bin
stamp=$K8S_CACHE/stamp
want="k8s=$K8S_VERSION etcd=$ETCD_VERSION crictl=$CRICTL_VERSION go=$($GO env GOVERSION)"
k8s_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

log() { printf 'k8s-build: %s\n' "$*" >&2; }
# reports BIN VERSION: whether the binary says it is VERSION (kubectl has no --version flag).
reports() {
  local out
  case "$(basename "$1")" in
    kubectl) out=$("$1" version --client 2>/dev/null) ;;
    *) out=$("$1" --version 2>/dev/null) ;;
  esac || return 1
  [[ "$out" == *"$2"* ]]
}

complete() {
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] || return 1
  local b
  for b in "${k8s_cmds[@]}" etcd crictl; do [ -x "$bin/$b" ] || return 1; done
}

if complete; then
  log "up to date in $bin ($want)"
  echo "$bin"
  exit 0
fi
mkdir -p "$bin"
rm -f "$stamp"
start=$SECONDS

# heartbeat NAME PID: prints elapsed time and the count of compiled packages every 30 s.
heartbeat() {
  local name=$1 pid=$2 count=$3 t=0
  while kill -0 "$pid" 2>/dev/null; do
    sleep 5; t=$((t + 5))
    if [ $((t % 30)) -eq 0 ]; then
      log "$name: ${t}s, $(wc -l <"$count" 2>/dev/null || echo 0) packages compiled so far"
    fi
  done
}

# gobuild NAME DIR ARGS...: go build -v in DIR with a progress heartbeat; the log is kept on failure.
gobuild() {
  local name=$1 dir=$2; shift 2
  local out=$K8S_CACHE/build-$name.log
  log "$name: building (log: $out)"
  local t0=$SECONDS
  (cd "$dir" && exec $GO "${GOCMD:-build}" -v "$@") >"$out" 2>&1 &
  local pid=$!
  heartbeat "$name" "$pid" "$out" &
  local hb=$!
  local rc=0
  wait "$pid" || rc=$?
  kill "$hb" 2>/dev/null; wait "$hb" 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then
    log "$name: FAILED after $((SECONDS - t0))s; last lines of $out:"
    tail -n 30 "$out" >&2
    exit 1
  fi
  log "$name: done in $((SECONDS - t0))s"
}

# --- Kubernetes ---------------------------------------------------------------------------------
src=$K8S_CACHE/src/kubernetes
mkdir -p "$src"
staging_version=v0.${K8S_VERSION#v1.}
need_k8s=0
for b in "${k8s_cmds[@]}"; do
  if [ ! -x "$bin/$b" ] || ! reports "$bin/$b" "$K8S_VERSION"; then need_k8s=1; fi
done
if [ "$need_k8s" = 1 ]; then
  log "kubernetes $K8S_VERSION: resolving modules (staging modules as $staging_version)"
  gomod=$(cd "$src" && $GO mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
  [ -f "$gomod" ] || { log "cannot download k8s.io/kubernetes@$K8S_VERSION"; exit 1; }
  # The staging modules: every "k8s.io/x => ./staging/src/k8s.io/x" of kubernetes' go.mod. The sample
  # ones are not published with release tags and are not needed by the commands built here.
  mapfile -t staging < <(sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/.*#\1#p' "$gomod" |
    grep -v -e '^k8s.io/sample-cli-plugin$' -e '^k8s.io/sample-controller$' | sort -u)
  [ "${#staging[@]}" -gt 0 ] || { log "no staging replaces found in $gomod"; exit 1; }
  goline=$(sed -n 's/^go \(.*\)/\1/p' "$gomod" | head -1)
  {
    echo "module cni-suite.local/k8s-build"
    echo
    echo "go $goline"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    for m in "${staging[@]}"; do echo "	$m => $m $staging_version"; done
    echo ")"
  } >"$src/go.mod"
  cat >"$src/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
EOF
  rm -f "$src/go.sum"
  log "kubernetes: go mod tidy (${#staging[@]} staging modules replaced)"
  (cd "$src" && $GO mod tidy -e >"$K8S_CACHE/tidy.log" 2>&1) || { tail -n 30 "$K8S_CACHE/tidy.log" >&2; exit 1; }
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitCommit=module-proxy -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
  gobuild kubernetes "$src" -trimpath -ldflags "$ld" -o "$bin/" \
    $(printf 'k8s.io/kubernetes/cmd/%s ' "${k8s_cmds[@]}")
  for b in "${k8s_cmds[@]}"; do
    reports "$bin/$b" "$K8S_VERSION" || { log "$b does not report $K8S_VERSION"; exit 1; }
  done
else
  log "kubernetes $K8S_VERSION: binaries present"
fi

# --- etcd -----------------------------------------------------------------------------------------
if [ ! -x "$bin/etcd" ] || ! reports "$bin/etcd" "${ETCD_VERSION#v}"; then
  esrc=$K8S_CACHE/src/etcd
  mkdir -p "$esrc"
  printf 'module cni-suite.local/etcd-build\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >"$esrc/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >"$esrc/tools.go"
  rm -f "$esrc/go.sum"
  log "etcd $ETCD_VERSION: go mod tidy"
  (cd "$esrc" && $GO mod tidy -e >"$K8S_CACHE/tidy-etcd.log" 2>&1) || { tail -n 30 "$K8S_CACHE/tidy-etcd.log" >&2; exit 1; }
  gobuild etcd "$esrc" -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3
else
  log "etcd $ETCD_VERSION: present"
fi

# --- crictl ---------------------------------------------------------------------------------------
if [ ! -x "$bin/crictl" ] || ! reports "$bin/crictl" "$CRICTL_VERSION"; then
  csrc=$K8S_CACHE/src/crictl
  mkdir -p "$csrc"
  GOBIN=$bin GOCMD=install gobuild crictl "$csrc" -trimpath -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
    "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
fi

echo "$want" >"$stamp"
log "all built in $((SECONDS - start))s into $bin"
echo "$bin"
