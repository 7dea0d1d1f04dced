"""Transactions with real clients: confluent-kafka (librdkafka) and kafka-python transactional
producers, read_committed and read_uncommitted consumers, consume-transform-produce with
offsets committed in the transaction, and fencing of a zombie producer."""

import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTopicPartition

from e2e_lib import unique_topic

PARTITIONS = 3


def create_topic(bootstrap, topic, partitions=PARTITIONS):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                                   operation_timeout=30, request_timeout=30).values():
        fut.result(timeout=30)


def txn_producer(bootstrap, txn_id):
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id, "linger.ms": 5,
                  "transaction.timeout.ms": 60000})
    p.init_transactions(30)
    return p


def produce_in_txn(producer, topic, values, commit):
    producer.begin_transaction()
    for i, v in enumerate(values):
        producer.produce(topic, key=f"k{i}", value=v, partition=i % PARTITIONS)
    producer.flush(30)
    if commit:
        producer.commit_transaction(30)
    else:
        producer.abort_transaction(30)


def read_all(bootstrap, topic, isolation, partitions=PARTITIONS, settle=2.0, timeout=30.0):
    """Every record value per partition, in offset order, read with the given isolation level
    until nothing new arrives for `settle` seconds after reaching the end of every partition."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False,
                  "isolation.level": isolation, "enable.partition.eof": True})
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        got = {p: [] for p in range(partitions)}
        eof = set()
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                if len(eof) == partitions and time.monotonic() - last_new > settle:
                    break
                continue
            if m.error():
                if m.error().code() == -191:  # _PARTITION_EOF
                    eof.add(m.partition())
                    continue
                raise AssertionError(f"consume error: {m.error()}")
            got[m.partition()].append(m.value().decode())
            last_new = time.monotonic()
        return got
    finally:
        c.close()


def flat(got):
    return sorted(v for vs in got.values() for v in vs)


def test_read_committed_sees_committed_transactions_only(broker):
    topic = unique_topic("txn-iso")
    create_topic(broker.bootstrap, topic)
    p = txn_producer(broker.bootstrap, f"tx-{topic}")
    committed_a = [f"a{i}" for i in range(12)]
    aborted = [f"b{i}" for i in range(12)]
    committed_c = [f"c{i}" for i in range(12)]
    produce_in_txn(p, topic, committed_a, commit=True)
    produce_in_txn(p, topic, aborted, commit=False)
    produce_in_txn(p, topic, committed_c, commit=True)
    del p

    rc = read_all(broker.bootstrap, topic, "read_committed")
    assert flat(rc) == sorted(committed_a + committed_c), rc
    for part, values in rc.items():
        a = [v for v in values if v.startswith("a")]
        assert values == a + [v for v in values if v.startswith("c")], f"order kept in partition {part}"
    ru = read_all(broker.bootstrap, topic, "read_uncommitted")
    assert flat(ru) == sorted(committed_a + aborted + committed_c), "read_uncommitted also sees aborted data"

    # kafka-python defaults to read_uncommitted; read_committed must filter the aborted batch too.
    kc = KafkaConsumer(bootstrap_servers=broker.bootstrap, isolation_level="read_committed",
                       enable_auto_commit=False, consumer_timeout_ms=4000, auto_offset_reset="earliest")
    try:
        kc.assign([KTopicPartition(topic, p) for p in range(PARTITIONS)])
        seen = sorted(r.value.decode() for r in kc)
    finally:
        kc.close()
    assert seen == sorted(committed_a + committed_c)


def test_open_transaction_holds_back_read_committed_until_it_commits(broker):
    topic = unique_topic("txn-open")
    create_topic(broker.bootstrap, topic, 1)
    p = txn_producer(broker.bootstrap, f"tx-{topic}")
    p.begin_transaction()
    p.produce(topic, value="pending", partition=0)
    p.flush(30)
    peek = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused",
                     "isolation.level": "read_uncommitted"})
    try:
        assert peek.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1] == 1, "the record is stored"
    finally:
        peek.close()
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused", "isolation.level": "read_committed"})
    try:
        hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
        assert hi == 0, "read_committed's end is the last stable offset, before the open transaction"
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        m = c.poll(2.0)
        assert m is None or m.error(), f"read_committed got {m and m.value()} from an open transaction"
        p.commit_transaction(30)
        deadline = time.monotonic() + 15
        got = None
        while time.monotonic() < deadline and got is None:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got = m.value().decode()
        assert got == "pending", "visible once committed"
    finally:
        c.close()


def test_consume_transform_produce_commits_output_and_offsets_atomically(broker):
    source, sink = unique_topic("txn-src"), unique_topic("txn-sink")
    create_topic(broker.bootstrap, source)
    create_topic(broker.bootstrap, sink)
    group = f"g-{source}"
    inputs = [f"in{i}" for i in range(30)]
    plain = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for i, v in enumerate(inputs):
        plain.produce(source, value=v, partition=i % PARTITIONS)
    assert plain.flush(30) == 0

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    producer = txn_producer(broker.bootstrap, f"tx-{source}")
    consumer.subscribe([source])
    try:
        done = 0
        aborted_once = False
        deadline = time.monotonic() + 60
        while done < len(inputs) and time.monotonic() < deadline:
            batch = consumer.consume(10, 1.0)
            batch = [m for m in batch if not m.error()]
            if not batch:
                continue
            producer.begin_transaction()
            for m in batch:
                producer.produce(sink, value=m.value().decode().replace("in", "out"), partition=m.partition())
            producer.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                                 consumer.consumer_group_metadata(), 30)
            if not aborted_once:
                # The first batch is aborted: its output vanishes and its offsets are not
                # committed; rewind and process it again.
                producer.abort_transaction(30)
                aborted_once = True
                first = {}
                for m in batch:
                    first.setdefault(m.partition(), m.offset())
                for partition, offset in first.items():
                    consumer.seek(TopicPartition(source, partition, offset))
                continue
            producer.commit_transaction(30)
            done += len(batch)
        assert done == len(inputs)
    finally:
        consumer.close()

    out = read_all(broker.bootstrap, sink, "read_committed")
    assert flat(out) == sorted(v.replace("in", "out") for v in inputs), "each input transformed exactly once"
    check = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        offsets = check.committed([TopicPartition(source, p) for p in range(PARTITIONS)], timeout=10)
        assert {tp.partition: tp.offset for tp in offsets} == {p: 10 for p in range(PARTITIONS)}
    finally:
        check.close()


def test_a_second_producer_with_the_same_id_fences_the_first(broker):
    topic = unique_topic("txn-zombie")
    create_topic(broker.bootstrap, topic, 1)
    txn_id = f"tx-{topic}"
    zombie = txn_producer(broker.bootstrap, txn_id)
    zombie.begin_transaction()
    zombie.produce(topic, value="zombie", partition=0)
    zombie.flush(30)
    successor = txn_producer(broker.bootstrap, txn_id)  # aborts the zombie's open transaction
    produce_in_txn(successor, topic, ["fresh"], commit=True)
    with pytest.raises(KafkaException) as caught:
        zombie.produce(topic, value="late", partition=0)
        zombie.commit_transaction(30)
    err = caught.value.args[0]
    assert err.fatal() or "fenced" in err.str().lower(), err
    got = read_all(broker.bootstrap, topic, "read_committed", partitions=1)
    assert got[0] == ["fresh"]


def test_kafka_python_transactional_producer(broker):
    topic = unique_topic("txn-kpy")
    create_topic(broker.bootstrap, topic)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=f"tx-{topic}")
    try:
        p.init_transactions()
        p.begin_transaction()
        for i in range(6):
            p.send(topic, value=f"kept{i}".encode(), partition=i % PARTITIONS)
        p.commit_transaction()
        p.begin_transaction()
        for i in range(6):
            p.send(topic, value=f"dropped{i}".encode(), partition=i % PARTITIONS)
        p.flush()
        p.abort_transaction()
    finally:
        p.close()
    got = read_all(broker.bootstrap, topic, "read_committed")
    assert flat(got) == sorted(f"kept{i}" for i in range(6))


def test_transactions_survive_a_broker_restart(broker):
    topic = unique_topic("txn-restart")
    create_topic(broker.bootstrap, topic)
    p = txn_producer(broker.bootstrap, f"tx-{topic}")
    produce_in_txn(p, topic, [f"x{i}" for i in range(6)], commit=True)
    produce_in_txn(p, topic, [f"y{i}" for i in range(6)], commit=False)
    del p
    broker.stop()
    broker.start()
    got = read_all(broker.bootstrap, topic, "read_committed")
    assert flat(got) == sorted(f"x{i}" for i in range(6)), "the aborted transaction stays aborted"
    p = txn_producer(broker.bootstrap, f"tx-{topic}")
    produce_in_txn(p, topic, ["after"], commit=True)
    got = read_all(broker.bootstrap, topic, "read_committed")
    assert "after" in flat(got)
