#!/usr/bin/env python3
"""Stand-in for Apache Kafka's bin/kafka-topics.sh, for librdkafka's test suite.

librdkafka's tests call "$KAFKA_PATH/bin/kafka-topics.sh --bootstrap-server B ..." (test.c
test_kafka_topics) to create topics with configs, add partitions and delete topics. No package
registry ships Kafka's tools, so this speaks the Kafka protocol directly (Python stdlib only):

  --create --topic T [--partitions N] [--replication-factor R] [--config k=v]...   CreateTopics v2
  --alter  --topic T --partitions N                                              CreatePartitions v0
  --delete --topic T                                                             DeleteTopics v1

Exit status 0 on success; 1 with the broker's error code and message on stderr otherwise.
"""
import argparse
import socket
import struct
import sys

ERRORS = {0: "NONE", 7: "REQUEST_TIMED_OUT", 36: "TOPIC_ALREADY_EXISTS", 37: "INVALID_PARTITIONS",
          38: "INVALID_REPLICATION_FACTOR", 40: "INVALID_CONFIG", 41: "NOT_CONTROLLER",
          3: "UNKNOWN_TOPIC_OR_PARTITION", 17: "INVALID_TOPIC_EXCEPTION", 35: "UNSUPPORTED_VERSION",
          42: "INVALID_REQUEST", 44: "POLICY_VIOLATION"}


def s16(v): return struct.pack(">h", v)
def s32(v): return struct.pack(">i", v)
def string(v): b = v.encode(); return s16(len(b)) + b
def nstring(v): return s16(-1) if v is None else string(v)
def array(items): return s32(len(items)) + b"".join(items)


class Reader:
    def __init__(self, buf): self.buf, self.pos = buf, 0
    def take(self, n): b = self.buf[self.pos:self.pos + n]; self.pos += n; return b
    def i16(self): return struct.unpack(">h", self.take(2))[0]
    def i32(self): return struct.unpack(">i", self.take(4))[0]
    def nstring(self):
        n = self.i16()
        return None if n < 0 else self.take(n).decode()


def call(bootstrap, api_key, version, body, timeout_s):
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout_s) as s:
        req = s16(api_key) + s16(version) + s32(1) + string("kafka-topics-shim") + body
        s.sendall(s32(len(req)) + req)
        def recv(n):
            out = b""
            while len(out) < n:
                chunk = s.recv(n - len(out))
                if not chunk:
                    raise SystemExit("kafka-topics shim: connection closed by broker")
                out += chunk
            return out
        size = struct.unpack(">i", recv(4))[0]
        r = Reader(recv(size))
        r.i32()  # correlation id
        return r


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap-server", required=True)
    p.add_argument("--create", action="store_true")
    p.add_argument("--alter", action="store_true")
    p.add_argument("--delete", action="store_true")
    p.add_argument("--topic", required=True)
    p.add_argument("--partitions", type=int)
    p.add_argument("--replication-factor", type=int, default=-1)
    p.add_argument("--config", action="append", default=[])
    p.add_argument("--if-not-exists", action="store_true")
    a = p.parse_args()
    timeout_ms = 30000
    errors = []
    if a.create:
        configs = [string(k) + nstring(v) for k, v in (c.split("=", 1) for c in a.config)]
        topic = (string(a.topic) + s32(a.partitions if a.partitions else -1) + s16(a.replication_factor)
                 + array([]) + array(configs))
        r = call(a.bootstrap_server, 19, 2, array([topic]) + s32(timeout_ms) + b"\x00", 35)
        r.i32()  # throttle
        for _ in range(r.i32()):
            name, code, msg = r.nstring(), r.i16(), r.nstring()
            if code and not (code == 36 and a.if_not_exists):
                errors.append((name, code, msg))
    elif a.alter:
        if a.partitions is None:
            raise SystemExit("kafka-topics shim: --alter supports only --partitions")
        topic = string(a.topic) + s32(a.partitions) + s32(-1)
        r = call(a.bootstrap_server, 37, 0, array([topic]) + s32(timeout_ms) + b"\x00", 35)
        r.i32()
        for _ in range(r.i32()):
            name, code, msg = r.nstring(), r.i16(), r.nstring()
            if code:
                errors.append((name, code, msg))
    elif a.delete:
        r = call(a.bootstrap_server, 20, 1, array([string(a.topic)]) + s32(timeout_ms), 35)
        r.i32()
        for _ in range(r.i32()):
            name, code = r.nstring(), r.i16()
            if code:
                errors.append((name, code, None))
    else:
        raise SystemExit("kafka-topics shim: one of --create, --alter, --delete is required")
    for name, code, msg in errors:
        print(f"Error for topic {name}: {ERRORS.get(code, code)} ({code}): {msg}", file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
