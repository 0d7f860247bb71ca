#!/usr/bin/env bash
# Fails when go.mod, go.sum or vendor/ are out of step with the imports.
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=hack/lib/steps.sh
source hack/lib/steps.sh
export GOFLAGS=-mod=mod
# Downloads what tidy needs (quietly: the chatter goes to the step log).
quietly go mod download
if ! go mod tidy -diff; then
  echo "go.mod/go.sum are not tidy: run 'go mod tidy && go mod vendor'" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go mod vendor -o "$tmp/vendor"
if ! diff -r vendor "$tmp/vendor" >/dev/null; then
  echo "vendor/ is stale: run 'go mod vendor'" >&2
  diff -r vendor "$tmp/vendor" | head -20 >&2
  exit 1
fi
