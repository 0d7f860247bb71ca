#!/usr/bin/env bash
# Builds containerd 2.x (containerd, containerd-shim-runc-v2, ctr) from the Go
# modules pinned in hack/tools/containerd into a cache outside the
# repository keyed by version, as hack/build-controlplane.sh does for
# Kubernetes. Debian ships containerd 1.6 only; clusters run 1.7 and 2.x,
# and only 2.x reports labels set outside CRI (pinning) to the kubelet. A
# cold build takes about 2 minutes on 2 cores; a second run returns at once.
#
# Prints the bin directory on stdout. PREPULL_CONTAINERD2_BIN overrides it.
set -o errexit -o nounset -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=hack/lib/steps.sh
source "$ROOT/hack/lib/steps.sh"
MOD="$ROOT/hack/tools/containerd"
VERSION=$(awk '$1 == "require" { $1 = ""; $0 = $0 } $1 == "github.com/containerd/containerd/v2" { print $2; exit }' "$MOD/go.mod")
if [[ -z "$VERSION" ]]; then
  say "cannot read the containerd version from $MOD/go.mod"
  exit 1
fi
BIN=${PREPULL_CONTAINERD2_BIN:-"${XDG_CACHE_HOME:-$HOME/.cache}/prepull/containerd/$VERSION/bin"}
STAMP=$(cat "$MOD/go.mod" "$MOD/go.sum" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)
NAMES=(containerd containerd-shim-runc-v2 ctr)

cached() {
  [[ -f "$BIN/.stamp" && "$(cat "$BIN/.stamp")" == "$STAMP" ]] || return 1
  local n
  for n in "${NAMES[@]}"; do [[ -x "$BIN/$n" ]] || return 1; done
}

build() {
  cached && return 0
  say "building containerd $VERSION once (about 2 minutes the first time; cached in $BIN afterwards)"
  local tmp start=$SECONDS n pkgs=()
  tmp=$(mktemp -d "$BIN/../build.XXXXXX")
  # shellcheck disable=SC2064 # expand now: tmp is local
  trap "rm -rf '$tmp'" EXIT
  for n in "${NAMES[@]}"; do pkgs+=("github.com/containerd/containerd/v2/cmd/$n"); done
  # The version stamp makes CRI's Version call report the release, which the
  # daemon logs and the tests check.
  (cd "$MOD" && unset CGO_ENABLED && GOFLAGS="-mod=mod -buildvcs=false" quietly go build \
    -ldflags "-X github.com/containerd/containerd/v2/version.Version=${VERSION#v}" \
    -o "$tmp/" "${pkgs[@]}")
  rm -f "$BIN/.stamp"
  for n in "${NAMES[@]}"; do mv "$tmp/$n" "$BIN/"; done
  echo "$STAMP" >"$BIN/.stamp"
  say "built in $((SECONDS - start))s"
}

if ! cached; then
  mkdir -p "$BIN"
  with_lock "$BIN/../.build.lock" build
fi
echo "$BIN"
