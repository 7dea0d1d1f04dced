"""The metadata quorum across three real `spool serve` processes, checked with Apache Kafka's own
`kafka-metadata-quorum` tool: an election, a leader killed and restarted, a leader stopped with
SIGTERM handing over at once, a misconfigured voter refused by name, and brokers registering,
heartbeating, and fenced when they stop.

What runs here is the control plane's quorum (partition replication is in test_replication.py).
Each node listens for clients and, on a second port, for the other controllers."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from conftest import Broker, free_port
from e2e_lib import poll_until, spool_bin
from test_kafka_tools import _tools_installed, ok, tool  # noqa: F401  (the fixture skips without the jars)

IDS = (1, 2, 3)


class Quorum:
    def __init__(self, tmp_path):
        self.controller_ports = {i: free_port() for i in IDS}
        self.voters = ",".join(f"{i}@127.0.0.1:{self.controller_ports[i]}" for i in IDS)
        self.nodes: dict[int, Broker] = {}
        for i in IDS:
            node = Broker(spool_bin(), tmp_path / f"node{i}", tmp_path / f"node{i}.log")
            node.node_id = i
            node.extra_args = ["--controller-listen", f"127.0.0.1:{self.controller_ports[i]}",
                               "--controller-quorum-voters", self.voters]
            self.nodes[i] = node

    def controllers(self, but: int | None = None) -> str:
        return ",".join(f"127.0.0.1:{self.controller_ports[i]}" for i in IDS if i != but)

    def status(self, but: int | None = None) -> dict[str, str]:
        """kafka-metadata-quorum describe --status, as a dict of its lines."""
        out = ok(tool("kafka-metadata-quorum.sh", "--bootstrap-controller", self.controllers(but), "describe",
                      "--status"))
        return dict(re.split(r":\s+", line, maxsplit=1) for line in out.splitlines() if ":" in line)

    def replication(self, but: int | None = None) -> dict[int, dict[str, str]]:
        out = ok(tool("kafka-metadata-quorum.sh", "--bootstrap-controller", self.controllers(but), "describe",
                      "--replication"))
        lines = [line.split() for line in out.splitlines() if line.strip()]
        header = lines[0]
        return {int(row[0]): dict(zip(header, row)) for row in lines[1:]}

    def leader_in_logs(self, node: int) -> int | None:
        """The last leader the node's log names (cheaper than a JVM start per poll)."""
        found = re.findall(r"role=(?:Leader|Follower) epoch=(\d+) leader=Some\((\d+)\)",
                           self.nodes[node].log_path.read_text(errors="replace"))
        return int(found[-1][1]) if found else None


@pytest.fixture
def quorum(tmp_path):
    q = Quorum(tmp_path)
    for node in q.nodes.values():
        node.start()
    yield q
    for node in q.nodes.values():
        if node.proc is not None and node.proc.poll() is None:
            node.stop()


def test_three_nodes_elect_a_leader_that_kafkas_tool_describes(quorum):
    poll_until(lambda: all(quorum.leader_in_logs(i) is not None for i in IDS), 15, "every node knows a leader")
    status = quorum.status()
    leader = int(status["LeaderId"])
    assert leader in IDS
    assert int(status["LeaderEpoch"]) >= 1
    assert int(status["HighWatermark"]) >= 1, "the leader's first record is committed"
    for i in IDS:
        assert f'"id": {i}' in status["CurrentVoters"], status
        assert f"CONTROLLER://127.0.0.1:{quorum.controller_ports[i]}" in status["CurrentVoters"]
    assert status["CurrentObservers"] == "[]"
    assert len(status["ClusterId"]) == 22, status
    replication = quorum.replication()
    assert sorted(replication) == list(IDS)
    assert replication[leader]["Status"] == "Leader"
    assert {replication[i]["Status"] for i in IDS if i != leader} == {"Follower"}

    # Every voter comes to hold the committed log (a follower reports its fsynced end on its next fetch).
    def all_hold_it() -> bool:
        return {int(r["LogEndOffset"]) for r in quorum.replication().values()} == {int(status["HighWatermark"])}

    poll_until(all_hold_it, 15, "every voter at the high watermark", step=lambda: time.sleep(0.5))


