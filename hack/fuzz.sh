#!/usr/bin/env bash
# Runs each fuzz target NAME:PKG given as arguments for FUZZTIME. A found
# input (written under testdata/fuzz) fails at once. Go 1.26's fuzz
# coordinator can also fail a clean run at the -fuzztime boundary with a
# bare "context deadline exceeded" and no input written (golang/go#75804,
# fixed in Go 1.27); such a run is repeated once, and fails if it recurs.
set -o nounset -o pipefail
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-10s}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "$@"; do
  name=${t%%:*}; pkg=${t#*:}
  for attempt in 1 2; do
    echo "fuzzing $name in $pkg for $FUZZTIME"
    if $GO test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$pkg" >"$log" 2>&1; then
      break
    fi
    if [ "$attempt" = 1 ] && ! grep -q 'Failing input written' "$log" && grep -q 'context deadline exceeded' "$log"; then
      echo "$name stopped at the -fuzztime boundary with no input found (golang/go#75804); repeating it once"
      continue
    fi
    cat "$log"
    exit 1
  done
done
