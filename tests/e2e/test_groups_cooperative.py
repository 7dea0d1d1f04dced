"""Incremental cooperative rebalancing (KIP-429) with librdkafka's cooperative-sticky assignor:
two members share six partitions, a third joins while messages keep coming. The first two only
give up the partitions that move (incremental revoke), keep the rest throughout, and nothing is lost."""

import threading
import time
from collections import Counter

from e2e_lib import poll_until, unique_topic
from groups_lib import (check_exactly_once, create_topic, describe_group, members, messages, only,  # noqa: F401
                        produce, wait_all)

PARTITIONS = 6
STRATEGY = "cooperative-sticky"


def cover(ws):
    asg = [w.assignment() for w in ws]
    if any(not a for a in asg):
        return False
    return sum(len(a) for a in asg) == PARTITIONS and set().union(*asg) == set(range(PARTITIONS))


def test_cooperative_sticky_third_member_joins(broker, members):
    topic = unique_topic("grp-coop")
    group = f"g-{topic}"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    m1 = members.python("ck", "coop-1", topic, group, strategy=STRATEGY)
    m2 = members.python("ck", "coop-2", topic, group, strategy=STRATEGY)
    wait_all([m1, m2], lambda: cover([m1, m2]) and len(m1.assignment()) == 3, 30, "two members, 3 partitions each")
    desc = describe_group(broker.bootstrap, group)
    assert desc["protocol_data"] == STRATEGY and desc["group_state"] == "Stable", desc
    before = {w.name: w.assignment() for w in (m1, m2)}
    marks = {w.name: len(w.rebalance_events()) for w in (m1, m2)}

    # Keep producing while the third member joins.
    stream = messages("coop", 240)
    errors = []

    def feed():
        try:
            for i in range(0, len(stream), 20):
                produce(broker.bootstrap, topic, stream[i:i + 20])
                time.sleep(0.05)
        except Exception as e:  # noqa: BLE001 - reported by the test thread
            errors.append(e)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        poll_until(lambda: stream[19].offset is not None or errors, 30, "the first produced batch")
        m3 = members.python("ck", "coop-3", topic, group, strategy=STRATEGY)
        wait_all([m1, m2, m3], lambda: cover([m1, m2, m3]) and all(len(w.assignment()) == 2 for w in (m1, m2, m3)),
                 30, "three members, 2 partitions each")
    finally:
        feeder.join(timeout=60)
    assert not errors, f"producer failed: {errors[0]}"
    wait_all([m1, m2, m3], lambda: len(only(m1.got() + m2.got() + m3.got(), stream)) >= len(stream), 30,
             "the whole stream")

    # Incremental: each old member lost exactly the partition that moved and never had an empty
    # assignment; what it kept it had all along (sticky). The newcomer only got assignments.
    for w in (m1, m2):
        evs = w.rebalance_events()[marks[w.name]:]
        kinds = [e.kind for e in evs]
        assert "REVOKE" in kinds, f"{w.name}: no incremental revoke callback: {[(e.kind, e.fields) for e in evs]}"
        assert "LOST" not in kinds, f"{w.name}: partitions lost: {[(e.kind, e.fields) for e in evs]}"
        revoked = {int(p) for e in evs if e.kind == "REVOKE" for p in e.fields[1].split(",") if p}
        assert len(revoked) == 1, f"{w.name}: revoked {revoked}, expected exactly one partition to move"
        assert w.assignment() == before[w.name] - revoked, f"{w.name}: {before[w.name]} -> {w.assignment()}"
        for e in evs:
            assert e.fields[2], f"{w.name}: assignment went empty during the rebalance (eager?): {e.kind} {e.fields}"
    evs3 = m3.rebalance_events()
    assert evs3 and all(e.kind == "ASSIGN" for e in evs3 if e.fields[1]), [(e.kind, e.fields) for e in evs3]
    moved = set().union(*[before[w.name] - w.assignment() for w in (m1, m2)])
    assert m3.assignment() == moved, f"newcomer got {m3.assignment()}, moved partitions were {moved}"

    # No loss; a message may come twice only on a partition that changed owner (at-least-once).
    got = only(m1.got() + m2.got() + m3.got(), stream)
    counts = Counter(g.value for g in got)
    dup_parts = {g.partition for g in got if counts[g.value] > 1}
    assert dup_parts <= moved, f"duplicates on partitions that did not move: {dup_parts - moved}"
    check_exactly_once(stream, list({g.value: g for g in got}.values()), "stream during the cooperative rebalance")
    for w in (m1, m2, m3):
        assert not w.of("ERROR"), f"{w.name}: {w.errors()[:5]}"
