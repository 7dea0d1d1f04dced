"""Apache Kafka's own command-line tools (kafka-topics.sh & co.) against a real Spool broker.

The tools are Kafka's main classes run by the thin wrappers in tests/kafka-tools/bin on the jars
that tests/kafka-tools/install.sh fetched (the Kafka version pinned in tests/kafka-tools/pom.xml).
Each test types the commands as a Kafka user would (`--bootstrap-server 127.0.0.1:PORT`) and checks
their printed output and exit codes. Every JVM start costs about a second, so the tests batch what
they can into few runs.

Unlike the other client tests, these skip (rather than fail) when the tool jars are not installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from e2e_lib import REPO_ROOT, unique_topic

TOOLS_DIR = REPO_ROOT / "tests" / "kafka-tools"
TOOLS_BIN = TOOLS_DIR / "bin"
KAFKA_TOOLS_HOME = Path(os.environ.get("KAFKA_TOOLS_HOME", REPO_ROOT / "target" / "kafka-tools"))
TIMEOUT = 60  # seconds, for any one tool run

# Log4j lines at WARN or above, as tools-log4j2.properties prints them: "[date] LEVEL message (logger)".
LOG_PROBLEM_RE = re.compile(r"^\[[^\]]+\] (WARN|ERROR|FATAL) ", re.M)


@pytest.fixture(autouse=True)
def _tools_installed():
    if not any((KAFKA_TOOLS_HOME / "libs").glob("kafka-tools-*.jar")):
        pytest.skip(f"Kafka tool jars not installed in {KAFKA_TOOLS_HOME / 'libs'}: "
                    f"run tests/kafka-tools/install.sh (or tests/e2e/install.sh)")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("no java on PATH for the Kafka tools: run tests/e2e/install.sh")


def tool(name: str, *args: str, stdin: str | None = None, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Runs tests/kafka-tools/bin/<name> with args, as a user would type it."""
    cmd = [str(TOOLS_BIN / name), *args]
    try:
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout,
                              stdin=None if stdin is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{name} {' '.join(args)} did not finish within {timeout}s:\n"
                    f"stdout: {_text(e.stdout)[-2000:]}\nstderr: {_text(e.stderr)[-3000:]}")


def _text(b) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


def ok(proc: subprocess.CompletedProcess) -> str:
    """The tool's stdout, once it exited 0 without logging a warning, an error or a stack trace."""
    what = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(proc.args))
    assert proc.returncode == 0, f"`{what}` exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    problems = LOG_PROBLEM_RE.findall(proc.stderr) or re.findall(r"\w+Exception\b", proc.stderr)
    assert not problems, f"`{what}` exited 0 but logged problems:\n{proc.stderr[-3000:]}"
    return proc.stdout


def topics(bootstrap: str, *args: str) -> subprocess.CompletedProcess:
    return tool("kafka-topics.sh", "--bootstrap-server", bootstrap, *args)


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    out = ok(topics(bootstrap, "--create", "--topic", topic, "--partitions", str(partitions),
                    "--replication-factor", "1"))
    assert out.strip() == f"Created topic {topic}."


def produce(bootstrap: str, topic: str, lines: list[str], keyed: bool = False) -> None:
    args = ["--bootstrap-server", bootstrap, "--topic", topic]
    if keyed:
        args += ["--property", "parse.key=true", "--property", "key.separator=:"]
    ok(tool("kafka-console-producer.sh", *args, stdin="".join(f"{line}\n" for line in lines)))


def consume(bootstrap: str, topic: str, n: int, *args: str) -> list[str]:
    """Console consumer until n messages (or 20 s without them); returns the printed lines."""
    proc = tool("kafka-console-consumer.sh", "--bootstrap-server", bootstrap, "--topic", topic,
                "--max-messages", str(n), "--timeout-ms", "20000", *args)
    out = ok(proc)
    assert f"Processed a total of {n} messages" in proc.stderr, proc.stderr[-2000:]
    return out.splitlines()


