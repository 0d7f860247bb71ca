#!/usr/bin/env bash
# Fails when any Go file outside vendor/ is not gofmt'ed.
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bad=$(git ls-files --cached --others --exclude-standard '*.go' | grep -v '^vendor/' | xargs -r gofmt -l)
if [[ -n "$bad" ]]; then
  echo "gofmt would change these files; run gofmt -w on them:" >&2
  echo "$bad" >&2
  exit 1
fi
