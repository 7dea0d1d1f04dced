"""Join latency of a fresh member of an idle group (the only wait should be the coordinator's
initial rebalance delay of 3 s), and the Java client as a group consumer (subscribe, poll,
commitSync) reading everything."""

import pytest

from e2e_lib import unique_topic
from groups_lib import (check_exactly_once, create_topic, describe_group, kpy_admin, members,  # noqa: F401
                        messages, only, produce, wait_all)

INITIAL_REBALANCE_DELAY_MS = 3000
JOIN_BUDGET_MS = INITIAL_REBALANCE_DELAY_MS + 1000


def start(members, client, name, topic, group):
    if client == "java":
        return members.java(name, topic, group)
    if client == "kjs":
        return members.kafkajs(name, topic, group)
    return members.python(client, name, topic, group)


def first_assignment_ms(w):
    """Milliseconds from subscribe() to the first non-empty assignment, as the member measured it."""
    for e in w.of("ASSIGN"):
        if e.fields[2]:
            return int(e.fields[0])
    return None


@pytest.mark.parametrize("group_state", ["new", "empty"])
@pytest.mark.parametrize("client", ["kpy", "ck", "java", "kjs"])
def test_join_within_initial_rebalance_delay(broker, members, client, group_state):
    topic = unique_topic(f"grp-join-{client}")
    group = f"g-{topic}"
    create_topic(broker.bootstrap, topic, 3)
    if group_state == "empty":
        # The group exists, with committed offsets, but nobody is in it any more.
        produce(broker.bootstrap, topic, messages("join", 12))
        old = start(members, client, "previous", topic, group)
        wait_all([old], lambda: len(old.got()) >= 12 and sum(old.committed().values()) >= 12, 30, "a first member")
        assert old.close() == 0, f"first member did not close cleanly:\n{old.log_tail()}"
        desc = describe_group(broker.bootstrap, group)
        assert desc["group_state"] == "Empty", desc

    w = start(members, client, "joiner", topic, group)
    wait_all([w], lambda: first_assignment_ms(w) is not None, 30, "the first assignment")
    took = first_assignment_ms(w)
    print(f"{client} ({group_state} group): assigned {took} ms after subscribe()")
    assert w.assignment() == {0, 1, 2}, w.assignment()
    assert took <= JOIN_BUDGET_MS, (
        f"{client}: {took} ms from subscribe() to the assignment of a fresh member of an idle ({group_state}) "
        f"group; expected at most the initial rebalance delay ({INITIAL_REBALANCE_DELAY_MS} ms) + 1 s")
    assert took >= INITIAL_REBALANCE_DELAY_MS - 500, (
        f"{client}: assigned after {took} ms, before the initial rebalance delay could have passed")


def test_java_group_consumer_reads_everything(broker, members):
    topic = unique_topic("grp-java")
    group = f"g-{topic}"
    create_topic(broker.bootstrap, topic, 3)
    sent = messages("java-grp", 120)
    produce(broker.bootstrap, topic, sent)

    ws = [members.java("java-1", topic, group), members.java("java-2", topic, group)]
    wait_all(ws, lambda: len(only(ws[0].got() + ws[1].got(), sent)) >= len(sent), 45, "everything consumed")
    ends = {}
    for m in sent:
        ends[m.partition] = max(ends.get(m.partition, 0), m.offset + 1)
    wait_all(ws, lambda: {p: max(w.committed().get(p, 0) for w in ws) for p in ends} == ends, 15,
             "commitSync of everything")
    asg = [w.assignment() for w in ws]
    assert all(asg) and not (asg[0] & asg[1]) and asg[0] | asg[1] == {0, 1, 2}, f"assignments {asg}"
    check_exactly_once(sent, only(ws[0].got() + ws[1].got(), sent), "two Java members")
    for w in ws:
        gens = [int(e.fields[0]) for e in w.of("GEN")]
        assert gens and gens[-1] > 0, f"{w.name}: generations {gens}"
    for w in ws:
        assert not w.of("CERR") and not w.of("ERROR"), f"{w.name}: {w.errors()[:5]}"
        assert w.close() == 0, f"{w.name} did not close cleanly:\n{w.log_tail()}"

    admin = kpy_admin(broker.bootstrap)
    try:
        committed = {tp.partition: om.offset for tp, om in admin.list_group_offsets({group: None})[group].items()}
    finally:
        admin.close()
    assert committed == ends, f"committed {committed}, high watermarks {ends}"
    desc = describe_group(broker.bootstrap, group)
    assert desc["group_state"] == "Empty" and not desc["members"], desc