def describe_rows(text: str) -> list[dict]:
    """Rows of a kafka-consumer-groups table (header line GROUP ...) as dicts."""
    rows, header = [], None
    for line in text.splitlines():
        cols = line.split()
        if not cols:
            header = None
        elif cols[0] == "GROUP":
            header = cols
        elif header is not None and len(cols) == len(header):
            rows.append(dict(zip(header, cols)))
    return rows


def get_offsets(bootstrap: str, topic: str, *args: str) -> dict[int, int]:
    out = ok(tool("kafka-get-offsets.sh", "--bootstrap-server", bootstrap, "--topic", topic, *args))
    offsets = {}
    for line in out.splitlines():
        name, partition, offset = line.rsplit(":", 2)
        assert name == topic, out
        offsets[int(partition)] = int(offset)
    return offsets


# --- kafka-topics ------------------------------------------------------------------------------


def test_topics_create_list_describe(broker):
    topic = unique_topic("kt-topics")
    create_topic(broker.bootstrap, topic, 3)

    listed = ok(topics(broker.bootstrap, "--list")).split()
    assert topic in listed
    assert topic in ok(topics(broker.bootstrap, "--list", "--exclude-internal")).split()

    out = ok(topics(broker.bootstrap, "--describe", "--topic", topic))
    lines = out.splitlines()
    assert re.match(rf"Topic: {re.escape(topic)}\tTopicId: \S+\tPartitionCount: 3\tReplicationFactor: 1\t", lines[0]), out
    parts = [dict(re.findall(r"(\w+): (\S+)", line)) for line in lines[1:]]
    assert [p["Partition"] for p in parts] == ["0", "1", "2"], out
    for p in parts:
        assert (p["Topic"], p["Leader"], p["Replicas"], p["Isr"]) == (topic, "1", "1", "1"), out

    # Health views a Kafka operator runs: nothing under-replicated or unavailable on one node.
    assert ok(topics(broker.bootstrap, "--describe", "--under-replicated-partitions")).strip() == ""
    assert ok(topics(broker.bootstrap, "--describe", "--unavailable-partitions")).strip() == ""


def test_topics_create_errors(broker):
    topic = unique_topic("kt-topics-err")
    bad_rf = topics(broker.bootstrap, "--create", "--topic", topic, "--partitions", "1", "--replication-factor", "3")
    assert bad_rf.returncode == 1
    assert "InvalidReplicationFactorException" in bad_rf.stderr, bad_rf.stderr
    assert bad_rf.stdout.startswith("Error while executing topic command : Replication factor 3"), bad_rf.stdout

    create_topic(broker.bootstrap, topic, 1)
    again = topics(broker.bootstrap, "--create", "--topic", topic, "--partitions", "1", "--replication-factor", "1")
    assert again.returncode == 1
    assert f"Topic '{topic}' already exists." in again.stdout, again.stdout
    assert "TopicExistsException" in again.stderr, again.stderr
    ok(topics(broker.bootstrap, "--create", "--if-not-exists", "--topic", topic, "--partitions", "1",
              "--replication-factor", "1"))


def test_topics_alter_partitions(broker):
    topic = unique_topic("kt-alter")
    create_topic(broker.bootstrap, topic, 2)
    ok(topics(broker.bootstrap, "--alter", "--topic", topic, "--partitions", "5"))
    out = ok(topics(broker.bootstrap, "--describe", "--topic", topic))
    assert "PartitionCount: 5\t" in out.splitlines()[0], out
    assert re.findall(r"\tPartition: (\d+)\tLeader: 1\t", out) == ["0", "1", "2", "3", "4"], out

    shrink = topics(broker.bootstrap, "--alter", "--topic", topic, "--partitions", "3")
    assert shrink.returncode == 1
    assert "InvalidPartitionsException" in shrink.stderr, shrink.stderr
    assert "Topic currently has 5 partitions, which is higher than the requested 3." in shrink.stdout, shrink.stdout


