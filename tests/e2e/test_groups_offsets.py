"""Committed offsets: a restarted consumer resumes exactly at the committed offset, also after
the broker restarted (SIGTERM) or crashed (kill -9) right after acknowledging the commit; and
kcat's balanced consumer (-G, librdkafka 2.0.2) reads everything and resumes where it left."""

import os
import shutil
import subprocess
import time
from collections import Counter

import pytest

from e2e_lib import Got, text, unique_topic
from groups_lib import check_exactly_once, create_topic, kpy_admin, messages, produce

SESSION_TIMEOUT_MS = 6000
KCAT = os.environ.get("KCAT", "kcat")


class Ck:
    """confluent-kafka consumer, manual commits only."""

    def __init__(self, bootstrap, topic, group, client_id):
        from confluent_kafka import Consumer
        self.topic = topic
        self.assigned = []
        conf = {"bootstrap.servers": bootstrap, "group.id": group, "client.id": client_id,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False, "session.timeout.ms": SESSION_TIMEOUT_MS,
                "heartbeat.interval.ms": 1000, "fetch.wait.max.ms": 200}
        if os.environ.get("E2E_RDKAFKA_DEBUG"):  # e.g. cgrp,protocol: librdkafka's log goes to stderr
            conf["debug"] = os.environ["E2E_RDKAFKA_DEBUG"]
        self.c = Consumer(conf)
        self.c.subscribe([topic], on_assign=lambda _c, parts: self.assigned.append(sorted(p.partition for p in parts)))

    def poll(self):
        out = []
        for m in self.c.consume(num_messages=100, timeout=0.2):
            assert not m.error(), f"consume error: {m.error()}"
            out.append(Got(m.partition(), m.offset(), text(m.key()), text(m.value())))
        return out

    def commit(self, offsets):
        from confluent_kafka import TopicPartition
        res = self.c.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in offsets.items()],
                            asynchronous=False)
        bad = [(tp.partition, tp.error) for tp in res if tp.error]
        assert not bad, f"commit errors: {bad}"

    def close(self):
        self.c.close()


class Kpy:
    """kafka-python consumer, manual commits only."""

    def __init__(self, bootstrap, topic, group, client_id):
        from kafka import ConsumerRebalanceListener, KafkaConsumer
        self.topic = topic
        self.assigned = []
        assigned = self.assigned

        class L(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                pass

            def on_partitions_assigned(self, parts):
                assigned.append(sorted(p.partition for p in parts))

        self.c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, client_id=client_id,
                               auto_offset_reset="earliest",
                               enable_auto_commit=False, session_timeout_ms=SESSION_TIMEOUT_MS,
                               heartbeat_interval_ms=1000, fetch_max_wait_ms=200, request_timeout_ms=30000)
        self.c.subscribe([topic], listener=L())

    def poll(self):
        return [Got(tp.partition, r.offset, text(r.key), text(r.value))
                for tp, rs in self.c.poll(timeout_ms=200).items() for r in rs]

    def commit(self, offsets):
        from kafka import OffsetAndMetadata, TopicPartition
        self.c.commit({TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})

    def close(self):
        self.c.close(autocommit=False)


CLIENTS = {"ck": Ck, "kpy": Kpy}


def committed_offsets(bootstrap, group, topic):
    admin = kpy_admin(bootstrap)
    try:
        offs = admin.list_group_offsets({group: None})[group]
    finally:
        admin.close()
    return {tp.partition: om.offset for tp, om in offs.items() if tp.topic == topic}


