"""Issue 20, point 7, in the systemd lab: a member whose volume is restored
from a snapshot never starts its old data as a voter. Member 2's volume is
copied while its node is stopped (the snapshot at T), the node runs on and
acknowledges more keys, then the volume is lost and a new one is made from
the copy (EBS restores a snapshot only into a new volume). The replacement's
etcd stage finds data last started on another volume: it keeps the data
aside on the volume, removes the old member ID and joins as a learner,
promoted once caught up, with every key; the old member ID never shows in
the member list again and never answers.

Real etcd 3.5, real systemd 252 running the rendered units, the emulator as
AWS. Root only, like every lab test; the lab has its own name and is torn
down however the test ends.
"""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab as lablib  # noqa: E402
from test_lab import etcd_json, lab_session, put_keys, read_keys, unique_name, wait_for  # noqa: E402

ETCD_STAGE = "nodeboot-etcd.service"


def members_by_id(lab):
    return {m["ID"]: m for m in etcd_json(lab, "member", "list", members=[0, 1])["members"]}


class Watch:
    """Samples the member list and member 2's own status until stopped:
    every ID listed, in order, and every ID member 2's etcd answered as."""

    def __init__(self, lab):
        self.lab, self.lists, self.answered = lab, [], set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            try:
                self.lists.append(set(members_by_id(self.lab)))
            except (subprocess.SubprocessError, ValueError, lablib.LabError):
                pass
            status = self.lab.etcdctl(
                "endpoint", "status", "-w", "json", members=[2], check=False, command_timeout="1s"
            )
            if status.returncode == 0:
                for s in json.loads(status.stdout):
                    self.answered.add(s["Status"]["header"]["member_id"])
            self.stop.wait(0.3)

    def done(self):
        self.stop.set()
        self.thread.join(30)


def test_a_member_restored_from_a_snapshot_is_removed_and_rejoins_as_a_learner():
    lablib.require_lab()
    with lab_session(unique_name()) as lab:
        before = put_keys(lab, "/stale/before", 100)
        node = lab.node_of_member(2)
        zone = lab.node(node)["zone"]
        old_id = next(i for i, m in members_by_id(lab).items() if m["name"].endswith("-etcd-2"))

        # The snapshot at T: member 2's node stopped, its volume copied.
        lab.stop_node(node)
        snapshot = lab.data / "member-2.snapshot-at-t.img"
        subprocess.run(
            ["cp", "--sparse=always", lab.member(member=2)["image"], snapshot],
            check=True,
            capture_output=True,
        )
        lab.start_node(node)
        after = put_keys(lab, "/stale/after", 100)
        wait_for(
            "member 2 holds the later keys",
            lambda: len(read_keys(lab, "/stale/after", 2, serializable=True)) == 100,
            120,
        )

        # The volume is lost; a new one is made from the snapshot.
        lab.kill_node(node)
        old_volume = lab.member(member=2)["volume_id"]
        lab.replace_volume(2)
        restored = lab.member(member=2)
        subprocess.run(
            ["dd", f"if={snapshot}", f"of={restored['loop']}", "bs=4M", "conv=sparse,fsync"],
            check=True,
            capture_output=True,
        )
        assert restored["volume_id"] != old_volume, restored

        watch = Watch(lab)
        start = time.monotonic()
        fresh = lab.launch(zone)
        lab.boot(fresh, check=False, timeout=120)

        def promoted():
            listed = members_by_id(lab)
            return any(
                m.get("name", "").endswith("-etcd-2") and not m.get("isLearner") and i != old_id
                for i, m in listed.items()
            )

        wait_for("member 2 back as a voter under a new ID", promoted, 600)
        took = time.monotonic() - start
        wait_for(
            "member 2 serves every key",
            lambda: len(read_keys(lab, "/stale/", 2, serializable=True)) == 200,
            120,
        )
        time.sleep(1)  # one more sample after the promotion
        watch.done()
        print(f"\nboot of the replacement to member 2 promoted under a new ID: {took:.1f} s")

        journal = lab.unit_journal(fresh, ETCD_STAGE)
        assert "stale etcd data" in journal and "kept aside as" in journal, journal[-4000:]
        assert f"removed the stale etcd member {old_id:x}" in journal, journal[-4000:]
        # The old ID, once gone from the list, never comes back; it never answered.
        first_gone = next(i for i, ids in enumerate(watch.lists) if old_id not in ids)
        assert all(old_id not in ids for ids in watch.lists[first_gone:]), watch.lists
        assert old_id not in members_by_id(lab)
        assert old_id not in watch.answered, watch.answered
        # The old data is kept on the volume, never deleted.
        kept = list(lab.node_path(fresh, "/var/lib/etcd").glob("member.stale-*"))
        assert len(kept) == 1, kept
        assert (kept[0] / "snap" / "db").stat().st_size > 0 and (kept[0] / "wal").is_dir()
        assert (
            lab.node_path(fresh, "/var/lib/etcd/nodeboot-volume-id").read_text().strip()
            == (restored["volume_id"])
        )
        keys = read_keys(lab, "/stale/", 2, serializable=True)
        assert keys == {**before, **after}