def test_topics_delete(broker):
    topic = unique_topic("kt-delete")
    create_topic(broker.bootstrap, topic, 1)
    ok(topics(broker.bootstrap, "--delete", "--topic", topic))
    assert topic not in ok(topics(broker.bootstrap, "--list")).split()
    gone = topics(broker.bootstrap, "--describe", "--topic", topic)
    assert gone.returncode == 1
    assert f"Topic '{topic}' does not exist as expected" in gone.stdout, gone.stdout


# --- console producer / consumer -----------------------------------------------------------


def test_console_producer_consumer_with_keys(broker):
    topic = unique_topic("kt-console")
    create_topic(broker.bootstrap, topic, 3)
    records = [("k1", "v1"), ("k2", "v2"), ("k3", "hello world"), ("k1", "v1 again"), ("k4", "a:b")]
    produce(broker.bootstrap, topic, [f"{k}:{v}" for k, v in records], keyed=True)
    # (--property, the older name of --formatter-property, makes Kafka 4 print a deprecation notice on stdout.)
    got = consume(broker.bootstrap, topic, len(records), "--from-beginning",
                  "--formatter-property", "print.key=true", "--formatter-property", "print.partition=true")
    by_key = {}
    for line in got:
        part, key, value = line.split("\t", 2)
        assert re.fullmatch(r"Partition:[012]", part), got
        by_key.setdefault(key, []).append((part, value))
    # Across 3 partitions only per-key order holds; the separator splits at the first ':'.
    assert {k: [v for _, v in vs] for k, vs in by_key.items()} == \
        {"k1": ["v1", "v1 again"], "k2": ["v2"], "k3": ["hello world"], "k4": ["a:b"]}, got
    # Exactly one partition per key, as Kafka's default partitioner places them.
    assert all(len({p for p, _ in vs}) == 1 for vs in by_key.values()), got