@pytest.mark.parametrize("restart", ["consumer", "broker-sigterm", "broker-kill9"])
@pytest.mark.parametrize("client", ["ck", "kpy"])
def test_resume_at_committed_offset(broker, client, restart):
    topic = unique_topic(f"grp-resume-{client}")
    group = f"g-{topic}"
    create_topic(broker.bootstrap, topic, 3)
    sent = messages("resume", 90)
    produce(broker.bootstrap, topic, sent)
    counts = Counter(m.partition for m in sent)
    assert len(counts) == 3 and min(counts.values()) >= 4, f"test bug: uneven spread {counts}"
    # Process only the first half of each partition; everything from `cut` on must come again.
    cut = {p: n // 2 for p, n in counts.items()}
    processed = [m for m in sent if m.offset < cut[m.partition]]
    rest = [m for m in sent if m.offset >= cut[m.partition]]

    # Distinct client ids: new member ids must not depend on them, but a broker bug that reuses
    # member ids after a restart has its own test (test_new_member_after_restart_gets_a_fresh_id).
    c1 = CLIENTS[client](broker.bootstrap, topic, group, "resume-first")
    closed = False
    try:
        seen = []
        deadline = time.monotonic() + 45
        # Poll until every message was fetched at least once (so the cut lies inside what was read).
        while len({(g.partition, g.offset) for g in seen}) < len(sent) and time.monotonic() < deadline:
            seen += c1.poll()
        assert len({(g.partition, g.offset) for g in seen}) == len(sent), (
            f"first consumer read {len(seen)} of {len(sent)} messages; assignments {c1.assigned}")
        assert c1.assigned and sorted(c1.assigned[-1]) == [0, 1, 2], c1.assigned
        check_exactly_once(sent, seen, "first consumer")
        c1.commit(cut)  # synchronous: returns once the broker acknowledged
        if restart != "consumer":
            # The broker goes down right after acknowledging the commit, with the member still in
            # the group; the consumer then closes while the broker is down (no LeaveGroup reaches
            # it), so the restarted coordinator must also expire the restored member by its session.
            if restart == "broker-kill9":
                broker.kill9()
            else:
                code = broker.stop()
                assert code == 0, f"SIGTERM should be a clean shutdown, broker exited with {code}"
            c1.close()
            closed = True
            broker.start()
    finally:
        if not closed:
            c1.close()

    assert committed_offsets(broker.bootstrap, group, topic) == cut, f"committed offsets after {restart}"

    # More messages after the restart, then a fresh member of the same group.
    more = messages("resume-more", 30)
    produce(broker.bootstrap, topic, more)
    c2 = CLIENTS[client](broker.bootstrap, topic, group, "resume-second")
    try:
        got = []
        deadline = time.monotonic() + 45
        while len(got) < len(rest) + len(more) and time.monotonic() < deadline:
            got += c2.poll()
        got += c2.poll()  # a last poll: duplicates would show up here
        assert c2.assigned and sorted(c2.assigned[-1]) == [0, 1, 2], c2.assigned
    finally:
        c2.close()

    redelivered = sorted((g.partition, g.offset) for g in got if (g.partition, g.offset) in
                         {(m.partition, m.offset) for m in processed})
    assert not redelivered, f"committed messages delivered again after {restart}: {redelivered[:10]}"
    first = {}
    for g in sorted(got, key=lambda g: g.offset):
        first.setdefault(g.partition, g.offset)
    assert first == cut, f"resumed at {first}, committed {cut} (restart: {restart})"
    check_exactly_once(rest + more, got, f"after {restart}")


# --- kcat -G --------------------------------------------------------------------------------

def kcat_group(bootstrap, group, topic, timeout=60):
    if shutil.which(KCAT) is None:
        pytest.fail(f"{KCAT} not found: run tests/e2e/install.sh (Debian package kcat)")
    # -G: balanced consumer (JoinGroup/SyncGroup/Heartbeat, offsets committed to the group);
    # -e: exit once every assigned partition reached its end. No -o: in -G mode kcat applies -o to
    # every assignment and so overrides the committed offsets; auto.offset.reset only applies
    # where nothing is committed.
    return subprocess.run([KCAT, "-b", bootstrap, "-G", group, topic, "-X", "auto.offset.reset=earliest", "-e", "-q",
                           "-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=1000",
                           "-X", "debug=cgrp", "-f", r"%p\t%o\t%k\t%s\n"],
                          capture_output=True, text=True, timeout=timeout)


def parse_kcat(out):
    got = []
    for line in out.splitlines():
        p, o, k, v = line.split("\t", 3)
        got.append(Got(int(p), int(o), k, v))
    return got


def test_kcat_balanced_consumer(broker):
    topic = unique_topic("grp-kcat")
    group = f"g-{topic}"
    create_topic(broker.bootstrap, topic, 3)
    sent = messages("kcat", 60)
    produce(broker.bootstrap, topic, sent)

    t0 = time.monotonic()
    run = kcat_group(broker.bootstrap, group, topic)
    assert run.returncode == 0, f"kcat -G exited {run.returncode}:\n{run.stderr[-4000:]}"
    errors = [line for line in run.stderr.splitlines() if line.startswith("% ERROR")]
    assert not errors, "kcat -G reported errors:\n" + "\n".join(errors[:10])
    check_exactly_once(sent, parse_kcat(run.stdout), "kcat -G")
    assert time.monotonic() - t0 < 30, f"kcat -G took {time.monotonic() - t0:.1f}s"

    # kcat commits on exit (auto commit + close): a second run reads only what is new.
    ends = {}
    for m in sent:
        ends[m.partition] = max(ends.get(m.partition, 0), m.offset + 1)
    assert committed_offsets(broker.bootstrap, group, topic) == ends, "kcat's committed offsets"
    more = messages("kcat-more", 30)
    produce(broker.bootstrap, topic, more)
    run2 = kcat_group(broker.bootstrap, group, topic)
    assert run2.returncode == 0, f"second kcat -G exited {run2.returncode}:\n{run2.stderr[-4000:]}"
    check_exactly_once(more, parse_kcat(run2.stdout), "second kcat -G run")


def consume_n(bootstrap, topic, group, n, timeout=30.0):
    """Up to n records for `group` (a fresh consumer), committed before it leaves."""
    consumer = Ck(bootstrap, topic, group, "recreate")
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += consumer.poll()
    if got:
        consumer.c.commit(asynchronous=False)
    consumer.c.close()
    return got


def test_a_recreated_topic_starts_without_the_deleted_topics_offsets(broker):
    """A group consumes and commits 10 records; the topic is deleted and created again with 10
    new records: the group reads all 10 new ones (Kafka deletes a deleted topic's offsets)."""
    from confluent_kafka.admin import AdminClient
    topic = unique_topic("grp-recreate")
    group = f"g-{topic}"
    create_topic(broker.bootstrap, topic, 1)
    produce(broker.bootstrap, topic, messages("first", 10))
    got = consume_n(broker.bootstrap, topic, group, 10)
    assert len(got) == 10, f"consumed {len(got)} of the first 10"

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for fut in admin.delete_topics([topic], operation_timeout=30, request_timeout=30).values():
        fut.result(timeout=30)
    deadline = time.monotonic() + 30
    while True:
        try:
            create_topic(broker.bootstrap, topic, 1)
            break
        except Exception:  # the deletion may still be on its way
            assert time.monotonic() < deadline, "the topic could not be created again"
            time.sleep(0.2)
    second = messages("second", 10)
    produce(broker.bootstrap, topic, second)

    got = consume_n(broker.bootstrap, topic, group, 10)
    assert sorted(g.value for g in got) == sorted(m.value for m in second), \
        f"after re-creation the group read {[g.value for g in got]}"
