# shellcheck shell=bash
# Helpers the hack/ scripts share: one readable line per step on stderr, the
# go tool's and apt's chatter kept in a log file that is named (and its tail
# shown) only when the step fails.

# step_log is the file a script's quiet steps write to; one per run, so two
# runs at once (from two clones) never share it.
step_log=${step_log:-$(mktemp "${TMPDIR:-/tmp}/prepull-hack.XXXXXX.log")}
# Removed when the script ends; a failed step keeps a copy it names.
trap 'rm -f "$step_log"' EXIT

# say prints a progress line for a person.
say() { echo "$*" >&2; }

# quietly runs a command with its output in step_log; on failure it prints
# the last lines and where the whole log is, and returns the command's status.
quietly() {
  local rc=0
  # Run as a job and wait for it: called directly behind `||`, bash would
  # switch errexit off inside shell functions and hide their failures.
  "$@" >>"$step_log" 2>&1 &
  wait $! || rc=$?
  if ((rc != 0)); then
    local kept="${step_log%.log}.failed.log"
    cp "$step_log" "$kept"
    say "failed ($rc): $*"
    tail -n 40 "$kept" | sed 's/^/    /' >&2
    say "full log: $kept"
  fi
  return $rc
}

# with_lock runs a command while holding an exclusive lock on a file, so two
# runs filling the same cache wait for each other instead of racing.
with_lock() {
  local lock=$1
  shift
  mkdir -p "$(dirname "$lock")"
  (
    flock 9
    "$@"
  ) 9>"$lock"
}
