"""Helpers for the consumer-group tests (test_groups_*.py): group members as subprocesses
(confluent-kafka / kafka-python via groups_worker.py, KafkaJS via js/group_consumer.js, Java via
java/GroupConsumer.java) that report what happens to them as tab-separated lines, a producer that
records where each message landed, and a few admin helpers."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from e2e_lib import E2E_DIR, JAVA_JARS, Got, java_libs_dir, make_messages

JS_DIR = E2E_DIR / "js"
JAVA_DIR = E2E_DIR / "java"
PY_WORKER = E2E_DIR / "groups_worker.py"


# --- members --------------------------------------------------------------------------------

@dataclass
class Event:
    t: float  # time.monotonic() in the test process when the line was read
    kind: str
    fields: list


@dataclass
class Worker:
    """One group member process. Its stdout lines become Events; stderr goes to a log file."""
    name: str
    proc: subprocess.Popen
    log_path: Path
    events: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start_reader(self) -> None:
        def read():
            for line in self.proc.stdout:
                f = line.rstrip("\n").split("\t")
                with self.lock:
                    self.events.append(Event(time.monotonic(), f[0], f[1:]))
        threading.Thread(target=read, daemon=True).start()

    # queries
    def of(self, kind: str) -> list:
        with self.lock:
            return [e for e in self.events if e.kind == kind]

    def assignment(self) -> Optional[set]:
        """The assignment after the last rebalance callback; None before the first one."""
        with self.lock:
            evs = [e for e in self.events if e.kind in ("ASSIGN", "REVOKE", "LOST")]
        if not evs:
            return None
        now = evs[-1].fields[2]
        return {int(p) for p in now.split(",")} if now else set()

    def got(self) -> list:
        return [Got(int(e.fields[0]), int(e.fields[1]), e.fields[2], e.fields[3]) for e in self.of("GOT")]

    def committed(self) -> dict:
        out = {}
        for e in self.of("COMMIT"):
            out[int(e.fields[0])] = max(out.get(int(e.fields[0]), 0), int(e.fields[1]))
        return out

    def rebalance_events(self) -> list:
        with self.lock:
            return [e for e in self.events if e.kind in ("ASSIGN", "REVOKE", "LOST")]

    def errors(self) -> list:
        return [f"{e.kind} {' '.join(e.fields)}" for e in self.events if e.kind in ("ERROR", "CERR")]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    def wait(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if not self.alive() and not cond():
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}) while waiting for {what}; "
                                     f"errors {self.errors()[:3]}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: timed out after {timeout}s waiting for {what}; "
                                     f"rebalance events {[(e.kind, e.fields) for e in self.rebalance_events()]}; "
                                     f"errors {self.errors()[:3]}\n{self.log_tail()}")
            time.sleep(0.05)

    # control
    def close(self, timeout: float = 30.0) -> int:
        """Clean shutdown: the member closes its consumer (LeaveGroup for dynamic members)."""
        if self.alive():
            try:
                self.proc.stdin.write("CLOSE\n")
                self.proc.stdin.flush()
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"{self.name} did not close within {timeout}s\n{self.log_tail()}")
        return self.proc.returncode

    def kill(self) -> None:
        """kill -9: no LeaveGroup, no commit; the coordinator must notice by session timeout."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


class Members:
    """Starts members and guarantees they are all gone when the test ends."""

    def __init__(self, tmp_path: Path, bootstrap: str):
        self.tmp_path = tmp_path
        self.bootstrap = bootstrap
        self.workers: list[Worker] = []
        self._java_cp: Optional[str] = None

    def _spawn(self, name: str, cmd: list, cwd: Path, env_extra: Optional[dict] = None) -> Worker:
        log_path = self.tmp_path / f"member-{name}.log"
        env = dict(os.environ, **(env_extra or {}))
        with open(log_path, "ab") as log:
            log.write(f"=== {' '.join(map(str, cmd))}\n".encode())
            log.flush()
            proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=log, text=True, bufsize=1, env=env)
        w = Worker(name, proc, log_path)
        w.start_reader()
        self.workers.append(w)
        return w

    def python(self, client: str, name: str, topic: str, group: str, *, session_timeout_ms: int = 6000,
               heartbeat_ms: int = 1000, instance_id: Optional[str] = None, strategy: Optional[str] = None,
               debug: Optional[str] = None, conf: Optional[dict] = None, client_id: Optional[str] = None) -> Worker:
        """client "ck" = confluent-kafka, "kpy" = kafka-python. client.id defaults to name."""
        cmd = [sys.executable, PY_WORKER, "--client", client, "--bootstrap", self.bootstrap, "--topic", topic,
               "--group", group, "--name", name, "--session-timeout-ms", session_timeout_ms,
               "--heartbeat-ms", heartbeat_ms]
        if instance_id:
            cmd += ["--instance-id", instance_id]
        if strategy:
            cmd += ["--strategy", strategy]
        if client_id:
            cmd += ["--client-id", client_id]
        if debug:
            cmd += ["--debug", debug]
        for k, v in (conf or {}).items():
            cmd += ["--conf", f"{k}={v}"]
        return self._spawn(name, cmd, E2E_DIR)

    def kafkajs(self, name: str, topic: str, group: str, *, session_timeout_ms: int = 6000,
                heartbeat_ms: int = 1000, debug: bool = False) -> Worker:
        if shutil.which("node") is None:
            pytest.fail("node not found")
        if not (JS_DIR / "node_modules" / "kafkajs").is_dir():
            pytest.fail(f"{JS_DIR}/node_modules missing: run tests/e2e/install.sh (npm ci)")
        cmd = ["node", "group_consumer.js", self.bootstrap, topic, group, name, session_timeout_ms, heartbeat_ms]
        return self._spawn(name, cmd, JS_DIR, {"KAFKAJS_DEBUG": "1"} if debug else None)

    def java(self, name: str, topic: str, group: str, conf: Optional[dict] = None) -> Worker:
        cp = java_group_classpath(self.tmp_path.parent)
        cmd = ["java", f"-Djava.io.tmpdir={self.tmp_path}", "-cp", cp, "GroupConsumer", self.bootstrap, topic, group]
        cmd += [f"{k}={v}" for k, v in {"client.id": name, **(conf or {})}.items()]
        return self._spawn(name, cmd, E2E_DIR)

    def stop_all(self) -> None:
        for w in self.workers:
            if w.alive():
                try:
                    w.proc.kill()
                    w.proc.wait(timeout=30)
                except Exception:  # noqa: BLE001 - best effort in teardown
                    pass


