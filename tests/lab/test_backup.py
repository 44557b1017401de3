"""Acceptance tests of issue 11's backups and restores in the lab: every etcd
node runs the rendered `nodeboot-etcd-backup.service` under systemd (restores
with the lab's etcdutl, node.json's etcd.backup.etcdutl; see lab_node.py),
and the operator's `nodeboot etcd backups|restore` run from the router.

Root only, like every lab test.
"""

import calendar
import json
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab as lablib  # noqa: E402
import lab_node  # noqa: E402

require_lab = lablib.require_lab

UNIT = "nodeboot-etcd-backup.service"


def cluster():
    return lablib.session(prefix="b")


def etcd_nodes(lab):
    return [
        k for k, n in lab.state["nodes"].items() if n["state"] == "running" and n["role"] == "etcd"
    ]


def tune_backups(lab, node, interval="3s", poll="500ms"):
    """A short interval for the test: the lab's drop-in reads this file."""
    lab.node_path(node, lab_node.BACKUP_ENV).write_text(
        f"NODEBOOT_ETCD_BACKUP_INTERVAL={interval}\nNODEBOOT_ETCD_BACKUP_POLL={poll}\n"
    )
    lab.node_run(node, "systemctl", "restart", UNIT)


def operator(lab, *args, timeout=120):
    """`nodeboot ARGS --env F` on the host: these commands need only the
    bucket (the emulator), as from an operator's machine outside the VPC."""
    cmd = [lab.bin, *args, "--env", lab.state["env_file"]]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=lab.operator_env(), timeout=timeout
    )


