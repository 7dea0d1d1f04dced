#!/usr/bin/env bash
# Runs librdkafka 2.12.1's own test suite (built by build.sh) against a real `spool` broker.
#
#   tests/librdkafka/run.sh                 run every test listed in allowlist.txt
#   tests/librdkafka/run.sh 0001 0031       run just these test numbers
#   tests/librdkafka/run.sh --sweep 0000-0150   run every non-local test in the range, report only
#
# One broker is started on a free loopback port with a fresh data directory; each test runs in
# its own test-runner process under a wall-clock limit, one after another. Exit status is non-zero
# if any selected test fails (in --sweep mode it is always 0: the summary is the product).
#
# Environment:
#   SPOOL_BIN            broker binary                    (default: <repo>/target/release/spool)
#   LIBRDKAFKA_DIR       tree built by build.sh           (default: <repo>/target/librdkafka)
#   RUN_DIR              logs, test.conf, data dir        (default: a new dir under <repo>/target/librdkafka-runs)
#   TEST_KAFKA_VERSION   version the tests assume         (default: 4.0.0, see README.md)
#   TEST_TIMEOUT_MULTIPLIER  test.timeout.multiplier      (default: 2)
#   PER_TEST_TIMEOUT     wall-clock seconds per test      (default: 120)
#   TEST_QUICK           1 = pass -Q (quick mode: fewer messages, and SUB_TEST() sub-tests are skipped) (default: 0)
#   SPOOL_RUST_LOG       broker RUST_LOG                  (default: info,spool_core::broker=trace: one line per request)
#   SPOOL_EXTRA_ARGS     extra `spool serve` arguments    (default: none)
#   TEST_DEBUG           librdkafka debug contexts for the clients (passed through)
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
SPOOL_BIN="${SPOOL_BIN:-$REPO_ROOT/target/release/spool}"
LIBRDKAFKA_DIR="${LIBRDKAFKA_DIR:-$REPO_ROOT/target/librdkafka}"
TEST_KAFKA_VERSION="${TEST_KAFKA_VERSION:-4.0.0}"
TEST_TIMEOUT_MULTIPLIER="${TEST_TIMEOUT_MULTIPLIER:-2}"
PER_TEST_TIMEOUT="${PER_TEST_TIMEOUT:-120}"
TEST_QUICK="${TEST_QUICK:-0}"
SPOOL_RUST_LOG="${SPOOL_RUST_LOG:-info,spool_core::broker=trace}"
SPOOL_EXTRA_ARGS="${SPOOL_EXTRA_ARGS:-}"

log() { echo "run.sh: $*" >&2; }

# --- which tests --------------------------------------------------------------------------
sweep=0
tests=()
if [ "${1:-}" = "--sweep" ]; then
  sweep=1
  range="${2:-0000-0999}"
  # Every test number in the range that has a variant needing a live broker.
  mapfile -t tests < <(python3 "$HERE/list-tests.py" "$LIBRDKAFKA_DIR/tests/test.c" "$range")
