"""Group membership across a broker restart: the restored group keeps its members, and a
member joining after the restart must get a member id no one in the group has."""

import os

import pytest

from e2e_lib import unique_topic
from groups_lib import (check_exactly_once, create_topic, describe_group, members, messages, only,  # noqa: F401
                        produce, wait_all)

# Regression test: in the 02:46 build of commit 5641ff3 member ids were derived from (client.id,
# group, a per-process counter that restarted at 1), so after a broker restart the first new member
# of a restored group got the id of the member that had joined first before the restart; JoinGroup
# then replaced that live member, listed it twice to the leader, and both clients rebalanced every
# second with the same assignment. Kafka uses client.id + "-" + a random UUID. Fixed in cec76c8.


def disjoint_cover(ws, parts):
    asg = [w.assignment() for w in ws]
    if any(not a for a in asg):
        return False
    return sum(len(a) for a in asg) == len(parts) and set().union(*asg) == set(parts)


@pytest.mark.parametrize("client", ["ck", "kpy"])
def test_new_member_after_restart_gets_a_fresh_id(broker, members, client):
    topic = unique_topic(f"grp-restart-{client}")
    group = f"g-{topic}"
    create_topic(broker.bootstrap, topic, 3)
    # The same client.id for both members, as with default client ids ("rdkafka", "kafka-python-...").
    a = members.python(client, "a", topic, group, client_id="app", debug=os.environ.get("E2E_RDKAFKA_DEBUG"))
    wait_all([a], lambda: a.assignment() == {0, 1, 2}, 30, "the first member's assignment")
    (a_id,) = [m["member_id"] for m in describe_group(broker.bootstrap, group)["members"]]

    code = broker.stop()
    assert code == 0, f"SIGTERM should be a clean shutdown, broker exited with {code}"
    broker.start()

    # The restored group still has the first member; it keeps consuming.
    first = messages("restart1", 30)
    produce(broker.bootstrap, topic, first)
    wait_all([a], lambda: len(only(a.got(), first)) >= len(first), 30, "the first member after the restart")

    b = members.python(client, "b", topic, group, client_id="app", debug=os.environ.get("E2E_RDKAFKA_DEBUG"))
    wait_all([a, b], lambda: bool(b.assignment()), 30, "the second member's first assignment")
    ids = [m["member_id"] for m in describe_group(broker.bootstrap, group)["members"]]
    assert len(ids) == 2 and len(set(ids)) == 2, f"member ids after the second join: {ids} (first member: {a_id})"
    wait_all([a, b], lambda: disjoint_cover([a, b], range(3)), 30, "both members sharing the partitions")

    second = messages("restart2", 60)
    produce(broker.bootstrap, topic, second)
    wait_all([a, b], lambda: len(only(a.got() + b.got(), second)) >= len(second), 30, "the second batch")
    check_exactly_once(first, only(a.got() + b.got(), first), "before the second member")
    check_exactly_once(second, only(a.got() + b.got(), second), "with two members")
