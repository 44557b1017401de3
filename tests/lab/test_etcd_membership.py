"""Acceptance tests of issue 11 (the etcd stage's half), in the systemd lab
(tests/lab/README.md): a member whose volume is replaced by a blank one
rejoins by itself; without quorum a blank member touches nothing and names
the restore command, and joins once quorum returns. Real etcd 3.5, real
systemd 252 running the rendered units, the emulator as AWS.

Root only, like test_lab.py: without root every test fails and says why,
unless NODEBOOT_SKIP_ROOT_TESTS=1. Every lab has its own name and is torn
down and checked clean however the test ends.
"""

import json
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab as lablib  # noqa: E402
import lab_ec2  # noqa: E402
import lab_net  # noqa: E402
from lab_writer import Writer  # noqa: E402
from test_lab import (  # noqa: E402
    etcd_json,
    lab_session,
    put_keys,
    read_keys,
    unique_name,
    wait_for,
)

ETCD_NO_QUORUM = 22  # README: exit codes
ETCD_STAGE = "nodeboot-etcd.service"


@pytest.fixture
def cluster():
    lablib.require_lab()
    with lab_session(unique_name()) as lab:
        yield lab


def members(lab, at=None):
    """The member list (etcdctl's JSON) as the members `at` (default all) see it."""
    return etcd_json(lab, "member", "list", members=at)["members"]


def local_members(lab, member):
    """The members as `member` itself knows them (MemberList with
    linearizable false, through its JSON gateway): answers without a
    leader, where `etcdctl member list` (linearizable in 3.5.16) times out."""
    pki = lab.etcd_pki
    out = lablib.run([
        *lab_net.nsenter(lab.router), "curl", "-sS", "--fail-with-body", "--max-time", "10",
        "--cacert", pki / "ca.crt", "--cert", pki / "client.crt", "--key", pki / "client.key",
        "-d", '{"linearizable": false}', f"{lab.endpoints([member])[0]}/v3/cluster/member/list",
    ])  # fmt: skip
    return json.loads(out.stdout)["members"]


def voting(lab, count):
    """`count` members, every one started (named) and none a learner."""
    ms = members(lab)
    return len(ms) == count and all(m.get("name") and not m.get("isLearner") for m in ms)


def all_active(lab, node):
    units = lab.node(node)["enabled"]
    out = lab.node_run(node, "systemctl", "is-active", *units, check=False).stdout.split()
    return out == ["active"] * len(units)


def backup_objects(lab):
    """{(bucket, key): metadata} of every etcd backup in the emulated S3."""
    s3 = boto3.client(
        "s3", endpoint_url=lab.state["aws"]["url"], region_name=lab_ec2.REGION,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    found = {}
    for bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix="backups/etcd/"
        ):
            for o in page.get("Contents", []):
                head = s3.head_object(Bucket=bucket, Key=o["Key"])
                found[(bucket, o["Key"])] = head["Metadata"]
    return found


def line_index(text, needle):
    """The index of the first line of `text` containing `needle`, else -1."""
    return next((i for i, line in enumerate(text.splitlines()) if needle in line), -1)


def assert_acknowledged_writes_read_back(lab, writer, at):
    for m in at:
        got = read_keys(lab, "/w/", m)
        lost = sorted(k for k, v in writer.acked.items() if got.get(k) != v)
        assert not lost, f"member {m} lacks {len(lost)} acknowledged writes: {lost[:5]}"


# --- 1. a blank volume rejoins ---------------------------------------------------


