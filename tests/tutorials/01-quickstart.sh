#!/usr/bin/env bash
# Apache Kafka quickstart (https://kafka.apache.org/quickstart), steps 3-5: create a topic, write
# events into it, read them, write more while a consumer is reading, read everything again.
source "$(dirname "$0")/lib.sh"

step "Create a topic to store your events"
run kafka-topics.sh --create --topic quickstart-events --bootstrap-server $BOOTSTRAP
no_tool_problems
expect_line "Created topic quickstart-events."

step "Show the new topic's partition count"
run kafka-topics.sh --describe --topic quickstart-events --bootstrap-server $BOOTSTRAP
no_tool_problems
expect_match $'^Topic: quickstart-events\tTopicId: [A-Za-z0-9_-]{22}\tPartitionCount: 1\tReplicationFactor: 1\tConfigs:'
expect_match $'^\tTopic: quickstart-events\tPartition: 0\tLeader: 1\tReplicas: 1\tIsr: 1'
expect_lines 2

step "Write some events into the topic"
printf '%s\n' "This is my first event" "This is my second event" |
  run kafka-console-producer.sh --topic quickstart-events --bootstrap-server $BOOTSTRAP
no_tool_problems
expect_lines 0

step "Read the events"
run kafka-console-consumer.sh --topic quickstart-events --from-beginning --bootstrap-server $BOOTSTRAP --max-messages 2 --timeout-ms 20000
no_tool_problems
printf '%s\n' "This is my first event" "This is my second event" >"$WORK/expected"
diff "$WORK/expected" "$OUT" || fail "the consumer did not print the two events, in order"
expect_line "Processed a total of 2 messages" "$ERR"

step "Keep a consumer open, write more events in another terminal, see them show up"
echo '$ kafka-console-consumer.sh --topic quickstart-events --bootstrap-server $BOOTSTRAP --max-messages 4 --from-beginning --timeout-ms 30000 &'
kafka-console-consumer.sh --topic quickstart-events --bootstrap-server $BOOTSTRAP --max-messages 4 --from-beginning --timeout-ms 30000 \
  >"$WORK/live.out" 2>"$WORK/live.err" &
live=$!
BG_PIDS+=("$live")
eventually 30 "the open consumer printed the first two events" grep -qx "This is my second event" "$WORK/live.out"
printf '%s\n' "This is my third event" "This is my fourth event" |
  run kafka-console-producer.sh --topic quickstart-events --bootstrap-server $BOOTSTRAP
no_tool_problems
rc=0
wait "$live" || rc=$?
sed 's/^/  | /' "$WORK/live.out"
sed 's/^/  ! /' "$WORK/live.err"
[ "$rc" -eq 0 ] || fail "the open consumer exited $rc"
printf '%s\n' "This is my first event" "This is my second event" "This is my third event" "This is my fourth event" >"$WORK/expected"
diff "$WORK/expected" "$WORK/live.out" || fail "the open consumer did not see the new events after the old ones"

step "Events are durably stored: read them all again"
run kafka-console-consumer.sh --topic quickstart-events --from-beginning --bootstrap-server $BOOTSTRAP --max-messages 4 --timeout-ms 20000
no_tool_problems
diff "$WORK/expected" "$OUT" || fail "re-reading from the beginning did not give the four events in order"
expect_line "Processed a total of 4 messages" "$ERR"

echo; echo "quickstart: OK"
