"""Topics through the controller, on three real `spool serve` processes: a topic is created once,
by the active controller, with its replicas placed over the brokers, and every broker's Metadata
shows it to every client (Kafka's own `kafka-topics`, which is the Java Admin client, librdkafka
and kafka-python). Each partition is served by its leader; an unreplicated partition of a killed
leader goes leaderless and comes back with it; a killed controller is replaced and topics change
again.

Partitions replicate: followers copy their leader's log, acks=all waits for the in-sync
replicas, and a killed leader's partitions move to an in-sync follower with every acknowledged
record (see also test_replication.py)."""

from __future__ import annotations

import re
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from e2e_lib import poll_until
from test_kafka_tools import _tools_installed, ok, tool  # noqa: F401  (the fixture skips without the jars)
from test_quorum import IDS, Quorum, brokers_listed

PARTITION_RE = re.compile(r"Partition: (\d+)\s+Leader: (\S+)\s+Replicas: (\S+)\s+Isr: (\S*)")


@pytest.fixture
def cluster(tmp_path):
    q = Quorum(tmp_path)
    for node in q.nodes.values():
        node.extra_args += ["--default-replication-factor", "2"]
        node.start()
    poll_until(lambda: all(brokers_listed(q.nodes[i]) == list(IDS) for i in IDS), 30, "every broker registered",
               step=lambda: time.sleep(0.3))
    yield q
    for node in q.nodes.values():
        if node.proc is not None and node.proc.poll() is None:
            node.stop()


def describe(node, topic: str, node_down: bool = False) -> dict[int, tuple[str, list[int], list[int]]]:
    """kafka-topics --describe: partition -> (leader, replicas, isr). With a node down the tool
    warns that it cannot reach it (until it is fenced), which is not a failure."""
    proc = tool("kafka-topics.sh", "--bootstrap-server", node.bootstrap, "--describe", "--topic", topic)
    out = proc.stdout if node_down and proc.returncode == 0 else ok(proc)
    ids = lambda text: [int(x) for x in text.split(",") if x]  # noqa: E731
    return {int(p): (leader, ids(replicas), ids(isr)) for p, leader, replicas, isr in PARTITION_RE.findall(out)}


def topics_listed(node) -> list[str]:
    return sorted(AdminClient({"bootstrap.servers": node.bootstrap}).list_topics(timeout=10).topics)


