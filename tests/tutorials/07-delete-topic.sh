#!/usr/bin/env bash
# Deleting a topic, as in the Kafka documentation's "Adding and removing topics"
# (https://kafka.apache.org/documentation/#basic_ops_add_topic): kafka-topics.sh --delete, after which
# --list no longer shows it and --describe says it does not exist; a topic created again under the
# same name starts empty.
source "$(dirname "$0")/lib.sh"

step "Create two topics and write to one"
run kafka-topics.sh --create --topic my_topic_name --partitions 2 --replication-factor 1 --bootstrap-server $BOOTSTRAP
no_tool_problems
expect_line "Created topic my_topic_name."
run kafka-topics.sh --create --topic other_topic --bootstrap-server $BOOTSTRAP
no_tool_problems
printf 'old %d\n' 1 2 3 | run kafka-console-producer.sh --topic my_topic_name --bootstrap-server $BOOTSTRAP
no_tool_problems

step "--list shows both"
run kafka-topics.sh --list --bootstrap-server $BOOTSTRAP
no_tool_problems
expect_line my_topic_name
expect_line other_topic

step "Delete my_topic_name"
run kafka-topics.sh --bootstrap-server $BOOTSTRAP --delete --topic my_topic_name
no_tool_problems
expect_lines 0

step "--list no longer shows it, and still shows the other"
run kafka-topics.sh --list --bootstrap-server $BOOTSTRAP
no_tool_problems
expect_no_match '^my_topic_name$'
expect_line other_topic

step "--describe says it does not exist"
run_fails kafka-topics.sh --describe --topic my_topic_name --bootstrap-server $BOOTSTRAP
expect_match "Topic 'my_topic_name' does not exist as expected"

step "Deleting it again fails the same way"
run_fails kafka-topics.sh --bootstrap-server $BOOTSTRAP --delete --topic my_topic_name
expect_match "Topic 'my_topic_name' does not exist as expected"

step "Created again under the same name, it is a new, empty topic"
run kafka-topics.sh --create --topic my_topic_name --partitions 1 --replication-factor 1 --bootstrap-server $BOOTSTRAP
no_tool_problems
run kafka-get-offsets.sh --topic my_topic_name --bootstrap-server $BOOTSTRAP
no_tool_problems
expect_line "my_topic_name:0:0"
expect_lines 1
echo "new 1" | run kafka-console-producer.sh --topic my_topic_name --bootstrap-server $BOOTSTRAP
no_tool_problems
run kafka-console-consumer.sh --topic my_topic_name --from-beginning --bootstrap-server $BOOTSTRAP --max-messages 1 --timeout-ms 20000
no_tool_problems
expect_line "new 1"
expect_lines 1

echo; echo "delete-topic: OK"