def test_a_killed_leader_is_replaced_and_follows_when_it_returns(quorum):
    poll_until(lambda: all(quorum.leader_in_logs(i) is not None for i in IDS), 15, "every node knows a leader")
    before = quorum.status()
    old = int(before["LeaderId"])
    quorum.nodes[old].kill9()
    others = [i for i in IDS if i != old]
    poll_until(lambda: all(quorum.leader_in_logs(i) not in (None, old) for i in others), 15, "a new leader")
    after = quorum.status(but=old)
    assert int(after["LeaderId"]) in others
    assert int(after["LeaderEpoch"]) > int(before["LeaderEpoch"])
    assert int(after["HighWatermark"]) > int(before["HighWatermark"]), "the new leader committed its own record"
    # The old leader restarts from its files (its election state and log), follows, catches up.
    quorum.nodes[old].start()
    new = int(after["LeaderId"])
    poll_until(lambda: quorum.leader_in_logs(old) == new, 15, "the restarted node follows the new leader")

    def caught_up() -> bool:
        replication = quorum.replication()
        return replication.get(old, {}).get("Status") == "Follower" and \
            int(replication[old]["LogEndOffset"]) == int(replication[new]["LogEndOffset"])

    poll_until(caught_up, 20, "the restarted node caught up", step=lambda: time.sleep(0.5))


def test_a_leader_stopped_with_sigterm_hands_over_at_once(quorum):
    poll_until(lambda: all(quorum.leader_in_logs(i) is not None for i in IDS), 15, "every node knows a leader")
    old = int(quorum.status()["LeaderId"])
    stopped = time.monotonic()
    assert quorum.nodes[old].stop() == 0
    others = [i for i in IDS if i != old]
    poll_until(lambda: all(quorum.leader_in_logs(i) not in (None, old) for i in others), 10, "a new leader")
    # Resigning (EndQuorumEpoch) skips the election timeout a crash costs.
    assert time.monotonic() - stopped < 1.5, "the handover waited for a time-out"


