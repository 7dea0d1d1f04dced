"""Group protocol corner cases no real client can be timed into, driven with hand-encoded
JoinGroup v5 / SyncGroup v3 requests (non-flexible versions every coordinator since Kafka 2.3
accepts), one TCP connection per member so that blocking JoinGroups can wait side by side."""

import socket
import struct
import threading
import time

import pytest

from e2e_lib import unique_topic
from groups_lib import create_topic

GROUP_PROTOCOL_TYPE = "consumer"
MEMBER_ID_REQUIRED = 79
REBALANCE_IN_PROGRESS = 27



def kstr(s):
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def kbytes(b):
    return struct.pack(">i", -1) if b is None else struct.pack(">i", len(b)) + b


class Reader:
    def __init__(self, data):
        self.d, self.p = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.d, self.p)
        self.p += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def str(self):
        n = self.take(">h")
        if n < 0:
            return None
        s = self.d[self.p:self.p + n].decode()
        self.p += n
        return s

    def bytes(self):
        n = self.take(">i")
        if n < 0:
            return None
        b = self.d[self.p:self.p + n]
        self.p += n
        return b


def subscription(topic):
    # ConsumerProtocolSubscription v0: version, topics, user data.
    return struct.pack(">h", 0) + struct.pack(">i", 1) + kstr(topic) + kbytes(None)


def assignment(topic, partitions):
    # ConsumerProtocolAssignment v0: version, [topic, [partition]], user data.
    return (struct.pack(">h", 0) + struct.pack(">i", 1) + kstr(topic) + struct.pack(">i", len(partitions))
            + b"".join(struct.pack(">i", p) for p in partitions) + kbytes(None))


class Member:
    """One connection speaking JoinGroup v5 and SyncGroup v3."""

    def __init__(self, bootstrap, group, topic, instance_id=None, client_id="spool-e2e-raw"):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.group, self.topic, self.instance_id, self.client_id = group, topic, instance_id, client_id
        self.member_id = ""
        self.corr = 0

    def close(self):
        self.sock.close()

    def _call(self, api_key, version, body):
        self.corr += 1
        req = struct.pack(">hhi", api_key, version, self.corr) + kstr(self.client_id) + body
        self.sock.sendall(struct.pack(">i", len(req)) + req)
        size = struct.unpack(">i", self._recv(4))[0]
        r = Reader(self._recv(size))
        assert r.take(">i") == self.corr, "correlation id mismatch"
        return r

    def _recv(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            buf += chunk
        return bytes(buf)

    def join(self):
        """JoinGroup v5 (retried once on MEMBER_ID_REQUIRED). Returns (error, generation, leader, members)."""
        for _ in range(2):
            body = (kstr(self.group) + struct.pack(">ii", 6000, 30000) + kstr(self.member_id)
                    + kstr(self.instance_id) + kstr(GROUP_PROTOCOL_TYPE)
                    + struct.pack(">i", 1) + kstr("range") + kbytes(subscription(self.topic)))
            r = self._call(11, 5, body)
            r.take(">i")  # throttle
            error, generation = r.take(">h"), r.take(">i")
            _protocol, leader, member_id = r.str(), r.str(), r.str()
            members = []
            for _ in range(r.take(">i")):
                members.append((r.str(), r.str(), r.bytes()))
            if member_id:
                self.member_id = member_id
            if error != MEMBER_ID_REQUIRED:
                return error, generation, leader, members
        raise AssertionError("MEMBER_ID_REQUIRED twice")

    def sync(self, generation, assignments=()):
        """SyncGroup v3. Returns (error, assignment bytes)."""
        body = (kstr(self.group) + struct.pack(">i", generation) + kstr(self.member_id) + kstr(self.instance_id)
                + struct.pack(">i", len(assignments))
                + b"".join(kstr(m) + kbytes(a) for m, a in assignments))
        r = self._call(14, 3, body)
        r.take(">i")  # throttle
        return r.take(">h"), r.bytes()


def in_thread(fn):
    out = {}

    def run():
        try:
            out["result"] = fn()
        except Exception as e:  # noqa: BLE001 - re-raised by the caller
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def result(t, out, timeout):
    t.join(timeout)
    assert not t.is_alive(), f"no answer within {timeout}s"
    if "error" in out:
        raise out["error"]
    return out["result"]


def test_static_member_replaced_while_leader_is_assigning(broker):
    """A static member restarts (new connection, empty member id, same instance id) after the
    JoinGroup round completed but before the leader's SyncGroup. The leader computed its
    assignment for the old member id, so that assignment cannot be handed to the new member id:
    Kafka starts a new rebalance here (the leader's SyncGroup gets REBALANCE_IN_PROGRESS and the
    restarted member's JoinGroup completes in the next generation). Whatever the coordinator does,
    the restarted member must not end up in a settled generation with nothing assigned."""
    topic = unique_topic("grp-raw")
    group = f"g-{topic}"
    create_topic(broker.bootstrap, topic, 4)
    leader = Member(broker.bootstrap, group, topic)
    static = Member(broker.bootstrap, group, topic, instance_id="raw-static")
    restarted = Member(broker.bootstrap, group, topic, instance_id="raw-static")
    try:
        # Round 1: both join during the initial rebalance delay; the first one leads.
        tl, ol = in_thread(leader.join)
        time.sleep(0.2)  # ordering only: the leader's JoinGroup reaches the coordinator first
        ts, os_ = in_thread(static.join)
        err, gen1, lead, members = result(tl, ol, 20)
        assert err == 0 and lead == leader.member_id and len(members) == 2, (err, lead, members)
        err_s, gen_s, _, _ = result(ts, os_, 20)
        assert err_s == 0 and gen_s == gen1
        old_static_id = static.member_id
        planned = {leader.member_id: [0, 1], old_static_id: [2, 3]}

        # The static member's process is replaced before the leader's SyncGroup.
        tr, orr = in_thread(restarted.join)
        tr.join(1.0)  # Kafka holds this JoinGroup until the next generation completes
        sync_err, _ = leader.sync(gen1, [(m, assignment(topic, ps)) for m, ps in planned.items()])

        if sync_err == REBALANCE_IN_PROGRESS:
            # Kafka's way: a new generation with the new member id in it.
            tl2, ol2 = in_thread(leader.join)
            err2, gen2, lead2, members2 = result(tl2, ol2, 20)
            err_r, gen_r, _, _ = result(tr, orr, 20)
            assert err2 == 0 and err_r == 0 and gen2 == gen_r > gen1, (err2, err_r, gen1, gen2, gen_r)
            ids = {m[0] for m in members2}
            assert ids == {leader.member_id, restarted.member_id}, (ids, leader.member_id, restarted.member_id)
            planned = {leader.member_id: [0, 1], restarted.member_id: [2, 3]}
            assert leader.sync(gen2, [(m, assignment(topic, ps)) for m, ps in planned.items()])[0] == 0
            gen_final = gen2
        else:
            assert sync_err == 0, f"leader's SyncGroup error {sync_err}"
            err_r, gen_final, _, _ = result(tr, orr, 20)
            assert err_r == 0, f"restarted static member's JoinGroup error {err_r}"
        err_sync, got = restarted.sync(gen_final)
        assert err_sync == 0, f"restarted static member's SyncGroup error {err_sync}"
        assert got == assignment(topic, [2, 3]), (
            f"restarted static member (old id {old_static_id}, new id {restarted.member_id}) got assignment "
            f"{got!r} in generation {gen_final}; the leader assigned partitions 2,3 to the instance "
            f"(first SyncGroup answer to the leader: error {sync_err})")
    finally:
        for m in (leader, static, restarted):
            m.close()
