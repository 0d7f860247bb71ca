#!/usr/bin/env bash
# Installs Debian's containerd when it is missing. The daemon's integration
# tests start their own containerd (own root, state and socket) from it;
# nothing here starts or enables the system service.
set -o errexit -o nounset -o pipefail
if command -v containerd >/dev/null 2>&1; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "containerd is missing and installing it needs root: run 'sudo apt-get install containerd'" >&2
  exit 1
fi
echo "installing containerd from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# --no-install-recommends: runc and the CNI plugins are not needed to pull.
apt-get install -y -qq --no-install-recommends containerd >/dev/null
# Package scripts may try to start the system service; the tests run their
# own instance, so make sure none is left running on the default socket.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet containerd 2>/dev/null; then
  systemctl stop containerd || true
fi
containerd --version >&2
