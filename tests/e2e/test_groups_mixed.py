"""Classic consumer groups with mixed clients: KafkaJS, confluent-kafka and kafka-python as
members of one group, then failover when one leaves (clean close) or dies (kill -9, found by
the session timeout); and two groups on one topic."""

import time

import pytest

from e2e_lib import unique_topic
from groups_lib import (check_exactly_once, create_topic, describe_group, kpy_admin, members,  # noqa: F401
                        messages, only, produce, wait_all)

SESSION_TIMEOUT_MS = 6000
# After the member is gone: rejoin of the others (heartbeat 1 s), the assignment, and the first fetch.
REBALANCE_ALLOWANCE_S = 8.0


def start_three(members, topic, group):
    return {
        "kjs": members.kafkajs("kjs", topic, group, session_timeout_ms=SESSION_TIMEOUT_MS),
        "ck": members.python("ck", "ck", topic, group, session_timeout_ms=SESSION_TIMEOUT_MS),
        "kpy": members.python("kpy", "kpy", topic, group, session_timeout_ms=SESSION_TIMEOUT_MS),
    }


def one_partition_each(ws, parts):
    asg = [w.assignment() for w in ws]
    if any(a is None or len(a) != 1 for a in asg):
        return False
    return set().union(*asg) == set(parts)


def partitions_covered(ws, parts):
    asg = [w.assignment() for w in ws]
    if any(a is None for a in asg):
        return False
    return sum(len(a) for a in asg) == len(parts) and set().union(*asg) == set(parts)


def all_consumed_and_committed(ws, sent):
    vals = {m.value for m in sent}
    got = [g for w in ws for g in w.got() if g.value in vals]
    if len(got) < len(sent):
        return False
    ends = {}
    for m in sent:
        ends[m.partition] = max(ends.get(m.partition, 0), m.offset + 1)
    committed = {}
    for w in ws:
        for p, o in w.committed().items():
            committed[p] = max(committed.get(p, 0), o)
    return all(committed.get(p, 0) >= o for p, o in ends.items())


@pytest.mark.parametrize("how", ["close", "kill"])
@pytest.mark.parametrize("stopped", ["kjs", "ck", "kpy"])
def test_mixed_clients_share_and_fail_over(broker, members, stopped, how):
    topic = unique_topic("grp-mix")
    group = f"g-{topic}"
    create_topic(broker.bootstrap, topic, 3)
    ws = start_three(members, topic, group)
    everyone = list(ws.values())

    # 1. Three members, three partitions: one each (KafkaJS forces the "roundrobin" protocol).
    wait_all(everyone, lambda: one_partition_each(everyone, range(3)), 45, "one partition per member")
    desc = describe_group(broker.bootstrap, group)
    assert desc["error"] is None, desc
    assert desc["group_state"] == "Stable", desc
    assert desc["protocol_type"] == "consumer" and desc["protocol_data"] == "roundrobin", desc
    assert len(desc["members"]) == 3, desc["members"]

    # 2. Messages to all partitions: each consumed exactly once, by the owner of its partition.
    first = messages("mix1", 60)
    produce(broker.bootstrap, topic, first)
    assert len({m.partition for m in first}) == 3, "test bug: keys must cover all partitions"
    wait_all(everyone, lambda: all_consumed_and_committed(everyone, first), 30, "first batch consumed + committed")
    check_exactly_once(first, [g for w in everyone for g in only(w.got(), first)], "before the failover")
    for name, w in ws.items():
        (p,) = w.assignment()
        assert {g.partition for g in only(w.got(), first)} <= {p}, f"{name} consumed outside its partition {p}"

    # 3. One member leaves (clean close: LeaveGroup) or dies (kill -9: only the session timeout tells).
    victim = ws[stopped]
    (orphan,) = victim.assignment()
    survivors = [w for n, w in ws.items() if n != stopped]
    t_stop = time.monotonic()
    if how == "close":
        assert victim.close() == 0, f"{stopped} did not close cleanly:\n{victim.log_tail()}"
    else:
        victim.kill()

    # Messages for the orphaned partition only: someone else must pick it up from the committed offset.
    second = messages("mix2", 20)
    produce(broker.bootstrap, topic, second, partition=orphan)
    limit = SESSION_TIMEOUT_MS / 1000 + REBALANCE_ALLOWANCE_S if how == "kill" else REBALANCE_ALLOWANCE_S
    wait_all(survivors, lambda: all_consumed_and_committed(survivors, second), limit + 20,
             f"partition {orphan} of the {'closed' if how == 'close' else 'killed'} {stopped} to be taken over")
    took = max(e.t for w in survivors for e in w.of("GOT") if e.fields[3] in {m.value for m in second}) - t_stop
    print(f"partition {orphan} of {stopped} ({how}) taken over after {took:.1f}s")
    assert took <= limit, (f"partition {orphan} was taken over {took:.1f}s after the {how} of {stopped}, "
                           f"expected within {limit:.0f}s")
    wait_all(survivors, lambda: partitions_covered(survivors, range(3)), 15, "survivors covering all partitions")

    # 4. The group keeps working with two members.
    third = messages("mix3", 30)
    produce(broker.bootstrap, topic, third)
    wait_all(survivors, lambda: all_consumed_and_committed(survivors, third), 30, "third batch consumed")

    all_got = [g for w in everyone for g in w.got()]
    check_exactly_once(first, only(all_got, first), "first batch, whole test")
    check_exactly_once(second, only(all_got, second), "orphaned partition after the failover")
    check_exactly_once(third, only(all_got, third), "after the failover")
    assert not only(victim.got(), second + third), f"the stopped {stopped} still consumed"
    for w in everyone:
        assert not w.of("ERROR"), f"{w.name} reported errors: {w.errors()[:5]}\n{w.log_tail()}"
    desc = describe_group(broker.bootstrap, group)
    assert desc["group_state"] == "Stable" and len(desc["members"]) == 2, desc


def test_two_groups_each_get_everything(broker, members):
    topic = unique_topic("grp-two")
    create_topic(broker.bootstrap, topic, 3)
    group_a, group_b = f"ga-{topic}", f"gb-{topic}"
    a = [members.python("ck", "a-ck", topic, group_a), members.python("kpy", "a-kpy", topic, group_a)]
    b = [members.kafkajs("b-kjs", topic, group_b), members.python("ck", "b-ck", topic, group_b)]
    wait_all(a + b, lambda: partitions_covered(a, range(3)) and partitions_covered(b, range(3)), 45,
             "both groups assigned")

    sent = messages("two", 90)
    produce(broker.bootstrap, topic, sent)
    wait_all(a + b, lambda: all_consumed_and_committed(a, sent) and all_consumed_and_committed(b, sent), 30,
             "both groups consumed everything")
    check_exactly_once(sent, [g for w in a for g in w.got()], "group A")
    check_exactly_once(sent, [g for w in b for g in w.got()], "group B")

    for w in a + b:
        assert w.close() == 0, f"{w.name} did not close cleanly:\n{w.log_tail()}"
    admin = kpy_admin(broker.bootstrap)
    try:
        listed = {g["group_id"] for g in admin.list_groups()}
        assert {group_a, group_b} <= listed, listed
        offsets = admin.list_group_offsets({group_a: None, group_b: None})
    finally:
        admin.close()
    ends = {}
    for m in sent:
        ends[m.partition] = max(ends.get(m.partition, 0), m.offset + 1)
    for g in (group_a, group_b):
        got = {tp.partition: om.offset for tp, om in offsets[g].items()}
        assert got == ends, f"{g}: committed {got}, expected the high watermarks {ends}"
