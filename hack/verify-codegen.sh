#!/usr/bin/env bash
# Regenerates into a scratch copy of the tree and fails when the committed
# v1alpha1 types, generated clients or CRDs differ from what the generators
# produce now.
set -o errexit -o nounset -o pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The copy keeps the module path, so generated import paths are the same.
tar -C "$ROOT" --exclude=./.git --exclude=./bin -cf - . | tar -C "$tmp" -xf -
# The generator binaries stay with this clone unless the caller says where.
PREPULL_TOOLS_BIN=${PREPULL_TOOLS_BIN:-"$ROOT/bin/tools/codegen"} "$tmp/hack/update-codegen.sh" >/dev/null
status=0
for dir in pkg/apis pkg/generated artifacts/crds; do
  if ! diff -Nru "$ROOT/$dir" "$tmp/$dir" >"$tmp/diff.txt"; then
    echo "$dir is stale: run 'make generate' and commit the result" >&2
    head -40 "$tmp/diff.txt" >&2
    status=1
  fi
done
exit $status
