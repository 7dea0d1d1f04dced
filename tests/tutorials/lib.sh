# Shared by the tutorial scripts: run a step as a user would type it, show what it printed, check it.
# Sourced, not run. Needs BOOTSTRAP (host:port of the broker) and Kafka's scripts on PATH.
set -euo pipefail

: "${BOOTSTRAP:?set BOOTSTRAP to the broker address, e.g. BOOTSTRAP=127.0.0.1:9092}"
PYTHON="${PYTHON:-python3}"
TUTORIALS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/spool-tutorial.XXXXXX")"
OUT="$WORK/stdout"  # what the last `run` printed on stdout
ERR="$WORK/stderr"  # ... and on stderr
BG_PIDS=()
cleanup() {
  local pid
  for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
# Clients print as they go, as on a terminal, even with their output in a file.
export PYTHONUNBUFFERED=1

STEP=0
step() {
  STEP=$((STEP + 1))
  printf '\n=== %s, step %d: %s\n' "$(basename "$0" .sh)" "$STEP" "$*"
}

fail() {
  printf '\nMISMATCH in %s, step %d: %s\n' "$(basename "$0" .sh)" "$STEP" "$*" >&2
  exit 1
}

# run CMD ARGS...: echoes the command line, runs it (stdin passes through), keeps its stdout in $OUT
# and stderr in $ERR, prints both, and fails unless it exited 0. run_fails: a step that must fail.
run() { run_expecting success "$@"; }
run_fails() { run_expecting failure "$@"; }

run_expecting() {
  local want=$1 rc=0
  shift
  printf '$ %s\n' "$*"
  "$@" >"$OUT" 2>"$ERR" || rc=$?
  sed 's/^/  | /' "$OUT"
  sed 's/^/  ! /' "$ERR"
  if [ "$want" = success ]; then
    [ "$rc" -eq 0 ] || fail "\`$1\` exited $rc"
  else
    [ "$rc" -ne 0 ] || fail "\`$1\` exited 0, expected an error"
  fi
}

# The Kafka tools log WARN and up to stderr: a clean step logs nothing of the sort.
no_tool_problems() {
  if grep -Eq '^\[[^]]+\] (WARN|ERROR|FATAL) |[A-Za-z]+Exception\b' "$ERR"; then
    fail "the tool logged problems on stderr: $(grep -E '(WARN|ERROR|FATAL|Exception)' "$ERR" | head -3)"
  fi
}

# expect_line TEXT [FILE]: FILE (default: the last stdout) has a line exactly TEXT.
expect_line() {
  grep -qxF -- "$1" "${2:-$OUT}" || fail "expected a line '$1' in the output, got: $(head -c 1500 "${2:-$OUT}")"
}

# expect_match REGEX [FILE]: some line of FILE matches the extended REGEX.
expect_match() {
  grep -Eq -- "$1" "${2:-$OUT}" || fail "expected a line matching /$1/ in the output, got: $(head -c 1500 "${2:-$OUT}")"
}

# expect_no_match REGEX [FILE]
expect_no_match() {
  if grep -Eq -- "$1" "${2:-$OUT}"; then
    fail "expected no line matching /$1/, got: $(grep -E -- "$1" "${2:-$OUT}" | head -5)"
  fi
}

# expect_lines N [FILE]: FILE has exactly N lines.
expect_lines() {
  local n
  n=$(wc -l <"${2:-$OUT}")
  [ "$n" -eq "$1" ] || fail "expected $1 lines of output, got $n: $(head -c 1500 "${2:-$OUT}")"
}

# expect_same_lines EXPECTED_FILE ACTUAL_FILE WHAT: the same lines, in any order.
expect_same_lines() {
  if ! diff <(sort "$1") <(sort "$2") >"$WORK/diff"; then
    fail "$3: expected (<) and got (>) differ: $(cat "$WORK/diff")"
  fi
}

# eventually SECONDS WHAT CMD...: retries CMD (quietly) once a second until it succeeds. CMD may
# leave what it saw in $OUT / $ERR for the mismatch message.
eventually() {
  local secs=$1 what=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || fail "not within ${secs}s: $what; last output: $(cat "$OUT" "$ERR" 2>/dev/null | head -c 2000)"
    sleep 1
  done
}

# The rows of a kafka-consumer-groups table in $OUT, as "COLUMN=value ..." lines.
group_rows() {
  awk '$1 == "GROUP" { n = NF; for (i = 1; i <= NF; i++) h[i] = $i; next }
       NF == 0 { n = 0; next }
       n && NF == n { line = ""; for (i = 1; i <= NF; i++) line = line (i > 1 ? " " : "") h[i] "=" $i; print line }' "${1:-$OUT}"
}

# start NAME CMD...: starts CMD in the background, like `CMD &` in another terminal, with stdout in
# $WORK/NAME.out and stderr in $WORK/NAME.err; its pid is in $BG_PID. It runs in its own process
# group, so `stop_with INT` is a Ctrl-C to it alone.
start() {
  local name=$1
  shift
  printf '$ %s &    # (%s)\n' "$*" "$name"
  : >"$WORK/$name.out"
  : >"$WORK/$name.err"
  set -m
  "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  BG_PID=$!
  set +m
  BG_PIDS+=("$BG_PID")
}

# finish NAME PID: waits for a background command, prints its output, fails unless it exited 0.
finish() {
  local rc=0
  wait "$2" || rc=$?
  echo "--- output of $1:"
  sed 's/^/  | /' "$WORK/$1.out"
  sed 's/^/  ! /' "$WORK/$1.err"
  [ "$rc" -eq 0 ] || fail "$1 exited $rc"
}

# stop_with SIGNAL NAME PID: sends SIGNAL (INT = Ctrl-C, TERM) and waits as finish does.
stop_with() {
  echo "(${1} to $2)"
  kill -"$1" "$3" 2>/dev/null || true
  finish "$2" "$3"
}
