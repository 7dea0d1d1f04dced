#!/usr/bin/env bash
# KafkaJS "Getting Started" (https://kafka.js.org/docs/getting-started): a producer with keys and a
# consumer group of three members (three node processes) on a 3-partition topic. One member stops;
# its partition goes to the other two and every record is still consumed.
# The programs are kafkajs/producer.js and consumer.js; NODE_PATH must find the kafkajs package.
source "$(dirname "$0")/lib.sh"
cd "$TUTORIALS_DIR/kafkajs"
export BOOTSTRAP

step "Create test-topic with 3 partitions"
run kafka-topics.sh --create --topic test-topic --partitions 3 --replication-factor 1 --bootstrap-server $BOOTSTRAP
no_tool_problems
expect_line "Created topic test-topic."

step "Start three consumers in the group test-group"
declare -A PID
for m in member-1 member-2 member-3; do
  start "$m" node consumer.js "$m"
  PID[$m]=$BG_PID
done

# members_have N: kafka-consumer-groups.sh --describe --members --verbose shows N members owning
# the 3 partitions between them, none twice; leaves the rows in $WORK/members.
members_have() {
  kafka-consumer-groups.sh --bootstrap-server $BOOTSTRAP --describe --group test-group --members --verbose >"$OUT" 2>"$ERR" || return 1
  group_rows >"$WORK/members"
  [ "$(wc -l <"$WORK/members")" -eq "$1" ] || return 1
  [ "$(grep -Eo 'CURRENT-ASSIGNMENT=test-topic:[0-9,]+' "$WORK/members" | cut -d: -f2 | tr ',' '\n' | sort | tr -d '\n')" = 012 ]
}

step "kafka-consumer-groups.sh --describe --members: three members, one partition each"
eventually 60 "3 members with one partition each" members_have 3
run kafka-consumer-groups.sh --bootstrap-server $BOOTSTRAP --describe --group test-group --members --verbose
no_tool_problems
group_rows >"$WORK/members"
for m in member-1 member-2 member-3; do
  grep -Eq "CLIENT-ID=$m #PARTITIONS=1 CURRENT-EPOCH=- CURRENT-ASSIGNMENT=test-topic:[012] " "$WORK/members" || fail "$m does not own exactly one partition"
done

step "Produce 30 keyed records"
run node producer.js first 30
expect_match '^sent to partition'

# consumed_all N: the members printed N distinct records between them.
consumed_all() {
  [ "$(cat "$WORK"/member-*.out | grep -c ' got partition=' || true)" -ge "$1" ]
}
step "Every record is consumed, each member reading its own partition, every partition used"
eventually 30 "30 records consumed" consumed_all 30
sleep 1
for m in member-1 member-2 member-3; do
  parts=$({ grep -o ' got partition=[0-9]' "$WORK/$m.out" || true; } | sort -u | wc -l)
  [ "$parts" -le 1 ] || fail "$m read from $parts partitions while each member owns one"
done
for p in 0 1 2; do grep -q " got partition=$p " "$WORK"/member-*.out || fail "no record went to partition $p"; done
owner2=$(grep -Eo 'CLIENT-ID=member-2 .*CURRENT-ASSIGNMENT=test-topic:[012] ' "$WORK/members" | grep -Eo ':[012] ' | tr -d ': ') ||
  fail "member-2 owns no partition: $(cat "$WORK/members")"
echo "member-2 owns partition $owner2"

step "Stop member-2 (Ctrl-C): it leaves the group"
stop_with INT member-2 "${PID[member-2]}"
expect_line "member-2 disconnected" "$WORK/member-2.out"

step "kafka-consumer-groups.sh --describe --members: two members share the 3 partitions"
eventually 60 "2 members owning partitions 0,1,2" members_have 2
run kafka-consumer-groups.sh --bootstrap-server $BOOTSTRAP --describe --group test-group --members --verbose
no_tool_problems
expect_no_match 'member-2'
taker=$(group_rows | grep -E "CURRENT-ASSIGNMENT=test-topic:([0-9]+,)*$owner2[ ,]" | grep -Eo 'CLIENT-ID=member-[13]' | cut -d= -f2) ||
  fail "nobody took member-2's partition $owner2"
echo "member-2's partition $owner2 went to $taker"

step "Produce 30 more; member-2's partition is now read by $taker"
run node producer.js second 30
eventually 30 "60 records consumed" consumed_all 60
sleep 2
grep -q " got partition=$owner2 offset=[0-9]* key=[^ ]* value=second-" "$WORK/$taker.out" ||
  fail "$taker has no record of partition $owner2 from the second batch"

step "Every record of both batches consumed exactly once"
cat "$WORK"/member-*.out | grep -o ' value=.*' | cut -d= -f2 | sort >"$WORK/got"
for i in $(seq 0 29); do echo "first-$i"; echo "second-$i"; done | sort >"$WORK/expected"
diff "$WORK/expected" "$WORK/got" >"$WORK/diff" || fail "records consumed differ from those produced (< missing, > extra): $(cat "$WORK/diff")"

step "The group is caught up: LAG 0 on every partition"
lag_zero() {
  kafka-consumer-groups.sh --bootstrap-server $BOOTSTRAP --describe --group test-group >"$OUT" 2>"$ERR" || return 1
  [ "$(group_rows | grep -c ' LAG=0 ' || true)" -eq 3 ]
}
eventually 30 "LAG 0 on the 3 partitions" lag_zero
run kafka-consumer-groups.sh --bootstrap-server $BOOTSTRAP --describe --group test-group
no_tool_problems

step "Stop the other two"
stop_with TERM member-1 "${PID[member-1]}"
stop_with TERM member-3 "${PID[member-3]}"

echo; echo "kafkajs: OK"
