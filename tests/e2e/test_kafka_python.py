"""kafka-python 3.0.12 against a real Spool broker."""

import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from e2e_lib import (COMPRESSIONS, NUM_PARTITIONS, Got, assert_stored_codec, make_messages, norm_headers, text,
                     unique_topic, verify_round_trip)


def consume_all(bootstrap, topic, expected, timeout=60.0):
    # No group: consumer groups are not implemented, so assign + seek explicitly.
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", request_timeout_ms=30000)
    try:
        parts = consumer.partitions_for_topic(topic)
        assert parts == set(range(NUM_PARTITIONS)), f"metadata partitions {parts}"
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < expected and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                got += [Got(tp.partition, r.offset, text(r.key), text(r.value), norm_headers(r.headers))
                        for r in records]
        # A last short poll so extra (duplicate) records would show up too.
        for tp, records in consumer.poll(timeout_ms=300).items():
            got += [Got(tp.partition, r.offset, text(r.key), text(r.value), norm_headers(r.headers)) for r in records]
        ends = {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
        return got, ends
    finally:
        consumer.close()


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_round_trip(broker, compression):
    topic = unique_topic(f"kpy-{compression}")
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=30000)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=NUM_PARTITIONS, replication_factor=1)],
                            timeout_ms=30000)
    finally:
        admin.close()

    msgs = make_messages("kpy")
    # Idempotence set explicitly: kafka-python then refuses (instead of silently disabling it)
    # if our ApiVersions makes it infer a broker older than 0.11.
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=True,
                             compression_type=None if compression == "none" else compression,
                             linger_ms=20, request_timeout_ms=30000)
    try:
        futures = [producer.send(topic, key=m.key.encode(), value=m.value.encode(),
                                 headers=[(k, v.encode()) for k, v in m.headers]) for m in msgs]
        producer.flush(timeout=60)
        for m, f in zip(msgs, futures):
            md = f.get(timeout=60)
            m.partition, m.offset = md.partition, md.offset
    finally:
        producer.close(timeout=10)

    got, ends = consume_all(broker.bootstrap, topic, len(msgs))
    verify_round_trip(msgs, got, end_offsets=ends)
    assert_stored_codec(broker.bootstrap, topic, compression, len(msgs))
