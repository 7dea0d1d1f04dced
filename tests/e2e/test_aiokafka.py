"""aiokafka 0.14.0 (non-flexible protocol versions only) against a real Spool broker."""

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from e2e_lib import (COMPRESSIONS, NUM_PARTITIONS, Got, assert_stored_codec, make_messages, norm_headers, text,
                     unique_topic, verify_round_trip)


async def scenario(bootstrap, topic, compression, msgs):
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=NUM_PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()

    # aiokafka defaults to acks=1 without idempotence; turn both on to exercise InitProducerId v0.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all",
                                compression_type=None if compression == "none" else compression,
                                linger_ms=20, request_timeout_ms=30000)
    await producer.start()
    try:
        parts = await producer.partitions_for(topic)
        assert parts == set(range(NUM_PARTITIONS)), f"metadata partitions {parts}"
        futures = [await producer.send(topic, key=m.key.encode(), value=m.value.encode(),
                                       headers=[(k, v.encode()) for k, v in m.headers]) for m in msgs]
        for m, md in zip(msgs, await asyncio.gather(*futures)):
            m.partition, m.offset = md.partition, md.offset
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", request_timeout_ms=30000)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(NUM_PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        got = []

        async def take(timeout_ms):
            for tp, records in (await consumer.getmany(timeout_ms=timeout_ms)).items():
                got.extend(Got(tp.partition, r.offset, text(r.key), text(r.value), norm_headers(r.headers))
                           for r in records)

        deadline = time.monotonic() + 60
        while len(got) < len(msgs) and time.monotonic() < deadline:
            await take(500)
        await take(300)  # extra (duplicate) records would show up here
        ends = {tp.partition: off for tp, off in (await consumer.end_offsets(tps)).items()}
        return got, ends
    finally:
        await consumer.stop()


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_round_trip(broker, compression):
    topic = unique_topic(f"aio-{compression}")
    msgs = make_messages("aio")
    got, ends = asyncio.run(asyncio.wait_for(scenario(broker.bootstrap, topic, compression, msgs), 150))
    verify_round_trip(msgs, got, end_offsets=ends)
    assert_stored_codec(broker.bootstrap, topic, compression, len(msgs))
