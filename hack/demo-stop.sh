#!/usr/bin/env bash
# Stops a demo started with `make demo` in another terminal.
set -o errexit -o nounset -o pipefail
pidfile="${XDG_CACHE_HOME:-$HOME/.cache}/prepull/demo/demo.pid"
if [[ ! -f "$pidfile" ]]; then
  echo "no demo is running (no $pidfile)"
  exit 0
fi
pid=$(cat "$pidfile")
if ! kill -0 "$pid" 2>/dev/null; then
  echo "no demo is running (stale pid $pid)"
  rm -f "$pidfile"
  exit 0
fi
kill -TERM "$pid"
for _ in $(seq 1 120); do
  kill -0 "$pid" 2>/dev/null || { echo "demo stopped"; exit 0; }
  sleep 0.5
done
echo "demo (pid $pid) did not stop within 60s" >&2
exit 1
