#!/usr/bin/env bash
# Installs, when missing, the Debian packages make e2e-k8s needs besides scripts/deps.sh's:
# containerd and runc (the first CRI runtime), busybox-static (the userland of the test images and of
# the CRI shim's host-process pods). No image builder: the test images and make image's are OCI
# archives written in Go.
# Only the packages are installed: no service is enabled or started (the e2e starts its own
# containerd inside a throwaway node namespace with a private config and state directory).
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have containerd || need+=(containerd)
have runc || need+=(runc)
[ -x /bin/busybox ] || need+=(busybox-static)
have nsenter || need+=(util-linux)
have unshare || need+=(util-linux)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "k8s-deps.sh: missing ${need[*]}; run as root to install them" >&2
  exit 1
fi
echo "k8s-deps.sh: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d 101: no service of these packages is started by the install (containerd's unit would
# otherwise start a machine-wide containerd in the root namespaces).
prc=/usr/sbin/policy-rc.d
own_prc=0
if [ ! -e "$prc" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$prc" && chmod 0755 "$prc" && own_prc=1
fi
trap '[ "$own_prc" = 1 ] && rm -f "$prc"' EXIT
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
