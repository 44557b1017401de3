"""Issue 21, "one lock for every disruption", in the lab (real systemd, real
etcd 3.5): the reboot coordinator, the secrets sync's restarts, the space
maintenance and `nodeboot roll` take one etcd lock, `disruption`, and one
rule (`shared::etcd::disruption`) says when a member may go.

- A blank member joins (member 0's volume replaced, 100k keys to catch up:
  removed, added as a learner, promoted) while member 1's node wants a
  reboot (its coordinator looking every second): the reboot waits until the
  new member is a voter, and reboots only after. Before, the coordinator
  skipped learners and rebooted with two voters of three left.
- Member 2's node takes the lock for its reboot (the reboot command hangs,
  as a slow shutdown would): `nodeboot roll` waits for the lock, terminates
  nothing meanwhile, and goes on once member 2's node is back and gave the
  lock back. Before, roll took no lock.

Root only (see test_lab.py); the test has its own lab and tears it down.
"""

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab as lablib  # noqa: E402
import lab_net  # noqa: E402
import lab_writer  # noqa: E402
from test_lab import lab_session, wait_for  # noqa: E402
from test_roll import Asg  # noqa: E402

REBOOT = "nodeboot-reboot.service"
KEYS = 100_000
LOCK = "/nodeboot/locks/disruption"


def coordinator(lab, node, reboot_command=None):
    """Member `node`'s coordinator looks every second (a drop-in over the
    rendered 30 s), with another reboot command if given; restarted, so it
    looks at once."""
    unit = lab.node_path(node, "/etc/systemd/system/" + REBOOT).read_text()
    start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    lines = ["[Service]", "ExecStart=", start.replace("--interval 30s", "--interval 1s")]
    if reboot_command:
        lines.append(f"Environment=NODEBOOT_REBOOT_COMMAND={reboot_command}")
    dropin = lab.node_path(node, f"/etc/systemd/system/{REBOOT}.d/70-test-disruption.conf")
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text("\n".join(lines) + "\n")
    lab.node_run(node, "systemctl", "daemon-reload")
    lab.node_run(node, "touch", "/run/reboot-required")
    lab.node_run(node, "systemctl", "restart", REBOOT)


class Watch(threading.Thread):
    """From the router, every 0.2 s: the members (learners, names) and
    whether `node` went down; the first time of each. Also the
    coordinator's journal as last read before `node` went down (it lives in
    /run, gone with the reboot)."""

    def __init__(self, lab, node, member_name):
        super().__init__(daemon=True)
        self.lab, self.node, self.name = lab, node, member_name
        self.stop, self.seen, self.said = threading.Event(), {}, ""

    def mark(self, what):
        self.seen.setdefault(what, time.monotonic())

    def run(self):
        while not self.stop.is_set() and "down" not in self.seen:
            if self.lab.went_down(self.node):
                self.mark("down")
            else:
                try:
                    self.said = self.lab.unit_journal(self.node, REBOOT)
                except Exception:  # the machine went down meanwhile
                    pass
            out = self.lab.etcdctl(
                "member", "list", "-w", "json", check=False, command_timeout="2s"
            )
            if out.returncode == 0:
                for m in json.loads(out.stdout).get("members", []):
                    if m.get("isLearner"):
                        self.mark("learner")
                    elif m.get("name") == self.name and "learner" in self.seen:
                        self.mark("promoted")
            time.sleep(0.2)


def test_a_reboot_waits_for_a_joining_member_and_roll_waits_for_a_reboot():
    lablib.require_lab()
    with lab_session(f"t{uuid.uuid4().hex[:8]}") as lab:
        env_name = lab.state["name"]
        by_member = {n["member"]: node for node, n in lab.state["nodes"].items()}
        lab_writer.load_keys(lab, "/load/", KEYS)

        # Member 0 on a blank volume; member 1's node wants a reboot meanwhile.
        victim, wanting = by_member[0], by_member[1]
        zone = lab.node(victim)["zone"]
        lab.kill_node(victim)
        lab.replace_volume(0)
        coordinator(lab, wanting)
        watch = Watch(lab, wanting, f"{env_name}-etcd-0")
        watch.start()
        lab.boot_node(zone)
        wait_for("member 1's node reboots", lambda: "down" in watch.seen, timeout=300)
        watch.stop.set()
        watch.join(30)
        said = watch.said
        seen = {k: round(v - watch.seen["down"], 1) for k, v in watch.seen.items()}
        print(f"\n[lab] first seen, seconds before member 1's node went down: {seen}")
        assert "learner" in watch.seen, "the blank member never showed as a learner"
        assert "promoted" in watch.seen and watch.seen["promoted"] < watch.seen["down"], (
            watch.seen,
            said[-3000:],
        )
        assert "may not be disrupted now" in said, said[-3000:]
        lab.reboot_node(wanting)
        lab.wait_healthy(timeout=120)
        wait_for("the lock given back", lambda: not lock_holder(lab), timeout=60)

        # Member 2's node holds the lock (its reboot hangs); roll waits for it.
        holder = by_member[2]
        coordinator(lab, holder, reboot_command="/bin/sleep 3600")
        wait_for("member 2's node holds the lock", lambda: lock_holder(lab) == f"{env_name}-etcd-2")
        asg = Asg(lab, blank=set())
        asg.start()
        env = {**lab.operator_env(), "AWS_ENDPOINT_URL": lab.state["endpoint"]["url"]}
        log = lab.dir / "roll.log"
        cmd = [
            *lab_net.nsenter(lab.router), lab.bin, "roll", "--env", lab.state["env_file"],
            "--role", "etcd", "--dir", str(lab.dir / "secrets"),
            "--per-member", "240s", "--healthy-wait", "300s",
        ]  # fmt: skip
        with open(log, "w") as out:
            roll = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for(
                "roll waits for the lock",
                lambda: f"{env_name}-etcd-2 holds the etcd lock" in log.read_text(),
                timeout=120,
            )
            assert not asg.replaced, asg.replaced
            assert roll.poll() is None, log.read_text()
            # The reboot completes: the machine goes down and boots again;
            # its coordinator gives the lock back, and roll goes on.
            lab.node_run(holder, "systemctl", "poweroff", "--no-block", check=False)
            wait_for("member 2's node goes down", lambda: lab.went_down(holder), timeout=60)
            lab.reboot_node(holder)
            roll.wait(timeout=1200)
        finally:
            if roll.poll() is None:
                roll.kill()
                roll.wait()
            asg.stop.set()
            asg.join(60)
        text = log.read_text()
        print(f"[roll] {text[-2000:]}")
        assert roll.returncode == 0, text[-3000:]
        assert not asg.errors, asg.errors
        assert [r[1] for r in asg.replaced] == [0, 1, 2], asg.replaced
        # It waited, then terminated: the first termination follows the wait.
        assert text.index("holds the etcd lock") < text.index("terminating"), text[-3000:]
        lab.wait_healthy()
        fields = lab.etcdctl("get", "/load/", "--prefix", "--count-only", "-w", "fields").stdout
        count = next(int(line.split(":")[1]) for line in fields.splitlines() if '"Count"' in line)
        assert count == KEYS, fields


def lock_holder(lab):
    return lab.etcdctl("get", LOCK, "--print-value-only", check=False).stdout.strip()