_java_cp_cache: dict = {}
_java_lock = threading.Lock()


def java_group_classpath(scratch: Path) -> str:
    """Compiles java/GroupConsumer.java once per test session."""
    with _java_lock:
        if "cp" in _java_cp_cache:
            return _java_cp_cache["cp"]
        libs = java_libs_dir()
        missing = [j for j in JAVA_JARS if not (libs / j).is_file()]
        if missing:
            pytest.fail(f"jars missing from {libs}: {missing}; run tests/e2e/install.sh (or set JAVA_LIBS)")
        for tool in ("javac", "java"):
            if shutil.which(tool) is None:
                pytest.fail(f"{tool} not found (Debian openjdk-17-jdk-headless)")
        jars = [str(libs / j) for j in JAVA_JARS]
        classes = Path(scratch) / "group-java-classes"
        classes.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["javac", "-d", str(classes), "-cp", os.pathsep.join(jars),
                               str(JAVA_DIR / "GroupConsumer.java")], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"javac failed:\n{proc.stdout}\n{proc.stderr}"
        _java_cp_cache["cp"] = os.pathsep.join([str(classes)] + jars)
        return _java_cp_cache["cp"]


@pytest.fixture
def members(broker, tmp_path):
    m = Members(tmp_path, broker.bootstrap)
    try:
        yield m
    finally:
        m.stop_all()


# --- data -----------------------------------------------------------------------------------

def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                                   operation_timeout=30, request_timeout=30).values():
        fut.result(timeout=30)


def produce(bootstrap: str, topic: str, msgs: list, partition: Optional[int] = None) -> None:
    """Produces in order (idempotent, acks=all) and records each message's partition and offset.
    Raises if anything was not acknowledged."""
    errors = []
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5, "message.timeout.ms": 30000})
    try:
        def cb(m):
            def done(err, rec):
                if err is not None:
                    errors.append(str(err))
                else:
                    m.partition, m.offset = rec.partition(), rec.offset()
            return done

        for m in msgs:
            kw = {} if partition is None else {"partition": partition}
            producer.produce(topic, key=m.key.encode(), value=m.value.encode(), on_delivery=cb(m), **kw)
            producer.poll(0)
        remaining = producer.flush(30)
    finally:
        del producer
    assert remaining == 0 and not errors, f"produce failed: {remaining} unacknowledged, errors {errors[:5]}"


def messages(tag: str, n: int) -> list:
    return make_messages(tag, n, with_headers=False)


def check_exactly_once(sent: list, got: list, what: str = "") -> None:
    """Every sent message was consumed exactly once, at the partition/offset it was acknowledged at."""
    where = {m.value: (m.partition, m.offset) for m in sent}
    counts = Counter(g.value for g in got)
    missing = [m.value[:14] for m in sent if m.value not in counts]
    dups = sorted(v[:14] for v, c in counts.items() if c > 1 and v in where)
    extra = sorted(v[:14] for v in counts if v not in where)
    assert not missing, f"{what}: {len(missing)} of {len(sent)} messages never consumed, e.g. {missing[:5]}"
    assert not dups, f"{what}: {len(dups)} messages consumed more than once, e.g. {dups[:5]}"
    assert not extra, f"{what}: unexpected messages {extra[:5]}"
    for g in got:
        assert (g.partition, g.offset) == where[g.value], (
            f"{what}: {g.value[:14]} read at {g.partition}/{g.offset}, acknowledged at {where[g.value]}")


def only(got: list, sent: list) -> list:
    vals = {m.value for m in sent}
    return [g for g in got if g.value in vals]


def wait_all(workers: list, cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        dead = [w.name for w in workers if not w.alive()]
        if dead or time.monotonic() > deadline:
            detail = "\n".join(
                f"--- {w.name}: assignment {w.assignment()}, got {len(w.of('GOT'))}, committed {w.committed()}, "
                f"rebalance events {[(e.kind, e.fields) for e in w.rebalance_events()]}, errors {w.errors()[:3]}"
                f"\n{w.log_tail(25)}" for w in workers)
            why = f"members exited: {dead}" if dead else f"timed out after {timeout}s"
            raise AssertionError(f"{why} waiting for {what}\n{detail}")
        time.sleep(0.05)


def kpy_admin(bootstrap: str):
    from kafka import KafkaAdminClient
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)


def describe_group(bootstrap: str, group: str) -> dict:
    admin = kpy_admin(bootstrap)
    try:
        return admin.describe_groups([group])[group]
    finally:
        admin.close()
