#!/usr/bin/env bash
# kcat's README examples (https://github.com/edenhill/kcat#examples) and kafka-python's README
# producer and consumer examples (https://github.com/dpkp/kafka-python), each reading the other's
# records. Topics are created automatically on first use, as with Kafka's default
# auto.create.topics.enable=true. PYTHON is a Python with kafka-python.
source "$(dirname "$0")/lib.sh"

step "Metadata listing"
run kcat -L -b $BOOTSTRAP
expect_match '^ 1 brokers:'
expect_match "^  broker 1 at $BOOTSTRAP"

step "Read messages from stdin, produce to the 'syslog' topic"
printf 'line %d of the log\n' 1 2 3 4 5 | run kcat -P -b $BOOTSTRAP -t syslog

step "Read messages from the 'syslog' topic, print to stdout, exit at the end"
run kcat -C -b $BOOTSTRAP -t syslog -e
printf 'line %d of the log\n' 1 2 3 4 5 >"$WORK/expected"
diff "$WORK/expected" "$OUT" || fail "kcat -C did not print the 5 lines in order"
expect_match 'Reached end of topic syslog \[0\] at offset 5: exiting' "$ERR"

step "Read the last 2 messages from partition 0, then exit"
run kcat -C -b $BOOTSTRAP -t syslog -p 0 -o -2 -e
printf 'line %d of the log\n' 4 5 >"$WORK/expected"
diff "$WORK/expected" "$OUT" || fail "-o -2 did not give the last 2 lines"

step "Output consumed messages in a JSON envelope"
run kcat -C -b $BOOTSTRAP -t syslog -J -e    # -C: in a script stdin is no terminal, kcat would pick -P
expect_lines 5
expect_match '^\{"topic":"syslog","partition":0,"offset":0,"tstype":"create","ts":[0-9]{13},"broker":1,"key":null,"payload":"line 1 of the log"\}$'

step "Produce keyed messages (-K:) and print them with a format string"
printf '%s\n' "alice:hello" "bob:hi there" "alice:bye" | run kcat -P -b $BOOTSTRAP -t mytopic -K:
run kcat -C -b $BOOTSTRAP -t mytopic -e -f 'Topic %t[%p], offset: %o, key: %k, payload: %S bytes: %s\n'
cat >"$WORK/expected" <<'TXT'
Topic mytopic[0], offset: 0, key: alice, payload: 5 bytes: hello
Topic mytopic[0], offset: 1, key: bob, payload: 8 bytes: hi there
Topic mytopic[0], offset: 2, key: alice, payload: 3 bytes: bye
TXT
diff "$WORK/expected" "$OUT" || fail "formatted output differs"

step "Produce a tombstone (NULL value, -Z) for key abc"
echo "abc:" | run kcat -b $BOOTSTRAP -t mytopic -Z -K:
run kcat -C -b $BOOTSTRAP -t mytopic -o 3 -e -f '%k %S\n'
expect_line "abc -1"
expect_lines 1

step "Query the offset by timestamp"
run kcat -b $BOOTSTRAP -Q -t syslog:0:1
expect_line "syslog [0] offset 0"
run kcat -b $BOOTSTRAP -Q -t syslog:0:$(( $(date +%s) * 1000 + 60000 ))
expect_line "syslog [0] offset -1"

step "Consume as a balanced consumer group (-G)"
run kcat -b $BOOTSTRAP -G mykcatgroup -o beginning -e syslog
printf 'line %d of the log\n' 1 2 3 4 5 >"$WORK/expected"
diff "$WORK/expected" "$OUT" || fail "kcat -G did not print the 5 lines"
run kafka-consumer-groups.sh --bootstrap-server $BOOTSTRAP --describe --group mykcatgroup
no_tool_problems
group_rows | grep -q '^GROUP=mykcatgroup TOPIC=syslog PARTITION=0 CURRENT-OFFSET=5 LOG-END-OFFSET=5 LAG=0 ' ||
  fail "mykcatgroup did not commit offset 5"

step "kafka-python: the README's producer examples"
run $PYTHON "$TUTORIALS_DIR/kafka-python/producer.py"
expect_line "another_message: topic=foobar partition=0 offset=100"
expect_line "producer done"

step "kafka-python: the README's consumer examples"
run $PYTHON "$TUTORIALS_DIR/kafka-python/consumer.py"
expect_line "foobar: 100 some_message_bytes, 1 another_message, 1000 gzip msg, keyed [(b'foo', b'bar')]"
expect_line "flipflap: key=b'ping' value=b'1234'"
expect_line "fizzbuzz: [{'foo': 'bar'}]"
expect_line "pattern ^f.*z$: [('fizzbuzz', 1)]"
expect_line "foobar again in my_favorite_group: 0 messages"

step "kcat reads what kafka-python wrote"
run kcat -C -b $BOOTSTRAP -t fizzbuzz -e
expect_line '{"foo": "bar"}'
run kcat -C -b $BOOTSTRAP -t foobar -o 101 -c 2 -e -f '%k=%s\n'
printf '%s\n' "foo=bar" "=msg 0" >"$WORK/expected"
diff "$WORK/expected" "$OUT" || fail "kcat read foobar's 101st and 102nd records differently"

step "kafka-python's group committed everything it read"
run kafka-consumer-groups.sh --bootstrap-server $BOOTSTRAP --describe --group my_favorite_group
no_tool_problems
group_rows | grep -q '^GROUP=my_favorite_group TOPIC=foobar PARTITION=0 CURRENT-OFFSET=1102 LOG-END-OFFSET=1102 LAG=0 ' ||
  fail "my_favorite_group is not at offset 1102 with LAG 0"

echo; echo "kcat-kafka-python: OK"
