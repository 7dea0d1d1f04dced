"""KafkaJS 2.2.4 (non-flexible protocol versions only) against a real Spool broker,
through js/client_check.js."""

import shutil
import subprocess

import pytest

from e2e_lib import (COMPRESSIONS, E2E_DIR, NUM_PARTITIONS, assert_stored_codec, make_messages,
                     parse_line_protocol, to_line_protocol, unique_topic, verify_round_trip)

JS_DIR = E2E_DIR / "js"


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_round_trip(broker, compression):
    if shutil.which("node") is None:
        pytest.fail("node not found")
    if not (JS_DIR / "node_modules" / "kafkajs").is_dir():
        pytest.fail(f"{JS_DIR}/node_modules missing: run tests/e2e/install.sh (npm ci)")

    topic = unique_topic(f"kjs-{compression}")
    msgs = make_messages("kjs")
    proc = subprocess.run(["node", "client_check.js", broker.bootstrap, topic, compression], cwd=JS_DIR,
                          input=to_line_protocol(msgs), capture_output=True, text=True, timeout=170)
    if proc.returncode == 3 and proc.stdout.startswith("UNAVAILABLE"):
        pytest.skip(f"KafkaJS {compression} codec package unavailable: {proc.stdout.strip()}")
    assert proc.returncode == 0, f"client_check.js exited {proc.returncode}:\n{proc.stderr[-4000:]}"

    acks, got, ends, meta = parse_line_protocol(proc.stdout)
    assert meta.get("PARTITIONS") == NUM_PARTITIONS, f"metadata: {meta}"
    assert sorted(acks) == list(range(len(msgs))), "producer did not report every message"
    for i, m in enumerate(msgs):
        m.partition, m.offset = acks[i]
    verify_round_trip(msgs, got, end_offsets=ends)
    if compression != "none":
        # The codec ran both ways: batches went out compressed and came back compressed.
        assert meta.get("CODEC compress", 0) > 0, f"KafkaJS never compressed with {compression}"
        assert meta.get("CODEC decompress", 0) > 0, f"KafkaJS never had a {compression} batch to decompress"
    assert_stored_codec(broker.bootstrap, topic, compression, len(msgs))
