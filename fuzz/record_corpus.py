#!/usr/bin/env python3
"""Records the request frames real clients send, as the fuzzer's seed corpus.

A proxy on a loopback port forwards to a broker and writes each request frame (without its size
prefix) to fuzz/corpus/handle_frame/<sha1>, once per distinct frame. The broker must advertise
the proxy's address (`--advertised`) so clients come back through it. The end-to-end suite runs
every broker behind it when E2E_RECORD_FRAMES=1 (tests/e2e/conftest.py):

    E2E_RECORD_FRAMES=1 target/e2e-venv/bin/python -m pytest tests/e2e -k "kcat or kafkajs ..."
"""

import argparse
import hashlib
import os
import socket
import struct
import threading

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "handle_frame")
# Frames kept per (api key, version): enough variety, a corpus that stays small.
PER_VERSION = 12


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def pump_requests(client, broker, seen):
    try:
        while True:
            size = struct.unpack(">i", read_exact(client, 4))[0]
            frame = read_exact(client, size)
            digest = hashlib.sha1(frame).hexdigest()
            key, version = struct.unpack(">hh", frame[:4]) if len(frame) >= 4 else (-1, -1)
            name = f"{key:02d}-v{version:02d}-{digest[:16]}"
            kept = sum(1 for n in seen if n.startswith(f"{key:02d}-v{version:02d}-"))
            if name not in seen and kept < PER_VERSION:
                seen.add(name)
                with open(os.path.join(CORPUS, name), "wb") as f:
                    f.write(frame)
            broker.sendall(struct.pack(">i", size) + frame)
    except (EOFError, OSError):
        pass
    finally:
        for s in (client, broker):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def pump_responses(broker, client):
    try:
        while True:
            chunk = broker.recv(65536)
            if not chunk:
                break
            client.sendall(chunk)
    except OSError:
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", default="127.0.0.1:9092")
    parser.add_argument("--listen", default="127.0.0.1:19092")
    args = parser.parse_args()
    os.makedirs(CORPUS, exist_ok=True)
    seen = set(os.listdir(CORPUS))
    bhost, bport = args.broker.rsplit(":", 1)
    lhost, lport = args.listen.rsplit(":", 1)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((lhost, int(lport)))
    server.listen(64)
    while True:
        client, _ = server.accept()
        try:
            broker = socket.create_connection((bhost, int(bport)))
        except OSError:
            client.close()
            continue
        threading.Thread(target=pump_requests, args=(client, broker, seen), daemon=True).start()
        threading.Thread(target=pump_responses, args=(broker, client), daemon=True).start()


if __name__ == "__main__":
    main()
