"""Acceptance test of issue 11's rolling replacement in the lab:
`nodeboot roll --env F --role etcd` run where the members' client URLs are
reachable (the router's namespace, where a bastion sits), with the lab
playing the auto-scaling group (a terminated etcd instance's machine goes
away and a replacement boots in its zone; one member's volume is replaced by
a blank one) and a writer putting one key every 50 ms throughout.

Root only, like every lab test.
"""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab as lablib  # noqa: E402
import lab_net  # noqa: E402
import lab_writer  # noqa: E402

require_lab = lablib.require_lab


def cluster():
    return lablib.session(prefix="r")


class Asg(threading.Thread):
    """The auto-scaling group: a terminated etcd instance's machine is gone,
    a replacement boots in its zone (on a blank volume for `blank` members)."""

    def __init__(self, lab, blank):
        super().__init__(daemon=True)
        self.lab, self.blank = lab, blank
        self.stop, self.replaced, self.errors = threading.Event(), [], []

    def run(self):
        while not self.stop.is_set():
            try:
                self.step()
            except Exception as e:  # reported by the test
                self.errors.append(repr(e))
                return
            time.sleep(0.2)

    def step(self):
        lab = self.lab
        for node, n in list(lab.state["nodes"].items()):
            if n["state"] != "running" or n["role"] != "etcd":
                continue
            found = lab.ec2.describe_instances(InstanceIds=[n["instance_id"]])
            state = found["Reservations"][0]["Instances"][0]["State"]["Name"]
            if state not in ("shutting-down", "terminated"):
                continue
            lab._power_off(n)
            with lab.lock:
                n["state"] = "killed"
                lab.save()
            member = n.get("member")
            if member in self.blank:
                lab.replace_volume(member)
            t = time.monotonic()
            report = lab.boot_node(n["zone"])
            took = round(time.monotonic() - t, 1)
            self.replaced.append((node, member, took, member in self.blank))
            print(f"[asg] {node} (member {member}) replaced by {report['node']} in {took}s")


def test_roll_replaces_every_member_one_at_a_time_losing_no_acknowledged_write():
    require_lab()
    with cluster() as lab:
        asg = Asg(lab, blank={1})
        asg.start()
        env = {**lab.operator_env(), "AWS_ENDPOINT_URL": lab.state["endpoint"]["url"]}
        cmd = [
            *lab_net.nsenter(lab.router), lab.bin, "roll", "--env", lab.state["env_file"],
            "--role", "etcd", "--dir", str(lab.dir / "secrets"),
            "--per-member", "240s", "--healthy-wait", "120s",
        ]  # fmt: skip
        with lab_writer.Writer(lab, None) as writer:
            t = time.monotonic()
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
            took = time.monotonic() - t
            time.sleep(1)
        asg.stop.set()
        asg.join(60)
        print(f"\n[roll] {out.stdout.strip()}\n{out.stderr.strip()[-3000:]}")
        print(
            f"[roll] {took:.0f}s; replaced {asg.replaced}; writes acknowledged "
            f"{writer.count()}, failed {writer.failed}; "
            f"longest write outage {writer.longest_gap():.2f}s"
        )
        assert not asg.errors, asg.errors
        assert out.returncode == 0, out.stderr
        assert len(asg.replaced) == 3 and [r[1] for r in asg.replaced] == [0, 1, 2]
        lab.wait_healthy()
        present = set(lab.etcdctl("get", "/w/", "--prefix", "--keys-only").stdout.split())
        lost = [k for k in writer.acked if k not in present]
        assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:10]}"
        members = json.loads(lab.etcdctl("member", "list", "-w", "json").stdout)["members"]
        assert len(members) == 3 and not any(m.get("isLearner") for m in members), members
