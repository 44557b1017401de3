"""Acceptance tests of issues 4 and 10: a real etcd cluster in the lab
(tests/lab/README.md), each node a machine that boots systemd 252 from its
rendered Ignition config, losing nodes and getting them back; compute nodes
booted the same way.

Root only: without root every test fails and says why, unless
NODEBOOT_SKIP_ROOT_TESTS=1 (then they are skipped, visibly). Every lab has a
name of its own, so the tests run in parallel (pytest -n); each lab is torn
down when its test ends, pass or fail, and the teardown checks that nothing
is left.
"""

import base64
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab as lablib  # noqa: E402
import lab_ec2  # noqa: E402
import lab_net  # noqa: E402
import lab_nspawn  # noqa: E402

LAB_DIR = Path(__file__).resolve().parent


require_lab = lablib.require_lab


def unique_name():
    return f"t{uuid.uuid4().hex[:8]}"


def assert_nothing_left(name, recorded):
    """No machine, cgroup, namespace, loop device, mount, process or directory
    of lab `name`."""
    probe = lablib.Lab(name)
    probe.state = recorded
    assert probe.leftovers() == []
    assert not [m for m in lab_nspawn.listed_cgroups() if probe.own_machine(m)]
    for n in recorded.get("nodes", {}).values():
        m = n["machine"]
        assert not lab_nspawn.Container.from_state(m).alive(), f"machine {m['machine']} runs"
    assert not [ns for ns in lab_net.listed() if probe.own_netns(ns)]
    assert lablib.loops_over(probe.data) == []
    assert lablib.mounts_under(probe.dir) == [] and lablib.mounts_under(probe.data) == []
    assert not probe.dir.exists() and not probe.data.exists()


def tear_down(name):
    lab = (
        lablib.Lab.load(name)
        if (lablib.STATE_ROOT / name / "state.json").exists()
        else lablib.Lab(name)
    )
    recorded = lab.state
    lab.down()
    assert_nothing_left(name, recorded)


@contextlib.contextmanager
def lab_session(name, **up):
    """A lab that is torn down (and checked clean) however the block ends."""
    try:
        yield lablib.Lab.up(name, **up)
    finally:
        tear_down(name)


@pytest.fixture
def cluster():
    require_lab()
    with lab_session(unique_name()) as lab:
        yield lab


# --- etcd, through etcdctl in the router's namespace ---------------------------


def etcd_json(lab, *args, members=None):
    return json.loads(lab.etcdctl(*args, "-w", "json", members=members).stdout)


def member_list(lab):
    """{member name: member id} as the cluster reports it."""
    return {m["name"]: m["ID"] for m in etcd_json(lab, "member", "list")["members"]}


def statuses(lab, members):
    return [s["Status"] for s in etcd_json(lab, "endpoint", "status", members=members)]


def put_keys(lab, prefix, count, members=None):
    written = {}
    for i in range(count):
        key, value = f"{prefix}/{i:03}", f"value-{i}-{uuid.uuid4().hex}"
        lab.etcdctl("put", key, value, members=members)
        written[key] = value
    return written


def read_keys(lab, prefix, member, serializable=False):
    """Every key under prefix, read at one member (serializable: from its own
    copy, without asking the leader)."""
    args = ["get", prefix, "--prefix"] + (["--consistency=s"] if serializable else [])
    kvs = etcd_json(lab, *args, members=[member]).get("kvs", [])
    return {
        base64.b64decode(kv["key"]).decode(): base64.b64decode(kv["value"]).decode() for kv in kvs
    }