def backups(lab):
    out = operator(lab, "etcd", "backups", "--output", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def journals(lab, nodes=None):
    return "\n".join(
        f"--- {node}:\n{lab.unit_journal(node, UNIT)[-3000:]}" for node in nodes or etcd_nodes(lab)
    )


def wait_for_backup(lab, revision, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [b for b in backups(lab) if b["revision"] >= revision]
        if found:
            return found[-1]
        time.sleep(0.5)
    raise AssertionError(f"no backup at revision >= {revision} after {timeout}s\n{journals(lab)}")


def revision(lab):
    out = lab.etcdctl("endpoint", "status", "-w", "json", members=[0])
    return json.loads(out.stdout)[0]["Status"]["header"]["revision"]


def cluster_ids(lab):
    out = lab.etcdctl("endpoint", "status", "-w", "json")
    return {e["Status"]["header"]["cluster_id"] for e in json.loads(out.stdout)}


def wait_every_unit_active(lab, timeout=90):
    """Every unit each etcd node's config enabled is active again (after a
    restore, the promote unit that the stop of etcd took down with it)."""
    deadline = time.monotonic() + timeout
    while True:
        inactive = {}
        for node in etcd_nodes(lab):
            n = lab.node(node)
            units = n.get("enabled", [])
            states = lab.container(n).systemctl("is-active", *units, check=False).stdout.split()
            inactive.update(
                {f"{node}/{u}": a for u, a in zip(units, states, strict=False) if a != "active"}
            )
        if not inactive:
            return
        assert time.monotonic() < deadline, f"not active after the restore: {inactive}"
        time.sleep(1)


def keys(lab, prefix):
    out = lab.etcdctl("get", prefix, "--prefix", "--keys-only")
    return sorted(k for k in out.stdout.split() if k)


def written(lab):
    """(node, backup id) of every "etcd backup written" line in the services' journals."""
    out = []
    for node in etcd_nodes(lab):
        for line in lab.unit_journal(node, UNIT).splitlines():
            if "etcd backup written" in line:
                m = re.search(r"backup=(\d{8}T\d{6}Z-r\d+)", line)
                assert m, line
                out.append((node, m.group(1)))
    return out


def unix(backup_id):
    return calendar.timegm(time.strptime(backup_id.split("-")[0], "%Y%m%dT%H%M%SZ"))


# What a voting member that is not the leader logs just before the backup it takes.
FALLBACK = "older than two intervals: this member takes one"


def taken(lab):
    """Every backup the services wrote, oldest first (by the time in its
    name): (node, backup id, fallback), where fallback says a voter that was
    not the leader took it (its journal's line just before)."""
    out = []
    for node in etcd_nodes(lab):
        fallback = False
        for line in lab.unit_journal(node, UNIT).splitlines():
            if FALLBACK in line:
                fallback = True
            elif "etcd backup written" in line:
                m = re.search(r"backup=(\d{8}T\d{6}Z-r\d+)", line)
                assert m, line
                out.append((node, m.group(1), fallback))
                fallback = False
    return sorted(out, key=lambda t: unix(t[1]))


def wait_for_taken(lab, since, count, timeout=240, which=lambda t: True):
    """At least `count` backups (those `which` keeps) named at or after
    `since`; a liveness bound, never a measure. Returns every backup."""
    deadline = time.monotonic() + timeout
    while True:
        every = taken(lab)
        if len([t for t in every if unix(t[1]) >= since and which(t)]) >= count:
            return every
        assert time.monotonic() < deadline, (
            f"fewer than {count} backups since {since} after {timeout}s: {every}\n{journals(lab)}"
        )
        time.sleep(1)


def assert_paced(every, since, interval, why=""):
    """The schedule's properties, whatever the machine's load: no backup
    within one interval of the one before (one member at a time, deciding
    again under the lock: never two in one interval), and a fallback one
    (a voter that is not the leader) only two intervals after the one
    before. A second of slack: names carry whole seconds."""
    times = [unix(i) for _, i, _ in every]
    for prev, (node, backup, fallback) in zip(times, every[1:], strict=False):
        if unix(backup) < since:
            continue
        gap = unix(backup) - prev
        least = (2 if fallback else 1) * interval - 1
        assert gap >= least, (f"{backup} by {node} {gap}s after the one before", every, why)


def leadership(lab):
    """(the leader's node, raft term), or None while no member names a leader."""
    for m in sorted(x["member"] for x in lab.state["members"]):
        out = lab.etcdctl("endpoint", "status", "-w", "json", members=[m], check=False)
        if out.returncode != 0:
            continue
        status = json.loads(out.stdout)[0]["Status"]
        if status["leader"] and status["leader"] == status["header"]["member_id"]:
            return lab.node_of_member(m), status["raftTerm"]
    return None


def wait_pruned(lab, newest, most=3, timeout=120):
    """Retention, once the pass that wrote a backup pruned: at most `most`
    listed (the first of the hour, of the day, and the newest), and the
    newest listed is no older than `newest` (the newest is never pruned).
    A listing between a backup's upload and its prune holds one more."""
    deadline = time.monotonic() + timeout
    while True:
        listed = [b["id"] for b in backups(lab)]
        if len(listed) <= most and listed and unix(listed[-1]) >= unix(newest):
            return listed
        assert time.monotonic() < deadline, (listed, newest)
        time.sleep(1)


def test_backups_appear_at_the_interval_written_by_the_leader_only():
    require_lab()
    with cluster() as lab:
        lab.etcdctl("put", "/hello", "world")
        for node in etcd_nodes(lab):
            tune_backups(lab, node, "3s")
        # The cluster's very first backup may be any voting member's (none
        # exists to be late): the rhythm is counted from the next second on.
        wait_for_backup(lab, revision(lab))
        since = int(time.time()) + 1
        before = leadership(lab)
        every = wait_for_taken(lab, since, 4)
        after = leadership(lab)
        mine = [t for t in every if unix(t[1]) >= since]
        print(f"\n[backup] {len(mine)} backups {mine}, leadership {before} -> {after}")
        # One backup per 3 s interval, not three: never two within one.
        assert_paced(every, since, 3, journals(lab))
        # The leader takes them; another voter only as the fallback (the
        # newest older than two intervals, paced above). Leadership may move
        # on a loaded machine (a new term): then two leaders took them.
        by_leader = {n for n, _, fallback in mine if not fallback}
        if before is not None and before == after:
            assert by_leader == {before[0]}, (mine, before, journals(lab))
        # Retention (the first backup of each hour, and the newest) pruned the rest.
        wait_pruned(lab, mine[-1][1])


def test_restore_after_total_loss_brings_every_key_back():
    require_lab()
    with cluster() as lab:
        for node in etcd_nodes(lab):
            tune_backups(lab, node, "2s")
        for i in range(30):
            lab.etcdctl("put", f"/k/{i:04}", f"v{i}")
        backup = wait_for_backup(lab, revision(lab))
        # Total loss: every node dies, every volume is replaced by a blank one.
        for node in etcd_nodes(lab):
            lab.kill_node(node, how="terminate")
        for m in lab.state["members"]:
            lab.replace_volume(m["member"])
        fresh = []
        for m in lab.state["members"]:
            node = lab.launch(m["zone"], "etcd")
            # The etcd stage refuses (exit 25, retried): backups say the cluster existed.
            lab.boot(node, check=False, timeout=30)
            fresh.append(node)
        for node in fresh:
            tune_backups(lab, node, "2s")
        time.sleep(4)
        assert backups(lab)[-1]["id"] == backup["id"], "nothing is backed up over the real data"

        t = time.monotonic()
        out = operator(lab, "etcd", "restore", "--timeout", "300s", timeout=360)
        took = time.monotonic() - t
        print(
            f"\n[restore] {out.stdout.strip()}\n{out.stderr.strip()[-2000:]}\n[restore] {took:.1f}s"
        )
        assert out.returncode == 0, (out.stderr, journals(lab, fresh))
        assert f"restored backup {backup['id']}" in out.stdout
        lab.wait_healthy()
        assert keys(lab, "/k/") == [f"/k/{i:04}" for i in range(30)]
        members = json.loads(lab.etcdctl("member", "list", "-w", "json").stdout)["members"]
        assert len(members) == 3


def test_a_restore_on_a_running_cluster_rolls_back_and_keeps_the_newer_data_aside():
    require_lab()
    with cluster() as lab:
        for node in etcd_nodes(lab):
            tune_backups(lab, node, "2s")
        lab.etcdctl("put", "/old", "1")
        backup = wait_for_backup(lab, revision(lab))
        for node in etcd_nodes(lab):
            tune_backups(lab, node, "24h")
        lab.etcdctl("put", "/new", "2")
        old_cluster = cluster_ids(lab)
        out = operator(
            lab, "etcd", "restore", "--backup", backup["id"], "--timeout", "300s", timeout=360
        )
        assert out.returncode == 0, (out.stderr, journals(lab))
        lab.wait_healthy()
        assert keys(lab, "/old") == ["/old"] and keys(lab, "/new") == []
        # A new cluster (a token of its own): nothing of the old one can join it.
        new_cluster = cluster_ids(lab)
        assert len(new_cluster) == 1 and new_cluster.isdisjoint(old_cluster), (
            old_cluster,
            new_cluster,
        )
        # The revision moved past every revision a watcher saw (etcdutl --bump-revision).
        assert revision(lab) >= backup["revision"] + 1_000_000_000, (revision(lab), backup)
        wait_every_unit_active(lab)
        for node in etcd_nodes(lab):
            aside = list(lab.node_path(node, "/var/lib/etcd").glob("member.pre-restore-*"))
            # The data the restore replaced, whole, on the volume.
            assert len(aside) == 1 and (aside[0] / "wal").is_dir(), (node, aside)
            assert (aside[0] / "snap/db").is_file(), (node, aside)
