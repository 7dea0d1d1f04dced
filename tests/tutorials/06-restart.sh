#!/usr/bin/env bash
# Events are durably stored (Apache Kafka quickstart, https://kafka.apache.org/quickstart, steps 5
# and "Terminate the Kafka environment"): produce, let a group read part of them, stop and start the
# broker, and everything is still there: the topic, the records and the group's committed offset.
# RESTART_BROKER is a shell command (run with eval) that stops the broker (SIGTERM), starts it again
# on the same address and data directory, and returns once it accepts connections.
source "$(dirname "$0")/lib.sh"
: "${RESTART_BROKER:?set RESTART_BROKER to a command that restarts the broker}"

step "Create a topic and write 5 events"
run kafka-topics.sh --create --topic durable-events --partitions 2 --replication-factor 1 --bootstrap-server $BOOTSTRAP
no_tool_problems
printf 'event %d\n' 1 2 3 4 5 | run kafka-console-producer.sh --topic durable-events --bootstrap-server $BOOTSTRAP --property parse.key=true --property key.separator=' '
no_tool_problems

step "A consumer group reads 3 of them and commits"
run kafka-console-consumer.sh --topic durable-events --group durable-group --from-beginning --bootstrap-server $BOOTSTRAP --max-messages 3 --timeout-ms 20000
no_tool_problems
expect_lines 3
cp "$OUT" "$WORK/first-3"
run kafka-consumer-groups.sh --bootstrap-server $BOOTSTRAP --describe --group durable-group
no_tool_problems
group_rows >"$WORK/lag-before"
cat "$WORK/lag-before"
lag=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^LAG=/) s += substr($i, 5) } END { print s + 0 }' "$WORK/lag-before")
[ "$lag" -eq 2 ] || fail "the group's lag is $lag, expected 2"
run kafka-topics.sh --describe --topic durable-events --bootstrap-server $BOOTSTRAP
no_tool_problems
topic_id=$(grep -Eo 'TopicId: [A-Za-z0-9_-]+' "$OUT")

step "Restart the broker"
echo "\$ $RESTART_BROKER"
eval "$RESTART_BROKER" || fail "RESTART_BROKER failed"

step "The topic is still there, with the same id and partitions"
run kafka-topics.sh --describe --topic durable-events --bootstrap-server $BOOTSTRAP
no_tool_problems
expect_match "^Topic: durable-events	$topic_id	PartitionCount: 2	ReplicationFactor: 1	"
expect_lines 3

step "All 5 events are still there"
run kafka-console-consumer.sh --topic durable-events --from-beginning --bootstrap-server $BOOTSTRAP --formatter-property print.key=true --max-messages 5 --timeout-ms 20000
no_tool_problems
printf 'event\t%d\n' 1 2 3 4 5 >"$WORK/expected"
expect_same_lines "$WORK/expected" "$OUT" "events after the restart"

step "The group's committed offsets survived: same lag as before"
run kafka-consumer-groups.sh --bootstrap-server $BOOTSTRAP --describe --group durable-group
no_tool_problems
group_rows >"$WORK/lag-after"
cat "$WORK/lag-after"
diff "$WORK/lag-before" "$WORK/lag-after" || fail "the group's offsets changed across the restart"

step "The group resumes where it stopped: the other 2 events"
run kafka-console-consumer.sh --topic durable-events --group durable-group --bootstrap-server $BOOTSTRAP --max-messages 2 --timeout-ms 20000
no_tool_problems
cat "$WORK/first-3" "$OUT" | sed 's/^/event\t/' >"$WORK/all"
expect_same_lines "$WORK/expected" "$WORK/all" "the group's first 3 and last 2 events"

step "New events after the restart get the next offsets"
echo "event 6" | run kafka-console-producer.sh --topic durable-events --bootstrap-server $BOOTSTRAP --property parse.key=true --property key.separator=' '
no_tool_problems
run kafka-get-offsets.sh --topic durable-events --bootstrap-server $BOOTSTRAP
no_tool_problems
total=$(awk -F: '{ s += $3 } END { print s }' "$OUT")
[ "$total" -eq 6 ] || fail "end offsets add up to $total, not 6"

echo; echo "restart: OK"
