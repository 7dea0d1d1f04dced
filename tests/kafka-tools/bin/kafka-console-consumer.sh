#!/usr/bin/env bash
# Kafka's bin/kafka-console-consumer.sh (Apache Kafka 4.3.2, main class as in its own script), on the jars
# from ../install.sh.
if [ -z "${KAFKA_HEAP_OPTS:-}" ]; then export KAFKA_HEAP_OPTS="-Xmx512M"; fi
exec "$(dirname "${BASH_SOURCE[0]}")/kafka-run-class.sh" org.apache.kafka.tools.consumer.ConsoleConsumer "$@"
