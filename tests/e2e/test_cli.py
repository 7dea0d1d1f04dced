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
