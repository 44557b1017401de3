"""Issue 20's restores on the worst day, in the lab (real systemd 252, real
etcd 3.5, the rendered units): `nodeboot etcd restore` restores the backup
on one member (the seed) as a new cluster, and every other member keeps its
old data aside and joins that cluster as a learner, one at a time,
promoted once caught up; a member whose node is away joins when it comes
back.

Root only, like every lab test.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab as lablib  # noqa: E402
import test_backup as tb  # noqa: E402
from lab_writer import Writer  # noqa: E402
from test_lab import read_keys  # noqa: E402

require_lab = lablib.require_lab


def journals(lab):
    """The backup service's, the etcd stage's and etcd's journal of each running etcd node."""
    units = (tb.UNIT, "nodeboot-etcd.service", "etcd-member.service")
    return "\n".join(
        f"--- {node} {unit}:\n{lab.unit_journal(node, unit)[-2500:]}"
        for node in tb.etcd_nodes(lab)
        for unit in units
    )


def members(lab, on=None):
    out = lab.etcdctl("member", "list", "-w", "json", members=on)
    return json.loads(out.stdout)["members"]


def wait_voters(lab, count, on, timeout=180):
    """`count` started voting members (no learner), as `on` sees them."""
    deadline = time.monotonic() + timeout
    while True:
        listed = members(lab, on)
        voters = [m for m in listed if m.get("name") and not m.get("isLearner")]
        if len(listed) == count and len(voters) == count:
            return listed
        assert time.monotonic() < deadline, (listed, journals(lab))
        time.sleep(1)


def backed_up_keys(lab, n):
    """`n` keys, a backup holding them, then the backups slowed down and a
    key the backup does not hold (the restore rolls it back)."""
    for node in tb.etcd_nodes(lab):
        tb.tune_backups(lab, node, "2s")
    for i in range(n):
        lab.etcdctl("put", f"/k/{i:04}", f"v{i}")
    backup = tb.wait_for_backup(lab, tb.revision(lab))
    for node in tb.etcd_nodes(lab):
        tb.tune_backups(lab, node, "24h")
    lab.etcdctl("put", "/after-backup", "x")
    return backup


def test_restore_with_a_node_stopped_throughout_then_it_joins():
    require_lab()
    with tb.cluster() as lab:
        backup = backed_up_keys(lab, 20)
        away = lab.node_of_member(2)
        lab.stop_node(away)
        t = time.monotonic()
        out = tb.operator(lab, "etcd", "restore", "--timeout", "90s", timeout=200)
        took = time.monotonic() - t
        print(f"\n[restore] {out.stdout.strip()}\n{out.stderr.strip()[-3000:]}\n[took] {took:.1f}s")
        if out.returncode != 0:
            print(journals(lab))
        assert out.returncode == 0, out.stderr
        assert f"restored backup {backup['id']}" in out.stdout, out.stdout
        assert "member 2" in out.stdout and "to join" in out.stdout, out.stdout
        assert "gave up" not in out.stdout + out.stderr
        lab.wait_healthy(members=[0, 1])
        assert tb.keys(lab, "/k/") == [f"/k/{i:04}" for i in range(20)]
        assert tb.keys(lab, "/after-backup") == []
        assert tb.revision(lab) >= backup["revision"] + 1_000_000_000
        assert len(wait_voters(lab, 2, [0, 1])) == 2

        # The node comes back with the old cluster's data: it never starts
        # that data; it keeps it aside and joins the restored cluster.
        # check=False: its backup service stops the manifest sync while it joins.
        lab.start_node(away, check=False)
        wait_voters(lab, 3, [0, 1])
        lab.wait_healthy()
        assert tb.keys(lab, "/after-backup") == []
        got = lab.etcdctl("get", "/k/", "--prefix", "--keys-only", members=[2]).stdout.split()
        assert sorted(got) == [f"/k/{i:04}" for i in range(20)]
        assert len(tb.cluster_ids(lab)) == 1
        aside = list(lab.node_path(away, "/var/lib/etcd").glob("member.pre-restore-*"))
        assert len(aside) == 1 and (aside[0] / "snap/db").is_file(), aside
        tb.wait_every_unit_active(lab)


def test_restore_with_a_blank_member_booting_during_it():
    require_lab()
    with tb.cluster() as lab:
        backup = backed_up_keys(lab, 20)
        lost = lab.node_of_member(0)
        zone = lab.member(member=0)["zone"]
        lab.kill_node(lost, how="terminate")
        lab.replace_volume(0)
        cmd = [lab.bin, "etcd", "restore", "--timeout", "150s", "--env", lab.state["env_file"]]
        restore = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=lab.operator_env()
        )
        try:
            fresh = lab.launch(zone, "etcd")
            lab.boot(fresh, check=False, timeout=60)
            stdout, stderr = restore.communicate(timeout=200)
        finally:
            if restore.poll() is None:
                restore.kill()
                restore.wait()
        print(f"\n[restore] {stdout.strip()}\n{stderr.strip()[-3000:]}")
        assert restore.returncode == 0, (stderr, journals(lab))
        assert f"restored backup {backup['id']}" in stdout, stdout
        wait_voters(lab, 3, [1, 2])
        lab.wait_healthy()
        got = lab.etcdctl("get", "/k/", "--prefix", "--keys-only", members=[0]).stdout.split()
        assert sorted(got) == [f"/k/{i:04}" for i in range(20)]
        assert tb.keys(lab, "/after-backup") == []
        assert len(tb.cluster_ids(lab)) == 1
        tb.wait_every_unit_active(lab)