def test_a_member_whose_volume_is_replaced_by_a_blank_one_rejoins_as_itself(cluster, capsys):
    lab = cluster
    before = {m["name"]: m for m in members(lab)}
    written = put_keys(lab, "/lab/before", 30)
    backups_before = backup_objects(lab)
    victim = lab.node_of_member(0)
    zone = lab.node(victim)["zone"]
    lab.kill_node(victim)
    lab.replace_volume(0)
    lab.wait_healthy(members=[1, 2])
    written |= put_keys(lab, "/lab/during", 30, members=[1, 2])

    report = lab.boot_node(zone)  # every unit active: etcd-promote too
    node = report["node"]
    assert report["member"] == 0, report
    lab.wait_healthy()
    wait_for("three voting members", lambda: voting(lab, 3), 60)
    with capsys.disabled():
        print(f"\n[etcd] blank-volume replacement, launch to voting member: {report['seconds']}")

    after = {m["name"]: m for m in members(lab)}
    name0 = f"{lab.name}-etcd-0"
    assert set(after) == set(before), "the same member names, none stale, none extra"
    assert after[name0]["peerURLs"] == before[name0]["peerURLs"], "the same peer URL"
    assert after[name0]["ID"] != before[name0]["ID"], "a new member took the stale one's place"
    for name in set(before) - {name0}:
        assert after[name]["ID"] == before[name]["ID"], name
    assert read_keys(lab, "/lab/", 0, serializable=True) == written, "its own copy has every key"
    for m in (0, 1, 2):
        assert read_keys(lab, "/lab/", m) == written

    env = lab.node_path(node, "/run/nodeboot/etcd.env").read_text()
    assert "ETCD_INITIAL_CLUSTER_STATE=existing" in env, env
    journal = lab.unit_journal(node, ETCD_STAGE)
    hook = line_index(journal, "backup taken before replacing etcd member")
    removed = line_index(journal, "removed the stale etcd member")
    added = line_index(journal, "added etcd member")
    assert -1 not in (hook, removed, added) and hook < removed < added, journal[-4000:]
    backup = re.search(r"backup=(\S+)", journal.splitlines()[hook])
    assert backup, journal.splitlines()[hook]
    new_backups = {k: v for k, v in backup_objects(lab).items() if k not in backups_before}
    taken = [(k, v) for k, v in new_backups.items() if backup[1] in k[1]]
    assert len(taken) == 1, (backup[1], new_backups)
    (_, key), meta = taken[0]
    assert int(meta["nodeboot-keys"]) >= len(written), (key, meta)  # every key written by then
    promote = lab.unit_journal(node, "nodeboot-etcd-promote.service")
    assert f"promoted etcd member {name0} to a voting member" in promote, promote
    record = lab.node_path(node, "/var/lib/etcd/etcd-version").read_text().strip()
    assert record.startswith("3.5."), record


# --- 2. no quorum: touch nothing, then join once quorum returns -------------------


def test_a_blank_member_without_quorum_touches_nothing_then_joins_when_quorum_returns(cluster):
    lab = cluster
    written = put_keys(lab, "/lab/before", 10)
    before = sorted((m["ID"], m["name"]) for m in local_members(lab, 2))
    victim, other = lab.node_of_member(0), lab.node_of_member(1)
    zone = lab.node(victim)["zone"]
    lab.kill_node(victim)
    lab.replace_volume(0)
    lab.stop_node(other)  # two of three gone: member 2 alone has no quorum

    node = lab.launch(zone)
    report = lab.boot(node, check=False, timeout=45)
    journal = lab.unit_journal(node, ETCD_STAGE)
    assert report["units"][ETCD_STAGE] == "activating", (report, journal[-3000:])
    assert f"(exit {ETCD_NO_QUORUM}), retrying" in journal, journal[-3000:]
    assert "has no quorum without this member" in journal, journal[-3000:]
    assert "Nothing was changed" in journal and "nodeboot etcd restore --env" in journal, journal
    assert not lab.node_path(node, "/run/nodeboot/etcd.env").exists(), "etcd was not configured"
    assert report["units"]["etcd-member.service"] != "active", report
    assert sorted((m["ID"], m["name"]) for m in local_members(lab, 2)) == before, "untouched"
    assert "removed the stale" not in journal and "added etcd member" not in journal, journal

    # The stopped member returns; the blank member's stage, still retrying, joins.
    lab.start_node(other)
    lab.wait_healthy(members=[1, 2])
    wait_for(f"{node}'s units to be active", lambda: all_active(lab, node), 180)
    lab.wait_healthy()
    wait_for("three voting members", lambda: voting(lab, 3), 60)
    assert {m["name"] for m in members(lab)} == {f"{lab.name}-etcd-{i}" for i in range(3)}
    assert read_keys(lab, "/lab/", 0, serializable=True) == written
    journal = lab.unit_journal(node, ETCD_STAGE)
    assert "removed the stale etcd member" in journal, journal[-3000:]


