#!/usr/bin/env bash
# Builds the real etcd, kube-apiserver and kubectl that integration tests and
# the demo run, from the Go modules pinned in hack/tools/controlplane, into a
# cache outside the repository keyed by Kubernetes version. A second run
# finds the binaries and returns in about a second; a cold build of
# kube-apiserver takes around 8 minutes on 2 cores.
#
# Prints the bin directory on stdout. PREPULL_CONTROLPLANE_BIN overrides it.
set -o errexit -o nounset -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MOD="$ROOT/hack/tools/controlplane"
VERSION=$(cd "$MOD" && GOFLAGS=-mod=mod go list -m -f "{{.Version}}" k8s.io/kubernetes)
if [[ -z "$VERSION" ]]; then
  echo "cannot read the k8s.io/kubernetes version from $MOD/go.mod" >&2
  exit 1
fi
BIN=${PREPULL_CONTROLPLANE_BIN:-"${XDG_CACHE_HOME:-$HOME/.cache}/prepull/controlplane/$VERSION/bin"}
# The stamp ties the cached binaries to the exact pinned module set.
STAMP=$(cat "$MOD/go.mod" "$MOD/go.sum" "$MOD/etcd/main.go" | sha256sum | cut -c1-16)

if [[ -f "$BIN/.stamp" && "$(cat "$BIN/.stamp")" == "$STAMP" ]] &&
   [[ -x "$BIN/etcd" && -x "$BIN/kube-apiserver" && -x "$BIN/kubectl" ]]; then
  echo "$BIN"
  exit 0
fi

echo "building etcd, kube-apiserver and kubectl $VERSION into $BIN (cold: ~8 min)" >&2
mkdir -p "$BIN"
tmp=$(mktemp -d "$BIN/../build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
(
  cd "$MOD"
  # The tool module is not vendored; it resolves through the module proxy.
  GOFLAGS="-mod=mod -buildvcs=false" go build -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl ./etcd
)
mv "$tmp"/etcd "$tmp"/kube-apiserver "$tmp"/kubectl "$BIN/"
echo "$STAMP" > "$BIN/.stamp"
echo "built in $((SECONDS - start))s" >&2
echo "$BIN"
