#!/usr/bin/env bash
# Restart time after a crash, with and without recovery points: writes about 1 GB (16 MiB
# segments, 4 partitions) to a fresh broker, waits past one recovery-point interval, SIGKILLs
# it, drops the page cache (when run as root) and times a restart to its first accepted
# connection. Prints one line per setting.
#   bench/crash_restart.sh [SPOOL_BIN] [RDKAFKA_PERFORMANCE]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${1:-$REPO/target/release/spool}"
PERF="${2:-$REPO/target/librdkafka/examples/rdkafka_performance}"
PORT=19092
ADDR="127.0.0.1:$PORT"

run() {
  local interval=$1 dir pid t0 t1
  dir="$(mktemp -d)"
  "$BIN" serve --listen "$ADDR" --data-dir "$dir" --recovery-point-interval-ms "$interval" >"$dir.log" 2>&1 &
  pid=$!
  until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do sleep 0.01; done
  "$BIN" topic create big --bootstrap-server "$ADDR" --partitions 4 --config segment.bytes=16777216 >/dev/null
  "$PERF" -P -t big -b "$ADDR" -s 1024 -c 1000000 -a -1 -X linger.ms=5 -q >/dev/null 2>&1
  sleep 12 # past one 10 s interval
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || true
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then echo 3 >/proc/sys/vm/drop_caches; cache=cold; else cache=warm; fi
  t0=$(date +%s%N)
  "$BIN" serve --listen "$ADDR" --data-dir "$dir" --recovery-point-interval-ms "$interval" >>"$dir.log" 2>&1 &
  pid=$!
  until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do sleep 0.002; done
  t1=$(date +%s%N)
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  echo "recovery points every ${interval} ms: $(du -sh "$dir" | cut -f1) of data, restart after kill -9 ($cache page cache): $(( (t1 - t0) / 1000000 )) ms"
  rm -rf "$dir" "$dir.log"
}

run 10000
run 1000000000 # never within the run: recovery reads every segment
