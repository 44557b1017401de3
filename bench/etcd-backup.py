#!/usr/bin/env python3
"""etcd backups in the lab: how long a backup takes and how large it is,
how long `verify-backup` takes, and how long a restore of the whole running
cluster takes (the RTO), for clusters holding 10k and 100k keys.

    sudo python3 bench/etcd-backup.py [--keys 10000,100000] [--value-size 100]

Each row builds a lab (tests/lab: three systemd machines booted from
etcd.ign, real etcd 3.5, the emulator), loads KEYS keys of VALUE-SIZE bytes
(lab_writer: transactions of 100 puts through the JSON gateway), then:

  backup    the backup services get a 2 s interval; the leader's own log
            line of the first backup at or past the loaded revision
            ("etcd backup written ... seconds=": key count, streamed
            snapshot, seal, upload), and the sealed object's size;
  verify    `nodeboot etcd verify-backup` of it on the host (download, open,
            etcdutl restore, a scratch etcd until it answers the key count);
  restore   `nodeboot etcd restore` of it on the host, from the request
            until every member reported itself healthy at its revision
            (every node: stop etcd, download, open, etcdutl, swap, start).

The blank-volume replacement is bench/etcd-rejoin.py's. Prints a table;
asserts nothing on time. Root (the lab). See bench/README.md.
"""

import argparse
import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests/lab"))
import lab as lablib  # noqa: E402
import lab_node  # noqa: E402
import lab_writer  # noqa: E402

UNIT = "nodeboot-etcd-backup.service"
PREFIX = "/bench/"


def operator(lab, *args, timeout=900):
    """`nodeboot ARGS --env F` on the host: the bucket (emulator) only."""
    cmd = [lab.bin, *args, "--env", lab.state["env_file"]]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=lab.operator_env(), timeout=timeout
    )


def etcd_nodes(lab):
    return [
        k for k, n in lab.state["nodes"].items() if n["state"] == "running" and n["role"] == "etcd"
    ]


def set_interval(lab, interval):
    for node in etcd_nodes(lab):
        lab.node_path(node, lab_node.BACKUP_ENV).write_text(
            f"NODEBOOT_ETCD_BACKUP_INTERVAL={interval}\nNODEBOOT_ETCD_BACKUP_POLL=500ms\n"
        )
        lab.node_run(node, "systemctl", "restart", UNIT)


def db_size(lab):
    out = lab.etcdctl("endpoint", "status", "-w", "json", members=[0])
    status = json.loads(out.stdout)[0]["Status"]
    return status["header"]["revision"], status["dbSize"]


def take_backup(lab, revision):
    set_interval(lab, "2s")
    deadline = time.monotonic() + 600
    while True:
        listed = json.loads(operator(lab, "etcd", "backups", "--output", "json").stdout or "[]")
        found = [b for b in listed if b["revision"] >= revision]
        if found:
            break
        if time.monotonic() > deadline:
            raise SystemExit("no backup after 600 s")
        time.sleep(1)
    set_interval(lab, "24h")  # no more backups while the rest is measured
    backup = found[0]
    seconds = None
    for node in lab.state["nodes"]:
        if lab.node(node)["role"] != "etcd" or lab.node(node)["state"] != "running":
            continue
        for line in lab.unit_journal(node, UNIT).splitlines():
            if backup["id"] in line and "seconds=" in line:
                seconds = float(re.search(r'seconds="?([0-9.]+)', line).group(1))
    return backup, seconds


def run_row(keys, value_size):
    name = f"b{uuid.uuid4().hex[:8]}"
    lab = lablib.Lab.up(name)
    try:
        lab_writer.load_keys(lab, PREFIX, keys, size=value_size)
        revision, db = db_size(lab)
        backup, backup_s = take_backup(lab, revision)
        etcd_bin = Path(lablib.ETCD).parent
        t = time.monotonic()
        out = operator(
            lab, "etcd", "verify-backup", "--backup", backup["id"],
            f"--etcd={etcd_bin / 'etcd'}", f"--etcdutl={etcd_bin / 'etcdutl'}",
        )  # fmt: skip
        verify_s = time.monotonic() - t if out.returncode == 0 else None
        if verify_s is None:
            print(out.stderr[-2000:], file=sys.stderr)
        t = time.monotonic()
        out = operator(lab, "etcd", "restore", "--backup", backup["id"], "--timeout", "600s")
        restore_s = time.monotonic() - t if out.returncode == 0 else None
        # The members' phases as the command saw them (its progress lines).
        print(
            "\n".join(line for line in out.stderr.splitlines() if line.startswith("[")),
            file=sys.stderr,
        )
        lab.wait_healthy(timeout=300)
        return {
            "keys": keys,
            "db": db,
            "backup_s": backup_s,
            "bytes": backup["bytes"],
            "verify_s": verify_s,
            "restore_s": restore_s,
        }
    finally:
        lab.down()


def fmt_s(v):
    return "failed" if v is None else f"{v:.2f} s"


def fmt_mb(v):
    return f"{v / 1e6:.1f} MB"


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--keys", default="10000,100000")
    p.add_argument("--value-size", type=int, default=100)
    args = p.parse_args()
    rows = [run_row(int(k), args.value_size) for k in args.keys.split(",")]
    header = [
        "keys",
        "etcd DB",
        "backup time",
        "backup size (sealed)",
        "verify-backup",
        "restore (RTO)",
    ]
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join("---" for _ in header) + " |")
    for r in rows:
        cells = [
            f"{r['keys']:,}", fmt_mb(r["db"]), fmt_s(r["backup_s"]), fmt_mb(r["bytes"]),
            fmt_s(r["verify_s"]), fmt_s(r["restore_s"]),
        ]  # fmt: skip
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
