#!/usr/bin/env bash
# Installs Apache Kafka's command-line tools (kafka-topics.sh & co., the version pinned in
# pom.xml beside this script) from Maven Central into <repo>/target/kafka-tools/libs, for the
# wrappers in bin/. Idempotent: skipped when the libs were installed from this same pom.xml and
# jars.sha256.
#
#   KAFKA_TOOLS_HOME           where the jars go            (default: <repo>/target/kafka-tools)
#   KAFKA_TOOLS_UPDATE_SHA256  set to 1 to rewrite jars.sha256 from a fresh download (after a
#                              version bump in pom.xml) instead of checking against it
#
# Maven checks each file's checksum from the repository (--strict-checksums); jars.sha256 then
# pins the exact set of jars and their SHA-256.
set -euo pipefail

TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$TOOLS_DIR/../.." && pwd)"
KAFKA_TOOLS_HOME="${KAFKA_TOOLS_HOME:-$REPO_ROOT/target/kafka-tools}"
LIBS="$KAFKA_TOOLS_HOME/libs"
STAMP="$KAFKA_TOOLS_HOME/.install.sha256"
SUMS="$TOOLS_DIR/jars.sha256"

log() { echo "kafka-tools/install.sh: $*" >&2; }

install_hash() { cat "$TOOLS_DIR/pom.xml" "$TOOLS_DIR/tools-log4j2.properties" "$SUMS" 2>/dev/null | sha256sum | cut -d' ' -f1; }
stamp="$(install_hash || true)"
if [ "${KAFKA_TOOLS_UPDATE_SHA256:-}" != 1 ] && [ -d "$LIBS" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$stamp" ]; then
  log "Kafka tools in $LIBS up to date"
  exit 0
fi

need_apt=()
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_apt[@]}"
fi

version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$TOOLS_DIR/pom.xml")"
log "fetching Kafka $version tool jars from Maven Central into $LIBS"
mkdir -p "$KAFKA_TOOLS_HOME"
tmp="$(mktemp -d "$KAFKA_TOOLS_HOME/.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
if ! mvn --batch-mode --no-transfer-progress --strict-checksums -Dstyle.color=never \
     -f "$TOOLS_DIR/pom.xml" dependency:copy-dependencies \
     -DincludeScope=runtime -DoutputDirectory="$tmp/libs" > "$tmp/mvn.log" 2>&1; then
  cat "$tmp/mvn.log" >&2
  log "mvn dependency:copy-dependencies failed"
  exit 1
fi

if [ "${KAFKA_TOOLS_UPDATE_SHA256:-}" = 1 ]; then
  (cd "$tmp/libs" && sha256sum -- *.jar) > "$SUMS"
  log "wrote $SUMS ($(wc -l < "$SUMS") jars)"
else
  # Exactly the jars listed, each with its pinned SHA-256.
  (cd "$tmp/libs" && sha256sum --check --quiet --strict "$SUMS") \
    || { log "jar checksums differ from $SUMS (after a version bump: KAFKA_TOOLS_UPDATE_SHA256=1 $0)"; exit 1; }
  extra="$(comm -13 <(awk '{print $2}' "$SUMS" | sort) <(cd "$tmp/libs" && ls | sort))"
  [ -z "$extra" ] || { log "jars not listed in $SUMS: $extra"; exit 1; }
fi

rm -rf "$LIBS"
mv "$tmp/libs" "$LIBS"
echo "$version" > "$KAFKA_TOOLS_HOME/VERSION"
install_hash > "$STAMP"
log "installed Kafka $version tools ($(ls "$LIBS" | wc -l) jars); run them from $TOOLS_DIR/bin"