def in_order(text, needles):
    """The position of each needle, each found after the one before (None: missing)."""
    at, found = 0, []
    for needle in needles:
        i = text.find(needle, at)
        if i < 0:
            return found + [None]
        found.append(i)
        at = i + len(needle)
    return found


def test_a_restore_takes_the_api_server_out_and_puts_it_back():
    require_lab()
    with tb.cluster() as lab:
        backed_up_keys(lab, 5)
        manifest = "/etc/kubernetes/manifests/kube-apiserver.yaml"
        nodes = tb.etcd_nodes(lab)
        before = {node: lab.node_path(node, manifest).read_bytes() for node in nodes}
        out = tb.operator(lab, "etcd", "restore", "--timeout", "150s", timeout=200)
        print(f"\n[restore] {out.stdout.strip()}\n{out.stderr.strip()[-3000:]}")
        if out.returncode != 0:
            print(journals(lab))
        assert out.returncode == 0, out.stderr
        # The order of events on every node, from its journal (one clock).
        for node in nodes:
            log = lab.node_run(
                node, "journalctl", "--no-pager", "-o", "cat",
                "-u", tb.UNIT, "-u", "nodeboot-manifests.service",
            ).stdout  # fmt: skip
            events = [
                "restore: stopping the manifest sync",
                "Stopped nodeboot-manifests.service",
                "kube-apiserver.yaml taken out of /etc/kubernetes/manifests",
                "stopping etcd",
                "is a healthy voting member",
                "kube-apiserver.yaml back in /etc/kubernetes/manifests",
                "restore: starting the manifest sync",
                "Started nodeboot-manifests.service",
            ]
            found = in_order(log, events)
            assert None not in found, (node, events[len(found) - 1], log[-4000:])
            assert lab.node_path(node, manifest).read_bytes() == before[node], node
        tb.wait_every_unit_active(lab)


def wait_for(what, condition, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not {what} after {timeout}s"
        time.sleep(0.1)


def test_recover_from_the_survivor_of_two_lost_keeps_every_acknowledged_write():
    require_lab()
    with tb.cluster() as lab:
        for node in tb.etcd_nodes(lab):
            tb.tune_backups(lab, node, "24h")
        with Writer(lab, members=[0, 1, 2], interval=0.02) as writer:
            wait_for("40 acknowledged writes", lambda: writer.count() >= 40)
            # Quorum lost: member 1's instance fails, member 2's is stopped.
            lab.kill_node(lab.node_of_member(1), how="stop")
            away = lab.node_of_member(2)
            lab.stop_node(away)
            wait_for("writes failing", lambda: writer.failed >= 5)
        print(f"\n[recover] {writer.count()} writes acknowledged, {writer.failed} failed")

        asked = tb.operator(lab, "etcd", "recover", "--from-member", "0")
        assert asked.returncode == 4, asked.stderr
        assert "--force-new-cluster" in asked.stderr and "--yes" in asked.stderr, asked.stderr
        refused = tb.operator(lab, "etcd", "recover", "--from-member", "1", "--yes")
        assert refused.returncode == 4 and "member 1" in refused.stderr, refused.stderr

        t = time.monotonic()
        out = tb.operator(
            lab, "etcd", "recover", "--from-member", "0", "--yes", "--timeout", "120s", timeout=200
        )
        took = time.monotonic() - t
        print(f"[recover] {out.stdout.strip()}\n{out.stderr.strip()[-2000:]}\n[took] {took:.1f}s")
        if out.returncode != 0:
            print(journals(lab))
        assert out.returncode == 0, out.stderr
        assert "still to join: member 1, 2" in out.stdout, out.stdout
        lab.wait_healthy(members=[0])
        got = read_keys(lab, "/w/", 0)
        lost = sorted(k for k, v in writer.acked.items() if got.get(k) != v)
        assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:5]}"
        listed = members(lab, [0])
        assert len(listed) == 1 and not listed[0].get("isLearner"), listed
        lab.etcdctl("put", "/after-recover", "1", members=[0])
        # The flag is gone: a restart of etcd does not force a new cluster again.
        env = lab.node_path(lab.node_of_member(0), "/run/nodeboot/etcd.env").read_text()
        assert "ETCD_FORCE_NEW_CLUSTER" not in env, env
        # Member 2 comes back with the old data: kept aside, it joins as a learner.
        lab.start_node(away, check=False)
        wait_voters(lab, 2, [0])
        got = read_keys(lab, "/w/", 2)
        assert not [k for k, v in writer.acked.items() if got.get(k) != v]
        assert tb.keys(lab, "/after-recover") == ["/after-recover"]