def test_a_voter_without_a_controller_listener_is_refused_by_name(tmp_path):
    voters = f"1@127.0.0.1:{free_port()},2@127.0.0.1:{free_port()}"
    proc = subprocess.run([str(spool_bin()), "serve", "--listen", f"127.0.0.1:{free_port()}", "--data-dir",
                           str(tmp_path / "n"), "--node-id", "1", "--controller-quorum-voters", voters],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "node 1 is a voter in controller.quorum.voters but has no controller listener" in proc.stderr, proc.stderr
    bad = subprocess.run([str(spool_bin()), "serve", "--listen", f"127.0.0.1:{free_port()}", "--data-dir",
                          str(tmp_path / "n"), "--controller-quorum-voters", "1@nowhere"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0
    assert '"1@nowhere" has no port' in bad.stderr, bad.stderr


def test_every_broker_lists_the_three_registered_brokers_under_the_quorums_cluster_id(quorum):
    """Each node's broker registers with the active controller (BrokerRegistration); every broker's
    Metadata then lists all three, as Kafka's kafka-broker-api-versions shows, and answers with the
    quorum's cluster id."""
    poll_until(lambda: all("registered with the metadata quorum" in quorum.nodes[i].log_path.read_text(errors="replace")
                           for i in IDS), 20, "every broker registered")
    cluster_id = quorum.status()["ClusterId"]
    for i in IDS:
        out = ok(tool("kafka-broker-api-versions.sh", "--bootstrap-server", quorum.nodes[i].bootstrap))
        listed = sorted(int(n) for n in re.findall(r"\(id: (\d+) rack: null isFenced: false\)", out))
        assert listed == list(IDS), out[:2000]
        info = subprocess.run([str(spool_bin()), "cluster", "info", "--bootstrap-server", quorum.nodes[i].bootstrap],
                              capture_output=True, text=True, timeout=30)
        assert info.returncode == 0, info.stderr
        assert info.stdout.startswith(f"Cluster {cluster_id},"), info.stdout[:300]


def test_a_flood_of_idle_connections_to_a_controller_does_not_disturb_the_quorum(quorum):
    """Anyone who reaches a controller port can open connections: past a cap they are refused,
    idle ones are closed, and the voters' own links keep the quorum going."""
    import socket
    poll_until(lambda: all(quorum.leader_in_logs(i) is not None for i in IDS), 15, "every node knows a leader")
    before = quorum.status()
    # A follower is flooded, so the tool (which asks the leader) is not among the refused.
    target = next(i for i in IDS if i != int(before["LeaderId"]))
    flood = []
    try:
        for _ in range(400):
            flood.append(socket.create_connection(("127.0.0.1", quorum.controller_ports[target]), timeout=5))
        time.sleep(3)
        replication = quorum.replication(but=target)
        assert replication[target]["Status"] == "Follower", replication
        assert int(quorum.status(but=target)["LeaderEpoch"]) == int(before["LeaderEpoch"]), "the flood caused an election"
    finally:
        for s in flood:
            s.close()
    assert all(quorum.nodes[i].proc.poll() is None for i in IDS), "a node died"
    assert "connections open; refusing" in quorum.nodes[target].log_path.read_text(errors="replace")


def brokers_listed(node: Broker) -> list[int] | None:
    """The broker ids a node's Metadata lists (fenced brokers are left out, as Kafka does)."""
    r = subprocess.run([str(spool_bin()), "cluster", "info", "--bootstrap-server", node.bootstrap, "--output", "json"],
                       capture_output=True, text=True, timeout=30)
    return sorted(b["id"] for b in json.loads(r.stdout)["brokers"]) if r.returncode == 0 else None


def test_a_killed_broker_is_fenced_when_its_session_ends_and_let_in_again_when_it_returns(quorum):
    """BrokerHeartbeat (KIP-631): a broker killed with -9 stops heartbeating; once its session
    (9 s) ends, the active controller fences it and the other brokers' Metadata stop listing it.
    Restarted, it registers again and is listed again."""
    poll_until(lambda: all(brokers_listed(quorum.nodes[i]) == list(IDS) for i in IDS), 30, "every broker listed")
    leader = int(quorum.status()["LeaderId"])
    victim = next(i for i in IDS if i != leader)
    others = [i for i in IDS if i != victim]
    quorum.nodes[victim].kill9()
    killed = time.monotonic()
    poll_until(lambda: all(brokers_listed(quorum.nodes[i]) == others for i in others), 30,
               "the killed broker fenced", step=lambda: time.sleep(0.5))
    # Heartbeats every 2 s and a 9 s session: not fenced before it could have missed one.
    assert time.monotonic() - killed > 6, "fenced before its session could have ended"
    quorum.nodes[victim].start()
    poll_until(lambda: all(brokers_listed(quorum.nodes[i]) == list(IDS) for i in IDS), 30,
               "the restarted broker listed again", step=lambda: time.sleep(0.5))


def test_a_broker_stopped_with_sigterm_is_fenced_at_once(quorum):
    """Controlled shutdown: on SIGTERM a broker asks the active controller to fence it and waits
    until that is committed, so the others stop listing it at once rather than after its 9 s
    session."""
    poll_until(lambda: all(brokers_listed(quorum.nodes[i]) == list(IDS) for i in IDS), 30, "every broker listed")
    leader = int(quorum.status()["LeaderId"])
    victim = next(i for i in IDS if i != leader)
    others = [i for i in IDS if i != victim]
    stopped = time.monotonic()
    assert quorum.nodes[victim].stop() == 0
    poll_until(lambda: all(brokers_listed(quorum.nodes[i]) == others for i in others), 10, "the stopped broker fenced")
    assert time.monotonic() - stopped < 5, "fenced only when its session ended"
    assert "controlled shutdown: the controller fenced this broker" in \
        quorum.nodes[victim].log_path.read_text(errors="replace")


def test_spool_cluster_quorum_finds_the_leader_and_agrees_with_kafkas_tool(quorum):
    """`spool cluster quorum` asks one controller (here one that does not lead), is pointed to the
    leader, and shows what kafka-metadata-quorum shows: leader, epoch, voters and their lag."""
    poll_until(lambda: all(quorum.leader_in_logs(i) is not None for i in IDS), 15, "every node knows a leader")
    status = quorum.status()
    leader = int(status["LeaderId"])
    follower = next(i for i in IDS if i != leader)

    def ask(output: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(spool_bin()), "cluster", "quorum", "--bootstrap-controller",
                               f"127.0.0.1:{quorum.controller_ports[follower]}", "--output", output],
                              capture_output=True, text=True, timeout=30)

    r = ask("json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["leader"], doc["epoch"]) == (leader, int(status["LeaderEpoch"]))
    assert doc["high_watermark"] >= int(status["HighWatermark"])
    roles = {n["id"]: n["role"] for n in doc["nodes"]}
    assert roles == {i: ("Leader" if i == leader else "Follower") for i in IDS}, doc
    table = ask("table")
    assert table.returncode == 0 and table.stdout.startswith(f"Leader {leader}, epoch "), table.stdout
    nowhere = subprocess.run([str(spool_bin()), "cluster", "quorum", "--bootstrap-controller",
                              f"127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=30)
    assert nowhere.returncode != 0 and "no controller described the quorum" in nowhere.stderr, nowhere.stderr
