#!/usr/bin/env bash
# A topic with 3 partitions and keyed records, as in the Kafka documentation's kafka-topics and
# console producer/consumer usage (https://kafka.apache.org/documentation/#basic_ops_add_topic):
# records with the same key go to the same partition and keep their order there.
source "$(dirname "$0")/lib.sh"

step "Create a topic with 3 partitions"
run kafka-topics.sh --create --topic orders --partitions 3 --replication-factor 1 --bootstrap-server $BOOTSTRAP
no_tool_problems
expect_line "Created topic orders."

step "Describe it: 3 partitions, each led by broker 1"
run kafka-topics.sh --describe --topic orders --bootstrap-server $BOOTSTRAP
no_tool_problems
expect_match $'PartitionCount: 3\tReplicationFactor: 1'
for p in 0 1 2; do expect_match $'^\tTopic: orders\tPartition: '$p$'\tLeader: 1\tReplicas: 1\tIsr: 1'; done

step "Produce keyed records (key:value)"
cat >"$WORK/records" <<'RECORDS'
alice:order 1
bob:order 2
carol:order 3
alice:order 4
dave:order 5
bob:order 6
erin:order 7
alice:order 8
frank:order 9
carol:order 10
grace:order 11
heidi:order 12
RECORDS
run kafka-console-producer.sh --topic orders --bootstrap-server $BOOTSTRAP --property parse.key=true --property key.separator=: <"$WORK/records"
no_tool_problems

step "Consume them, printing key and partition"
run kafka-console-consumer.sh --topic orders --from-beginning --bootstrap-server $BOOTSTRAP --formatter-property print.key=true --formatter-property print.partition=true --max-messages 12 --timeout-ms 20000
no_tool_problems
expect_line "Processed a total of 12 messages" "$ERR"
expect_lines 12
awk -F'\t' '{ sub(/^Partition:/, "", $1); print $1 " " $2 ":" $3 }' "$OUT" >"$WORK/got"
cut -d' ' -f2- "$WORK/got" >"$WORK/got-records"
expect_same_lines "$WORK/records" "$WORK/got-records" "records consumed"
# Equal keys, equal partitions:
split=$(awk '{ split($2, kv, ":"); k = kv[1]; if (k in p && p[k] != $1) print k; p[k] = $1 }' "$WORK/got" | sort -u)
[ -z "$split" ] || fail "keys found in more than one partition: $split"
# Per key, the order they were produced in:
for key in alice bob carol; do
  grep " $key:" "$WORK/got" | cut -d' ' -f2- >"$WORK/key-got"
  grep "^$key:" "$WORK/records" >"$WORK/key-sent"
  diff "$WORK/key-sent" "$WORK/key-got" >/dev/null || fail "key $key: consumed out of order: $(cat "$WORK/key-got")"
done
used=$(cut -d' ' -f1 "$WORK/got" | sort -u | wc -l)
[ "$used" -ge 2 ] || fail "9 keys all landed in one partition: the topic is not really partitioned"

step "Read one partition only"
p_alice=$(awk '$2 ~ /^alice:/ { print $1; exit }' "$WORK/got")
n_alice=$(awk -v p="$p_alice" '$1 == p' "$WORK/got" | wc -l)
run kafka-console-consumer.sh --topic orders --partition $p_alice --offset earliest --bootstrap-server $BOOTSTRAP --formatter-property print.key=true --max-messages $n_alice --timeout-ms 20000
no_tool_problems
expect_lines "$n_alice"
awk -v p="$p_alice" '$1 == p { sub(/^[^ ]+ /, ""); sub(/:/, "\t"); print }' "$WORK/got" >"$WORK/expected"
diff "$WORK/expected" "$OUT" || fail "partition $p_alice read alone differs from its part of the full read"

step "kafka-get-offsets.sh: the end offsets add up to 12"
run kafka-get-offsets.sh --topic orders --bootstrap-server $BOOTSTRAP
no_tool_problems
total=$(awk -F: '{ s += $3 } END { print s }' "$OUT")
[ "$total" -eq 12 ] || fail "end offsets add up to $total, not 12"

echo; echo "partitions-keys: OK"