def wait_for(what, check, timeout=60):
    """Polls `check` until true; a liveness bound, never a measure."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.2)


def enabled_units(lab, role):
    """The units the rendered config of `role` enables, read from the config."""
    config = json.loads((lab.dir / "render" / f"{role}.ign").read_text())
    return sorted(u["name"] for u in config["systemd"]["units"] if u.get("enabled"))


def assert_all_active(lab, node, units):
    """`systemctl is-active` of each unit (a unit whose dependency failed is
    inactive, not failed: `systemctl --failed` would miss it)."""
    out = lab.node_run(node, "systemctl", "is-active", *units, check=False).stdout.split()
    assert dict(zip(units, out, strict=True)) == dict.fromkeys(units, "active"), node


# --- 1. three nodes in three zones form a healthy cluster ----------------------


def test_three_nodes_boot_systemd_from_etcd_ign_and_form_a_healthy_cluster_over_tls(cluster):
    lab = cluster
    nodes = lab.state["nodes"].values()
    assert sorted(n["zone"] for n in nodes) == ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
    assert sorted(n["member"] for n in nodes) == [0, 1, 2]

    units = enabled_units(lab, "etcd")
    stages = [f"nodeboot-{s}.service" for s in ("discover", "attach", "mount", "secrets", "etcd")]
    assert set(stages) | {"etcd-member.service", "kubelet.service"} <= set(units)
    for node, n in lab.state["nodes"].items():
        # systemd is the machine's PID 1, and it ran every unit the config enables.
        assert lab.node_run(node, "cat", "/proc/1/comm").stdout.strip() == "systemd"
        assert_all_active(lab, node, units)
        # eth0's address came from the VPC's DHCP (networkd, dnsmasq's fixed lease).
        acks = [x for x in lab.dhcp_log(n["mac"]) if "DHCPACK(" in x]
        assert acks and n["primary_ip"] in acks[-1], acks
        routes = lab.node_run(node, "ip", "-4", "route", "show", "default").stdout
        assert "dev eth0 proto dhcp" in routes, routes
        # A renewal asked for now is ACKed with the same address.
        renewal = lab.renew_dhcp(node, "eth0")
        assert any("DHCPACK(" in x and n["primary_ip"] in x for x in renewal), renewal
        # The mount stage mounted the volume inside the machine, from its loop
        # device at the Nitro path; the host's mount table does not have it.
        member = lab.member(member=n["member"])
        source = lab.node_run(node, "findmnt", "-n", "-o", "SOURCE", "/var/lib/etcd").stdout
        assert source.strip() == member["loop"], source
        assert not [p for p in lablib.mounts_under("/") if p.startswith("/var/lib/etcd")]
        # Ignition's passwd: the login user with the environment's key.
        keys = lab.node_path(node, "/home/core/.ssh/authorized_keys").read_text()
        assert keys.strip() and keys.strip() in (lab.dir / "render/etcd.ign").read_text()

    health = etcd_json(lab, "endpoint", "health")
    assert sorted(h["endpoint"] for h in health) == [
        "https://10.80.10.10:2379",
        "https://10.80.11.10:2379",
        "https://10.80.12.10:2379",
    ]
    assert all(h["health"] for h in health), health

    members = etcd_json(lab, "member", "list")["members"]
    assert sorted((m["name"], m["peerURLs"][0], m["clientURLs"][0]) for m in members) == [
        (f"{lab.name}-etcd-{i}", f"https://10.80.1{i}.10:2380", f"https://10.80.1{i}.10:2379")
        for i in range(3)
    ]
    # Each member advertises its ENI's address, which lives on the node's
    # hot-plugged interface, not on eth0.
    for n in nodes:
        eth1 = lab_net.ip("-4", "-o", "addr", "show", "dev", "eth1", ns=n["netns"]).stdout
        assert f"inet 10.80.1{n['member']}.10/24" in eth1

    pki = lab.etcd_pki
    no_client_cert = lablib.run(
        [
            *lab_net.nsenter(lab.router),
            lablib.ETCDCTL,
            "--endpoints=https://10.80.10.10:2379",
            f"--cacert={pki / 'ca.crt'}",
            "--dial-timeout=2s",
            "--command-timeout=3s",
            "endpoint",
            "health",
        ],
        check=False,
    )
    assert no_client_cert.returncode != 0, "a client without a certificate must be refused"


# --- 2. a replacement takes the dead member over ---------------------------------


def test_a_replacement_in_the_same_zone_rejoins_as_the_same_member_with_its_data(cluster, capsys):
    lab = cluster
    names_before = member_list(lab)
    victim = lab.node_of_member(0)
    old = lab.node(victim)
    member0 = lab.member(member=0)
    old_id = statuses(lab, [0])[0]["header"]["member_id"]
    written = put_keys(lab, "/lab/before", 40)

    lab.kill_node(victim)
    # Two of three keep quorum; a write proposed while they elect a new
    # leader would be dropped, so wait for one first.
    lab.wait_healthy(members=[1, 2])
    written |= put_keys(lab, "/lab/during", 40, members=[1, 2])

    started = time.monotonic()
    report = lab.boot_node(old["zone"])
    lab.wait_healthy()
    seconds = time.monotonic() - started
    with capsys.disabled():
        print(
            f"\n[lab] replacement {report['node']} ({report['instance_id']}): cluster healthy "
            f"{seconds:.1f}s after its launch; steps {report['seconds']}; "
            f"{report['api_calls_total']} AWS API calls {report['api_calls']}"
        )

    new = lab.node(report["node"])
    assert report["member"] == 0 and new["zone"] == old["zone"]
    assert_all_active(lab, report["node"], enabled_units(lab, "etcd"))
    claim = json.loads(lab.node_path(report["node"], "/run/nodeboot/claim.json").read_text())
    assert (claim["volume_id"], claim["eni_id"]) == (member0["volume_id"], member0["eni_id"])
    volumes, enis = lab_ec2.attached(lab.ec2, new["instance_id"])
    assert member0["volume_id"] in volumes and member0["eni_id"] in [e["eni_id"] for e in enis]
    old_volumes, old_enis = lab_ec2.attached(lab.ec2, old["instance_id"])
    assert member0["volume_id"] not in old_volumes
    assert member0["eni_id"] not in [e["eni_id"] for e in old_enis]

    etcd_env = lab.node_path(report["node"], "/run/nodeboot/etcd.env").read_text()
    assert "ETCD_INITIAL_CLUSTER_STATE=existing" in etcd_env, etcd_env
    assert member_list(lab) == names_before, "same names and member ids: no member was added"
    assert statuses(lab, [0])[0]["header"]["member_id"] == old_id
    # Its own copy holds everything, written before the outage and during it.
    assert read_keys(lab, "/lab/", 0, serializable=True) == written
    for m in (0, 1, 2):
        assert read_keys(lab, "/lab/", m) == written


# --- 3. losing quorum ------------------------------------------------------------------


def test_writes_fail_without_quorum_and_resume_when_the_stopped_nodes_return_without_split_brain(
    cluster,
):
    lab = cluster
    members_before = member_list(lab)
    written = put_keys(lab, "/lab/before", 20)
    stopped = [lab.node_of_member(1), lab.node_of_member(2)]
    for node in stopped:
        lab.stop_node(node)

    # The lone member loses its leader and cannot elect itself...
    wait_for("member 0 to have no leader", lambda: statuses(lab, [0])[0].get("leader", 0) == 0)
    # ...so a write fails, and is never applied anywhere (checked below).
    lost = lab.etcdctl("put", "/lab/lost", "x", members=[0], check=False, command_timeout="3s")
    assert lost.returncode != 0, f"a write without quorum succeeded: {lost.stdout}"
    assert read_keys(lab, "/lab/", 0, serializable=True) == written, (
        "the minority keeps what it had"
    )

    for node in stopped:
        lab.start_node(node)
    lab.wait_healthy()
    written |= put_keys(lab, "/lab/after", 20)

    # One cluster: every member names the same leader in the same term, reaches
    # the same revision, and holds the same keys. The failed write is nowhere.
    def agreed():
        seen = {
            (s.get("leader", 0), s["raftTerm"], s["header"]["revision"])
            for s in statuses(lab, [0, 1, 2])
        }
        return len(seen) == 1 and next(iter(seen))[0] != 0

    wait_for("the three members to agree on leader, term and revision", agreed)
    assert len({x["header"]["cluster_id"] for x in statuses(lab, [0, 1, 2])}) == 1
    for m in (0, 1, 2):
        assert read_keys(lab, "/lab/", m, serializable=True) == written, f"member {m}"
    assert member_list(lab) == members_before, "the same three members"


# --- 4. compute nodes ---------------------------------------------------------------


def test_compute_nodes_boot_from_compute_ign_without_a_single_ec2_call(capsys):
    require_lab()
    with lab_session(unique_name(), boot=False) as lab:
        units = enabled_units(lab, "compute")
        assert {"nodeboot-discover.service", "nodeboot-secrets.service", "kubelet.service"} <= set(
            units
        )
        for zone in ("eu-west-1a", "eu-west-1b"):
            report = lab.boot_node(zone, role="compute")
            node = report["node"]
            with capsys.disabled():
                print(f"\n[lab] compute {node}: {report['seconds']}; calls {report['api_calls']}")
            ec2 = {a: c for a, c in report["api_calls"].items() if a not in lab_ec2.S3_KMS_ACTIONS}
            assert ec2 == {}, f"a compute node called EC2: {ec2}"
            assert report["api_calls"].get("Decrypt", 0) > 0, "its secrets came through KMS"
            assert_all_active(lab, node, units)
            # The kubelet stand-in refuses to start without the bootstrap
            # kubeconfig that the secrets stage writes (TLS bootstrap: no shared
            # identity); it started after that stage had finished.
            saw = lab.node_path(node, "/run/lab-kubelet/started").read_text()
            assert "bootstrap-kubeconfig=/run/nodeboot/secrets/bootstrap-kubelet.kubeconfig" in saw
            assert "kubeconfig=/var/lib/kubelet/kubeconfig" in saw
            c = lab.container(lab.node(node))
            secrets_done = int(
                c.unit_property("nodeboot-secrets.service", "ActiveEnterTimestampMonotonic")
            )
            kubelet_began = int(
                c.unit_property("kubelet.service", "ExecMainStartTimestampMonotonic")
            )
            assert 0 < secrets_done <= kubelet_began
            # The manifest sync put the role's static pods where the kubelet reads them.
            wanted = sorted(p.name for p in (lab.dir / "render/manifests/compute").iterdir())
            manifests = lab.node_path(node, "/etc/kubernetes/manifests")
            wait_for(
                "the compute manifests",
                lambda m=manifests, w=wanted: sorted(os.listdir(m)) == w,
                30,
            )
            # No volume, no ENI: only the instance's own NIC.
            links = lab.node_run(node, "ip", "-o", "link", "show").stdout
            assert "eth1" not in links


# --- 5. teardown -----------------------------------------------------------------------


def test_a_failing_test_still_tears_its_lab_down():
    require_lab()
    name = unique_name()
    with pytest.raises(RuntimeError, match="the test failed"):
        with lab_session(name) as lab:
            assert lab.leftovers(), "a running lab has namespaces, loop devices, mounts, processes"
            raise RuntimeError("the test failed")
    # lab_session's teardown checked it; check once more from the outside.
    assert name not in lablib.Lab.names()


def test_down_cleans_up_after_a_crashed_up_and_a_second_run_passes_right_after():
    require_lab()
    name = unique_name()
    try:
        crashed = subprocess.run(
            [sys.executable, LAB_DIR / "lab.py", "--name", name, "up"],
            env={**os.environ, lablib.ABORT_VAR: "after-boot"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert crashed.returncode == -9, crashed.stderr
        lab = lablib.Lab.load(name)
        recorded = lab.state
        left = lab.leftovers()
        for kind in ("network namespace", "loop device", "mount", "process"):
            assert any(x.startswith(kind) for x in left), f"the crash left no {kind}: {left}"
        down = subprocess.run([LAB_DIR / "down", name], capture_output=True, text=True, timeout=300)
        assert down.returncode == 0, down.stderr
        assert_nothing_left(name, recorded)
    finally:
        tear_down(name)
    # The same name again, right after: nothing of the first run is in the way.
    with lab_session(name) as lab:
        assert lab.healthy()
