"""Issue 20's backups that never stall, in the systemd lab: when the leader
cannot reach S3 another voting member backs up (after two intervals, one
at a time under the etcd lock `backup`), and a backup named in the future
(a clock that ran ahead) causes no backup storm: ages are the bucket's
`LastModified`, not a name's time nor a node's clock.

Root only, like every lab test.
"""

import sys
import time
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab as lablib  # noqa: E402
import lab_ec2  # noqa: E402
import lab_node  # noqa: E402
from test_backup import (  # noqa: E402
    UNIT,
    assert_paced,
    journals,
    leadership,
    taken,
    unix,
    wait_for_backup,
    wait_for_taken,
    wait_pruned,
)

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


def test_when_the_leader_cannot_reach_s3_another_member_backs_up_one_at_a_time():
    lablib.require_lab()
    with lablib.session(prefix="s") as lab:
        nodes = [lab.node_of_member(m) for m in (0, 1, 2)]
        for node in nodes:
            tune(lab, node, "4s")
        lab.etcdctl("put", "/k", "v")
        wait_for_backup(lab, 0)
        # The leader's backup service reaches no S3 (a port nothing listens
        # on). Leadership may move on a loaded machine: the new leader is cut
        # off instead (the old one gets S3 back), so the fallback is what
        # takes the backups, whatever the scheduling.
        cut = {}  # node -> [since, until) while its service had no S3

        def cut_off_the_leader():
            now = leadership(lab)
            if now is None or (cut and now[0] in cut and cut[now[0]][1] is None):
                return
            for node, period in cut.items():
                if period[1] is None:
                    tune(lab, node, "4s")
                    period[1] = time.time()
            tune(lab, now[0], "4s", "AWS_ENDPOINT_URL=http://127.0.0.1:9\n")
            cut[now[0]] = [time.time(), None]

        cut_off_the_leader()
        since = int(time.time()) + 1
        lab.etcdctl("put", "/k2", "v2")
        deadline = time.monotonic() + 240
        while True:
            every = taken(lab)
            fallback = [t for t in every if unix(t[1]) >= since and t[2]]
            if len(fallback) >= 2:
                break
            assert time.monotonic() < deadline, (every, cut, journals(lab))
            cut_off_the_leader()
            time.sleep(1)
        mine = [t for t in every if unix(t[1]) >= since]
        print(f"\n[backup] leader cut off {cut}; taken {mine}")
        # After two intervals (8 s), one member at a time: never two in one interval.
        assert_paced(every, since, 4, journals(lab))
        # A service cut off from S3 wrote nothing meanwhile.
        for node, backup, _ in mine:
            start, end = cut.get(node, (None, None))
            if start is not None:
                assert not (start <= unix(backup) < (end or float("inf"))), (node, backup, cut)


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
        since = int(time.time()) + 1
        every = wait_for_taken(lab, since, 4)
        mine = [t for t in every if unix(t[1]) >= since]
        print(f"\n[backup] a future-named backup placed; then {mine}")
        # Ordered by revision, aged by the bucket: one backup per 3 s interval
        # at most, not one per 500 ms poll.
        assert_paced(every, since, 3, journals(lab))
        # Pruned by the bucket's clock: the newest kept, the rest of the hour
        # down to its first (what the hourly tier keeps).
        wait_pruned(lab, mine[-1][1])
