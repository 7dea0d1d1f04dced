"""Group admin APIs through kafka-python's admin client: ListGroups, DescribeGroups,
OffsetFetch (batched v8), OffsetDelete (KIP-496) and DeleteGroups, against groups with and
without live members."""

import pytest
from kafka import TopicPartition

from e2e_lib import unique_topic
from groups_lib import create_topic, describe_group, kpy_admin, members, messages, produce, wait_all  # noqa: F401



def ends_of(sent):
    ends = {}
    for m in sent:
        ends[m.partition] = max(ends.get(m.partition, 0), m.offset + 1)
    return ends


def consume_and_leave(members, name, topic, group, sent):
    w = members.python("ck", name, topic, group)
    wait_all([w], lambda: w.committed() == ends_of(sent), 30, f"{name} to consume and commit everything")
    assert w.close() == 0, f"{name} did not close cleanly:\n{w.log_tail()}"


def group_offsets(admin, group):
    return {(tp.topic, tp.partition): om.offset for tp, om in admin.list_group_offsets({group: None})[group].items()}


def error_names(result):
    return {(tp.topic, tp.partition): err.__name__ for tp, err in result.items()}


def test_delete_group_lifecycle(broker, members):
    topic = unique_topic("grp-admin")
    group = f"g-{topic}"
    create_topic(broker.bootstrap, topic, 3)
    sent = messages("admin", 30)
    produce(broker.bootstrap, topic, sent)
    live = members.python("ck", "live", topic, group)
    wait_all([live], lambda: live.committed() == ends_of(sent), 30, "the member to consume everything")

    admin = kpy_admin(broker.bootstrap)
    try:
        assert group in {g["group_id"] for g in admin.list_groups()}
        desc = describe_group(broker.bootstrap, group)
        assert desc["group_state"] == "Stable" and len(desc["members"]) == 1, desc
        member = desc["members"][0]
        assert member["client_id"] == "live" and member["member_assignment"], member

        # A group with a live member can neither be deleted nor lose the offsets it consumes.
        assert admin.delete_groups([group]) == {group: "NonEmptyGroupError"}
        res = admin.delete_group_offsets(group, [TopicPartition(topic, p) for p in range(3)])
        assert set(error_names(res).values()) == {"GroupSubscribedToTopicError"}, error_names(res)
        assert group_offsets(admin, group) == {(topic, p): o for p, o in ends_of(sent).items()}

        assert live.close() == 0, f"member did not close cleanly:\n{live.log_tail()}"
        assert describe_group(broker.bootstrap, group)["group_state"] == "Empty"

        # Empty: OffsetDelete removes exactly the partitions asked for.
        res = admin.delete_group_offsets(group, [TopicPartition(topic, 0)])
        assert error_names(res) == {(topic, 0): "NoError"}, error_names(res)
        assert group_offsets(admin, group) == {(topic, p): o for p, o in ends_of(sent).items() if p != 0}

        assert admin.delete_groups([group]) == {group: "OK"}
        assert group not in {g["group_id"] for g in admin.list_groups()}
        assert group_offsets(admin, group) == {}
        assert admin.delete_groups([group]) == {group: "GroupIdNotFoundError"}
    finally:
        admin.close()

    # A new member of the deleted group starts from auto.offset.reset (earliest) again.
    again = members.python("ck", "again", topic, group)
    wait_all([again], lambda: len(again.got()) >= len(sent), 30, "a new member re-reading everything")
    assert sorted(g.value for g in again.got()) == sorted(m.value for m in sent)


def test_offset_delete_of_unsubscribed_topic_in_active_group(broker, members):
    old_topic, new_topic = unique_topic("grp-old"), unique_topic("grp-new")
    group = f"g-{old_topic}"
    create_topic(broker.bootstrap, old_topic, 3)
    create_topic(broker.bootstrap, new_topic, 3)
    old_sent, new_sent = messages("old", 30), messages("new", 30)
    produce(broker.bootstrap, old_topic, old_sent)
    produce(broker.bootstrap, new_topic, new_sent)
    # The group once consumed old_topic; now its only member is subscribed to new_topic.
    consume_and_leave(members, "old", old_topic, group, old_sent)
    live = members.python("ck", "live", new_topic, group)
    wait_all([live], lambda: live.committed() == ends_of(new_sent), 30, "the member on the new topic")

    admin = kpy_admin(broker.bootstrap)
    try:
        res = admin.delete_group_offsets(group, [TopicPartition(old_topic, p) for p in range(3)] +
                                         [TopicPartition(new_topic, 0)])
        assert error_names(res) == {(old_topic, 0): "NoError", (old_topic, 1): "NoError", (old_topic, 2): "NoError",
                                    (new_topic, 0): "GroupSubscribedToTopicError"}, error_names(res)
        assert group_offsets(admin, group) == {(new_topic, p): o for p, o in ends_of(new_sent).items()}
    finally:
        admin.close()
