#!/usr/bin/env bash
# Runs librdkafka 2.12.1's own test suite (built by build.sh) against a real `spool` broker.
#
#   tests/librdkafka/run.sh                     every test listed in allowlist.txt
#   tests/librdkafka/run.sh 0001 0031           just these test numbers
#   tests/librdkafka/run.sh --sweep [LO-HI]     every test in the range that needs a broker;
#                                               reports only (exit 0 whatever the results)
#
# One broker is started on a free loopback port with a fresh data directory. Each test number
# runs in its own test-runner process (TESTS=<number>, so all its variants run) under a
# wall-clock limit, PARALLEL of them at a time against that broker. Exit status is non-zero if
# any selected test fails. Last line: "N passed, N failed, N skipped".
#
# Environment:
#   SPOOL_BIN                broker binary             (default: <repo>/target/release/spool)
#   LIBRDKAFKA_DIR           tree built by build.sh    (default: <repo>/target/librdkafka)
#   RUN_DIR                  logs, test.conf, data     (default: new dir under <repo>/target/librdkafka-runs)
#   TEST_KAFKA_VERSION       version the tests assume  (default: 4.0.0, see README.md)
#   TEST_TIMEOUT_MULTIPLIER  test.timeout.multiplier   (default: 2)
#   PER_TEST_TIMEOUT         wall-clock s per test     (default: 180)
#   PARALLEL                 tests at a time           (default: 3)
#   TEST_QUICK               1 = pass -Q (quick mode: less data, and SUB_TEST() sub-tests are skipped) (default: 0)
#   SPOOL_RUST_LOG           broker RUST_LOG           (default: info,spool_core::broker=trace = one line per request)
#   SPOOL_EXTRA_ARGS         extra `spool serve` args  (default: none)
#   TEST_DEBUG               librdkafka debug contexts for every client (passed through)
#
#   KAFKA_PATH               dir with bin/kafka-topics.sh (default: <repo>/tests/kafka-tools,
#                            Apache Kafka's own tool on the jars from tests/kafka-tools/install.sh)
#
# Some tests call "$KAFKA_PATH/bin/kafka-topics.sh --bootstrap-server $BROKERS ..." (0045 adds
# partitions and deletes topics, 0052 and 0077 create topics with --config). Kafka's other tools
# that tests call (kafka-acls.sh; the Java client built from librdkafka's tests/java for 0113's
# interop sub-test) are not provided.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
SPOOL_BIN="${SPOOL_BIN:-$REPO_ROOT/target/release/spool}"
LIBRDKAFKA_DIR="${LIBRDKAFKA_DIR:-$REPO_ROOT/target/librdkafka}"
TEST_KAFKA_VERSION="${TEST_KAFKA_VERSION:-4.0.0}"
TEST_TIMEOUT_MULTIPLIER="${TEST_TIMEOUT_MULTIPLIER:-2}"
PER_TEST_TIMEOUT="${PER_TEST_TIMEOUT:-180}"
PARALLEL="${PARALLEL:-3}"
TEST_QUICK="${TEST_QUICK:-0}"
SPOOL_RUST_LOG="${SPOOL_RUST_LOG:-info,spool_core::broker=trace}"
SPOOL_EXTRA_ARGS="${SPOOL_EXTRA_ARGS:-}"
KAFKA_PATH="${KAFKA_PATH:-$REPO_ROOT/tests/kafka-tools}"

log() { echo "run.sh: $*" >&2; }

# --- which tests ----------------------------------------------------------------------------
sweep=0
tests=()
if [ "${1:-}" = "--sweep" ]; then
  sweep=1
  mapfile -t tests < <(python3 "$HERE/list-tests.py" "$LIBRDKAFKA_DIR/tests/test.c" "${2:-0000-0999}")
