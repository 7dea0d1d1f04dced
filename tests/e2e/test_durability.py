"""Durability: what the broker acknowledged must survive SIGTERM and SIGKILL.

Uses confluent-kafka (librdkafka 2.16) with an idempotent acks=all producer: the broker
answers acks=all only after fsync, and dedups producer retries by sequence number, so
after a crash every acknowledged message must be there exactly once and in order."""

import re
import time
from collections import Counter

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from e2e_lib import Got, make_messages, norm_headers, text, unique_topic, verify_round_trip

TOTAL = 2000
KILL_AFTER_ACKS = 500
WINDOW = 100  # messages in flight at most: keeps the kill mid-stream however fast the broker acks


def create_topic(bootstrap, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                                   operation_timeout=30, request_timeout=30).values():
        fut.result(timeout=30)


def producer_config(bootstrap):
    return {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": 5, "batch.num.messages": 20,  # many small requests, so acks arrive gradually
            "message.timeout.ms": 120000, "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500,
            "retry.backoff.ms": 50}


def produce_with_crash(broker, topic):
    """Streams TOTAL numbered messages to partition 0 and SIGKILLs + restarts the broker once
    KILL_AFTER_ACKS are acknowledged. Asserts nothing itself (the librdkafka handle must be
    freed on return). Returns (acked numbers in ack order, errors, acked count at kill,
    produced count at kill, undelivered count, produced count)."""
    acked, errors = [], []

    def on_delivery(err, msg):
        if err is None:
            acked.append(int(msg.value()))
        else:
            errors.append(f"{int(msg.value())}: {err}")

    producer = Producer(producer_config(broker.bootstrap))
    try:
        killed_at = (None, None)
        deadline = time.monotonic() + 90
        i = 0
        while i < TOTAL and time.monotonic() < deadline:
            try:
                if i - len(acked) - len(errors) < WINDOW:
                    producer.produce(topic, value=str(i).encode(), partition=0, on_delivery=on_delivery)
                    i += 1
                    producer.poll(0)
                else:
                    producer.poll(0.05)  # bounded wait for acks to free the window
            except KafkaException as e:
                # A fatal idempotence error (e.g. the broker forgot the producer id across the
                # crash): stop producing, but still check what was acknowledged.
                errors.append(f"fatal: {e}")
                break
            if killed_at[0] is None and len(acked) >= KILL_AFTER_ACKS:
                killed_at = (len(acked), i)
                broker.kill9()
                broker.start()  # same port and data dir; the producer reconnects and retries
        remaining = producer.flush(45)
        return acked, errors, killed_at[0], killed_at[1], remaining, i
    finally:
        del producer  # frees the librdkafka handle even if kill9()/start() raised


def read_partition(bootstrap, topic, partition=0, timeout=30.0):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "spool-e2e-unused",
                         "enable.auto.commit": False, "enable.auto.offset.store": False})
    try:
        tp = TopicPartition(topic, partition)
        _low, high = consumer.get_watermark_offsets(tp, timeout=30)
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        values, next_offset = [], 0
        deadline = time.monotonic() + timeout
        while next_offset < high and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert not msg.error(), f"consume error: {msg.error()}"
            values.append(int(msg.value()))
            next_offset = msg.offset() + 1
            # Also honour the high watermark carried by Fetch responses, so a wrong
            # ListOffsets answer cannot end the read early and fake a loss.
            high = max(high, consumer.get_watermark_offsets(tp, cached=True)[1])
        assert next_offset >= high, f"read up to offset {next_offset}, high watermark {high}"
        return values
    finally:
        consumer.close()


def test_acked_messages_survive_kill9(broker):
    topic = unique_topic("dur-kill9")
    create_topic(broker.bootstrap, topic, 1)

    acked, errors, acked_at_kill, produced_at_kill, remaining, produced = produce_with_crash(broker, topic)

    assert acked_at_kill is not None, f"never reached {KILL_AFTER_ACKS} acks (got {len(acked)}, errors {errors[:5]})"
    assert produced_at_kill < TOTAL, "broker was killed after the stream ended, not mid-stream"

    values = read_partition(broker.bootstrap, topic)
    dups = sorted(v for v, n in Counter(values).items() if n > 1)
    assert not dups, f"duplicates after crash and retry: {dups[:20]}"
    assert values == sorted(values), "messages out of send order after crash"
    lost = sorted(set(acked) - set(values))
    assert not lost, (f"{len(lost)} acknowledged messages lost by kill -9, e.g. {lost[:20]} "
                      f"(killed after {acked_at_kill} acks, {produced_at_kill} produced)")
    assert acked == sorted(acked), "delivery reports out of order"

    # With an idempotent producer and a long message timeout, everything gets through once the
    # broker is back: a failure here means the broker refused the producer's retries.
    assert not errors, f"{len(errors)} deliveries failed after restart: {errors[:5]}"
    assert produced == TOTAL, f"only {produced} of {TOTAL} messages were handed to the producer in time"
    assert remaining == 0 and len(acked) == TOTAL, f"{TOTAL - len(acked)} messages never acknowledged"
    assert values == list(range(TOTAL)), "read back more or other messages than produced"


