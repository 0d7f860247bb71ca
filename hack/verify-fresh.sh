#!/usr/bin/env bash
# Runs the code generators and the generated-code freshness check the way a
# new machine would: with a brand-new, empty Go module cache and no
# generator binaries. It keeps `make verify` honest about what it downloads:
# a script that only works because a module happens to be cached on the
# developer's machine fails here. The build cache stays warm, so what this
# costs is mostly the download of the generators' modules.
set -o errexit -o nounset -o pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
scratch=$(mktemp -d)
cleanup() {
  # Module caches are read-only unless -modcacherw; `go clean` copes either way.
  GOMODCACHE="$scratch/mod" GOFLAGS=-modcacherw go clean -modcache >/dev/null 2>&1 || true
  rm -rf "$scratch"
}
trap cleanup EXIT
start=$SECONDS
export GOMODCACHE="$scratch/mod" GOFLAGS=-modcacherw PREPULL_TOOLS_BIN="$scratch/bin"
if ! "$ROOT/hack/verify-codegen.sh"; then
  echo "code generation fails with an empty module cache: a script relies on something a fresh machine lacks" >&2
  exit 1
fi
echo "fresh-cache code generation check passed in $((SECONDS - start))s" >&2
