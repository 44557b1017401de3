"""Acceptance tests of issue 11 (the etcd stage's half): a member whose volume
is replaced by a blank one rejoins by itself; without quorum a blank member
touches nothing and says how to restore; etcd_count 3 -> 5 -> 3 with a writer
running throughout. A real etcd 3.5 in the lab (tests/lab/README.md).

Root only, like test_lab.py (same rules: fail without root unless
NODEBOOT_SKIP_ROOT_TESTS=1; every lab has its own name and is torn down and
checked clean however the test ends).
"""

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab as lablib  # noqa: E402
import lab_ec2  # noqa: E402
import lab_net  # noqa: E402
from lab_proc import run  # noqa: E402
from test_lab import (  # noqa: E402
    etcd_json,
    lab_session,
    put_keys,
    read_keys,
    require_lab,
    unique_name,
    wait_for,
)

ETCD_NO_QUORUM = 22  # README: exit codes
ETCD_BUSY = 23


@pytest.fixture
def cluster():
    require_lab()
    with lab_session(unique_name()) as lab:
        yield lab


def members(lab, at=None):
    """The member list (etcdctl's JSON) as one member, or any, sees it."""
    return etcd_json(lab, "member", "list", members=at)["members"]


def all_voting_and_started(lab, count):
    ms = members(lab)
    return len(ms) == count and all(m.get("name") and not m.get("isLearner") for m in ms)


# --- the lab's Terraform side, for a replaced volume and a changed etcd_count ---


def new_volume(lab, place, image):
    """A blank tagged volume for member place['member'] (a loop device over a
    new sparse file), as Terraform creates one."""
    with open(image, "wb") as f:
        f.truncate(lablib.VOLUME_MB * 1024 * 1024)
    loop = run(["losetup", "--find", "--show", image]).stdout.strip()
    volume = lab.ec2.create_volume(
        AvailabilityZone=place["zone"],
        Size=1,
        TagSpecifications=lab_ec2._tags("volume", lab.name, place["member"]),
    )
    return volume["VolumeId"], loop


def replace_volume_with_a_blank_one(lab, member):
    """The member's EBS volume is lost and replaced: the dead instance's
    volume is force-detached and deleted, a new blank one takes its tags."""
    m = lab.member(member=member)
    lab.ec2.detach_volume(VolumeId=m["volume_id"], Force=True)
    deadline = time.monotonic() + 30
    while lab.ec2.describe_volumes(VolumeIds=[m["volume_id"]])["Volumes"][0]["State"] != "available":
        assert time.monotonic() < deadline, f"{m['volume_id']} never detached"
        time.sleep(0.1)
    lab.ec2.delete_volume(VolumeId=m["volume_id"])
    image = lab.data / f"member-{member}-blank-{uuid.uuid4().hex[:6]}.img"
    volume_id, loop = new_volume(lab, m, image)
    with lab.lock:
        m.update(volume_id=volume_id, loop=loop, image=str(image))
        lab.save()


def set_etcd_count(lab, count):
    """The environment file's etcd_count changes, and with it the node.json
    that new instances get (their user data); running nodes keep theirs."""
    env_file = Path(lab.state["env_file"])
    text = env_file.read_text()
    text = "\n".join(
        f"etcd_count = {count}" if line.startswith("etcd_count") else line
        for line in text.splitlines()
    )
    env_file.write_text(text + "\n")
    render = lab.dir / f"render-{count}"
    run([lab.bin, "render", "--env", env_file, "--out", render, "--role", "etcd"])
    (lab.dir / "node.json").write_bytes(lablib.node_json_from_ignition(render))
    with lab.lock:
        lab.state["etcd_count"] = count
        lab.save()


def add_members(lab, count):
    """Terraform's side of etcd_count going up: volumes and ENIs of the new members."""
    subnets = lab.state["subnets"]
    places = lab_ec2.placement(lab.state["zones"], lab.state["secure_subnets"], count)
    for place in places[len(lab.state["members"]) :]:
        image = lab.data / f"member-{place['member']}.img"
        made = lab_ec2.create_member(
            lab.ec2,
            lab.name,
            place["member"],
            place["zone"],
            subnets[place["zone"]]["id"],
            place["eni_ip"],
            1,
        )
        lab.ec2.delete_volume(VolumeId=made["volume_id"])  # replaced by one over a loop file
        volume_id, loop = new_volume(lab, place, image)
        with lab.lock:
            lab.state["members"].append(
                {**place, **made, "volume_id": volume_id, "image": str(image), "loop": loop}
            )
            lab.save()