def test_after_kill9_recovery_trusts_segments_below_the_recovery_point(broker):
    """Recovery after a crash reads only segments written since the last recovery point; what
    lies below it must still be served whole."""
    broker.extra_args = ["--recovery-point-interval-ms", "200"]
    broker.restart()
    topic = unique_topic("dur-recovery-point")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    new = NewTopic(topic, num_partitions=1, replication_factor=1, config={"segment.bytes": "20000"})
    for fut in admin.create_topics([new], operation_timeout=30, request_timeout=30).values():
        fut.result(timeout=30)
    producer = Producer(producer_config(broker.bootstrap))
    for i in range(TOTAL):
        producer.produce(topic, value=str(i).encode().ljust(200, b" "), partition=0)
        producer.poll(0)
    assert producer.flush(60) == 0, "not every message was acknowledged"
    segments = list((broker.data_dir / f"{topic}-0").glob("*.log"))
    assert len(segments) > 10, f"expected many segments, got {len(segments)}"
    deadline = time.monotonic() + 10
    points = broker.data_dir / "recovery-points.json"
    while not (points.exists() and f"{topic}-0@" in points.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert points.exists() and f"{topic}-0@" in points.read_text(), "no recovery point recorded for the topic"

    broker.kill9()
    broker.start()
    log = re.sub(r"\x1b\[[0-9;]*m", "", broker.log_path.read_text(errors="replace"))
    last_start = log.rsplit("=== e2e: starting", 1)[-1]
    used = [line for line in last_start.splitlines()
            if "segments below the recovery point are trusted" in line and f"partition={topic}-0 " in line
            and re.search(r"recovery_point=[1-9]", line)]
    assert used, f"recovery after the crash did not use the recovery point:\n{broker.log_tail()}"

    values = read_partition(broker.bootstrap, topic)
    assert values == list(range(TOTAL)), "after the crash the log does not hold every acknowledged message once"


def test_clean_restart_keeps_data_and_offsets(broker):
    topic = unique_topic("dur-restart")
    create_topic(broker.bootstrap, topic, 3)
    msgs = make_messages("restart")
    first, second = msgs[:50], msgs[50:]

    def produce(batch):
        producer, errors = Producer(producer_config(broker.bootstrap)), []

        def cb(m):
            def done(err, rec):
                if err is not None:
                    errors.append(err)
                else:
                    m.partition, m.offset = rec.partition(), rec.offset()
            return done

        for m in batch:
            producer.produce(topic, key=m.key.encode(), value=m.value.encode(),
                             headers=[(k, v.encode()) for k, v in m.headers], on_delivery=cb(m))
        return producer.flush(60), errors

    remaining, errors = produce(first)
    assert remaining == 0 and not errors, f"produce before restart failed: {errors[:5]}"

    code = broker.stop()
    assert code == 0, f"SIGTERM should be a clean shutdown, broker exited with {code}"
    # A clean stop reports how long the disk took; the fsyncs behind the acknowledgements count.
    times = re.findall(r"disk times: fsyncs (\d+): .*; writes (\d+): ", broker.log_path.read_text(errors="replace"))
    assert times, f"no 'disk times' line at the clean stop:\n{broker.log_tail()}"
    fsyncs, writes = map(int, times[-1])
    assert fsyncs >= 1 and writes >= 1, f"a stop after acknowledged appends timed {fsyncs} fsyncs, {writes} writes"
    broker.start()

    # New appends must continue after the recovered log end, not overwrite it.
    remaining, errors = produce(second)
    assert remaining == 0 and not errors, f"produce after restart failed: {errors[:5]}"

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "spool-e2e-unused",
                         "enable.auto.commit": False, "enable.auto.offset.store": False})
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(3)])
        got, deadline = [], time.monotonic() + 60
        while len(got) < len(msgs) and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None:
                assert not m.error(), f"consume error: {m.error()}"
                got.append(Got(m.partition(), m.offset(), text(m.key()), text(m.value()), norm_headers(m.headers())))
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(3)}
    finally:
        consumer.close()
    verify_round_trip(msgs, got, end_offsets=ends)