elif [ $# -gt 0 ]; then
  tests=("$@")
else
  mapfile -t tests < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$HERE/allowlist.txt" | grep -E '^[0-9]{4}$')
fi
[ ${#tests[@]} -gt 0 ] || { log "no tests selected"; exit 1; }

for f in "$SPOOL_BIN" "$LIBRDKAFKA_DIR/tests/test-runner"; do
  [ -x "$f" ] || { log "missing $f (build the broker, and run tests/librdkafka/build.sh)"; exit 1; }
done

# --- working directory, broker ------------------------------------------------------------
mkdir -p "$REPO_ROOT/target/librdkafka-runs"
RUN_DIR="${RUN_DIR:-$(mktemp -d "$REPO_ROOT/target/librdkafka-runs/run.XXXXXX")}"
mkdir -p "$RUN_DIR/logs"
# A private copy, so a rebuild of target/release/spool during the run cannot change the broker.
cp "$SPOOL_BIN" "$RUN_DIR/spool"

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
BROKER="127.0.0.1:$PORT"
BROKER_LOG="$RUN_DIR/broker.log"
broker_pid=""

stop_broker() {
  if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
    kill -TERM "$broker_pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$broker_pid" 2>/dev/null && kill -KILL "$broker_pid" 2>/dev/null
    wait "$broker_pid" 2>/dev/null
  fi
  broker_pid=""
}
trap stop_broker EXIT
trap 'stop_broker; exit 130' INT TERM

start_broker() {
  rm -rf "$RUN_DIR/data"
  # shellcheck disable=SC2086
  NO_COLOR=1 RUST_LOG="$SPOOL_RUST_LOG" "$RUN_DIR/spool" serve --listen "$BROKER" --advertised "$BROKER" \
    --data-dir "$RUN_DIR/data" --num-partitions 4 $SPOOL_EXTRA_ARGS >>"$BROKER_LOG" 2>&1 &
  broker_pid=$!
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
    kill -0 "$broker_pid" 2>/dev/null || break
    sleep 0.1
  done
  log "broker did not start; log:"; tail -n 50 "$BROKER_LOG" >&2
  exit 1
}

log "broker $BROKER (log $BROKER_LOG), tests: ${tests[*]}"
start_broker

cat > "$RUN_DIR/test.conf" <<CONF
bootstrap.servers=$BROKER
test.timeout.multiplier=$TEST_TIMEOUT_MULTIPLIER
test.topic.random=true
CONF

# --- run ----------------------------------------------------------------------------------
runner_flags=(-L -E -K)            # no local/mock tests, no sockem tests, no known-issue tests
[ "$TEST_QUICK" = "1" ] && runner_flags+=(-Q)

passed=(); failed=(); skipped=()
start_all=$(date +%s)
for t in "${tests[@]}"; do
  out="$RUN_DIR/logs/$t.log"
  t0=$(date +%s)
  echo "=== librdkafka test $t: start $(date -u +%H:%M:%S) ===" >>"$BROKER_LOG"
  { ( cd "$LIBRDKAFKA_DIR/tests" && \
    LD_LIBRARY_PATH="../src:../src-cpp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    RDKAFKA_TEST_CONF="$RUN_DIR/test.conf" TESTS="$t" TEST_KAFKA_VERSION="$TEST_KAFKA_VERSION" \
    RDKAFKA_GITVER="2.12.1" \
    timeout -k 10 "$PER_TEST_TIMEOUT" ./test-runner "${runner_flags[@]}" ) >"$out" 2>&1; } 2>/dev/null
  rc=$?
  dt=$(( $(date +%s) - t0 ))
  # Summary rows of this test number's variants ("| 0045_subscribe_update  |  PASSED | ..."):
  # test-runner exits 0 also when a test skipped itself, and <MAIN> always says PASSED.
  states="$(sed 's/\x1b\[[0-9;]*m//g' "$out" | grep -E "^\| ${t}_[A-Za-z0-9_]+ +\|" | awk -F'|' '{gsub(/ /,"",$3); print $3}' | sort -u | tr '\n' ' ')"
  if [ $rc -eq 0 ] && [[ "$states" == *PASSED* ]] && [[ "$states" != *FAILED* ]]; then
    passed+=("$t"); verdict=PASSED
    [[ "$states" == *SKIPPED* ]] && verdict="PASSED (some variants skipped)"
  elif [ $rc -eq 0 ] && [[ "$states" != *FAILED* ]]; then
    skipped+=("$t")
    verdict="SKIPPED: $(sed 's/\x1b\[[0-9;]*m//g' "$out" | grep -E "^\| ${t}_" | grep SKIPPED | head -n1 | awk -F'|' '{print $5}' | tr -s ' ')"
  else
    failed+=("$t")
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then verdict="FAILED (killed after ${PER_TEST_TIMEOUT}s)"
    else verdict="FAILED (exit $rc)"; fi
  fi
  echo "=== librdkafka test $t: $verdict ===" >>"$BROKER_LOG"
  printf 'run.sh: %-5s %-60s %4ss\n' "$t" "$verdict" "$dt" >&2
  if ! kill -0 "$broker_pid" 2>/dev/null; then
    log "broker died during test $t; restarting it"; tail -n 30 "$BROKER_LOG" >&2
    start_broker
  fi
done
stop_broker

total=$(( $(date +%s) - start_all ))
echo
echo "librdkafka $([ $sweep = 1 ] && echo sweep || echo allowlist) against spool, TEST_KAFKA_VERSION=$TEST_KAFKA_VERSION, ${total}s, logs in $RUN_DIR"
echo "passed:  ${passed[*]:-}"
echo "failed:  ${failed[*]:-}"
echo "skipped: ${skipped[*]:-}"
for t in "${failed[@]}"; do
  echo "--- $t: failure lines (full output $RUN_DIR/logs/$t.log)"
  grep -E 'TEST FAILURE|Test assertion failed|FAIL:|failed:|### Test' -A3 "$RUN_DIR/logs/$t.log" | head -n 25
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "--- tail of broker log ($BROKER_LOG)"
  tail -n 60 "$BROKER_LOG"
fi
echo "${#passed[@]} passed, ${#failed[@]} failed, ${#skipped[@]} skipped"
if [ $sweep = 1 ]; then exit 0; fi
[ ${#failed[@]} -eq 0 ]
