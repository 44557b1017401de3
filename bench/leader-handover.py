#!/usr/bin/env python3
"""What a planned disruption of the etcd leader costs writers, with and
without an explicit leadership hand-over first (etcd's MoveLeader to the
voter furthest ahead, as Talos does before it stops etcd). nodeboot does
not hand over; this bench is why.

A real etcd 3.5 cluster of three members on 127.0.0.1 (the binaries of
tests/fetch-etcd, default heartbeat 100 ms and election timeout 1000 ms,
as the nodes run). A writer puts a key every 10 ms through the two members
that stay up (a client of a disrupted member moves to another, as the API
server does), each put with a 2 s timeout. Two disruptions of the leader:
a stop (SIGTERM, as `systemctl restart` and a reboot stop it) and a start
again, and a defragmentation with --mib MiB live. Each is run without and
with `/v3/maintenance/transfer-leadership` on the leader's client URL
first. Prints per row the longest time between two acknowledged writes
around the disruption (p50 and max over the rounds) and the writes that
failed. Asserts nothing.

    python3 bench/leader-handover.py [--rounds 3] [--mib 300]
"""

import argparse
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def etcd_bin():
    out = subprocess.run([REPO / "tests/fetch-etcd"], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url, path, body, timeout=2.0):
    req = urllib.request.Request(
        url + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


class Member:
    def __init__(self, binary, dir, name, client, peer, initial):
        self.binary, self.dir, self.name = binary, dir, name
        self.url = f"http://127.0.0.1:{client}"
        self.peer = f"http://127.0.0.1:{peer}"
        self.initial = initial
        self.proc = None

    def start(self, state):
        log = open(self.dir / f"{self.name}.log", "ab")
        self.proc = subprocess.Popen(
            [
                self.binary / "etcd", "--name", self.name, "--data-dir", str(self.dir / self.name),
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", self.peer, "--initial-advertise-peer-urls", self.peer,
                "--initial-cluster", self.initial, "--initial-cluster-state", state,
            ],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)

    def status(self):
        return call(self.url, "/v3/maintenance/status", {}, timeout=1.0)


def wait(what, check, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def leader(members):
    ids = set()
    for m in members:
        try:
            ids.add(int(m.status()["leader"]))
        except OSError:
            return None
    if len(ids) != 1 or 0 in ids:
        return None
    lead = ids.pop()
    return next((m for m in members if int(m.status()["header"]["member_id"]) == lead), None)


class Writer(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.urls, self.acked, self.failed, self.running = [], [], 0, True

    def run(self):
        i = 0
        while self.running:
            url = self.urls[i % len(self.urls)]
            try:
                call(url, "/v3/kv/put", {"key": "L2s=", "value": "dg=="}, timeout=2.0)
                self.acked.append(time.monotonic())
            except OSError:
                self.failed += 1
            i += 1
            time.sleep(0.01)


def load(members, mib):
    """About `mib` MiB of live data (10 KiB values), for a defragmentation
    that lasts: it rewrites what is live."""
    value = base64.b64encode(os.urandom(10 * 1024)).decode()
    for i in range(mib * 1024 // 10):
        key = base64.b64encode(f"/data/{i:08d}".encode()).decode()
        call(members[i % 3].url, "/v3/kv/put", {"key": key, "value": value}, timeout=10.0)


def round_(members, hand_over, disruption):
    lead = leader(members)
    others = [m for m in members if m is not lead]
    w = Writer()
    w.urls = [m.url for m in others]
    w.start()
    time.sleep(1.0)
    start = time.monotonic()
    if hand_over:
        target = max(others, key=lambda m: int(m.status()["header"]["revision"]))
        target_id = str(int(target.status()["header"]["member_id"]))
        call(lead.url, "/v3/maintenance/transfer-leadership", {"targetID": target_id}, timeout=5.0)
    if disruption == "defragment":
        call(lead.url, "/v3/maintenance/defragment", {}, timeout=300.0)
    else:
        lead.stop()
        time.sleep(1.0)
        lead.start("existing")
    wait("the member back with one leader", lambda: leader(members) is not None)
    time.sleep(1.0)
    w.running = False
    w.join()
    around = [t for t in w.acked if t >= start - 0.5]
    gaps = [b - a for a, b in zip(around, around[1:], strict=False)]
    return max(gaps), w.failed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--mib", type=int, default=300, help="live data before the defragmentation rounds"
    )
    args = ap.parse_args()
    binary = etcd_bin()
    with tempfile.TemporaryDirectory(prefix="nodeboot-handover-") as d:
        dir = Path(d)
        ports = [(free_port(), free_port()) for _ in range(3)]
        initial = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, (_, p) in enumerate(ports))
        members = [Member(binary, dir, f"m{i}", c, p, initial) for i, (c, p) in enumerate(ports)]
        try:
            for m in members:
                m.start("new")
            wait("one leader", lambda: leader(members) is not None)
            rows = {}
            for disruption in ("stop", "defragment"):
                if disruption == "defragment":
                    print(f"loading {args.mib} MiB", file=sys.stderr)
                    load(members, args.mib)
                for r in range(args.rounds):
                    for mode in (False, True):
                        gap, failed = round_(members, mode, disruption)
                        rows.setdefault((disruption, mode), []).append((gap, failed))
                        how = "hand-over" if mode else "as it is"
                        print(
                            f"{disruption} round {r + 1} {how:9}: "
                            f"longest gap {gap * 1000:.0f} ms, {failed} failed",
                            file=sys.stderr,
                        )
        finally:
            for m in members:
                if m.proc and m.proc.poll() is None:
                    m.proc.kill()
                    m.proc.wait()
    loadavg = os.getloadavg()[0]
    etcd = binary.parent.parent.name
    print(f"\n3 members, {etcd}, {args.rounds} rounds each, load average {loadavg:.1f}\n")
    print(
        "| the leader's planned disruption | hand-over first "
        "| longest time without an acknowledged write, p50 | max | writes failed (all rounds) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for (disruption, mode), got in rows.items():
        gaps = [g for g, _ in got]
        what = (
            "SIGTERM, start again" if disruption == "stop" else f"defragmentation of {args.mib} MiB"
        )
        print(f"| {what} | {'yes' if mode else 'no'} | {statistics.median(gaps) * 1000:.0f} ms | "
              f"{max(gaps) * 1000:.0f} ms | {sum(f for _, f in got)} |")  # fmt: skip


if __name__ == "__main__":
    main()
