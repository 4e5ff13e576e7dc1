#!/usr/bin/env bash
# make e2e-k8s: the suite under a real control plane and kubelet on this machine, inside throwaway
# namespaces (test/k8s). Installs the Debian packages it needs, builds (once, cached) etcd and the
# Kubernetes components of the pinned release, builds the harness, and runs it. Arguments are
# passed to the harness (e.g. -runtimes containerd -plugins ref -keep).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/k8s-deps.sh
k8s_bin=$(scripts/k8s-build.sh)
mkdir -p bin
CGO_ENABLED=0 go build -trimpath -o bin/e2e-k8s ./test/k8s
runtimes=containerd
if [ -x bin/crishim ]; then runtimes+=,crishim; fi
exec bin/e2e-k8s -k8s-bin "$k8s_bin" -repo "$PWD" -runtimes "${E2E_K8S_RUNTIMES:-$runtimes}" "$@"
