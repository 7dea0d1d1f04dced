#!/usr/bin/env bash
# Docker end to end: builds spool:latest (cargo xtask image), runs it with a named volume, produces
# and consumes through the published port with kcat, restarts the container and reads the same
# data back, checks the health check and a clean stop. Installs and starts the Docker engine if
# needed. Everything it creates is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { echo "docker-test: $*" >&2; }
NAME="spool-e2e-$$"
VOLUME="spool-e2e-data-$$"
PORT="${SPOOL_DOCKER_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
STARTED_DOCKERD=""

cleanup() {
  docker rm -f "$NAME" >/dev/null 2>&1 || true
  docker volume rm "$VOLUME" >/dev/null 2>&1 || true
  if [ -n "$STARTED_DOCKERD" ]; then kill "$STARTED_DOCKERD" 2>/dev/null || true; fi
}
trap cleanup EXIT

if ! command -v dockerd >/dev/null || ! command -v kcat >/dev/null; then
  log "installing docker.io and kcat"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y docker.io kcat
fi
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  dockerd >/tmp/spool-dockerd.log 2>&1 &
  STARTED_DOCKERD=$!
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { log "dockerd did not start"; tail -20 /tmp/spool-dockerd.log; exit 1; }
fi

cargo xtask image --tag spool:latest
docker image inspect spool:latest --format 'image size: {{.Size}} bytes' >&2

run_container() {
  docker run -d --name "$NAME" -p "127.0.0.1:$PORT:9092" -e "SPOOL_ADVERTISED=127.0.0.1:$PORT" \
    -e SPOOL_NUM_PARTITIONS=3 -v "$VOLUME:/data" spool:latest >/dev/null
}

wait_healthy() {
  for _ in $(seq 1 60); do
    status=$(docker inspect -f '{{.State.Health.Status}}' "$NAME" 2>/dev/null || echo missing)
    [ "$status" = healthy ] && return 0
    sleep 1
  done
  log "container never became healthy (status $status)"; docker logs "$NAME" 2>&1 | tail -30; return 1
}

consume_all() {
  timeout 30 kcat -b "127.0.0.1:$PORT" -C -t tutorial -o beginning -e -q -f '%k=%s\n' | sort
}

run_container
wait_healthy
log "producing through the published port"
for i in $(seq 1 30); do echo "user$((i % 5)):{\"event\":$i}"; done | timeout 30 kcat -b "127.0.0.1:$PORT" -P -t tutorial -K: -X acks=all
before=$(consume_all)
[ "$(echo "$before" | wc -l)" -eq 30 ] || { log "expected 30 records, got: $before"; exit 1; }

log "restarting the container (SIGTERM, clean shutdown, same volume)"
docker restart -t 30 "$NAME" >/dev/null
docker logs "$NAME" 2>&1 | grep -q "clean shutdown complete" || { log "no clean shutdown in the logs"; docker logs "$NAME" 2>&1 | tail -20; exit 1; }
wait_healthy
after=$(consume_all)
[ "$before" = "$after" ] || { log "data differs after the restart"; diff <(echo "$before") <(echo "$after") || true; exit 1; }

log "stopping cleanly"
docker stop -t 30 "$NAME" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$NAME")
[ "$code" = 0 ] || { log "exit code $code after docker stop"; docker logs "$NAME" 2>&1 | tail -20; exit 1; }
uid=$(docker inspect -f '{{.Config.User}}' spool:latest)
[ "$uid" = "65532:65532" ] || { log "image runs as '$uid', not a non-root user"; exit 1; }
echo "docker: 5 passed, 0 failed"
