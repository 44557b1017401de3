#!/usr/bin/env python3
"""etcd's worst days in the lab (issue 20): how long a restore from one
member takes with a node away, and how long `etcd recover` takes after
quorum loss, for clusters holding 10k and 100k keys.

    sudo python3 bench/etcd-recover.py [--keys 10000,100000] [--value-size 100]

Each row builds two labs (tests/lab: three systemd machines booted from
etcd.ign, real etcd 3.5, the emulator) and loads KEYS keys of VALUE-SIZE
bytes (lab_writer: transactions of 100 puts through the JSON gateway):

  restore   a backup of the keys; member 2's instance stopped; `nodeboot etcd
            restore` on the host, from the command until members 0 and 1
            reported themselves healthy voters (the seed's download, open,
            etcdutl, start; member 1's data aside and its join as a learner);
  rejoin    then member 2's node started: from its start until three voters
            (its boot, its old data aside, the join, the promotion);
  recover   in a second lab, members 1 and 2's instances stopped (quorum
            lost), `nodeboot etcd recover --from-member 0 --yes`, from the
            command until member 0 leads its cluster of one with every key.

Prints a table; asserts nothing on time. Root (the lab). See bench/README.md.
"""

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests/lab"))
import lab as lablib  # noqa: E402
import lab_node  # noqa: E402
import lab_writer  # noqa: E402

UNIT = "nodeboot-etcd-backup.service"
PREFIX = "/bench/"


def operator(lab, *args, timeout=900):
    cmd = [lab.bin, *args, "--env", lab.state["env_file"]]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=lab.operator_env(), timeout=timeout
    )


def set_interval(lab, interval):
    for node, n in lab.state["nodes"].items():
        if n["state"] == "running" and n["role"] == "etcd":
            lab.node_path(node, lab_node.BACKUP_ENV).write_text(
                f"NODEBOOT_ETCD_BACKUP_INTERVAL={interval}\nNODEBOOT_ETCD_BACKUP_POLL=500ms\n"
            )
            lab.node_run(node, "systemctl", "restart", UNIT)


def newest_backup(lab, revision, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = operator(lab, "etcd", "backups", "--output", "json")
        found = [b for b in json.loads(out.stdout or "[]") if b["revision"] >= revision]
        if found:
            return found[-1]
        time.sleep(1)
    raise SystemExit(f"no backup at revision >= {revision} after {timeout}s")


def voters(lab, on):
    out = lab.etcdctl("member", "list", "-w", "json", members=on, check=False)
    if out.returncode != 0:
        return 0
    return sum(
        1 for m in json.loads(out.stdout)["members"] if m.get("name") and not m.get("isLearner")
    )


def key_count(lab, member):
    out = lab.etcdctl(
        "get", PREFIX, "--prefix", "--count-only", "--write-out=fields", members=[member]
    )
    return int(re.search(r'"Count" : (\d+)', out.stdout).group(1))


def restore_row(keys, value_size):
    with lablib.session(prefix="br") as lab:
        loaded = lab_writer.load_keys(lab, PREFIX, keys, size=value_size)
        set_interval(lab, "2s")
        backup = newest_backup(lab, loaded)
        set_interval(lab, "24h")
        away = lab.node_of_member(2)
        lab.stop_node(away)
        t = time.monotonic()
        out = operator(lab, "etcd", "restore", "--backup", backup["id"], "--timeout", "600s")
        restore_s = time.monotonic() - t if out.returncode == 0 else None
        if restore_s is None:
            print(out.stderr[-2000:], file=sys.stderr)
            return {"restore_s": None, "rejoin_s": None}
        t = time.monotonic()
        lab.start_node(away, check=False)
        deadline = t + 600
        while voters(lab, [0, 1]) < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
        rejoin_s = time.monotonic() - t if voters(lab, [0, 1]) == 3 else None
        return {"restore_s": restore_s, "rejoin_s": rejoin_s}


def recover_row(keys, value_size):
    with lablib.session(prefix="bv") as lab:
        lab_writer.load_keys(lab, PREFIX, keys, size=value_size)
        for m in (1, 2):
            lab.stop_node(lab.node_of_member(m))
        t = time.monotonic()
        out = operator(lab, "etcd", "recover", "--from-member", "0", "--yes", "--timeout", "600s")
        recover_s = time.monotonic() - t if out.returncode == 0 else None
        if recover_s is None:
            print(out.stderr[-2000:], file=sys.stderr)
        count = key_count(lab, 0) if recover_s is not None else None
        return {"recover_s": recover_s, "recovered_keys": count}


def fmt_s(v):
    return "failed" if v is None else f"{v:.1f} s"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keys", default="10000,100000")
    p.add_argument("--value-size", type=int, default=100)
    args = p.parse_args()
    problems = lablib.preflight()
    if problems:
        raise SystemExit("the lab cannot run here:\n  " + "\n  ".join(problems))
    rows = []
    for keys in (int(k) for k in args.keys.split(",")):
        row = {"keys": keys, **restore_row(keys, args.value_size)}
        print(f"# {row}", file=sys.stderr)
        row.update(recover_row(keys, args.value_size))
        rows.append(row)
        print(f"# {row}", file=sys.stderr)
    header = [
        "keys",
        "restore, node 2 away",
        "node 2 rejoins",
        "recover (2 of 3 lost)",
        "keys kept",
    ]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for r in rows:
        print(
            " | ".join(
                [
                    f"{r['keys']:,}",
                    fmt_s(r["restore_s"]),
                    fmt_s(r["rejoin_s"]),
                    fmt_s(r["recover_s"]),
                    "-" if r["recovered_keys"] is None else f"{r['recovered_keys']:,}",
                ]
            )
        )


if __name__ == "__main__":
    main()
