"""Static membership (KIP-345): a member with group.instance.id that restarts within its session
timeout gets its partitions back without a rebalance. The other member must see nothing: no
rebalance callback, no new generation (the Java member reports groupMetadata().generationId())."""

import os
import time

import pytest

from e2e_lib import unique_topic
from groups_lib import (check_exactly_once, create_topic, describe_group, members, messages, only,  # noqa: F401
                        produce, wait_all)

PARTITIONS = 4
STATIC_SESSION_TIMEOUT_MS = 30000  # the restart (JVM start included) fits well inside
QUIET_WINDOW_S = 4.0  # the observer heartbeats every second: a rebalance would reach it within this

# Regression cases: the 02:46 build of commit 5641ff3 rebalanced (a) whenever the restarted static
# member had been the leader, and (b) whenever its JoinGroup metadata was not byte-identical to the
# stored one (the Java client's ConsumerProtocol v3 subscription carries its generation id: e.g. 3
# before, -1 after the restart). Kafka (GroupCoordinator.updateStaticMemberThenRebalanceOrCompleteJoin)
# only checks that a Stable group's selected protocol would not change. Fixed in 9d913a7.


def cover(ws, parts):
    asg = [w.assignment() for w in ws]
    if any(not a for a in asg):
        return False
    return sum(len(a) for a in asg) == len(parts) and set().union(*asg) == set(parts)


def start_static(members, client, name, topic, group):
    if client == "ck":
        return members.python("ck", name, topic, group, instance_id="static-1",
                              session_timeout_ms=STATIC_SESSION_TIMEOUT_MS, heartbeat_ms=1000,
                              debug=os.environ.get("E2E_RDKAFKA_DEBUG"))
    return members.java(name, topic, group, {"group.instance.id": "static-1",
                                             "session.timeout.ms": STATIC_SESSION_TIMEOUT_MS})


def start_observer(members, static_client, topic, group):
    # The observer is the other kind of client: Java reports generations; confluent-kafka callbacks.
    if static_client == "ck":
        return members.java("observer", topic, group)
    return members.python("ck", "observer", topic, group, debug=os.environ.get("E2E_RDKAFKA_DEBUG"))


def generations(w):
    return [int(e.fields[0]) for e in w.of("GEN") if int(e.fields[0]) > 0]


# history "rebalanced": a third member came and went before the restart, so the static member
# rejoined at least once while owning partitions (what a long-running member has been through).
@pytest.mark.parametrize("static_client,role,how,history", [
    ("ck", "follower", "kill", "fresh"),
    ("ck", "follower", "close", "rebalanced"),
    ("ck", "leader", "kill", "fresh"),
    ("java", "follower", "close", "fresh"),
    ("java", "follower", "close", "rebalanced"),
    ("java", "leader", "close", "fresh"),
])
def test_static_member_restart_keeps_assignment(broker, members, static_client, role, how, history):
    topic = unique_topic(f"grp-static-{static_client}")
    group = f"g-{topic}"
    create_topic(broker.bootstrap, topic, PARTITIONS)

    # Join order decides the leader: the first member to join an empty group leads it.
    if role == "leader":
        static = start_static(members, static_client, "static", topic, group)
        wait_all([static], lambda: static.assignment() == set(range(PARTITIONS)), 30, "the static member alone")
        observer = start_observer(members, static_client, topic, group)
    else:
        observer = start_observer(members, static_client, topic, group)
        wait_all([observer], lambda: observer.assignment() == set(range(PARTITIONS)), 30, "the observer alone")
        static = start_static(members, static_client, "static", topic, group)
    wait_all([static, observer], lambda: cover([static, observer], range(PARTITIONS)), 30, "two members")
    if history == "rebalanced":
        guest = members.python("kpy", "guest", topic, group)
        wait_all([static, observer, guest], lambda: cover([static, observer, guest], range(PARTITIONS)), 30,
                 "three members")
        assert guest.close() == 0, f"guest did not close cleanly:\n{guest.log_tail()}"
        wait_all([static, observer], lambda: cover([static, observer], range(PARTITIONS)), 30,
                 "two members after the guest left")

    first = messages("static1", 60)
    produce(broker.bootstrap, topic, first)
    wait_all([static, observer], lambda: len(only(static.got() + observer.got(), first)) >= len(first), 30,
             "the first batch")
    kept = static.assignment()
    before = describe_group(broker.bootstrap, group)
    ids_before = {m["group_instance_id"]: m["member_id"] for m in before["members"]}
    assert before["group_state"] == "Stable" and len(before["members"]) == 2, before
    assert "static-1" in ids_before, f"static member not described with its instance id: {before['members']}"
    observer_events = len(observer.rebalance_events())
    observer_gens = generations(observer) or generations(static)
    gen_before = observer_gens[-1] if observer_gens else None

    # Restart the static member: kill -9, or a clean close (static members send no LeaveGroup).
    if how == "kill":
        static.kill()
    else:
        assert static.close() == 0, f"static member did not close cleanly:\n{static.log_tail()}"
    t_restart = time.monotonic()
    static2 = start_static(members, static_client, "static-restarted", topic, group)
    wait_all([static2, observer], lambda: bool(static2.assignment()), 20, "the restarted static member's assignment")
    took = time.monotonic() - t_restart

    # Nothing may happen to the observer for a few of its heartbeats.
    deadline = time.monotonic() + QUIET_WINDOW_S
    while time.monotonic() < deadline and len(observer.rebalance_events()) == observer_events:
        time.sleep(0.05)
    new_events = [(e.kind, e.fields) for e in observer.rebalance_events()[observer_events:]]
    stored = [m["member_metadata"] for m in before["members"] if m["group_instance_id"] == "static-1"]
    assert not new_events, (f"the observer went through a rebalance when the static member restarted: "
                            f"{new_events}; static member before {kept}, after {static2.assignment()}; "
                            f"its subscription stored before the restart: {stored}")
    assert static2.assignment() == kept, f"static member had {kept}, got {static2.assignment()} after restart"
    if gen_before is not None:
        later = generations(observer if static_client == "ck" else static2)
        assert later and later[-1] == gen_before, f"generation {gen_before} before the restart, now {later}"
    after = describe_group(broker.bootstrap, group)
    ids_after = {m["group_instance_id"]: m["member_id"] for m in after["members"]}
    assert after["group_state"] == "Stable" and len(after["members"]) == 2, after
    observer_id = [m for i, m in ids_before.items() if i != "static-1"]
    assert [m for i, m in ids_after.items() if i != "static-1"] == observer_id, "observer's member id changed"
    assert ids_after.get("static-1"), after["members"]

    # The restarted member resumes from the committed offsets of its partitions.
    second = messages("static2", 60)
    produce(broker.bootstrap, topic, second)
    wait_all([static2, observer], lambda: len(only(static2.got() + observer.got(), second)) >= len(second), 30,
             "the second batch")
    check_exactly_once(first, only(static.got() + observer.got(), first), "before the restart")
    check_exactly_once(second, only(static2.got() + observer.got(), second), "after the restart")
    assert not only(static2.got(), first), "the restarted static member re-read committed messages"
    assert took < 10, f"restarted static member took {took:.1f}s to get its assignment back"
