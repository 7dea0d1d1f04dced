#!/usr/bin/env python3
"""A consumer-group member in its own process, for the test_groups_* tests: confluent-kafka
("ck") or kafka-python ("kpy"). Run as a subprocess so a test can close it cleanly (write
"CLOSE" to stdin, or close stdin) or kill -9 it.

stdout, one tab-separated event per line (flushed), parsed by groups_lib.Worker:
  ASSIGN  ms added now      partitions added (csv) and the assignment afterwards; ms since subscribe
  REVOKE  ms removed now    (eager: everything; cooperative: the increment)
  LOST    ms removed now
  GOT     partition offset key value
  COMMIT  partition next-offset          after a successful synchronous commit
  CERR    text                           a failed commit
  ERROR   text                           a consumer error
  CLOSED
Client logs (librdkafka debug=..., kafka-python logging) go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time

T0 = time.monotonic()
_out_lock = threading.Lock()


def emit(*fields) -> None:
    with _out_lock:
        sys.stdout.write("\t".join(str(f) for f in fields) + "\n")
        sys.stdout.flush()


def ms() -> int:
    return int((time.monotonic() - T0) * 1000)


def csv(parts) -> str:
    return ",".join(str(p) for p in sorted(parts))


def text(b):
    if b is None:
        return ""
    return bytes(b).decode("utf-8") if isinstance(b, (bytes, bytearray)) else str(b)


class Control:
    """stdin: "CLOSE" or EOF asks for a clean close."""

    def __init__(self):
        self.stop = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in sys.stdin:
            if line.strip() == "CLOSE":
                break
        self.stop.set()


def run_ck(a, ctl: Control) -> None:
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    conf = {
        "bootstrap.servers": a.bootstrap, "group.id": a.group, "client.id": a.client_id or a.name,
        "session.timeout.ms": a.session_timeout_ms, "heartbeat.interval.ms": a.heartbeat_ms,
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
        "enable.partition.eof": False, "fetch.wait.max.ms": 200,
    }
    if a.strategy:
        conf["partition.assignment.strategy"] = a.strategy
    if a.instance_id:
        conf["group.instance.id"] = a.instance_id
    if a.debug:
        conf["debug"] = a.debug
    for kv in a.conf:
        k, v = kv.split("=", 1)
        conf[k] = v
    c = Consumer(conf, logger=logging.getLogger("librdkafka"))
    owned: set[int] = set()
    t_sub = [0.0]

    def since():
        return int((time.monotonic() - t_sub[0]) * 1000)

    def cooperative():
        # librdkafka's strategies must all be eager or all cooperative; only cooperative-sticky is the latter.
        return "cooperative" in (a.strategy or "")

    def on_assign(consumer, parts):
        added = {p.partition for p in parts}
        if cooperative():
            owned.update(added)
        else:
            owned.clear()
            owned.update(added)
        emit("ASSIGN", since(), csv(added), csv(owned))

    def on_revoke(consumer, parts):
        removed = {p.partition for p in parts}
        owned.difference_update(removed)
        emit("REVOKE", since(), csv(removed), csv(owned))

    def on_lost(consumer, parts):
        removed = {p.partition for p in parts}
        owned.difference_update(removed)
        emit("LOST", since(), csv(removed), csv(owned))

    t_sub[0] = time.monotonic()
    c.subscribe([a.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    try:
        while not ctl.stop.is_set():
            msgs = c.consume(num_messages=200, timeout=0.2)
            nxt = {}
            for m in msgs:
                if m.error():
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        emit("ERROR", m.error())
                    continue
                emit("GOT", m.partition(), m.offset(), text(m.key()), text(m.value()))
                nxt[m.partition()] = m.offset() + 1
            if nxt and a.commit:
                try:
                    c.commit(offsets=[TopicPartition(a.topic, p, o) for p, o in nxt.items()], asynchronous=False)
                    for p, o in sorted(nxt.items()):
                        emit("COMMIT", p, o)
                except Exception as e:  # noqa: BLE001 - reported, the test decides
                    emit("CERR", repr(e))
    finally:
        c.close()
        emit("CLOSED")


def run_kpy(a, ctl: Control) -> None:
    from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

    kw = dict(bootstrap_servers=a.bootstrap, group_id=a.group, client_id=a.client_id or a.name,
              session_timeout_ms=a.session_timeout_ms, heartbeat_interval_ms=a.heartbeat_ms,
              auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=200,
              request_timeout_ms=30000)
    if a.instance_id:
        kw["group_instance_id"] = a.instance_id
    if a.strategy:
        names = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor}
        kw["partition_assignment_strategy"] = [names[s] for s in a.strategy.split(",")]
    c = KafkaConsumer(**kw)
    owned: set[int] = set()
    t_sub = [0.0]

    def since():
        return int((time.monotonic() - t_sub[0]) * 1000)

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            removed = {p.partition for p in revoked}
            owned.difference_update(removed)
            emit("REVOKE", since(), csv(removed), csv(owned))

        def on_partitions_assigned(self, assigned):
            added = {p.partition for p in assigned}
            owned.update(added)
            emit("ASSIGN", since(), csv(added), csv(owned))

        def on_partitions_lost(self, lost):
            removed = {p.partition for p in lost}
            owned.difference_update(removed)
            emit("LOST", since(), csv(removed), csv(owned))

    t_sub[0] = time.monotonic()
    c.subscribe([a.topic], listener=Listener())
    try:
        while not ctl.stop.is_set():
            batch = c.poll(timeout_ms=200)
            nxt = {}
            for tp, records in batch.items():
                for r in records:
                    emit("GOT", tp.partition, r.offset, text(r.key), text(r.value))
                    nxt[tp.partition] = r.offset + 1
            if nxt and a.commit:
                try:
                    c.commit({TopicPartition(a.topic, p): OffsetAndMetadata(o, "", -1) for p, o in nxt.items()})
                    for p, o in sorted(nxt.items()):
                        emit("COMMIT", p, o)
                except Exception as e:  # noqa: BLE001
                    emit("CERR", repr(e))
    finally:
        c.close(autocommit=False)
        emit("CLOSED")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", choices=["ck", "kpy"], required=True)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--name", default="spool-e2e-worker")
    ap.add_argument("--client-id", help="default: --name")
    ap.add_argument("--session-timeout-ms", type=int, default=6000)
    ap.add_argument("--heartbeat-ms", type=int, default=1000)
    ap.add_argument("--instance-id")
    ap.add_argument("--strategy", help="ck: librdkafka strategy string; kpy: range,roundrobin")
    ap.add_argument("--no-commit", dest="commit", action="store_false")
    ap.add_argument("--debug", help="librdkafka debug contexts (ck) or any value for DEBUG logging (kpy)")
    ap.add_argument("--conf", action="append", default=[], help="extra librdkafka key=value (ck)")
    a = ap.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if a.debug else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ctl = Control()
    (run_ck if a.client == "ck" else run_kpy)(a, ctl)


if __name__ == "__main__":
    main()
