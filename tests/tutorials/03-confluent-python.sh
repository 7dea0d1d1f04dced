#!/usr/bin/env bash
# Confluent's "Getting Started with Apache Kafka and Python" (https://developer.confluent.io/get-started/python/):
# confluent-kafka's Producer with a delivery callback and flush(), a consumer group's poll loop
# (stopped with Ctrl-C), then the group's lag, a second group, and the consumer's --reset.
# The programs are confluent-python/producer.py and consumer.py; PYTHON is a Python with confluent-kafka.
source "$(dirname "$0")/lib.sh"
cd "$TUTORIALS_DIR/confluent-python"

step "Configuration: getting_started.ini"
cat >"$WORK/getting_started.ini" <<INI
[default]
bootstrap.servers=$BOOTSTRAP

[consumer]
group.id=python_example_group_1

# 'auto.offset.reset=earliest' to start reading from the beginning of
# the topic if no committed offsets exist.
auto.offset.reset=earliest
INI
sed 's/^/  | /' "$WORK/getting_started.ini"

step "Create the purchases topic"
run kafka-topics.sh --create --topic purchases --bootstrap-server $BOOTSTRAP --replication-factor 1 --partitions 1
no_tool_problems
expect_line "Created topic purchases."

step "Produce events"
run $PYTHON producer.py "$WORK/getting_started.ini"
expect_lines 10
expect_no_match '^ERROR'
[ "$(grep -c '^Produced event to topic purchases: key = ' "$OUT")" -eq 10 ] ||
  fail "expected 10 delivery reports 'Produced event to topic purchases: ...'"
sed 's/^Produced event to topic purchases: //' "$OUT" >"$WORK/produced"

# consume NAME ARGS...: runs consumer.py ARGS until it printed the 10 events, then presses Ctrl-C.
consume() {
  local name=$1
  shift
  start "$name" $PYTHON consumer.py "$@"
  local pid=$BG_PID
  local deadline=$((SECONDS + 60))
  while [ "$(grep -c '^Consumed event' "$WORK/$name.out" || true)" -lt 10 ]; do
    kill -0 "$pid" 2>/dev/null || finish "$name" "$pid"
    [ "$SECONDS" -lt "$deadline" ] || { stop_with INT "$name" "$pid"; fail "$name did not consume 10 events within 60s"; }
    sleep 0.5
  done
  sleep 2  # would more (duplicates) come?
  stop_with INT "$name" "$pid"
  expect_no_match '^ERROR' "$WORK/$name.out"
  grep '^Consumed event' "$WORK/$name.out" | sed 's/^Consumed event from topic purchases: //' >"$WORK/$name.got"
  expect_same_lines "$WORK/produced" "$WORK/$name.got" "events consumed by $name"
}

step "Consume events (Ctrl-C once they are all printed)"
consume consumer-1 "$WORK/getting_started.ini"

step "The group committed its position: LAG 0"
run kafka-consumer-groups.sh --bootstrap-server $BOOTSTRAP --describe --group python_example_group_1
no_tool_problems
group_rows >"$WORK/rows"
cat "$WORK/rows"
expect_lines 1 "$WORK/rows"
expect_match '^GROUP=python_example_group_1 TOPIC=purchases PARTITION=0 CURRENT-OFFSET=10 LOG-END-OFFSET=10 LAG=0 ' "$WORK/rows"

step "Run the consumer again in the same group: nothing new"
start consumer-again $PYTHON consumer.py "$WORK/getting_started.ini"
pid=$BG_PID
sleep 6
stop_with INT consumer-again "$pid"
expect_no_match '^(Consumed event|ERROR)' "$WORK/consumer-again.out"

step "A second group (group.id=python_example_group_2) gets every event too"
sed 's/^group.id=.*/group.id=python_example_group_2/' "$WORK/getting_started.ini" >"$WORK/group_2.ini"
consume consumer-2 "$WORK/group_2.ini"
run kafka-consumer-groups.sh --bootstrap-server $BOOTSTRAP --describe --group python_example_group_2
no_tool_problems
group_rows | grep -q '^GROUP=python_example_group_2 TOPIC=purchases PARTITION=0 CURRENT-OFFSET=10 LOG-END-OFFSET=10 LAG=0 ' ||
  fail "python_example_group_2 is not at offset 10 with LAG 0"

step "consumer.py --reset: the first group reads from the beginning again"
consume consumer-reset "$WORK/getting_started.ini" --reset

step "Both groups are listed"
run kafka-consumer-groups.sh --bootstrap-server $BOOTSTRAP --list
no_tool_problems
expect_line python_example_group_1
expect_line python_example_group_2

echo; echo "confluent-python: OK"