elif [ $# -gt 0 ]; then
  tests=("$@")
else
  mapfile -t tests < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$HERE/allowlist.txt" | grep -E '^[0-9]{4}$')
fi
[ ${#tests[@]} -gt 0 ] || { log "no tests selected"; exit 1; }

for f in "$SPOOL_BIN" "$LIBRDKAFKA_DIR/tests/test-runner"; do
  [ -x "$f" ] || { log "missing $f (build the broker, and run tests/librdkafka/build.sh)"; exit 1; }
done
# kafka-topics.sh must run, not only exist: the wrapper exits 127 when its jars are missing.
"$KAFKA_PATH/bin/kafka-topics.sh" --version >/dev/null 2>&1 \
  || { log "$KAFKA_PATH/bin/kafka-topics.sh does not run (run tests/librdkafka/build.sh, which installs it)"; exit 1; }

# --- working directory, broker ----------------------------------------------------------------
mkdir -p "$REPO_ROOT/target/librdkafka-runs"
RUN_DIR="${RUN_DIR:-$(mktemp -d "$REPO_ROOT/target/librdkafka-runs/run.XXXXXX")}"
mkdir -p "$RUN_DIR/logs" "$RUN_DIR/results"
rm -f "$RUN_DIR"/results/*
# A private copy, so that a rebuild of target/release/spool during the run cannot swap the broker.
# Its name does not contain "spool", so that a `pkill -f spool` elsewhere on the machine (another
# test suite cleaning up after itself) cannot stop it in the middle of this run.
BROKER_EXE="$RUN_DIR/broker-under-test"
cp "$SPOOL_BIN" "$BROKER_EXE"

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
BROKER="127.0.0.1:$PORT"
BROKER_LOG="$RUN_DIR/broker.log"
broker_pid=""
declare -A job_pid=()   # test number -> pid of its background job

stop_broker() {
  if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
    kill -TERM "$broker_pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$broker_pid" 2>/dev/null && kill -KILL "$broker_pid" 2>/dev/null
    wait "$broker_pid" 2>/dev/null
  fi
  broker_pid=""
}
cleanup() {
  local p
  for p in "${job_pid[@]}"; do
    # each job's test-runner runs under `timeout`, in a process group of its own: end that group
    pkill -TERM -P "$p" 2>/dev/null
    kill -TERM "$p" 2>/dev/null
  done
  stop_broker
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

start_broker() {
  rm -rf "$RUN_DIR/data"
  # shellcheck disable=SC2086
  NO_COLOR=1 RUST_LOG="$SPOOL_RUST_LOG" "$BROKER_EXE" serve --listen "$BROKER" --advertised "$BROKER" \
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

log "broker $BROKER, run dir $RUN_DIR, $PARALLEL at a time, tests: ${tests[*]}"
start_broker

cat > "$RUN_DIR/test.conf" <<CONF
bootstrap.servers=$BROKER
test.timeout.multiplier=$TEST_TIMEOUT_MULTIPLIER
test.topic.random=true
CONF

runner_flags=(-L -E -K)            # no local/mock tests, no sockem tests, no known-issue tests
[ "$TEST_QUICK" = "1" ] && runner_flags+=(-Q)

# Runs one test number; writes "<verdict>\t<seconds>" to results/<t>.
run_one() {
  local t="$1" out="$RUN_DIR/logs/$1.log" t0 rc dt states verdict
  t0=$(date +%s)
  echo "=== librdkafka test $t: start $(date -u +%H:%M:%S) ===" >>"$BROKER_LOG"
  { ( cd "$LIBRDKAFKA_DIR/tests" &&
    exec env LD_LIBRARY_PATH="../src:../src-cpp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
      RDKAFKA_TEST_CONF="$RUN_DIR/test.conf" TESTS="$t" TEST_KAFKA_VERSION="$TEST_KAFKA_VERSION" \
      RDKAFKA_GITVER="2.12.1" KAFKA_PATH="$KAFKA_PATH" BROKERS="$BROKER" \
      timeout -k 10 "$PER_TEST_TIMEOUT" ./test-runner "${runner_flags[@]}" ) >"$out" 2>&1; } 2>/dev/null
  rc=$?
  dt=$(( $(date +%s) - t0 ))
  # Summary rows of this number's variants ("| 0045_subscribe_update  |  PASSED | ..."):
  # test-runner exits 0 also when a test skipped itself, and <MAIN> always says PASSED.
  states="$(sed 's/\x1b\[[0-9;]*m//g' "$out" | grep -E "^\| ${t}_[A-Za-z0-9_]+ +\|" | awk -F'|' '{gsub(/ /,"",$3); print $3}' | sort -u | tr '\n' ' ')"
  if [ $rc -eq 0 ] && [[ "$states" == *PASSED* ]] && [[ "$states" != *FAILED* ]]; then
    verdict=PASSED
    [[ "$states" == *SKIPPED* ]] && verdict="PASSED (some variants skipped)"
  elif [ $rc -eq 0 ] && [[ "$states" != *FAILED* ]]; then
    verdict="SKIPPED:$(sed 's/\x1b\[[0-9;]*m//g' "$out" | grep -E "^\| ${t}_" | grep SKIPPED | head -n1 | awk -F'|' '{print $5}' | tr -s ' ')"
  elif [ $rc -eq 124 ]; then
    verdict="FAILED (wall-clock limit ${PER_TEST_TIMEOUT}s)"
  elif [ $rc -eq 137 ]; then
    verdict="FAILED (SIGKILL: the test's own timeout)"
  else
    verdict="FAILED (exit $rc)"
  fi
  echo "=== librdkafka test $t: $verdict ===" >>"$BROKER_LOG"
  printf '%s\t%s\n' "$verdict" "$dt" > "$RUN_DIR/results/$t"
}

passed=(); failed=(); skipped=()
collect() {   # reports finished jobs
  local t verdict dt
  for t in "${!job_pid[@]}"; do
    [ -f "$RUN_DIR/results/$t" ] || continue
    wait "${job_pid[$t]}" 2>/dev/null
    unset "job_pid[$t]"
    IFS=$'\t' read -r verdict dt < "$RUN_DIR/results/$t"
    printf 'run.sh: %-5s %-62s %4ss\n' "$t" "$verdict" "$dt" >&2
    case "$verdict" in PASSED*) passed+=("$t");; SKIPPED*) skipped+=("$t");; *) failed+=("$t");; esac
  done
  if ! kill -0 "$broker_pid" 2>/dev/null; then
    log "the broker died; log tail:"; tail -n 30 "$BROKER_LOG" >&2
    echo "=== broker died; restarting it with an empty data dir ===" >>"$BROKER_LOG"
    failed+=("broker-died")
    start_broker
  fi
}

start_all=$(date +%s)
for t in "${tests[@]}"; do
  while [ ${#job_pid[@]} -ge "$PARALLEL" ]; do sleep 0.5; collect; done
  run_one "$t" &
  job_pid[$t]=$!
done
while [ ${#job_pid[@]} -gt 0 ]; do sleep 0.5; collect; done
stop_broker
# Keep logs; drop the binary copy, and the data dir unless something failed.
rm -f "$BROKER_EXE"
[ ${#failed[@]} -gt 0 ] || rm -rf "$RUN_DIR/data"

total=$(( $(date +%s) - start_all ))
sorted() { printf '%s\n' "$@" | sort | tr '\n' ' '; }
echo
echo "librdkafka 2.12.1 $([ $sweep = 1 ] && echo sweep || echo tests) against spool, TEST_KAFKA_VERSION=$TEST_KAFKA_VERSION, ${total}s, logs in $RUN_DIR"
echo "passed:  $(sorted "${passed[@]}")"
echo "failed:  $(sorted "${failed[@]}")"
echo "skipped: $(sorted "${skipped[@]}")"
for t in "${failed[@]}"; do
  [ -f "$RUN_DIR/logs/$t.log" ] || continue
  echo "--- $t: failure lines (full output $RUN_DIR/logs/$t.log)"
  sed 's/\x1b\[[0-9;]*m//g' "$RUN_DIR/logs/$t.log" | grep -E -A2 '^### Test|timed out' | head -n 20
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "--- tail of broker log ($BROKER_LOG)"
  tail -n 60 "$BROKER_LOG"
fi
echo "${#passed[@]} passed, ${#failed[@]} failed, ${#skipped[@]} skipped"
[ $sweep = 1 ] || [ ${#failed[@]} -eq 0 ]
