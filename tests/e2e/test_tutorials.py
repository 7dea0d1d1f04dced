"""The Kafka tutorials a newcomer follows, run verbatim against a real Spool broker.

Each test runs one script of tests/tutorials (see its README): the tutorial's steps with the command
lines exactly as a Kafka user types them, only the bootstrap address changed ($BOOTSTRAP). The
script checks each step's outcome itself and prints MISMATCH with what it expected and what it got;
the test fails with the script's output. The broker runs with Kafka's default num.partitions=1
(also `spool serve`'s default), so auto-created and count-less topics look as the tutorials show.

Like test_kafka_tools.py, these skip when the Kafka tool jars (or java) are not installed; any other
missing tool (kcat, node and KafkaJS, the venv's client libraries) fails the test.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e2e_lib import E2E_DIR, REPO_ROOT
from test_kafka_tools import TOOLS_BIN, _tools_installed  # noqa: F401  (autouse: the same skip rule)

TUTORIALS = REPO_ROOT / "tests" / "tutorials"
NODE_MODULES = E2E_DIR / "js" / "node_modules"
SCRIPT_TIMEOUT = 150  # seconds, for one whole tutorial
RESTART_TIMEOUT = 60  # the restart helper gives up after this long without an answer


@pytest.fixture
def broker(broker):
    """The suite's broker, restarted with Kafka's default num.partitions=1 before the tutorial."""
    broker.num_partitions = 1
    broker.restart()
    return broker


def restart_helper(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A command for $RESTART_BROKER: it asks the test (a request file) to restart the broker and
    returns once the test has answered (an ack file) that the broker accepts connections again."""
    req, ack = tmp_path / "restart.req", tmp_path / "restart.ack"
    helper = tmp_path / "restart-broker"
    helper.write_text(f"""#!/usr/bin/env bash
set -euo pipefail
touch '{req}'
for _ in $(seq {RESTART_TIMEOUT * 10}); do
  if [ -e '{ack}' ]; then rm -f '{ack}'; echo "broker restarted"; exit 0; fi
  sleep 0.1
done
echo "restart-broker: no restart within {RESTART_TIMEOUT}s" >&2
exit 1
""")
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    return helper, req, ack


def run_tutorial(script: str, broker, tmp_path: Path) -> str:
    """Runs tests/tutorials/<script> to the end, serving its restart requests; fails with its output
    unless it exits 0. Returns the output."""
    helper, req, ack = restart_helper(tmp_path)
    venv_bin = str(Path(sys.executable).parent)
    env = dict(os.environ,
               BOOTSTRAP=broker.bootstrap,
               PATH=os.pathsep.join([str(TOOLS_BIN), venv_bin, os.environ.get("PATH", "")]),
               PYTHON=sys.executable,
               NODE_PATH=str(NODE_MODULES),
               RESTART_BROKER=str(helper),
               TMPDIR=str(tmp_path))
    log = tmp_path / "tutorial.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", str(TUTORIALS / script)], cwd=TUTORIALS, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + SCRIPT_TIMEOUT
        restarts = 0
        try:
            while proc.poll() is None:
                if req.exists():
                    req.unlink()
                    broker.restart()
                    restarts += 1
                    ack.touch()
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                # SIGTERM first: the script's EXIT trap stops the clients it started in the background.
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                text = log.read_text(errors="replace")
                pytest.fail(f"{script} did not finish within {SCRIPT_TIMEOUT}s:\n{text[-8000:]}")
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{text[-8000:]}"
    return text


def need(*tools: str) -> None:
    for t in tools:
        if shutil.which(t) is None:
            pytest.fail(f"{t} not found on PATH: run tests/e2e/install.sh")


def need_module(name: str) -> None:
    try:
        __import__(name)
    except ImportError:
        pytest.fail(f"Python package {name} missing from {sys.executable}: run tests/e2e/install.sh")


def test_quickstart(broker, tmp_path):
    out = run_tutorial("01-quickstart.sh", broker, tmp_path)
    assert "quickstart: OK" in out


def test_partitions_keys(broker, tmp_path):
    out = run_tutorial("02-partitions-keys.sh", broker, tmp_path)
    assert "partitions-keys: OK" in out


def test_confluent_python(broker, tmp_path):
    need_module("confluent_kafka")
    out = run_tutorial("03-confluent-python.sh", broker, tmp_path)
    assert "confluent-python: OK" in out


def test_kafkajs(broker, tmp_path):
    need("node")
    if not (NODE_MODULES / "kafkajs").is_dir():
        pytest.fail(f"{NODE_MODULES}/kafkajs missing: run tests/e2e/install.sh (npm ci)")
    out = run_tutorial("04-kafkajs.sh", broker, tmp_path)
    assert "kafkajs: OK" in out


def test_kcat_kafka_python(broker, tmp_path):
    need("kcat")
    need_module("kafka")
    out = run_tutorial("05-kcat-kafka-python.sh", broker, tmp_path)
    assert "kcat-kafka-python: OK" in out


def test_restart(broker, tmp_path):
    out = run_tutorial("06-restart.sh", broker, tmp_path)
    assert "restart: OK" in out
    assert "broker restarted" in out, "the script never asked for the restart"


def test_delete_topic(broker, tmp_path):
    out = run_tutorial("07-delete-topic.sh", broker, tmp_path)
    assert "delete-topic: OK" in out


def test_readme_first_session(broker, tmp_path):
    need("kcat")
    # As the README starts it: `serve --num-partitions 3`.
    broker.stop()
    broker.num_partitions = 3
    broker.start()
    out = run_tutorial("08-readme.sh", broker, tmp_path)
    assert "readme: OK" in out
