"""The `spool` client commands driven as a person drives them: the console producer through a
terminal, consumers stopped with Ctrl-C or SIGTERM, and a consumer that outlives a broker restart."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import time

import pytest

from e2e_lib import poll_until, spool_bin, unique_topic

TIMEOUT = 30.0


def spool(broker, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([str(spool_bin()), *args, "--bootstrap-server", broker.bootstrap],
                          capture_output=True, text=True, timeout=timeout)


def create_topic(broker, topic: str, partitions: int = 1) -> None:
    r = spool(broker, "topic", "create", topic, "--partitions", str(partitions))
    assert r.returncode == 0, r.stderr


def values_in(broker, topic: str) -> list[str]:
    """Every value in the topic, read with a short-lived consumer."""
    r = spool(broker, "consume", topic, "--from-beginning", "--timeout-ms", "1500", "--format", "%s\\n")
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


class Terminal:
    """A command on a pseudo-terminal, as a person at a shell runs it."""

    def __init__(self, args: list[str]):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execv(args[0], args)
        self.seen = b""

    def read_until(self, needle: bytes, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"no {needle!r} on the terminal; it shows {self.seen!r}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:
                    break

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait(self, timeout: float = TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.1)
                if ready:
                    self.seen += os.read(self.fd, 4096)
            except OSError:
                time.sleep(0.1)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"still running after {timeout}s; the terminal shows {self.seen!r}")


def test_the_console_producer_sends_each_line_as_it_is_typed_and_keeps_them_on_ctrl_c(broker):
    topic = unique_topic("cli-typed")
    create_topic(broker, topic)
    term = Terminal([str(spool_bin()), "produce", topic, "--bootstrap-server", broker.bootstrap])
    term.read_until(b">")
    term.type("first line\r")
    # Readable while the producer still waits for more input: sent when typed, not at Ctrl-D.
    poll_until(lambda: values_in(broker, topic) == ["first line"], 15, "the first typed line in the topic")
    term.type("second line\r")
    poll_until(lambda: values_in(broker, topic) == ["first line", "second line"], 15, "the second line")
    term.type("\x03")  # Ctrl-C, as every tutorial stops the console producer
    assert term.wait() in (0, 130)
    assert values_in(broker, topic) == ["first line", "second line"]


def test_the_producer_reads_piped_input_to_its_end(broker):
    topic = unique_topic("cli-piped")
    create_topic(broker, topic, partitions=3)
    lines = "".join(f"k{i}:v{i}\n" for i in range(50))
    r = subprocess.run([str(spool_bin()), "produce", topic, "--key-separator", ":", "--bootstrap-server",
                        broker.bootstrap], input=lines, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert sorted(values_in(broker, topic)) == sorted(f"v{i}" for i in range(50))


def group_members(broker, group: str) -> tuple[str, int]:
    r = spool(broker, "group", "describe", group, "--output", "json")
    if r.returncode != 0:
        return ("", 0)
    described = json.loads(r.stdout)
    return (described.get("state", ""), len(described.get("members", [])))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_a_group_consumer_stopped_by_a_signal_leaves_its_group_at_once(broker, sig):
    topic = unique_topic("cli-leave")
    group = unique_topic("cli-leave-group")
    create_topic(broker, topic)
    consumer = subprocess.Popen([str(spool_bin()), "consume", topic, "--group", group, "--bootstrap-server",
                                 broker.bootstrap], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        poll_until(lambda: group_members(broker, group) == ("Stable", 1), 20, "the consumer in a stable group")
        started = time.monotonic()
        consumer.send_signal(sig)
        code = consumer.wait(timeout=10)
        assert code == 0, consumer.stderr.read()
        assert time.monotonic() - started < 5, "the consumer took long to stop"
        # Left, not expired: the group is empty now, not after the 45 s session timeout.
        assert group_members(broker, group) == ("Empty", 0)
        assert "Processed a total of 0 messages" in consumer.stderr.read()
    finally:
        if consumer.poll() is None:
            consumer.kill()
    # The same consumer starts again at once and joins.
    again = subprocess.Popen([str(spool_bin()), "consume", topic, "--group", group, "--bootstrap-server",
                              broker.bootstrap], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        poll_until(lambda: group_members(broker, group) == ("Stable", 1), 15, "the restarted consumer joined")
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(timeout=10)


def test_a_consumer_without_a_group_joins_a_generated_console_group_and_commits_nothing(broker):
    """As Kafka's console consumer: a `console-consumer-NNNNN` group, left on exit, no offsets."""
    topic = unique_topic("cli-console")
    create_topic(broker, topic)
    assert spool(broker, "produce", topic, "--message", "one").returncode == 0

    def console_groups() -> set[str]:
        r = spool(broker, "group", "list", "--output", "json")
        assert r.returncode == 0, r.stderr
        return {g["group"] for g in json.loads(r.stdout) if g["group"].startswith("console-consumer-")}

    before = console_groups()
    consumer = subprocess.Popen([str(spool_bin()), "consume", topic, "--from-beginning", "--bootstrap-server",
                                 broker.bootstrap], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        poll_until(lambda: len(console_groups() - before) == 1, 20, "a generated console-consumer group")
        (group,) = console_groups() - before
        assert group.removeprefix("console-consumer-").isdigit(), group
        poll_until(lambda: group_members(broker, group) == ("Stable", 1), 20, "the consumer in its group")
        assert consumer.stdout.readline() == "one\n"
        consumer.send_signal(signal.SIGINT)
        assert consumer.wait(timeout=10) == 0, consumer.stderr.read()
    finally:
        if consumer.poll() is None:
            consumer.kill()
    r = spool(broker, "group", "describe", group, "--output", "json")
    assert r.returncode == 0, r.stderr
    described = json.loads(r.stdout)
    assert (described["state"], described["members"]) == ("Empty", [])
    assert all(p["committed_offset"] is None for p in described["partitions"]), described


@pytest.mark.parametrize("grouped", [True, False], ids=["group", "no-group"])
def test_a_consumer_carries_on_after_the_broker_restarts(broker, grouped):
    topic = unique_topic("cli-restart")
    create_topic(broker, topic)
    args = [str(spool_bin()), "consume", topic, "--from-beginning", "--format", "%s\\n",
            "--bootstrap-server", broker.bootstrap]
    if grouped:
        args += ["--group", unique_topic("cli-restart-group")]
    out_path = broker.data_dir.parent / f"consumer-{grouped}.out"
    with open(out_path, "w") as out:
        consumer = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        r = spool(broker, "produce", topic, "--message", "before")
        assert r.returncode == 0, r.stderr
        poll_until(lambda: "before" in out_path.read_text().split("\n"), 20, "the record before the restart")
        broker.restart()
        r = spool(broker, "produce", topic, "--message", "after")
        assert r.returncode == 0, r.stderr
        poll_until(lambda: "after" in out_path.read_text().split("\n"), 30, "the record after the restart")
        assert consumer.poll() is None, out_path.read_text()
        printed = [line for line in out_path.read_text().split("\n") if line in ("before", "after")]
        assert printed == ["before", "after"], out_path.read_text()
    finally:
        if consumer.poll() is None:
            consumer.send_signal(signal.SIGTERM)
            consumer.wait(timeout=10)


def test_topic_describe_shows_every_config_with_its_source(broker):
    """As kafka-configs --describe --all: defaults are shown (the 168 h retention a user would
    otherwise not see), a broker setting given at start is named as such, an override too."""
    broker.stop()
    broker.extra_args = ["--override", "log.segment.bytes=2000000"]
    broker.start()
    topic = unique_topic("cli-describe")
    create_topic(broker, topic)
    r = spool(broker, "topic", "alter", topic, "--config", "retention.ms=3600000")
    assert r.returncode == 0, r.stderr
    r = spool(broker, "topic", "describe", topic)
    assert r.returncode == 0, r.stderr
    rows = {tuple(line.split()) for line in r.stdout.splitlines()}
    assert ("retention.ms", "3600000", "DYNAMIC_TOPIC_CONFIG") in rows, r.stdout
    assert ("segment.bytes", "2000000", "STATIC_BROKER_CONFIG") in rows, r.stdout
    assert ("segment.ms", "604800000", "DEFAULT_CONFIG") in rows, r.stdout
    assert ("cleanup.policy", "delete", "DEFAULT_CONFIG") in rows, r.stdout


@pytest.mark.parametrize("args, expected", [
    (["topic", "create", "neg-partitions", "--partitions", "-3"], "partition"),
    (["group", "reset-offsets", "g", "--topic", "t", "--to-offset", "-5"], "an offset is 0 or more"),
    (["consume", "t", "--timeout-ms", "-1"], "--timeout-ms"),
])
def test_negative_numbers_get_an_answer_about_the_value_not_the_parser(broker, args, expected):
    r = spool(broker, *args)
    assert r.returncode != 0
    assert "unexpected argument" not in r.stderr and expected in r.stderr.lower() + r.stderr, r.stderr


def test_replication_factor_minus_one_is_the_brokers_default_as_in_kafka(broker):
    r = spool(broker, "topic", "create", unique_topic("rf-default"), "--replication-factor", "-1")
    assert r.returncode == 0 and "Created topic" in r.stdout, r.stderr
