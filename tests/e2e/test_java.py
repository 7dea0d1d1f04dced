"""Java kafka-clients 4.3.0 (the reference client) against a real Spool broker,
through java/ClientCheck.java, compiled once per session."""

import os
import shutil
import subprocess

import pytest

from e2e_lib import (COMPRESSIONS, E2E_DIR, JAVA_JARS, NUM_PARTITIONS, assert_stored_codec, java_libs_dir,
                     make_messages, parse_line_protocol, to_line_protocol, unique_topic, verify_round_trip)


@pytest.fixture(scope="session")
def java_classpath(tmp_path_factory):
    libs = java_libs_dir()
    missing = [j for j in JAVA_JARS if not (libs / j).is_file()]
    if missing:
        pytest.fail(f"jars missing from {libs}: {missing}; run tests/e2e/install.sh (or set JAVA_LIBS)")
    for tool in ("javac", "java"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found (Debian openjdk-17-jdk-headless)")
    jars = [str(libs / j) for j in JAVA_JARS]
    classes = tmp_path_factory.mktemp("java-classes")
    proc = subprocess.run(["javac", "-d", str(classes), "-cp", os.pathsep.join(jars),
                           str(E2E_DIR / "java" / "ClientCheck.java")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"javac failed:\n{proc.stdout}\n{proc.stderr}"
    return os.pathsep.join([str(classes)] + jars)


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_round_trip(broker, java_classpath, compression, tmp_path):
    topic = unique_topic(f"java-{compression}")
    msgs = make_messages("java")
    # java.io.tmpdir per test: zstd-jni and snappy-java unpack their native libraries there.
    proc = subprocess.run(["java", f"-Djava.io.tmpdir={tmp_path}", "-cp", java_classpath, "ClientCheck",
                           broker.bootstrap, topic, compression],
                          input=to_line_protocol(msgs), capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, f"ClientCheck exited {proc.returncode}:\n{proc.stderr[-4000:]}"

    acks, got, ends, meta = parse_line_protocol(proc.stdout)
    assert meta.get("PARTITIONS") == NUM_PARTITIONS, f"metadata: {meta}"
    assert sorted(acks) == list(range(len(msgs))), "producer did not report every message"
    for i, m in enumerate(msgs):
        m.partition, m.offset = acks[i]
    verify_round_trip(msgs, got, end_offsets=ends)
    assert_stored_codec(broker.bootstrap, topic, compression, len(msgs))
