"""The real broker against hostile frames: the bug report's 22-byte Metadata frame, then every
frame of the fuzzer's seed corpus (real client frames and table-built ones, fuzz/corpus), each on
its own connection. The broker stays up, keeps serving, and stays small."""

import os
import socket
import struct
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus" / "handle_frame"
REPORTED = b"\x00\x00\x00\x12\x00\x03\x00\x01\x00\x00\x00\x05\x00\x04fuzz\x7f\xff\xff\xff"


def send_raw(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(data)
        c.settimeout(0.05)
        try:
            c.recv(65536)
        except OSError:
            pass


def serves(port: int) -> bool:
    """ApiVersions v0 answered with its correlation id."""
    body = struct.pack(">hhih", 18, 0, 7, -1)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", c.recv(4))[0]
        data = b""
        while len(data) < size:
            chunk = c.recv(size - len(data))
            assert chunk, "connection closed mid-answer"
            data += chunk
    return struct.unpack(">i", data[:4])[0] == 7


def rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0])


def test_the_reported_frame_and_the_fuzz_corpus_leave_the_broker_serving(broker):
    send_raw(broker.port, REPORTED)
    assert broker.is_running(), f"the 22-byte frame killed the broker:\n{broker.log_tail()}"
    assert serves(broker.port)
    frames = sorted(CORPUS.iterdir())
    assert len(frames) > 500, "the seed corpus is in the repository"
    for i, path in enumerate(frames):
        frame = path.read_bytes()
        send_raw(broker.port, struct.pack(">i", len(frame)) + frame)
        if i % 200 == 0:
            assert broker.is_running(), f"frame {path.name} killed the broker:\n{broker.log_tail()}"
    assert broker.is_running()
    assert serves(broker.port)
    assert rss_kb(broker.proc.pid) < 200 * 1024, "the broker grew past 200 MB"