def remove_members(lab, count):
    """Terraform's side of etcd_count going down: the highest members'
    instances are terminated, their volumes and ENIs deleted."""
    for m in [m for m in lab.state["members"] if m["member"] >= count]:
        node = lab.node_of_member(m["member"])
        lab.kill_node(node, how="terminate")
        lab_ec2.wait_state(lab.ec2, lab.node(node)["instance_id"], ["terminated"])
        lab.ec2.delete_volume(VolumeId=m["volume_id"])
        lab.ec2.delete_network_interface(NetworkInterfaceId=m["eni_id"])
        run(["losetup", "-d", m["loop"]], check=False)
        with lab.lock:
            lab.state["members"].remove(m)
            lab.save()


# --- booting with the unit's retries -------------------------------------------------


def boot_until_etcd(lab, zone, tries=60):
    """launch + the boot stages; the etcd stage is retried as its unit does
    (Restart=on-failure, every 10 s there, 1 s here) until it succeeds, then
    run again with --exec to become etcd (a rerun: it must converge).
    Returns (node, the exit codes of the attempts that failed)."""
    node = boot_before_etcd(lab, zone)
    n = lab.node(node)
    codes = []
    for _ in range(tries):
        out = stage_etcd(lab, node)
        with open(Path(n["dir"]) / "boot.log", "a") as log:
            log.write(f"== nodeboot stage etcd: exit {out.returncode}\n{out.stderr}")
        if out.returncode == 0:
            break
        assert out.returncode == ETCD_BUSY, f"stage etcd exited {out.returncode}:\n{out.stderr}"
        codes.append(out.returncode)
        time.sleep(1)
    else:
        raise AssertionError(f"{node}: the etcd stage never succeeded: exits {codes}")
    lab._start_etcd(node)
    claim = json.loads((Path(n["root"]) / "run/nodeboot/claim.json").read_text())
    with lab.lock:
        n["member"] = claim["member"]
        lab.save()
    return node, codes


def stage_etcd(lab, node):
    """`nodeboot stage etcd` (no --exec) in the node: the completed process."""
    n = lab.node(node)
    cmd = [*lab_net.nsenter(n["netns"]), lab.bin, "stage", "--root", n["root"], "etcd"]
    return subprocess.run(cmd, capture_output=True, text=True, env=lab._stage_env(), timeout=120)


def boot_before_etcd(lab, zone):
    node = lab.launch(zone)
    n = lab.node(node)
    lab._stage(node, "discover")
    lab._stage(node, "attach", "--wait-timeout", "60s", "--detach-grace", "5s")
    lab._hotplug_claim(n)
    lab._stage(node, "mount", "--wait-timeout", "30s")
    lab._install_secrets(n)
    return node


def lines_with(text, *needles):
    """Index of the first line containing each needle (-1: none)."""
    lines = text.splitlines()
    return [next((i for i, line in enumerate(lines) if needle in line), -1) for needle in needles]


# --- 1. a blank volume rejoins ---------------------------------------------------------


def test_a_member_whose_volume_is_replaced_by_a_blank_one_rejoins_as_itself(cluster, capsys):
    lab = cluster
    before = {m["name"]: m for m in members(lab)}
    written = put_keys(lab, "/lab/before", 30)
    victim = lab.node_of_member(0)
    zone = lab.node(victim)["zone"]
    lab.kill_node(victim)
    replace_volume_with_a_blank_one(lab, 0)
    lab.wait_healthy(members=[1, 2])
    written |= put_keys(lab, "/lab/during", 30, members=[1, 2])

    started = time.monotonic()
    node, _ = boot_until_etcd(lab, zone)
    lab.wait_healthy()
    wait_for("the rejoined member to be promoted", lambda: all_voting_and_started(lab, 3), 120)
    seconds = time.monotonic() - started
    with capsys.disabled():
        print(f"\n[etcd] blank-volume replacement: voting member {seconds:.1f}s after its launch")

    after = {m["name"]: m for m in members(lab)}
    name0 = f"{lab.name}-etcd-0"
    assert set(after) == set(before), "the same member names, none stale, none extra"
    assert after[name0]["peerURLs"] == before[name0]["peerURLs"], "the same peer URL"
    assert after[name0]["ID"] != before[name0]["ID"], "a new member replaced the stale one"
    for name in set(before) - {name0}:
        assert after[name]["ID"] == before[name]["ID"]
    assert read_keys(lab, "/lab/", 0, serializable=True) == written, "its own copy has every key"
    for m in (0, 1, 2):
        assert read_keys(lab, "/lab/", m) == written

    n = lab.node(node)
    env = (Path(n["root"]) / "run/nodeboot/etcd.env").read_text()
    assert "ETCD_INITIAL_CLUSTER_STATE=existing" in env, env
    log = (Path(n["dir"]) / "boot.log").read_text()
    hook, removed, added = lines_with(
        log, "backup hook called before", "removed the stale etcd member", "added etcd member"
    )
    assert -1 not in (hook, removed, added) and hook < removed < added, log[-3000:]
    record = (Path(n["root"]) / "var/lib/etcd/etcd-version").read_text().strip()
    assert record.startswith("3.5."), record


