"""kcat 1.7.1 (Debian, librdkafka 2.0.2) against a real Spool broker.

librdkafka 2.0.2 turns features on only when our ApiVersions ranges contain the exact
versions it checks; a miss does not fail, it silently degrades (uncompressed batches,
no headers, no idempotence). So besides the round trip this checks kcat's log and the
stored batches for those silent fallbacks."""

import json
import os
import re
import shutil
import subprocess
import uuid

import pytest

from e2e_lib import (COMPRESSIONS, NUM_PARTITIONS, Got, assert_stored_codec, make_messages, unique_topic,
                     verify_round_trip)

KCAT = os.environ.get("KCAT", "kcat")

# What librdkafka 2.0.2 logs (debug context "msg") when it drops a codec because of our
# ApiVersions answer, and its per-request summary, which ends with the codec used.
NOT_COMPRESSING = "not compressing batch"
MESSAGESET_RE = re.compile(r"Produce MessageSet with \d+ message\(s\) \(.*, (\w+)\)\s*$", re.M)


def kcat(bootstrap, *args, stdin=None, timeout=60):
    if shutil.which(KCAT) is None:
        pytest.fail(f"{KCAT} not found: run tests/e2e/install.sh (Debian package kcat)")
    return subprocess.run([KCAT, "-b", bootstrap, *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout)


def check_ok(proc, what):
    assert proc.returncode == 0, f"kcat {what} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    # kcat's own error lines ("% ERROR: ...", "% Delivery failed ..."); debug lines may say NO_ERROR.
    bad = [line for line in proc.stderr.splitlines() if line.startswith(("% ERROR", "% Delivery failed"))]
    assert not bad, f"kcat {what} reported errors:\n" + "\n".join(bad[:10])


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_round_trip(broker, compression):
    # No admin API in kcat: the topic is auto-created with --num-partitions 3.
    topic = unique_topic(f"kcat-{compression}")
    run_id = uuid.uuid4().hex[:8]
    msgs = make_messages("kcat", with_headers=False)
    for m in msgs:
        m.headers = [("client", "kcat"), ("run", run_id)]  # kcat's -H applies to every message

    produce = kcat(
        broker.bootstrap, "-P", "-t", topic, "-K:", "-H", "client=kcat", "-H", f"run={run_id}",
        # -X compression.codec is what -z sets; -z's help text does not list zstd.
        "-X", f"compression.codec={compression}",
        # Idempotence keeps per-partition order under retries and needs InitProducerId 0 advertised.
        "-X", "enable.idempotence=true", "-X", "acks=all", "-X", "linger.ms=20",
        # debug=msg makes librdkafka log each produce request with its codec, and the fallback.
        "-X", "debug=msg",
        stdin="".join(f"{m.key}:{m.value}\n" for m in msgs))
    check_ok(produce, "produce")
    fallback = [line for line in produce.stderr.splitlines() if NOT_COMPRESSING in line]
    assert not fallback, (
        f"librdkafka 2.0.2 silently disabled {compression}: our ApiVersions lacks a version it checks "
        f"(Produce 0 for gzip/snappy/lz4, Produce 7 + Fetch 10 for zstd):\n{fallback[0]}")
    used = MESSAGESET_RE.findall(produce.stderr)
    assert used, f"no produce request in kcat's debug log:\n{produce.stderr[-2000:]}"
    want = "uncompressed" if compression == "none" else compression
    assert set(used) == {want}, f"produce requests used {sorted(set(used))}, expected {want}"
    assert "PID{Invalid}" not in produce.stderr, "idempotence is off: InitProducerId 0 not advertised?"

    meta = kcat(broker.bootstrap, "-L", "-J", "-t", topic, timeout=30)
    check_ok(meta, "metadata")
    topics = [t for t in json.loads(meta.stdout)["topics"] if t["topic"] == topic]
    assert len(topics) == 1, meta.stdout
    assert sorted(p["partition"] for p in topics[0]["partitions"]) == list(range(NUM_PARTITIONS))

    # -C without -G is assign-based: every partition from the beginning, exit at the end (-e).
    consume = kcat(broker.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
                   "-X", "check.crcs=true", "-f", r"%p\t%o\t%k\t%s\t%h\n")
    check_ok(consume, "consume")
    got = []
    for line in consume.stdout.splitlines():
        p, o, k, v, h = line.split("\t")
        headers = [tuple(kv.split("=", 1)) for kv in h.split(",")] if h else []
        got.append(Got(int(p), int(o), k, v, headers))

    # High watermarks via ListOffsets (timestamp -1 = latest).
    query = kcat(broker.bootstrap, "-Q", *[a for p in range(NUM_PARTITIONS) for a in ("-t", f"{topic}:{p}:-1")],
                 timeout=30)
    check_ok(query, "offset query")
    ends = {int(p): int(o) for p, o in re.findall(r"\[(\d+)\] offset (-?\d+)", query.stdout)}
    assert sorted(ends) == list(range(NUM_PARTITIONS)), query.stdout

    verify_round_trip(msgs, got, end_offsets=ends)
    assert_stored_codec(broker.bootstrap, topic, compression, len(msgs))