def produce(bootstrap: str, topic: str, count: int, **config) -> list:
    """Idempotent acks=all produce; returns the delivery reports (error, partition, offset, value)."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", **config})
    reports = []
    for i in range(count):
        producer.produce(topic, key=str(i), value=f"{topic}-{i}",
                         on_delivery=lambda err, msg: reports.append(
                             (err, msg.partition(), msg.offset(), msg.value().decode())))
    producer.flush(30)
    return reports


def consume_all(bootstrap: str, topic: str, partitions: int, expected: int) -> list[str]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.monotonic_ns()}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    values, deadline = [], time.monotonic() + 30
    while len(values) < expected and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None and not m.error():
            values.append(m.value().decode())
    consumer.close()
    return values


def test_a_topic_with_replication_factor_3_is_shown_alike_by_every_broker_to_every_client(cluster):
    n1, n2, n3 = (cluster.nodes[i] for i in IDS)
    ok(tool("kafka-topics.sh", "--bootstrap-server", n1.bootstrap, "--create", "--topic", "orders",
            "--partitions", "3", "--replication-factor", "3"))

    # Kafka's tool (the Java Admin client), asking another broker.
    described = describe(n2, "orders")
    assert sorted(described) == [0, 1, 2]
    for leader, replicas, isr in described.values():
        assert sorted(replicas) == [1, 2, 3], described
        assert (int(leader), isr) == (replicas[0], replicas), "led by its first replica, all in sync"
    assert sorted(int(leader) for leader, _, _ in described.values()) == [1, 2, 3], "leaders spread"

    # librdkafka and kafka-python, asking the third.
    meta = AdminClient({"bootstrap.servers": n3.bootstrap}).list_topics("orders", timeout=10).topics["orders"]
    assert {p: sorted(m.replicas) for p, m in meta.partitions.items()} == {p: [1, 2, 3] for p in range(3)}
    assert {p: m.leader for p, m in meta.partitions.items()} == {p: int(described[p][0]) for p in range(3)}
    from kafka import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=n1.bootstrap, request_timeout_ms=10_000)
    [kp] = admin.describe_topics(["orders"])
    admin.close()
    assert {p["partition_index"]: sorted(p["replica_nodes"]) for p in kp["partitions"]} == {p: [1, 2, 3] for p in range(3)}

    # Writes and reads reach each partition's leader, whichever broker the client starts from.
    reports = produce(n2.bootstrap, "orders", 60)
    assert all(err is None for err, *_ in reports), reports
    assert {p for _, p, _, _ in reports} == {0, 1, 2}
    assert sorted(consume_all(n3.bootstrap, "orders", 3, 60)) == sorted(v for *_, v in reports)

    # Kafka's answers to the usual mistakes, and more partitions.
    again = tool("kafka-topics.sh", "--bootstrap-server", n3.bootstrap, "--create", "--topic", "orders",
                 "--partitions", "1")
    assert again.returncode != 0 and "already exists" in again.stdout + again.stderr
    too_many = tool("kafka-topics.sh", "--bootstrap-server", n3.bootstrap, "--create", "--topic", "wide",
                    "--replication-factor", "4")
    assert too_many.returncode != 0 and "replication factor" in (too_many.stdout + too_many.stderr).lower()
    ok(tool("kafka-topics.sh", "--bootstrap-server", n3.bootstrap, "--alter", "--topic", "orders", "--partitions", "5"))
    poll_until(lambda: len(describe(n1, "orders")) == 5, 10, "five partitions seen from another broker")

    # A topic created by a producer gets the cluster's default replication factor.
    reports = produce(n1.bootstrap, "auto-created", 5)
    assert all(err is None for err, *_ in reports), reports
    assert {len(replicas) for _, replicas, _ in describe(n3, "auto-created").values()} == {2}

    # min.insync.replicas above the replication factor: acks=all is refused (NOT_ENOUGH_REPLICAS),
    # acks=1 taken.
    ok(tool("kafka-topics.sh", "--bootstrap-server", n2.bootstrap, "--create", "--topic", "strict",
            "--partitions", "1", "--replication-factor", "1", "--config", "min.insync.replicas=2"))
    # (librdkafka retries this error; without retries the producer sees it.)
    refused = produce(n2.bootstrap, "strict", 1, **{"enable.idempotence": False, "retries": 0})
    assert refused[0][0] is not None and refused[0][0].code() == KafkaError.NOT_ENOUGH_REPLICAS, refused
    taken = produce(n2.bootstrap, "strict", 1, **{"enable.idempotence": False, "acks": "1"})
    assert taken[0][0] is None, taken

    # kafka-metadata-quorum through a broker (forwarded to the controller), as through a controller.
    status = ok(tool("kafka-metadata-quorum.sh", "--bootstrap-server", n3.bootstrap, "describe", "--status"))
    assert f"LeaderId:               {cluster.status()['LeaderId']}" in status, status

    ok(tool("kafka-topics.sh", "--bootstrap-server", n1.bootstrap, "--delete", "--topic", "orders"))
    poll_until(lambda: all("orders" not in topics_listed(cluster.nodes[i]) for i in IDS), 10, "deleted everywhere")


def test_a_killed_controller_is_replaced_and_a_killed_leaders_partition_waits_for_it(cluster):
    n1 = cluster.nodes[1]
    ok(tool("kafka-topics.sh", "--bootstrap-server", n1.bootstrap, "--create", "--topic", "events",
            "--partitions", "3", "--replication-factor", "1"))
    ok(tool("kafka-topics.sh", "--bootstrap-server", n1.bootstrap, "--create", "--topic", "spare",
            "--partitions", "3", "--replication-factor", "2"))
    before = describe(n1, "events")
    victim = int(cluster.status()["LeaderId"])
    [victims_partition] = [p for p, (leader, _, _) in before.items() if int(leader) == victim]
    reports = produce(n1.bootstrap, "events", 30)
    assert all(err is None for err, *_ in reports), reports
    on_victim = sorted(v for _, p, _, v in reports if p == victims_partition)

    cluster.nodes[victim].kill9()
    survivor = cluster.nodes[next(i for i in IDS if i != victim)]
    # Another controller takes over: topics can be created again within seconds.
    created_at = time.monotonic()
    poll_until(lambda: tool("kafka-topics.sh", "--bootstrap-server", survivor.bootstrap, "--create",
                            "--topic", "after", "--partitions", "2").returncode == 0, 20, "a topic created again")
    assert time.monotonic() - created_at < 20
    # The killed broker is fenced once its session ends: its partition has no leader (its only
    # in-sync replica is gone), the others keep theirs.
    poll_until(lambda: describe(survivor, "events", node_down=True)[victims_partition][0] == "none", 30,
               "the killed broker's partition leaderless", step=lambda: time.sleep(1))
    assert all(leader != "none" for p, (leader, _, _) in describe(survivor, "events", node_down=True).items()
               if p != victims_partition)
    ok(tool("kafka-topics.sh", "--bootstrap-server", survivor.bootstrap, "--delete", "--topic", "after"))

    # A replicated topic fails over: the killed broker's partitions of "spare" are led by their
    # other, in-sync replica. kafka-leader-election cannot move them back while it is away, nor
    # the unreplicated one, and needs nothing elsewhere.
    moved = {p: (leader, isr) for p, (leader, _, isr) in describe(survivor, "spare", node_down=True).items()}
    assert all(leader != "none" and int(leader) != victim and victim not in isr for leader, isr in moved.values()), moved
    preferred = tool("kafka-leader-election.sh", "--bootstrap-server", survivor.bootstrap, "--election-type",
                     "preferred", "--all-topic-partitions")
    said = preferred.stdout + preferred.stderr
    assert preferred.returncode != 0 and f"events-{victims_partition}: " in said, said
    assert "PreferredLeaderNotAvailable" in said, said

    # Restarted, it catches up with the topics changed while it was away and leads its partition
    # again, its records intact.
    cluster.nodes[victim].start()
    back = cluster.nodes[victim]
    poll_until(lambda: describe(back, "events")[victims_partition][0] == str(victim), 30,
               "the partition led again", step=lambda: time.sleep(1))
    assert "after" not in topics_listed(back)
    assert sorted(consume_all(back.bootstrap, "events", 3, 30)) == sorted(v for *_, v in reports)
    assert on_victim, "the killed broker led records of its own"


def test_a_groups_members_that_start_from_different_brokers_meet_at_one_coordinator(cluster):
    """Every broker names the same coordinator for a group (its home among the registered
    brokers), so members bootstrapped to different brokers form one group and split the
    partitions, each record read once."""
    ok(tool("kafka-topics.sh", "--bootstrap-server", cluster.nodes[1].bootstrap, "--create", "--topic", "work",
            "--partitions", "6", "--replication-factor", "1"))
    reports = produce(cluster.nodes[1].bootstrap, "work", 60)
    assert all(err is None for err, *_ in reports), reports
    members = [Consumer({"bootstrap.servers": cluster.nodes[i].bootstrap, "group.id": "workers",
                         "auto.offset.reset": "earliest", "session.timeout.ms": 10_000}) for i in IDS]
    assigned: dict[int, set[int]] = {}
    for member in members:
        member.subscribe(["work"], on_assign=lambda c, parts, m=member: assigned.__setitem__(
            id(m), {p.partition for p in parts}))
    seen: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (len(seen) >= 60 and len(assigned) == 3
                                               and all(assigned.values())):
        for member in members:
            m = member.poll(0.2)
            if m is not None and not m.error():
                seen.append(m.value().decode())
    for member in members:
        member.close()
    parts = list(assigned.values())
    assert len(parts) == 3 and all(parts), f"every member has partitions: {assigned}"
    assert sorted(p for ps in parts for p in ps) == list(range(6)), f"one group, partitions split: {assigned}"
    assert sorted(seen) == sorted(v for *_, v in reports), "each record read once"


def test_idempotent_producers_that_start_from_different_brokers_never_share_a_producer_id(cluster):
    """Producer ids come in blocks from the controller (KIP-730), each handed out once: two
    idempotent producers that got their ids from different brokers write to one partition, and
    neither's records are taken for the other's duplicates."""
    ok(tool("kafka-topics.sh", "--bootstrap-server", cluster.nodes[1].bootstrap, "--create", "--topic", "shared",
            "--partitions", "1", "--replication-factor", "1"))
    reports = []
    for i in IDS:
        reports += produce(cluster.nodes[i].bootstrap, "shared", 10)
    assert all(err is None for err, *_ in reports), reports
    assert len({offset for _, _, offset, _ in reports}) == 30, "every record has its own offset"
    assert sorted(consume_all(cluster.nodes[2].bootstrap, "shared", 1, 30)) == sorted(v for *_, v in reports)


def test_topic_configs_change_through_the_controller_and_every_broker_describes_them(cluster):
    n1, n2, n3 = (cluster.nodes[i] for i in IDS)
    ok(tool("kafka-topics.sh", "--bootstrap-server", n1.bootstrap, "--create", "--topic", "tuned",
            "--partitions", "1", "--replication-factor", "1", "--config", "retention.ms=600000"))
    ok(tool("kafka-configs.sh", "--bootstrap-server", n2.bootstrap, "--alter", "--entity-type", "topics",
            "--entity-name", "tuned", "--add-config", "retention.bytes=1048576,segment.ms=3600000"))
    bad = tool("kafka-configs.sh", "--bootstrap-server", n2.bootstrap, "--alter", "--entity-type", "topics",
               "--entity-name", "tuned", "--add-config", "retention.ms=soon")
    assert bad.returncode != 0 and "retention.ms" in bad.stdout + bad.stderr

    def described(node) -> str:
        return ok(tool("kafka-configs.sh", "--bootstrap-server", node.bootstrap, "--describe", "--entity-type",
                       "topics", "--entity-name", "tuned"))

    # Every broker, whether it hosts the topic or not, describes the cluster's configs.
    for node in (n1, n2, n3):
        poll_until(lambda node=node: "retention.bytes=1048576" in described(node), 10, "the change everywhere")
        out = described(node)
        assert "retention.ms=600000" in out and "segment.ms=3600000" in out, out
    ok(tool("kafka-configs.sh", "--bootstrap-server", n3.bootstrap, "--alter", "--entity-type", "topics",
            "--entity-name", "tuned", "--delete-config", "retention.bytes"))
    poll_until(lambda: "retention.bytes" not in described(n1), 10, "the override removed everywhere")