# --- 2. no quorum: touch nothing -------------------------------------------------------


def test_a_blank_member_without_quorum_touches_nothing_and_names_the_restore_command(cluster):
    lab = cluster
    written = put_keys(lab, "/lab/before", 10)
    before = members(lab, at=[2])
    victim, other = lab.node_of_member(0), lab.node_of_member(1)
    zone = lab.node(victim)["zone"]
    lab.kill_node(victim)
    replace_volume_with_a_blank_one(lab, 0)
    lab.stop_node(other)  # two of three gone: member 2 alone has no quorum

    node = boot_before_etcd(lab, zone)
    out = stage_etcd(lab, node)
    assert out.returncode == ETCD_NO_QUORUM, f"exit {out.returncode}:\n{out.stderr}"
    assert "nodeboot etcd restore --env" in out.stderr and "Nothing was changed" in out.stderr, (
        out.stderr
    )
    n = lab.node(node)
    assert not (Path(n["root"]) / "run/nodeboot/etcd.env").exists(), "etcd was not configured"
    assert members(lab, at=[2]) == before, "the membership is untouched"

    # The missing member returns: the same stage, retried, now rejoins.
    lab.start_node(other)
    lab.wait_healthy(members=[1, 2])
    lab._start_etcd(node)
    lab.wait_healthy()
    wait_for("the rejoined member to be promoted", lambda: all_voting_and_started(lab, 3), 120)
    assert read_keys(lab, "/lab/", 0, serializable=True) == written


# --- 3. scaling with a writer ----------------------------------------------------------


class Writer:
    """Puts one key after another through members 0-2 (which stay) until
    stopped; keeps the keys etcd acknowledged."""

    def __init__(self, lab):
        self.lab, self.acked, self.failed = lab, {}, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        i = 0
        while not self.stop.is_set():
            key, value = f"/w/{i:06}", uuid.uuid4().hex
            out = self.lab.etcdctl(
                "put", key, value, members=[0, 1, 2], check=False, command_timeout="3s"
            )
            if out.returncode == 0:
                self.acked[key] = value
            else:
                self.failed += 1
            i += 1
            time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


def remove_member(lab, member):
    """`nodeboot etcd remove-member` as the operator runs it on a machine that
    reaches the members (here the router's namespace; see README)."""
    cmd = [
        *lab_net.nsenter(lab.router),
        lab.bin,
        "etcd",
        "remove-member",
        "--env",
        lab.state["env_file"],
        "--dir",
        str(lab.dir / "secrets"),
        str(member),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_three_to_five_to_three_members_with_a_writer_loses_no_acknowledged_write(
    cluster, capsys
):
    lab = cluster
    with Writer(lab) as writer:
        t = time.monotonic()
        set_etcd_count(lab, 5)
        add_members(lab, 5)
        zones = [m["zone"] for m in lab.state["members"][3:]]
        # Both new nodes boot at once: one joins, the other waits its turn.
        results = {}
        threads = [
            threading.Thread(target=lambda z=z: results.setdefault(z, boot_until_etcd(lab, z)))
            for z in zones
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert len(results) == 2, f"a new node did not boot: {results}"
        wait_for("five voting members", lambda: all_voting_and_started(lab, 5), 180)
        lab.wait_healthy()
        up_seconds = time.monotonic() - t
        waits = sum(len(codes) for _, codes in results.values())

        refused = remove_member(lab, 3)
        assert refused.returncode == 4 and "remove members from the highest down" in refused.stderr, (
            refused.stderr
        )
        t = time.monotonic()
        for m in (4, 3):
            out = remove_member(lab, m)
            assert out.returncode == 0, out.stderr
            assert f"removed {lab.name}-etcd-{m}" in out.stdout, out.stdout
        again = remove_member(lab, 4)
        assert again.returncode == 0 and "already removed" in again.stdout, again.stderr
        remove_members(lab, 3)
        set_etcd_count(lab, 3)
        lab.wait_healthy()
        down_seconds = time.monotonic() - t
        time.sleep(1)  # a few more writes on three members
    assert all_voting_and_started(lab, 3)
    assert {m["name"] for m in members(lab)} == {f"{lab.name}-etcd-{i}" for i in range(3)}
    for m in (0, 1, 2):
        got = read_keys(lab, "/w/", m)
        lost = {k for k, v in writer.acked.items() if got.get(k) != v}
        assert not lost, f"member {m} lacks {len(lost)} acknowledged writes: {sorted(lost)[:5]}"
    with capsys.disabled():
        print(
            f"\n[etcd] 3->5 in {up_seconds:.1f}s ({waits} waits for the other joiner), "
            f"5->3 in {down_seconds:.1f}s; writer: {len(writer.acked)} acknowledged, "
            f"{writer.failed} failed, none lost"
        )
