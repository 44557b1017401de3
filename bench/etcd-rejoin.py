#!/usr/bin/env python3
"""A blank-volume replacement in the lab, from launch to a healthy,
caught-up, voting member, for clusters holding 10k and 100k keys.

    sudo python3 bench/etcd-rejoin.py [--keys 10000,100000] [--runs 1] [--value-size 100]

Each run builds a lab (tests/lab: three systemd machines booted from
etcd.ign, real etcd 3.5, the emulator), loads KEYS keys of VALUE-SIZE bytes
(transactions of 100 puts through the JSON gateway), kills member 0's node,
replaces its volume with a blank one (lab.replace_volume) and boots a
replacement in its zone. The etcd stage removes the stale member and adds
the new one as a learner; etcd-member starts and receives the leader's
snapshot; nodeboot-etcd-promote promotes it once etcd agrees it caught up.
From the replacement's launch it measures:

  etcd stage   nodeboot-etcd.service active (the membership change made)
  etcd up      etcd-member.service active (etcd notified systemd)
  every key    member 0 serves all KEYS keys from its own copy
               (`etcdctl get --prefix --count-only --consistency=s` at it,
               polled every 0.25 s)
  voting       nodeboot-etcd-promote.service active: a voting member
  healthy      `etcdctl endpoint health` at all three members

Prints a table (the median over --runs); asserts nothing on time. Root (the
lab's namespaces, machines, loop devices). See bench/README.md.
"""

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests/lab"))
import lab as lablib  # noqa: E402
import lab_writer  # noqa: E402

PREFIX = "/bench/"


def count_at(lab, member):
    """Keys under PREFIX in `member`'s own copy (serializable), or -1."""
    out = lab.etcdctl(
        "get", PREFIX, "--prefix", "--count-only", "--consistency=s", "-w", "fields",
        members=[member], check=False, command_timeout="2s",
    )  # fmt: skip
    if out.returncode != 0:
        print(f"count at member {member}: {out.stderr.strip()[-300:]}", file=sys.stderr)
        return -1
    counts = [line.split(":")[1] for line in out.stdout.splitlines() if '"Count"' in line]
    return int(counts[0]) if counts else -1


def db_size(lab, member):
    out = lab.etcdctl("endpoint", "status", "-w", "json", members=[member])
    return json.loads(out.stdout)[0]["Status"]["dbSize"]


def one_run(keys, value_size):
    name = f"b{uuid.uuid4().hex[:8]}"
    lab = lablib.Lab.up(name)
    try:
        t = time.monotonic()
        lab_writer.load_keys(lab, PREFIX, keys, size=value_size)
        load = time.monotonic() - t
        size = db_size(lab, 1)
        victim = lab.node_of_member(0)
        zone = lab.node(victim)["zone"]
        lab.kill_node(victim)
        lab.replace_volume(0)
        lab.wait_healthy(members=[1, 2])

        every_key = {}
        done = threading.Event()

        def poll():
            while not done.is_set():
                if count_at(lab, 0) == keys:
                    every_key["s"] = time.monotonic() - t0
                    return
                done.wait(0.25)

        t0 = time.monotonic()
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        report = lab.boot_node(zone)
        voting = time.monotonic() - t0
        poller.join(120)
        done.set()
        lab.wait_healthy()
        healthy = time.monotonic() - t0
        members = json.loads(lab.etcdctl("member", "list", "-w", "json").stdout)["members"]
        assert len(members) == 3 and not any(m.get("isLearner") for m in members), members
        counts = [count_at(lab, m) for m in (0, 1, 2)]
        assert counts == [keys] * 3, f"keys at members 0-2: {counts}, {every_key}"
        journal = lab.unit_journal(report["node"], "nodeboot-etcd.service")
        retries = [line for line in journal.splitlines() if "retrying" in line]
        print(f"# etcd stage retries: {retries}", file=sys.stderr)
        s = report["seconds"]
        launch = s["launch"]
        return {
            "load": load,
            "db": size,
            "stage": launch + s["nodeboot-etcd"],
            "etcd": launch + s["etcd-member"],
            "every_key": every_key.get("s", float("nan")),
            "voting": voting,
            "healthy": healthy,
            "retries": len(retries),
        }
    finally:
        lab.down()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", default="10000,100000")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--value-size", type=int, default=100)
    a = p.parse_args()
    problems = lablib.preflight()
    if problems:
        sys.exit("the lab cannot run here:\n  " + "\n  ".join(problems))
    rows = []
    for keys in [int(k) for k in a.keys.split(",")]:
        runs = [one_run(keys, a.value_size) for _ in range(a.runs)]
        row = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        rows.append((keys, row))
        print(f"# {keys} keys: {runs}", file=sys.stderr, flush=True)
    print(f"blank-volume replacement, seconds from the replacement's launch (median of {a.runs})")
    head = ("keys", "DB MB", "load s", "stage retries", "etcd stage", "etcd up", "every key")
    head += ("voting", "healthy")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for keys, r in rows:
        cells = [f"{keys:,}", f"{r['db'] / 1e6:.1f}", f"{r['load']:.1f}", f"{r['retries']:g}"]
        cells += [f"{r[k]:.2f}" for k in ("stage", "etcd", "every_key", "voting", "healthy")]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