def test_console_consumer_only_new_records(broker):
    topic = unique_topic("kt-new")
    group = unique_topic("kt-new-group")
    create_topic(broker.bootstrap, topic, 1)
    produce(broker.bootstrap, topic, ["old-1", "old-2"])
    consumer = subprocess.Popen(
        [str(TOOLS_BIN / "kafka-console-consumer.sh"), "--bootstrap-server", broker.bootstrap, "--topic", topic,
         "--group", group, "--max-messages", "2", "--timeout-ms", "30000"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Without --from-beginning the consumer starts at the end: wait until it owns the partition.
        deadline = time.monotonic() + 30
        while True:
            members = describe_rows(ok(tool("kafka-consumer-groups.sh", "--bootstrap-server", broker.bootstrap,
                                            "--describe", "--group", group, "--members")))
            if any(m.get("#PARTITIONS") == "1" for m in members):
                break
            assert consumer.poll() is None, f"console consumer exited early:\n{consumer.stderr.read()}"
            assert time.monotonic() < deadline, f"consumer never got the partition: {members}"
            time.sleep(0.3)
        time.sleep(1)  # its first fetch position comes from ListOffsets(latest) right after assignment
        produce(broker.bootstrap, topic, ["new-1", "new-2"])
        out, err = consumer.communicate(timeout=TIMEOUT)
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.communicate()
    assert consumer.returncode == 0, err[-3000:]
    assert out.splitlines() == ["new-1", "new-2"], (out, err[-2000:])
    assert "Processed a total of 2 messages" in err


# --- kafka-consumer-groups -----------------------------------------------------------------


def _group_consumed_part(bootstrap: str, topic: str, group: str) -> None:
    """A 1-partition topic of 10 records whose group has consumed (and committed) the first 6."""
    create_topic(bootstrap, topic, 1)
    produce(bootstrap, topic, [f"m{i}" for i in range(6)])
    assert consume(bootstrap, topic, 6, "--group", group, "--from-beginning") == [f"m{i}" for i in range(6)]
    produce(bootstrap, topic, [f"m{i}" for i in range(6, 10)])


def groups(bootstrap: str, *args: str) -> subprocess.CompletedProcess:
    return tool("kafka-consumer-groups.sh", "--bootstrap-server", bootstrap, *args)


def test_consumer_groups_list_describe_lag(broker):
    topic, group = unique_topic("kt-lag"), unique_topic("kt-lag-group")
    _group_consumed_part(broker.bootstrap, topic, group)

    assert group in ok(groups(broker.bootstrap, "--list")).split()
    proc = groups(broker.bootstrap, "--describe", "--group", group)
    out = ok(proc)
    assert f"Consumer group '{group}' has no active members." in proc.stderr
    rows = describe_rows(out)
    assert [(r["TOPIC"], r["PARTITION"], r["CURRENT-OFFSET"], r["LOG-END-OFFSET"], r["LAG"]) for r in rows] == \
        [(topic, "0", "6", "10", "4")], out

    state = describe_rows(ok(groups(broker.bootstrap, "--describe", "--group", group, "--state")))
    assert [(r["GROUP"], r["STATE"], r["#MEMBERS"]) for r in state] == [(group, "Empty", "0")]
    listed = describe_rows(ok(groups(broker.bootstrap, "--list", "--state")))
    assert {r["GROUP"]: r["STATE"] for r in listed}.get(group) == "Empty", listed

    missing = groups(broker.bootstrap, "--describe", "--group", "no-such-group")
    ok(missing)
    assert "Error: Consumer group 'no-such-group' does not exist." in missing.stdout + missing.stderr


def test_consumer_groups_reset_offsets_and_delete(broker):
    topic, group = unique_topic("kt-reset"), unique_topic("kt-reset-group")
    _group_consumed_part(broker.bootstrap, topic, group)

    dry = describe_rows(ok(groups(broker.bootstrap, "--group", group, "--topic", topic, "--reset-offsets",
                                  "--to-earliest", "--dry-run")))
    assert [(r["TOPIC"], r["PARTITION"], r["NEW-OFFSET"]) for r in dry] == [(topic, "0", "0")]
    lag = describe_rows(ok(groups(broker.bootstrap, "--describe", "--group", group)))
    assert [(r["CURRENT-OFFSET"], r["LAG"]) for r in lag] == [("6", "4")], "--dry-run changed the offsets"

    done = describe_rows(ok(groups(broker.bootstrap, "--group", group, "--topic", topic, "--reset-offsets",
                                   "--to-earliest", "--execute")))
    assert [(r["TOPIC"], r["PARTITION"], r["NEW-OFFSET"]) for r in done] == [(topic, "0", "0")]
    lag = describe_rows(ok(groups(broker.bootstrap, "--describe", "--group", group)))
    assert [(r["CURRENT-OFFSET"], r["LOG-END-OFFSET"], r["LAG"]) for r in lag] == [("0", "10", "10")]

    # The group resumes from the reset position.
    assert consume(broker.bootstrap, topic, 10, "--group", group) == [f"m{i}" for i in range(10)]

    out = ok(groups(broker.bootstrap, "--delete", "--group", group))
    assert f"Deletion of requested consumer groups ('{group}') was successful." in out
    assert group not in ok(groups(broker.bootstrap, "--list")).split()


# --- kafka-configs -------------------------------------------------------------------------


def configs(bootstrap: str, topic: str, *args: str) -> subprocess.CompletedProcess:
    return tool("kafka-configs.sh", "--bootstrap-server", bootstrap, "--entity-type", "topics",
                "--entity-name", topic, *args)


def test_configs_alter_describe_topic(broker):
    topic = unique_topic("kt-configs")
    create_topic(broker.bootstrap, topic, 1)
    out = ok(configs(broker.bootstrap, topic, "--alter", "--add-config", "retention.ms=3600000,max.message.bytes=2000000"))
    assert out.strip() == f"Completed updating config for topic {topic}."

    out = ok(configs(broker.bootstrap, topic, "--describe"))
    lines = out.splitlines()
    assert lines[0] == f"Dynamic configs for topic {topic} are:", out
    entries = dict(re.match(r"  ([\w.]+)=(\S*) sensitive=false synonyms=", line).groups() for line in lines[1:])
    assert entries == {"retention.ms": "3600000", "max.message.bytes": "2000000"}, out
    described = ok(topics(broker.bootstrap, "--describe", "--topic", topic)).splitlines()[0]
    assert re.search(r"Configs: (?=.*max\.message\.bytes=2000000)(?=.*retention\.ms=3600000)", described), described

    everything = ok(configs(broker.bootstrap, topic, "--describe", "--all"))
    assert f"All configs for topic {topic} are:" in everything
    assert re.search(r"^  retention\.ms=3600000 ", everything, re.M), everything
    assert re.search(r"^  cleanup\.policy=delete ", everything, re.M), everything

    ok(configs(broker.bootstrap, topic, "--alter", "--delete-config", "max.message.bytes"))
    out = ok(configs(broker.bootstrap, topic, "--describe"))
    assert "max.message.bytes" not in out and "retention.ms=3600000" in out, out

    bad = configs(broker.bootstrap, topic, "--alter", "--add-config", "retention.ms=soon")
    assert bad.returncode == 1, bad
    assert "InvalidConfigurationException: Invalid value soon for configuration retention.ms" in bad.stderr, bad.stderr
    unknown = configs(broker.bootstrap, topic, "--alter", "--add-config", "no.such.config=1")
    assert unknown.returncode == 1, unknown
    assert "InvalidConfigurationException" in unknown.stderr and "no.such.config" in unknown.stderr, unknown.stderr
    assert "retention.ms=3600000" in ok(configs(broker.bootstrap, topic, "--describe"))


def test_configs_describe_synonyms(broker):
    topic = unique_topic("kt-synonyms")
    create_topic(broker.bootstrap, topic, 1)
    ok(configs(broker.bootstrap, topic, "--alter", "--add-config", "retention.ms=3600000"))
    out = ok(configs(broker.bootstrap, topic, "--describe"))
    # As a Kafka broker with its default log.retention.hours=168 answers.
    assert ("retention.ms=3600000 sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:retention.ms=3600000, "
            "DEFAULT_CONFIG:log.retention.hours=168}") in out, out


# --- broker settings under Kafka's names ---------------------------------------------------


def test_broker_settings_from_server_properties(broker, tmp_path):
    """A Kafka server.properties, an --override and a SPOOL_ variable set the broker;
    kafka-configs shows every setting with its source; a client may then ask for the short
    session timeout the file allows."""
    props = tmp_path / "server.properties"
    props.write_text("# as in Kafka's config/server.properties\n"
                     "num.network.threads=3\n"
                     "log.retention.hours=2\n"
                     "group.min.session.timeout.ms = 500\n")
    broker.stop()
    broker.extra_args = ["--config-file", str(props), "--override", "group.initial.rebalance.delay.ms=0"]
    os.environ["SPOOL_LOG_SEGMENT_BYTES"] = "2000000"
    try:
        broker.start()
    finally:
        del os.environ["SPOOL_LOG_SEGMENT_BYTES"]
    out = ok(tool("kafka-configs.sh", "--bootstrap-server", broker.bootstrap, "--entity-type", "brokers",
                  "--entity-name", "1", "--describe", "--all"))
    for line in ["log.retention.hours=2 sensitive=false synonyms={STATIC_BROKER_CONFIG:log.retention.hours=2}",
                 "group.min.session.timeout.ms=500 sensitive=false",
                 "group.initial.rebalance.delay.ms=0 sensitive=false",
                 "log.segment.bytes=2000000 sensitive=false",
                 "num.network.threads=3 sensitive=false",
                 "log.roll.hours=168 sensitive=false synonyms={DEFAULT_CONFIG:log.roll.hours=168}",
                 # The flag the test broker starts with wins over the file.
                 "node.id=1 sensitive=false synonyms={STATIC_BROKER_CONFIG:node.id=1}"]:
        assert line in out, f"{line!r} not in:\n{out}"
    assert "accepted with no effect in Spool: num.network.threads" in broker.log_tail(200)
    # A 1 s session is below Kafka's default minimum (6 s), allowed by the file's 500 ms.
    from kafka import KafkaConsumer
    topic = unique_topic("kt-session")
    create_topic(broker.bootstrap, topic, 1)
    consumer = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=unique_topic("g-session"),
                             session_timeout_ms=1000, heartbeat_interval_ms=300, request_timeout_ms=5000,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    try:
        consumer.poll(timeout_ms=3000)
        assert consumer.assignment(), "the consumer with a 1 s session joined no group"
    finally:
        consumer.close()


def test_broker_settings_refuse_unknown_names(tmp_path):
    from e2e_lib import spool_bin
    bad = tmp_path / "server.properties"
    bad.write_text("log.retention.hourz=1\n")
    proc = subprocess.run([str(spool_bin()), "serve", "--config-file", str(bad), "--data-dir", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "log.retention.hourz" in proc.stderr, proc.stderr
    proc = subprocess.run([str(spool_bin()), "serve", "--data-dir", str(tmp_path / "d")], capture_output=True,
                          text=True, timeout=30, env={**os.environ, "SPOOL_LOG_SEGMENT_BYTES": "big"})
    assert proc.returncode != 0 and "SPOOL_LOG_SEGMENT_BYTES" in proc.stderr, proc.stderr


# --- kafka-broker-api-versions -------------------------------------------------------------


def test_broker_api_versions(broker):
    out = ok(tool("kafka-broker-api-versions.sh", "--bootstrap-server", broker.bootstrap))
    assert out.startswith(f"{broker.bootstrap} (id: 1 rack: null isFenced: false) -> (\n"), out[:300]
    apis = dict(re.findall(r"^\t(\w+)\(\d+\): (.*?),?$", out, re.M))
    # What the tools in this file need, each usable by the Kafka client of the tools' version.
    for api in ["Produce", "Fetch", "ListOffsets", "Metadata", "OffsetCommit", "OffsetFetch", "FindCoordinator",
                "JoinGroup", "Heartbeat", "LeaveGroup", "SyncGroup", "DescribeGroups", "ListGroups", "ApiVersions",
                "CreateTopics", "DeleteTopics", "DeleteRecords", "InitProducerId", "DescribeConfigs",
                "AlterConfigs", "CreatePartitions", "DeleteGroups", "IncrementalAlterConfigs", "OffsetDelete",
                "DescribeCluster"]:
        assert "[usable: " in apis.get(api, ""), f"{api}: {apis.get(api)}\n{out}"


# --- perf tests ----------------------------------------------------------------------------

PERF_RECORDS = 20000


def producer_perf(bootstrap: str, topic: str) -> str:
    out = ok(tool("kafka-producer-perf-test.sh", "--topic", topic, "--num-records", str(PERF_RECORDS),
                  "--record-size", "100", "--throughput", "-1",
                  "--producer-props", f"bootstrap.servers={bootstrap}", "acks=all", timeout=120))
    last = out.strip().splitlines()[-1]
    assert re.match(rf"{PERF_RECORDS} records sent, [\d.]+ records/sec \([\d.]+ MB/sec\), [\d.]+ ms avg latency", last), out
    return out


def test_producer_perf_test(broker):
    topic = unique_topic("kt-perf")
    create_topic(broker.bootstrap, topic, 3)
    producer_perf(broker.bootstrap, topic)
    assert sum(get_offsets(broker.bootstrap, topic).values()) == PERF_RECORDS


def test_consumer_perf_test(broker):
    topic = unique_topic("kt-cperf")
    create_topic(broker.bootstrap, topic, 3)
    producer_perf(broker.bootstrap, topic)
    out = ok(tool("kafka-consumer-perf-test.sh", "--bootstrap-server", broker.bootstrap, "--topic", topic,
                  "--num-records", str(PERF_RECORDS), "--timeout", "30000", timeout=120))
    header, row = out.strip().splitlines()[-2:]
    stats = dict(zip([h.strip() for h in header.split(",")], [v.strip() for v in row.split(",")]))
    assert stats["data.consumed.in.nMsg"] == str(PERF_RECORDS), out
    assert abs(float(stats["data.consumed.in.MB"]) - PERF_RECORDS * 100 / 1024 / 1024) < 0.01, out


# --- offsets: kafka-get-offsets, kafka-delete-records --------------------------------------


def test_get_offsets(broker):
    topic = unique_topic("kt-offsets")
    create_topic(broker.bootstrap, topic, 3)
    produce(broker.bootstrap, topic, [f"key{i}:value{i}" for i in range(30)], keyed=True)
    latest = get_offsets(broker.bootstrap, topic)
    assert sorted(latest) == [0, 1, 2] and sum(latest.values()) == 30, latest
    assert get_offsets(broker.bootstrap, topic, "--time", "-1") == latest
    assert get_offsets(broker.bootstrap, topic, "--time", "earliest") == {0: 0, 1: 0, 2: 0}
    assert get_offsets(broker.bootstrap, topic, "--time", "-2", "--partitions", "0,2") == {0: 0, 2: 0}
    # A timestamp before any record: the first offset of each partition.
    assert get_offsets(broker.bootstrap, topic, "--time", "1") == {0: 0, 1: 0, 2: 0}


def test_delete_records(broker, tmp_path):
    topic = unique_topic("kt-delrec")
    create_topic(broker.bootstrap, topic, 2)
    produce(broker.bootstrap, topic, [f"m{i}" for i in range(10)])  # the sticky partitioner: one partition
    latest = get_offsets(broker.bootstrap, topic)
    full = max(latest, key=latest.get)
    assert latest[full] == 10, latest
    spec = tmp_path / "offsets.json"
    spec.write_text(json.dumps({"version": 1, "partitions": [{"topic": topic, "partition": full, "offset": 4}]}))
    out = ok(tool("kafka-delete-records.sh", "--bootstrap-server", broker.bootstrap, "--offset-json-file", str(spec)))
    assert f"partition: {topic}-{full}\tlow_watermark: 4" in out, out

    assert get_offsets(broker.bootstrap, topic, "--time", "earliest")[full] == 4
    assert get_offsets(broker.bootstrap, topic)[full] == 10
    assert consume(broker.bootstrap, topic, 6, "--from-beginning") == [f"m{i}" for i in range(4, 10)]

    # offset -1: up to the high watermark.
    spec.write_text(json.dumps({"version": 1, "partitions": [{"topic": topic, "partition": full, "offset": -1}]}))
    out = ok(tool("kafka-delete-records.sh", "--bootstrap-server", broker.bootstrap, "--offset-json-file", str(spec)))
    assert f"partition: {topic}-{full}\tlow_watermark: 10" in out, out
    assert get_offsets(broker.bootstrap, topic, "--time", "earliest")[full] == 10


# --- what Spool does not implement ---------------------------------------------------------


def test_metadata_quorum_unsupported(broker):
    # Spool has no KRaft quorum and does not advertise DescribeQuorum (55): the tool says so by name.
    for sub in ("--status", "--replication"):
        proc = tool("kafka-metadata-quorum.sh", "--bootstrap-server", broker.bootstrap, "describe", sub)
        assert proc.returncode == 1, proc
        assert proc.stderr.splitlines()[0] == ("org.apache.kafka.common.errors.UnsupportedVersionException: "
                                               "The node does not support DESCRIBE_QUORUM"), proc.stderr


def test_leader_election_on_a_single_node_finds_the_leader_elected(broker):
    # ElectLeaders (43): a single node's partitions are led by their only replica already.
    topic = unique_topic("kt-elect")
    create_topic(broker.bootstrap, topic, 1)
    out = ok(tool("kafka-leader-election.sh", "--bootstrap-server", broker.bootstrap, "--election-type", "preferred",
                  "--topic", topic, "--partition", "0"))
    assert f"Valid replica already elected for partitions {topic}-0" in out, out
    missing = tool("kafka-leader-election.sh", "--bootstrap-server", broker.bootstrap, "--election-type", "unclean",
                   "--topic", topic, "--partition", "7")
    assert missing.returncode == 1 and "UnknownTopicOrPartition" in missing.stdout + missing.stderr, missing
