"""pytest fixtures for the Spool end-to-end suite: a real `spool serve` process per test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from e2e_lib import NUM_PARTITIONS, spool_bin

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
LOG_TAIL_LINES = 80


# A run started in the background by a shell without job control (`cargo xtask test &`,
# `nohup ...`) starts with SIGINT ignored, and every client it spawns inherits that: the Ctrl-C the
# tests send a consumer to stop it would do nothing. A handler of our own is reset to the default
# in each child at exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

_handed_out: set[int] = set()


def free_port() -> int:
    """A port free now and not handed out before in this run: the OS may give a port just released
    again, and two nodes of one test would then be told to listen on the same one."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Broker:
    """One single-node Spool broker on a fixed loopback port and data dir.
    The port and dir are kept across restarts so clients and data carry over."""

    def __init__(self, binary: Path, data_dir: Path, log_path: Path, num_partitions: int = NUM_PARTITIONS):
        self.binary = binary
        self.data_dir = data_dir
        self.log_path = log_path
        self.num_partitions = num_partitions
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.last_exit_code: int | None = None
        self.extra_args: list[str] = []  # more `spool serve` flags, from the next start on
        self.node_id = 1
        self.recorder: subprocess.Popen | None = None
        self.internal_port: int | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no broker log)"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        addr = self.bootstrap
        listen = addr
        if os.environ.get("E2E_RECORD_FRAMES") and self.recorder is None:
            # Clients reach the broker through a proxy that keeps their request frames as the
            # fuzzer's seed corpus (fuzz/record_corpus.py).
            self.internal_port = free_port()
            recorder = Path(__file__).resolve().parents[2] / "fuzz" / "record_corpus.py"
            self.recorder = subprocess.Popen(["python3", str(recorder), "--broker", f"127.0.0.1:{self.internal_port}",
                                              "--listen", addr], stdin=subprocess.DEVNULL)
        if self.recorder is not None:
            listen = f"127.0.0.1:{self.internal_port}"
        cmd = [str(self.binary), "serve", "--listen", listen, "--advertised", addr,
               "--data-dir", str(self.data_dir), "--num-partitions", str(self.num_partitions), "--node-id", str(self.node_id),
               *self.extra_args]
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== e2e: starting {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not _port_open(self.internal_port if self.recorder is not None else self.port):
            code = self.proc.poll()
            if code is not None:
                self.proc = None
                pytest.fail(f"broker exited with code {code} before accepting connections:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self._kill()
                pytest.fail(f"broker did not accept connections on {addr} within {START_TIMEOUT}s:\n{self.log_tail()}")
            time.sleep(0.05)
        while self.recorder is not None and not _port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM and wait; escalates to SIGKILL (and raises) if the broker ignores it.
        Returns the exit code."""
        if self.proc is None:
            return self.last_exit_code
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill()
                raise AssertionError(f"broker did not exit within {timeout}s of SIGTERM:\n{self.log_tail()}")
        self.last_exit_code = self.proc.returncode
        self.proc = None
        return self.last_exit_code

    def kill9(self) -> None:
        """Crash: SIGKILL, no chance to flush anything that was not already fsynced."""
        assert self.proc is not None and self.proc.poll() is None, "broker not running"
        self._kill()

    def _kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)
            self.last_exit_code = self.proc.returncode
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Attach the broker log to the failure report itself, so it is printed with the failure.
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        broker = getattr(item, "funcargs", {}).get("broker")
        if isinstance(broker, Broker):
            rep.sections.append((f"spool broker log (last {LOG_TAIL_LINES} lines, {broker.log_path})",
                                 broker.log_tail()))


@pytest.fixture
def broker(tmp_path):
    binary = spool_bin()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"broker binary {binary} not found or not executable: build it "
                    "(cargo build --release) or set SPOOL_BIN")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    b = Broker(binary, data_dir, tmp_path / "broker.log")
    b.start()
    try:
        yield b
    finally:
        try:
            b.stop()
        finally:
            b._kill()
            if b.recorder is not None:
                b.recorder.kill()
                b.recorder.wait()