# --- 3. scaling with a writer ------------------------------------------------------


def test_three_to_five_to_three_members_with_a_writer_loses_no_acknowledged_write(cluster, capsys):
    lab = cluster
    with Writer(lab, members=[0, 1, 2]) as writer:
        t = time.monotonic()
        lab.set_etcd_count(5)  # nodeboot up: config, certificates, secrets
        lab.add_members()  # Terraform: the volumes and ENIs of members 3 and 4
        zones = [lab.member(member=m)["zone"] for m in (3, 4)]
        nodes = [lab.launch(z) for z in zones]  # the groups launch both at once
        with ThreadPoolExecutor(2) as pool:
            reports = list(pool.map(lab.boot, nodes))
        assert sorted(r["member"] for r in reports) == [3, 4], reports
        wait_for("five voting members", lambda: voting(lab, 5), 120)
        lab.wait_healthy()
        up_seconds = time.monotonic() - t
        waits = [lab.unit_journal(n, ETCD_STAGE).count("(exit 23), retrying") for n in nodes]

        refused = lab.operator("etcd", "remove-member", "--env", lab.state["env_file"],
                               "--dir", lab.dir / "secrets", "3")  # fmt: skip
        assert refused.returncode == 4, (refused.returncode, refused.stderr)
        assert "remove members from the highest down" in refused.stderr, refused.stderr
        t = time.monotonic()
        for m in (4, 3):
            out = lab.operator("etcd", "remove-member", "--env", lab.state["env_file"],
                               "--dir", lab.dir / "secrets", str(m))  # fmt: skip
            assert out.returncode == 0, out.stderr
            assert f"removed {lab.name}-etcd-{m}" in out.stdout, out.stdout
        again = lab.operator("etcd", "remove-member", "--env", lab.state["env_file"],
                             "--dir", lab.dir / "secrets", "4")  # fmt: skip
        assert again.returncode == 0 and "already removed" in again.stdout, again.stderr
        lab.set_etcd_count(3)
        lab.remove_members()  # Terraform deletes members 3 and 4's volumes and ENIs
        lab.wait_healthy()
        down_seconds = time.monotonic() - t
        time.sleep(1)  # a few more writes on three members
    assert voting(lab, 3)
    assert {m["name"] for m in members(lab)} == {f"{lab.name}-etcd-{i}" for i in range(3)}
    assert len(lab.state["members"]) == 3
    assert writer.count() > 100, (writer.count(), writer.failures)
    assert_acknowledged_writes_read_back(lab, writer, (0, 1, 2))
    with capsys.disabled():
        print(
            f"\n[etcd] 3->5 in {up_seconds:.1f}s (exit-23 waits per joiner: {waits}), "
            f"5->3 in {down_seconds:.1f}s; writer: {writer.count()} acknowledged, "
            f"{writer.failed} failed, none lost; longest gap {writer.longest_gap():.2f}s"
        )


# --- 4. rolling replacement under a writer -------------------------------------------


