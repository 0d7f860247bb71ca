#!/usr/bin/env bash
# Builds the kubectl-prepull archives for krew (linux and darwin, amd64 and
# arm64) into bin/dist, with their checksums, and renders the krew manifest
# artifacts/krew/prepull.yaml for them into bin/dist/prepull.yaml.
# DIST_URL is where the archives will be published (default: the GitHub
# release of VERSION).
set -o errexit -o nounset -o pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
DIST_URL=${DIST_URL:-https://github.com/prepull/prepull/releases/download/$VERSION}
out=bin/dist
rm -rf "$out"
mkdir -p "$out"
# The template's own comments do not go into the rendered manifest.
manifest=$(grep -v '^#' artifacts/krew/prepull.yaml)
manifest=${manifest//@VERSION@/$VERSION}
for platform in linux/amd64 linux/arm64 darwin/amd64 darwin/arm64; do
  os=${platform%/*} arch=${platform#*/}
  stage=$(mktemp -d)
  CGO_ENABLED=0 GOOS=$os GOARCH=$arch GOFLAGS=-mod=vendor go build -trimpath -buildvcs=false \
    -ldflags "-s -w -X github.com/prepull/prepull/pkg/version.Version=$VERSION -X github.com/prepull/prepull/pkg/version.Revision=$REVISION" \
    -o "$stage/kubectl-prepull" ./cmd/kubectl-prepull
  cp LICENSE "$stage/"
  archive="kubectl-prepull_${VERSION}_${os}_${arch}.tar.gz"
  # Fixed order, owner and times: the same source gives the same archive.
  tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - kubectl-prepull LICENSE | gzip -n >"$out/$archive"
  rm -rf "$stage"
  sum=$(sha256sum "$out/$archive" | cut -d' ' -f1)
  echo "$sum  $archive" >>"$out/SHA256SUMS"
  manifest=${manifest//@URL_${os}_${arch}@/$DIST_URL/$archive}
  manifest=${manifest//@SHA256_${os}_${arch}@/$sum}
  echo "$out/$archive" >&2
done
echo "$manifest" >"$out/prepull.yaml"
echo "$out/prepull.yaml" >&2
