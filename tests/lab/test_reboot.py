"""Issue 13, "OS updates never take quorum down", in the lab: two etcd
nodes want to reboot at once (the sentinel /run/reboot-required, as a staged
Flatcar update would ask through update_engine); `nodeboot-reboot.service`
(real systemd, real etcd 3.5) lets one reboot, under the etcd lock
`disruption`, and the other reboots only after the first one's member is
back. The first gives the lock back within seconds of its member's return
(it looks every second after its reboot); the test waits for that release,
with a bound, instead of reading the lock and the marker at once (which
once raced the coordinator's 30 s pass and failed).

Root only (see test_lab.py); the test has its own lab and tears it down.
"""

import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab as lablib  # noqa: E402
from test_lab import lab_session  # noqa: E402

UNIT = "nodeboot-reboot.service"


def test_two_etcd_nodes_that_want_a_reboot_reboot_one_after_the_other():
    lablib.require_lab()
    with lab_session(f"t{uuid.uuid4().hex[:8]}") as lab:
        lab.wait_healthy()
        by_member = {n["member"]: node for node, n in lab.state["nodes"].items()}
        wanting = [by_member[0], by_member[1]]
        for node in wanting:
            lab.node_run(node, "touch", "/run/reboot-required")
        # A look at once on both (the service looks every 30 s).
        for node in wanting:
            lab.node_run(node, "systemctl", "restart", "--no-block", UNIT)

        down, healthy, waited = {}, {}, {}
        deadline = time.monotonic() + 300
        while len(healthy) < 2:
            assert time.monotonic() < deadline, f"not both rebooted: down {down}, healthy {healthy}"
            for node in wanting:
                if node not in down and lab.went_down(node):
                    down[node] = time.monotonic()
                    # While it is down the other one must not go.
                    others = [o for o in wanting if o != node and o in down and o not in healthy]
                    assert not others, f"{node} went down while {others} was down"
                    # What the other one says while this one is down (its
                    # journal is in /run: read it before its own reboot).
                    for other in (o for o in wanting if o not in down):
                        waited[other] = lab.unit_journal(other, UNIT)
                    lab.reboot_node(node)
                    lab.wait_healthy(timeout=120)
                    healthy[node] = time.monotonic()
            time.sleep(0.2)

        first, second = sorted(down, key=down.get)
        assert down[second] > healthy[first], (down, healthy)
        print(
            f"\n[lab] {first} down at 0.0 s, its member healthy at "
            f"{healthy[first] - down[first]:.1f} s; "
            f"{second} down at {down[second] - down[first]:.1f} s"
        )
        journal = waited[second]
        said = (
            "holds the etcd lock `disruption`",
            "may not be disrupted now",
            "took the etcd lock `disruption` first",
        )
        assert any(s in journal for s in said), journal
        # Both came back: the sentinel was in /run (gone with the reboot), the
        # lock is given back and the markers removed (waited for, with a
        # bound: the coordinator releases on its own look), the third node
        # never rebooted.
        lab.wait_healthy()
        released = wait_released(lab, wanting, timeout=60)
        print(f"[lab] the lock and both markers released {released:.1f} s after healthy")
        assert not lab.went_down(by_member[2])


def marker_left(lab, node):
    marker = "/var/lib/nodeboot/reboot-lock.json"
    return lab.node_run(node, "test", "-e", marker, check=False).returncode == 0


def wait_released(lab, nodes, timeout):
    """Waits until the etcd lock `disruption` is free and no node in
    `nodes` has its reboot marker; fails naming what is left after
    `timeout` s. Returns the seconds it took."""
    start = time.monotonic()
    while True:
        lock = lab.etcdctl("get", "/nodeboot/locks/disruption", check=False).stdout.strip()
        markers = [n for n in nodes if marker_left(lab, n)]
        if not lock and not markers:
            return time.monotonic() - start
        assert time.monotonic() - start < timeout, (
            f"not released after {timeout} s: lock {lock!r}, markers on {markers}; "
            + "\n".join(lab.unit_journal(n, UNIT)[-2000:] for n in nodes)
        )
        time.sleep(0.5)
