"""confluent-kafka 2.16.1 (bundled librdkafka 2.16.0) against a real Spool broker."""

import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from e2e_lib import (COMPRESSIONS, NUM_PARTITIONS, Got, assert_stored_codec, make_messages, norm_headers, text,
                     unique_topic, verify_round_trip)


def consume_all(bootstrap, topic, expected, timeout=60.0):
    # librdkafka insists on a group.id, but with assign() and no commits the group is never joined.
    # isolation.level stays at librdkafka's default read_committed, which relies on the broker's LSO.
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "spool-e2e-unused",
                         "enable.auto.commit": False, "enable.auto.offset.store": False})
    try:
        md = consumer.list_topics(topic, timeout=30)
        parts = sorted(md.topics[topic].partitions)
        assert parts == list(range(NUM_PARTITIONS)), f"metadata partitions {parts}"
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        got = []

        def take(msg):
            if msg is None:
                return
            if msg.error():
                raise AssertionError(f"consume error: {msg.error()}")
            got.append(Got(msg.partition(), msg.offset(), text(msg.key()), text(msg.value()),
                           norm_headers(msg.headers())))

        deadline = time.monotonic() + timeout
        while len(got) < expected and time.monotonic() < deadline:
            take(consumer.poll(0.5))
        take(consumer.poll(0.3))  # extra (duplicate) records would show up here
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        return got, ends
    finally:
        consumer.close()


def create_topic(bootstrap, topic):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(topic, num_partitions=NUM_PARTITIONS, replication_factor=1)],
                                   operation_timeout=30, request_timeout=30).values():
        fut.result(timeout=30)


def produce_all(bootstrap, topic, compression, msgs):
    """Produces in order and records each message's acknowledged partition/offset.
    Asserts nothing itself: the librdkafka handle must be freed on return (confluent-kafka
    has no close(), and a failing frame kept in a traceback would keep it reconnecting)."""
    errors = []
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "compression.type": compression, "linger.ms": 20, "message.timeout.ms": 60000})

    def on_delivery(m):
        def cb(err, msg):
            if err is not None:
                errors.append(err)
            else:
                m.partition, m.offset = msg.partition(), msg.offset()
        return cb

    for m in msgs:
        producer.produce(topic, key=m.key.encode(), value=m.value.encode(),
                         headers=[(k, v.encode()) for k, v in m.headers], on_delivery=on_delivery(m))
        producer.poll(0)
    return producer.flush(60), errors


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_round_trip(broker, compression):
    topic = unique_topic(f"ck-{compression}")
    create_topic(broker.bootstrap, topic)
    msgs = make_messages("ck")
    remaining, errors = produce_all(broker.bootstrap, topic, compression, msgs)
    assert remaining == 0, f"{remaining} messages still undelivered after 60s"
    assert not errors, f"delivery errors: {errors[:5]}"
    got, ends = consume_all(broker.bootstrap, topic, len(msgs))
    verify_round_trip(msgs, got, end_offsets=ends)
    assert_stored_codec(broker.bootstrap, topic, compression, len(msgs))


def test_unknown_topic_is_auto_created(broker):
    # Contract: unknown topics are auto-created with --num-partitions partitions.
    topic = unique_topic("ck-auto")

    def produce_one():
        producer = Producer({"bootstrap.servers": broker.bootstrap, "message.timeout.ms": 30000})
        errors = []
        producer.produce(topic, value=b"x", on_delivery=lambda err, _m: err and errors.append(err))
        return producer.flush(30), errors

    remaining, errors = produce_one()
    assert remaining == 0 and not errors, f"produce to unknown topic failed: {errors}"
    t = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(topic, timeout=30).topics[topic]
    assert t.error is None or t.error.code() == KafkaError.NO_ERROR, t.error
    assert len(t.partitions) == broker.num_partitions
