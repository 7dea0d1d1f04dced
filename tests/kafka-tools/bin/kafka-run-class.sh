#!/usr/bin/env bash
# Runs one Kafka tool main class on the jars that ../install.sh put in
# <repo>/target/kafka-tools/libs: a small stand-in for Kafka's own bin/kafka-run-class.sh.
#
#   KAFKA_TOOLS_HOME            where install.sh put the jars   (default: <repo>/target/kafka-tools)
#   KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS, KAFKA_LOG4J_OPTS, KAFKA_OPTS
#                               as in Kafka's script
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "USAGE: $0 classname [opts]" >&2
  exit 1
fi

bin_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools_dir="$(dirname "$bin_dir")"
KAFKA_TOOLS_HOME="${KAFKA_TOOLS_HOME:-$(dirname "$(dirname "$tools_dir")")/target/kafka-tools}"
libs="$KAFKA_TOOLS_HOME/libs"
if ! compgen -G "$libs/kafka-tools-*.jar" >/dev/null; then
  echo "kafka-tools: the Kafka tool jars are not installed in $libs; run $tools_dir/install.sh" >&2
  exit 127
fi

JAVA="java"
[ -n "${JAVA_HOME:-}" ] && JAVA="$JAVA_HOME/bin/java"
# Short-lived command-line JVMs: start fast rather than run fast.
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx256M}"
KAFKA_JVM_PERFORMANCE_OPTS="${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto -Djava.awt.headless=true}"
# WARN and up to stderr, as Kafka's config/tools-log4j2.yaml.
KAFKA_LOG4J_OPTS="${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=file:$tools_dir/tools-log4j2.properties}"

# shellcheck disable=SC2086  # the *_OPTS are word lists, as in Kafka's script
exec "$JAVA" $KAFKA_HEAP_OPTS $KAFKA_JVM_PERFORMANCE_OPTS $KAFKA_LOG4J_OPTS -cp "$libs/*" ${KAFKA_OPTS:-} "$@"
