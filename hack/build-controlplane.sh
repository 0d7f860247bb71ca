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
# `hack/build-controlplane.sh all` builds both sets in one go.
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

CP_NAMES=(etcd kube-apiserver kubectl)
CP_PKGS=(./etcd k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl)
NODE_NAMES=(kubelet kube-controller-manager kube-scheduler kube-proxy)
NODE_PKGS=(k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy)
case "${1:-}" in
"") SETS=(controlplane) ;;
node) SETS=(node) ;;
# Both in one go build: the sets share most packages, and one build links
# its binaries side by side.
all) SETS=(controlplane node) ;;
*)
  say "usage: $0 [node|all]"
  exit 2
  ;;
esac

# cached SET: the set's binaries are there and were built from this exact
# module set and script.
cached() {
  local set=$1 n names
  [[ -f "$BIN/.stamp-$set" && "$(cat "$BIN/.stamp-$set")" == "$STAMP" ]] || return 1
  if [[ $set == node ]]; then names=("${NODE_NAMES[@]}"); else names=("${CP_NAMES[@]}"); fi
  for n in "${names[@]}"; do [[ -x "$BIN/$n" ]] || return 1; done
}

# missing lists the requested sets that are not cached.
missing() {
  local set
  for set in "${SETS[@]}"; do cached "$set" || echo "$set"; done
}

build() {
  local todo=() set names=() pkgs=() tmp start=$SECONDS n
  mapfile -t todo < <(missing)
  ((${#todo[@]})) || return 0
  for set in "${todo[@]}"; do
    if [[ $set == node ]]; then
      names+=("${NODE_NAMES[@]}") pkgs+=("${NODE_PKGS[@]}")
    else
      names+=("${CP_NAMES[@]}") pkgs+=("${CP_PKGS[@]}")
    fi
  done
  say "building ${names[*]} $VERSION once (the control plane takes about 10 minutes on 2 cores the first time, the node binaries about 5 more; cached in $BIN afterwards)"
  tmp=$(mktemp -d "$BIN/../build.XXXXXX")
  # shellcheck disable=SC2064 # expand now: tmp is local
  trap "rm -rf '$tmp'" EXIT
  # The tool module is not vendored; it resolves through the module proxy.
  # The version stamp makes `kubectl version` and the kubelet's node status
  # report the real release instead of v0.0.0-master. CGO_ENABLED is Go's
  # own default here, whatever the caller (make test) set for prepull.
  (cd "$MOD" && unset CGO_ENABLED && GOFLAGS="-mod=mod -buildvcs=false" quietly go build \
    -ldflags "-X k8s.io/component-base/version.gitVersion=$VERSION -X k8s.io/client-go/pkg/version.gitVersion=$VERSION" \
    -o "$tmp/" "${pkgs[@]}")
  # Each rename is atomic; a set's stamp goes last, so a reader never
  # trusts a half-filled directory.
  for set in "${todo[@]}"; do rm -f "$BIN/.stamp-$set"; done
  for n in "${names[@]}"; do mv "$tmp/$n" "$BIN/"; done
  for set in "${todo[@]}"; do echo "$STAMP" >"$BIN/.stamp-$set"; done
  say "built in $((SECONDS - start))s"
}

if [[ -n "$(missing)" ]]; then
  mkdir -p "$BIN"
  with_lock "$BIN/../.build.lock" build
fi
echo "$BIN"
