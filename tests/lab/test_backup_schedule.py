"""Issue 20's backups that never stall, in the systemd lab: when the leader
cannot reach S3 another voting member backs up (after two intervals, one
at a time under the etcd lock `backup`), and a backup named in the future
(a clock that ran ahead) causes no backup storm: ages are the bucket's
`LastModified`, not a name's time nor a node's clock.

Root only, like every lab test.
"""

import json
import sys
import time
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab as lablib  # noqa: E402
import lab_ec2  # noqa: E402
import lab_node  # noqa: E402
from test_backup import UNIT, backups, journals, unix, wait_for_backup, written  # noqa: E402
from test_lab import wait_for  # noqa: E402

PREFIX = "backups/etcd/"


def s3(lab):
    return boto3.client(
        "s3", endpoint_url=lab.state["aws"]["url"], region_name=lab_ec2.REGION,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip


def secrets_bucket(lab):
    client = s3(lab)
    for b in client.list_buckets()["Buckets"]:
        if client.list_objects_v2(Bucket=b["Name"], Prefix=PREFIX).get("KeyCount"):
            return b["Name"]
    raise AssertionError("no bucket holds backups")


def tune(lab, node, interval, extra=""):
    lab.node_path(node, lab_node.BACKUP_ENV).write_text(
        f"NODEBOOT_ETCD_BACKUP_INTERVAL={interval}\nNODEBOOT_ETCD_BACKUP_POLL=500ms\n{extra}"
    )
    lab.node_run(node, "systemctl", "restart", UNIT)


def leader_node(lab):
    for m in (0, 1, 2):
        status = lab.etcdctl("endpoint", "status", "-w", "json", members=[m]).stdout
        header = json.loads(status)[0]["Status"]
        if header["leader"] == header["header"]["member_id"]:
            return lab.node_of_member(m)
    raise AssertionError("no leader")


def test_when_the_leader_cannot_reach_s3_another_member_backs_up_one_at_a_time():
    lablib.require_lab()
    with lablib.session(prefix="s") as lab:
        nodes = [lab.node_of_member(m) for m in (0, 1, 2)]
        for node in nodes:
            tune(lab, node, "4s")
        lab.etcdctl("put", "/k", "v")
        wait_for_backup(lab, 0)
        leader = leader_node(lab)
        # The leader's backup service reaches no S3 (a port nothing listens on).
        tune(lab, leader, "4s", "AWS_ENDPOINT_URL=http://127.0.0.1:9\n")
        blocked = time.time()
        lab.etcdctl("put", "/k2", "v2")

        def by_others():
            return [(n, i) for n, i in written(lab) if n != leader and unix(i) >= blocked]

        wait_for("a backup by another member", lambda: by_others(), 60)
        time.sleep(12)  # three more intervals
        taken = sorted(by_others(), key=lambda t: unix(t[1]))
        times = [unix(i) for _, i in taken]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        print(f"\n[backup] leader {leader} blocked; taken by {taken}, gaps {gaps}")
        # After two intervals (8 s), one member at a time: never two in one interval.
        assert all(g >= 7 for g in gaps), (taken, journals(lab))
        assert 1 <= len(taken) <= 3, (taken, journals(lab))
        followers = "".join(lab.unit_journal(n, UNIT) for n in nodes if n != leader)
        assert "older than two intervals: this member takes one" in followers, followers[-3000:]
        assert not [i for n, i in written(lab) if n == leader and unix(i) >= blocked]


def test_a_backup_named_in_the_future_causes_no_storm_and_nothing_is_pruned_early():
    lablib.require_lab()
    with lablib.session(prefix="s") as lab:
        nodes = [lab.node_of_member(m) for m in (0, 1, 2)]
        for node in nodes:
            tune(lab, node, "3s")
        lab.etcdctl("put", "/k", "v")
        first = wait_for_backup(lab, 0)
        bucket = secrets_bucket(lab)
        # A copy of the newest backup named a day ahead, at its revision.
        future = f"{PREFIX}{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(time.time() + 86_400))}"
        future += f"-r{first['revision']}.snapshot"
        s3(lab).copy_object(
            Bucket=bucket,
            Key=future,
            CopySource={"Bucket": bucket, "Key": f"{PREFIX}{first['id']}.snapshot"},
        )
        placed = time.time()
        time.sleep(15)
        taken = [i for _, i in written(lab) if unix(i) >= placed]
        print(f"\n[backup] a future-named backup placed; {len(taken)} backups in 15 s: {taken}")
        # One per 3 s interval at most, not one per 500 ms poll.
        assert 2 <= len(taken) <= 6, (taken, journals(lab))
        # Pruned by the bucket's clock: the newest kept, the rest of the hour
        # down to its first (what the hourly tier keeps).
        listed = [b["id"] for b in backups(lab)]
        assert max(taken, key=unix) in listed, (taken, listed)
        assert len(listed) <= 3, listed
