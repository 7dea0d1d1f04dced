"""Partition replication on three real `spool serve` processes, with librdkafka's idempotent
acks=all producer and Kafka's own `kafka-topics`: followers copy their leader's log, a record is
acknowledged once the in-sync replicas hold it on disk, and `kill -9` of a partition's leader in
the middle of a produce loses nothing acknowledged and duplicates nothing: the controller fences
the dead broker, an in-sync follower leads, and the producer's retries land there. With fewer
in-sync replicas than `min.insync.replicas` acks=all is refused with NOT_ENOUGH_REPLICAS while
what was committed stays readable. (With two of three nodes down the metadata quorum itself is
lost, as in Kafka's combined mode: nothing can shrink the ISR, and acks=all times out.)"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from e2e_lib import poll_until
from test_cluster_topics import cluster, describe  # noqa: F401  (the fixture)
from test_kafka_tools import _tools_installed, ok, tool  # noqa: F401  (the fixture skips without the jars)
from test_quorum import IDS


def read_back(bootstrap: str, topic: str, expected: int) -> list[tuple[int, str]]:
    """(offset, value) of every record of partition 0, from the start, as a consumer sees them."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"audit-{time.monotonic_ns()}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    seen, deadline = [], time.monotonic() + 60
    while len(seen) < expected and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None and not m.error():
            seen.append((m.offset(), m.value().decode()))
    consumer.close()
    return seen


def test_acknowledged_records_survive_kill9_of_the_leader_each_once_at_its_offset(cluster):
    bootstrap = ",".join(cluster.nodes[i].bootstrap for i in IDS)
    ok(tool("kafka-topics.sh", "--bootstrap-server", cluster.nodes[1].bootstrap, "--create", "--topic", "ledger",
            "--partitions", "1", "--replication-factor", "3", "--config", "min.insync.replicas=2"))
    leader, replicas, isr = describe(cluster.nodes[1], "ledger")[0]
    assert sorted(replicas) == [1, 2, 3] and sorted(isr) == [1, 2, 3], (leader, replicas, isr)
    victim = int(leader)

    reports: list = []
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5, "message.timeout.ms": 120_000})

    def send(first: int, count: int) -> None:
        for i in range(first, first + count):
            producer.produce("ledger", key=str(i), value=f"r{i}", on_delivery=lambda err, msg: reports.append(
                (err, msg.offset(), msg.value().decode())))
            producer.poll(0)

    send(0, 300)
    producer.flush(30)
    assert len(reports) == 300 and all(err is None for err, *_ in reports), reports[:3]
    # The leader dies with records in flight; the producer keeps going and retries elsewhere.
    send(300, 200)
    cluster.nodes[victim].kill9()
    send(500, 200)
    producer.flush(120)
    assert len(reports) == 700, len(reports)
    failed = [r for r in reports if r[0] is not None]
    assert not failed, failed[:5]

    survivor = cluster.nodes[next(i for i in IDS if i != victim)]
    new_leader, _, isr = describe(survivor, "ledger", node_down=True)[0]
    assert new_leader != "none" and int(new_leader) != victim and victim not in isr, (new_leader, isr)

    # Every acknowledged record, once, at the offset it was acknowledged at, in order.
    acknowledged = sorted((offset, value) for _, offset, value in reports)
    assert len({offset for offset, _ in acknowledged}) == 700, "no two records share an offset"
    seen = read_back(survivor.bootstrap, "ledger", 700)
    assert seen == acknowledged, (seen[:5], acknowledged[:5], len(seen))

    # The killed broker returns, follows the new leader (cutting any tail it alone held), and
    # once it holds the high watermark the leader takes it back into the ISR (AlterPartition).
    cluster.nodes[victim].start()
    poll_until(lambda: sorted(describe(survivor, "ledger")[0][2]) == [1, 2, 3], 60, "the ISR whole again",
               step=lambda: time.sleep(1))
    assert describe(survivor, "ledger")[0][0] == new_leader, "the new leader keeps leading"
    more = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    late = []
    more.produce("ledger", value="after", on_delivery=lambda err, msg: late.append((err, msg.offset())))
    more.flush(30)
    assert late and late[0][0] is None and late[0][1] == 700, late


def test_with_too_few_in_sync_replicas_acks_all_is_refused_and_committed_records_stay_readable(cluster):
    bootstrap = ",".join(cluster.nodes[i].bootstrap for i in IDS)
    ok(tool("kafka-topics.sh", "--bootstrap-server", cluster.nodes[1].bootstrap, "--create", "--topic", "strict",
            "--partitions", "1", "--replication-factor", "3", "--config", "min.insync.replicas=3"))
    leader = int(describe(cluster.nodes[1], "strict")[0][0])
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    delivered = []
    for i in range(20):
        producer.produce("strict", value=f"v{i}", on_delivery=lambda err, msg: delivered.append(err))
    producer.flush(30)
    assert delivered == [None] * 20, delivered

    # A follower dies: once it is fenced the ISR is two, below min.insync.replicas.
    follower = next(i for i in IDS if i != leader)
    cluster.nodes[follower].kill9()
    node = cluster.nodes[leader]
    poll_until(lambda: len(describe(node, "strict", node_down=True)[0][2]) == 2, 30, "the ISR shrunk",
               step=lambda: time.sleep(1))
    refused = []
    strict = Producer({"bootstrap.servers": node.bootstrap, "acks": "all", "retries": 0})
    strict.produce("strict", value="refused", on_delivery=lambda err, msg: refused.append(err))
    strict.flush(30)
    assert refused and refused[0] is not None and refused[0].code() == KafkaError.NOT_ENOUGH_REPLICAS, refused
    assert [v for _, v in read_back(node.bootstrap, "strict", 20)] == [f"v{i}" for i in range(20)]
