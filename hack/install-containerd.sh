#!/usr/bin/env bash
# Installs Debian's containerd when it is missing. The daemon's integration
# tests start their own containerd (own root, state and socket) from it;
# nothing here starts or enables the system service.
#
# `hack/install-containerd.sh node` also installs what a real kubelet node
# needs (make cluster-e2e): runc, the CNI plugins and iptables;
# `hack/install-containerd.sh promtool` installs Prometheus' promtool (from
# Debian's prometheus package, whose server is never started) to check the
# alerting rules.
set -o errexit -o nounset -o pipefail
# shellcheck source=hack/lib/steps.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/steps.sh"

packages=(containerd)
check=(containerd)
case "${1:-}" in
node)
  packages+=(runc containernetworking-plugins iptables)
  check+=(runc /usr/lib/cni/bridge iptables)
  ;;
promtool)
  packages=(prometheus)
  check=(promtool)
  ;;
esac
missing=()
for i in "${!check[@]}"; do
  c=${check[$i]}
  if [[ "$c" == /* ]]; then [[ -x "$c" ]] && continue; else command -v "$c" >/dev/null 2>&1 && continue; fi
  missing+=("${packages[$i]}")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  say "${missing[*]} missing and installing needs root: run 'sudo apt-get install ${missing[*]}'"
  exit 1
fi
say "installing ${missing[*]} from Debian's packages (about a minute)"
export DEBIAN_FRONTEND=noninteractive
# Another install (e.g. a second clone's run) may hold dpkg's lock: wait for it.
quietly apt-get -o DPkg::Lock::Timeout=300 update
# No package may start its service (prometheus' server, containerd's):
# the tests run their own instances.
policy=/usr/sbin/policy-rc.d
if [[ ! -e "$policy" ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  trap 'rm -f "$policy" "$step_log"' EXIT
fi
# --no-install-recommends: only what is listed is needed.
quietly apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "${missing[@]}"
# Package scripts may try to start the system service; the tests run their
# own instance, so make sure none is left running on the default socket.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet containerd 2>/dev/null; then
  systemctl stop containerd || true
fi