def test_a_rolling_replacement_of_every_member_loses_no_acknowledged_write(cluster, capsys):
    """What `nodeboot roll --role etcd` does, driven by the lab: one member at
    a time, terminate its instance (a clean shutdown, then EC2 detaches its
    volume and ENI) and boot a replacement in the same zone; member 1 comes
    back on a blank volume. A writer puts a key every 50 ms throughout."""
    lab = cluster
    ids = {m["name"]: m["ID"] for m in members(lab)}
    seconds = []
    with Writer(lab, members=[0, 1, 2], interval=0.05) as writer:
        time.sleep(2)
        for member in (0, 1, 2):
            lab.wait_healthy()
            node = lab.node_of_member(member)
            zone = lab.node(node)["zone"]
            t = time.monotonic()
            lab.kill_node(node, how="terminate", clean=True)
            lab_ec2.wait_state(lab.ec2, lab.node(node)["instance_id"], ["terminated"])
            if member == 1:
                lab.replace_volume(1)
            report = lab.boot_node(zone)
            assert report["member"] == member, report
            lab.wait_healthy()
            wait_for("three voting members", lambda: voting(lab, 3), 120)
            seconds.append(round(time.monotonic() - t, 1))
        time.sleep(2)
    after = {m["name"]: m["ID"] for m in members(lab)}
    assert set(after) == set(ids)
    name1 = f"{lab.name}-etcd-1"
    assert after[name1] != ids[name1], "member 1 came back as a new member (blank volume)"
    for name in set(ids) - {name1}:
        assert after[name] == ids[name], f"{name} kept its member ID (its data)"
    assert writer.count() > 100, (writer.count(), writer.failures)
    assert_acknowledged_writes_read_back(lab, writer, (0, 1, 2))
    with capsys.disabled():
        print(
            f"\n[etcd] rolling replacement of 3 members (member 1 blank): {seconds} s each; "
            f"writer: {writer.count()} acknowledged, {writer.failed} failed, none lost; "
            f"longest write outage {writer.longest_gap():.2f}s; failures: {writer.failures[:3]}"
        )


# --- 5. the etcd stage killed between its steps converges when run again ----------------


@pytest.mark.parametrize("point", ["etcd:after-backup", "etcd:after-remove", "etcd:after-add"])
def test_a_blank_member_whose_etcd_stage_is_killed_mid_join_rejoins_when_run_again(cluster, point):
    """The stage aborts (NODEBOOT_ABORT_AT, a debug build's fault point)
    after the backup, after the stale member's removal or after MemberAdd;
    its unit fails and nothing after it starts. Then the units that are not
    active are started again (an operator's `systemctl start`): the stage
    sees what the first run left and finishes the join."""
    lab = cluster
    written = put_keys(lab, "/lab/before", 20)
    ids = {m["name"]: m["ID"] for m in members(lab)}
    victim = lab.node_of_member(0)
    zone = lab.node(victim)["zone"]
    lab.kill_node(victim)
    lab.replace_volume(0)
    node = lab.launch(zone)
    dropin = Path(lab.node(node)["root"]) / "etc/systemd/system/nodeboot-etcd.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "90-lab-abort.conf").write_text(f"[Service]\nEnvironment=NODEBOOT_ABORT_AT={point}\n")
    report = lab.boot(node, check=False, timeout=60)
    journal = lab.unit_journal(node, ETCD_STAGE)
    assert report["units"][ETCD_STAGE] == "failed", (report, journal[-3000:])
    assert f"aborting at {point}" in journal, journal[-3000:]
    assert report["units"]["etcd-member.service"] != "active", report

    (dropin / "90-lab-abort.conf").unlink()
    lab.node_run(node, "systemctl", "daemon-reload")
    stopped = [u for u, state in report["units"].items() if state != "active"]
    lab.node_run(node, "systemctl", "start", "--no-block", *stopped)
    wait_for(f"{node}'s units to be active", lambda: all_active(lab, node), 120)
    lab.wait_healthy()
    wait_for("three voting members", lambda: voting(lab, 3), 60)
    after = {m["name"]: m["ID"] for m in members(lab)}
    name0 = f"{lab.name}-etcd-0"
    assert set(after) == set(ids), "the same member names, none stale, none extra"
    assert after[name0] != ids[name0]
    assert read_keys(lab, "/lab/", 0, serializable=True) == written
    again = lab.unit_journal(node, ETCD_STAGE)
    if point == "etcd:after-add":  # listed, never started: resumed, not added twice
        assert again.count("added etcd member") == 1, again[-3000:]
