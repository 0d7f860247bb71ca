#!/usr/bin/env bash
# Builds the real etcd, kube-apiserver and kubectl that integration tests and
# the demo run, from the Go modules pinned in hack/tools/controlplane, into a
# cache outside the repository keyed by Kubernetes version. A second run
# finds the binaries and returns at once; a cold build takes around 10
# minutes on 2 cores.
#
# `hack/build-controlplane.sh node` builds, into the same directory, what a
# real node and a full control plane add: kubelet, kube-controller-manager,
# kube-scheduler and kube-proxy (the real-cluster test, make cluster-e2e).
#
# Prints the bin directory on stdout. PREPULL_CONTROLPLANE_BIN overrides it.
# Two runs at once (e.g. from two clones) take turns on a lock: the second
# finds what the first built.
set -o errexit -o nounset -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=hack/lib/steps.sh
source "$ROOT/hack/lib/steps.sh"
MOD="$ROOT/hack/tools/controlplane"
# Read from go.mod itself: `go list -m` would need the module graph first.
VERSION=$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$MOD/go.mod")
if [[ -z "$VERSION" ]]; then
  say "cannot read the k8s.io/kubernetes version from $MOD/go.mod"
  exit 1
fi
BIN=${PREPULL_CONTROLPLANE_BIN:-"${XDG_CACHE_HOME:-$HOME/.cache}/prepull/controlplane/$VERSION/bin"}
# The stamp ties the cached binaries to the exact pinned module set and to
# this script (its build flags).
STAMP=$(cat "$MOD/go.mod" "$MOD/go.sum" "$MOD/etcd/main.go" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)

case "${1:-}" in
"")
  SET=controlplane
  NAMES=(etcd kube-apiserver kubectl)
  PKGS=(./etcd k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl)
  WHAT="kube-apiserver, etcd and kubectl $VERSION once (about 10 minutes on 2 cores the first time"
  ;;
node)
  SET=node
  NAMES=(kubelet kube-controller-manager kube-scheduler kube-proxy)
  PKGS=(k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy)
  WHAT="kubelet, kube-controller-manager, kube-scheduler and kube-proxy $VERSION once (about 5 more minutes the first time"
  ;;
*)
  say "usage: $0 [node]"
  exit 2
  ;;
esac

cached() {
  [[ -f "$BIN/.stamp-$SET" && "$(cat "$BIN/.stamp-$SET")" == "$STAMP" ]] || return 1
  local n
  for n in "${NAMES[@]}"; do [[ -x "$BIN/$n" ]] || return 1; done
}

build() {
  cached && return 0
  say "building $WHAT; cached in $BIN afterwards)"
  local tmp start=$SECONDS n
  tmp=$(mktemp -d "$BIN/../build.XXXXXX")
  # shellcheck disable=SC2064 # expand now: tmp is local
  trap "rm -rf '$tmp'" EXIT
  # The tool module is not vendored; it resolves through the module proxy.
  # The version stamp makes `kubectl version` and the kubelet's node status
  # report the real release instead of v0.0.0-master.
  (cd "$MOD" && GOFLAGS="-mod=mod -buildvcs=false" quietly go build \
    -ldflags "-X k8s.io/component-base/version.gitVersion=$VERSION -X k8s.io/client-go/pkg/version.gitVersion=$VERSION" \
    -o "$tmp/" "${PKGS[@]}")
  # Each rename is atomic; the stamp goes last, so a reader never trusts a
  # half-filled directory.
  rm -f "$BIN/.stamp-$SET"
  for n in "${NAMES[@]}"; do mv "$tmp/$n" "$BIN/"; done
  echo "$STAMP" >"$BIN/.stamp-$SET"
  say "built in $((SECONDS - start))s"
}

if ! cached; then
  mkdir -p "$BIN"
  with_lock "$BIN/../.build.lock" build
fi
echo "$BIN"
