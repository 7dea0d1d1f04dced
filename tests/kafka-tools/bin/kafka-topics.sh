#!/usr/bin/env bash
# Kafka's bin/kafka-topics.sh (Apache Kafka 4.3.2, main class as in its own script), on the jars
# from ../install.sh.
exec "$(dirname "${BASH_SOURCE[0]}")/kafka-run-class.sh" org.apache.kafka.tools.TopicCommand "$@"
