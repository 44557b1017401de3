"""The boot chain under real systemd 252 (lab_nspawn.py): a stage that needs
more than one attempt must not leave the units after it dead, and a stage
that stops must leave its unit failed and visible (issue 10, item 1).

systemd's documented behaviour (systemd issue #18856), checked first with
probe units: a `Type=oneshot` unit that fails fails its `Requires=`
dependants at once, whatever its `Restart=` says, and they stay dead when
the restart succeeds. So nodeboot's stage units wait inside the process
(`nodeboot stage --retry`, `TimeoutStartSec=infinity`), and the tests below
boot the rendered units with the real binary. Root only, like the lab."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ignition_apply  # noqa: E402
import lab  # noqa: E402
import lab_ec2  # noqa: E402
import lab_nspawn  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
IMDS = REPO / "tests/bed/imds.py"
NODEBOOT_INSIDE = "/opt/bin/nodeboot"


def require_root():
    if os.geteuid() != 0:
        if os.environ.get("NODEBOOT_SKIP_ROOT_TESTS") == "1":
            pytest.skip("lab machines need root (skipped knowingly: NODEBOOT_SKIP_ROOT_TESTS=1)")
        pytest.fail(
            "lab machines need root (systemd-nspawn, overlay mounts, cgroups, network "
            "namespaces): run as root, or set NODEBOOT_SKIP_ROOT_TESTS=1 to skip them knowingly",
            pytrace=False,
        )
    for tool in ("systemd-nspawn", "debootstrap", "nsenter", "ip"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.fail(f"{tool} is missing (tests/setup installs it)", pytrace=False)


def name(what):
    return f"t{uuid.uuid4().hex[:8]}-{what}"


def write_unit(root, unit, text):
    path = Path(root) / "etc/systemd/system" / unit
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    wants = Path(root) / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / unit).symlink_to(f"/etc/systemd/system/{unit}")


def probe(needs, run_after):
    """A probe unit after `needs` (Requires= + After=) that records that it ran."""
    return f"""[Unit]
Description=probe {run_after} (needs {needs})
Requires={needs}
After={needs}
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'date +%%s.%%N > /run/probe-{run_after}'
[Install]
WantedBy=multi-user.target
"""


def states(c, *units):
    out = c.systemctl("is-active", *units, check=False).stdout.split()
    return dict(zip(units, out, strict=True))


def wait_for(what, check, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


# --- systemd itself: what the unit design rests on ------------------------------

RESTARTED_A = """[Unit]
Description=probe a (fails twice, then succeeds; restarted by systemd)
StartLimitIntervalSec=0
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'n=$(cat /run/a-tries 2>/dev/null || echo 0); n=$((n+1)); \
  echo $$n > /run/a-tries; [ $$n -ge 3 ]'
Restart=on-failure
RestartSec=1s
[Install]
WantedBy=multi-user.target
"""

WAITING_A = """[Unit]
Description=probe a (fails twice, then succeeds; retries inside its process)
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'n=0; until [ $$n -ge 2 ]; do n=$((n+1)); \
  echo "attempt $$n failed"; sleep 1; done'
TimeoutStartSec=infinity
[Install]
WantedBy=multi-user.target
"""


def probe_chain(a_unit):
    def setup(root):
        write_unit(root, "a.service", a_unit)
        write_unit(root, "b.service", probe("a.service", "b"))
        write_unit(root, "c.service", probe("b.service", "c"))

    return setup


def test_systemd_fails_the_dependants_of_a_restarted_oneshot_for_good():
    """The claim the old units got wrong: Restart= does not keep them waiting."""
    require_root()
    with lab_nspawn.machine(name("restart"), setup=probe_chain(RESTARTED_A)) as c:
        wait_for(
            "a to succeed on its third run", lambda: states(c, "a.service")["a.service"] == "active"
        )
        time.sleep(1)
        assert states(c, "a.service", "b.service", "c.service") == {
            "a.service": "active",
            "b.service": "inactive",
            "c.service": "inactive",
        }
        journal = c.journalctl("-b").stdout
        assert "Dependency failed for b.service" in journal, journal
        # A failed dependency is not a failed unit: --failed misses it.
        assert c.systemctl("--failed", "--plain", "--no-legend").stdout.strip() == ""


def test_dependants_of_a_oneshot_that_waits_in_its_process_all_start():
    require_root()
    with lab_nspawn.machine(name("wait"), setup=probe_chain(WAITING_A)) as c:
        assert c.boot_state == "running", c.systemctl("--failed", check=False).stdout
        assert set(states(c, "a.service", "b.service", "c.service").values()) == {"active"}
        assert float(c.path("/run/probe-b").read_text()) <= float(
            c.path("/run/probe-c").read_text()
        )


# --- the rendered units with the real binary --------------------------------------


@pytest.fixture(scope="module")
def rendered():
    """`nodeboot render` of the example environment."""
    binary = lab.nodeboot_binary()
    if not binary.exists():
        pytest.fail(f"no nodeboot binary at {binary}: run `cargo build` (or set NODEBOOT_BIN)")
    out = Path(tempfile.mkdtemp(prefix="nodeboot-chain-"))
    try:
        subprocess.run(
            [binary, "render", "--env", REPO / "environments/example.tfvars", "--out", out],
            check=True,
            capture_output=True,
        )

        def config(role):
            full = out / f"{role}.full.ign"
            return json.loads((full if full.exists() else out / f"{role}.ign").read_text())

        yield binary, config
    finally:
        shutil.rmtree(out, ignore_errors=True)


class Imds:
    """The IMDSv2 double at 169.254.169.254:80 in a network namespace of its
    own, which the machine boots in. `fault` in the identity file is re-read
    on every request, so a test turns a failing service into a working one."""

    def __init__(self, ns, identity):
        self.ns, self.identity, self.proc = ns, Path(identity), None

    def __enter__(self):
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        try:
            subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True)
            subprocess.run(
                ["ip", "-n", self.ns, "addr", "add", "169.254.169.254/32", "dev", "lo"], check=True
            )
            self.proc = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.ns,
                    sys.executable,
                    IMDS,
                    "--listen",
                    "169.254.169.254:80",
                    "--identity",
                    self.identity,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            ready = self.proc.stdout.readline()
            assert ready.startswith("READY"), f"imds.py: {ready!r}"
        except BaseException:
            self.__exit__()
            raise
        return self

    def set_fault(self, fault):
        identity = json.loads(self.identity.read_text())
        identity["fault"] = fault
        tmp = self.identity.with_suffix(".tmp")
        tmp.write_text(json.dumps(identity))
        tmp.rename(self.identity)

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        subprocess.run(["ip", "netns", "del", self.ns], check=False, capture_output=True)


def identity_file(directory, fault):
    path = Path(directory) / "identity.json"
    path.write_text(
        json.dumps(
            {
                "instance_id": "i-0123456789abcdef0",
                "availability_zone": "eu-west-1a",
                "region": "eu-west-1",
                "private_ip": "10.80.10.50",
                "interfaces": [
                    {
                        "mac": "02:00:00:00:00:01",
                        "device_number": 0,
                        "interface_id": "eni-primary",
                        "local_ipv4s": ["10.80.10.50"],
                        "subnet_id": "subnet-a",
                        "subnet_ipv4_cidr_block": "10.80.10.0/24",
                        "vpc_id": "vpc-a",
                    }
                ],
                "fault": fault,
            }
        )
    )
    return path


def no_network_wait(root):
    """These machines have no network but lo (and the IMDS double on it):
    networkd's wait-online would hold network-online.target, which the stage
    units want, for its 2-minute timeout. Test-only."""
    (Path(root) / "etc/systemd/system/systemd-networkd-wait-online.service").symlink_to("/dev/null")


def unit_journal(c, unit):
    return c.journalctl("-b", "-o", "cat", "-u", unit, check=False).stdout


def test_a_rendered_stage_that_needs_several_attempts_still_starts_the_units_after_it(rendered):
    """The bastion's rendered config (its one stage, discover, with the real
    binary), and probe units that require it. Instance metadata answers
    garbage at first (exit 12), then recovers."""
    require_root()
    binary, config = rendered
    machine = name("retry")
    with (
        tempfile.TemporaryDirectory() as work,
        Imds(machine, identity_file(work, "garbage")) as imds,
    ):

        def setup(root):
            ignition_apply.apply(root, config("bastion"))
            no_network_wait(root)
            write_unit(root, "b.service", probe("nodeboot-discover.service", "b"))
            write_unit(root, "c.service", probe("b.service", "c"))

        with lab_nspawn.machine(
            machine, setup=setup, netns=machine, binds=[(str(binary), NODEBOOT_INSIDE)], wait=False
        ) as c:
            # Two failed attempts: logged by the stage, or two failed runs of
            # the unit (the old units' Restart=).
            wait_for(
                "two failed attempts of discover",
                lambda: (
                    "attempt 2 failed (exit 12)"
                    in (j := unit_journal(c, "nodeboot-discover.service"))
                    or j.count("status=12/") >= 2
                ),
            )
            imds.set_fault("none")
            state = c.wait_running(timeout=90)
            units = ("nodeboot-discover.service", "b.service", "c.service")
            assert states(c, *units) == dict.fromkeys(units, "active"), (
                state,
                unit_journal(c, "nodeboot-discover.service"),
                c.journalctl("-b", "-o", "cat", check=False).stdout[-3000:],
            )
            assert state == "running"
            journal = unit_journal(c, "nodeboot-discover.service")
            assert "attempt 1 failed (exit 12), retrying" in journal, journal
            assert "stage discover succeeded after" in journal, journal
            assert c.path("/run/nodeboot/facts.json").exists()


def test_bad_input_fails_the_stage_visibly_and_starts_nothing_after_it(rendered):
    """The etcd role's rendered config with a node.json the stages cannot
    read: exit 2 is not retried, the unit is failed, and none of the
    stages after it run."""
    require_root()
    binary, config = rendered
    machine = name("bad")
    with tempfile.TemporaryDirectory() as work, Imds(machine, identity_file(work, "none")):

        def setup(root):
            ignition_apply.apply(root, config("etcd"))
            no_network_wait(root)
            (Path(root) / "etc/nodeboot/node.json").write_text('{"version": 1, "role": "etcd"')

        with lab_nspawn.machine(
            machine, setup=setup, netns=machine, binds=[(str(binary), NODEBOOT_INSIDE)]
        ) as c:
            assert c.boot_state == "degraded"
            failed = c.systemctl(
                "is-failed", "nodeboot-discover.service", check=False
            ).stdout.strip()
            assert failed == "failed"
            journal = unit_journal(c, "nodeboot-discover.service")
            assert "stage discover stopped: exit 2 is not retried" in journal, journal
            assert journal.count("node.json") >= 1, journal
            later = (
                "nodeboot-attach.service",
                "nodeboot-mount.service",
                "nodeboot-secrets.service",
                "nodeboot-etcd.service",
            )
            assert states(c, *later) == dict.fromkeys(later, "inactive")
            for unit in later:
                assert c.unit_property(unit, "ExecMainStartTimestampMonotonic") == "0", unit


# --- whole lab nodes (lab.py): the rendered etcd config against the emulator ------


require_lab = lab.require_lab


def bed_post(url, path, body):
    req = urllib.request.Request(
        f"{url}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def autoscaling(url):
    return boto3.client(
        "autoscaling",
        endpoint_url=url,
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def in_group(the_lab, node, group):
    """The node's instance in an auto-scaling group, as Terraform's etcd group holds it."""
    asg = autoscaling(the_lab.state["aws"]["url"])
    n = the_lab.node(node)
    asg.create_launch_configuration(
        LaunchConfigurationName=group, ImageId="ami-12c6146b", InstanceType="t3.small"
    )
    asg.create_auto_scaling_group(
        AutoScalingGroupName=group,
        LaunchConfigurationName=group,
        MinSize=0,
        MaxSize=3,
        AvailabilityZones=[n["zone"]],
    )
    asg.attach_instances(AutoScalingGroupName=group, InstanceIds=[n["instance_id"]])


def health(the_lab, node):
    asg = autoscaling(the_lab.state["aws"]["url"])
    out = asg.describe_auto_scaling_instances(InstanceIds=[the_lab.node(node)["instance_id"]])
    # AWS answers HEALTHY/UNHEALTHY; moto echoes what SetInstanceHealth sent.
    return out["AutoScalingInstances"][0]["HealthStatus"].upper()


TEST_ONLY = "# Test-only (tests/lab/test_boot_chain.py): "


def shorten(the_lab, node, attach_budget=None, bounds=None):
    """Before the boot: a shorter budget for one attach attempt (the
    `--wait-timeout` default is 300 s) and shorter give-up bounds in
    node.json (1 h and 10 min by default). Nothing else changes."""
    root = the_lab.container(the_lab.node(node)).root
    if attach_budget:
        conf = root / "etc/systemd/system.conf.d/zz-test-attach-budget.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(
            f"{TEST_ONLY}one attach attempt's budget\n[Manager]\n"
            f'DefaultEnvironment="NODEBOOT_ATTACH_WAIT_TIMEOUT={attach_budget}"\n'
        )
    if bounds:
        path = root / "etc/nodeboot/node.json"
        config = json.loads(path.read_text())
        config["boot"] = bounds
        path.write_text(json.dumps(config))


def lab_of(members):
    """A lab without booted nodes, torn down however the block ends."""
    return lab.session(members=members, boot=False)


def test_a_boot_whose_attach_needs_several_attempts_ends_with_every_unit_active():
    """Attachments slower than one attempt's budget (4 s against 2 s) and
    AttachVolume throttled past the SDK's own retries (8 against 6): the
    attach stage fails attempts and retries in its process, and the units
    after it wait instead of failing."""
    require_lab()
    with lab_of(members=1) as the_lab:
        url = the_lab.state["aws"]["url"]
        node = the_lab.launch("eu-west-1a")
        shorten(the_lab, node, attach_budget="2s")
        bed_post(url, "/_bed/config", {"attach_delay_ms": 4000})
        bed_post(url, "/_bed/throttle", {"action": "AttachVolume", "count": 8})
        report = the_lab.boot(node, check=False)
        units = the_lab.node(node)["enabled"]
        journal = the_lab.unit_journal(node, "nodeboot-attach.service")
        assert report["units"] == dict.fromkeys(units, "active"), (report, journal)
        assert report["system"] == "running", report
        assert "attempt 1 failed (exit 13), retrying" in journal, journal
        assert "failed (exit 11), retrying" in journal, journal
        assert "stage attach succeeded after 3 attempts" in journal, journal
        the_lab.wait_healthy()
        print(f"\n[lab] attach with 2 failed attempts: boot {report['seconds']}")


def test_an_etcd_node_whose_stage_gives_up_powers_itself_off():
    """A second node in a zone whose one member is held: after node.json's
    bound (here 3 s) the attach stage gives up, says so in one line, and
    runs `systemctl poweroff` from its sandboxed unit; systemd 252 stops
    the machine (on EC2 the etcd launch template terminates an instance
    that shuts down, and its group replaces it). The units after attach
    never start, and nothing is asked of Auto Scaling."""
    require_lab()
    with lab_of(members=1) as the_lab:
        url = the_lab.state["aws"]["url"]
        first = the_lab.boot_node("eu-west-1a")["node"]
        surplus = the_lab.launch("eu-west-1a")
        in_group(the_lab, surplus, f"{the_lab.name}-etcd-a")
        shorten(the_lab, surplus, bounds={"give_up_seconds": 600, "no_free_member_seconds": 3})
        before = lab_ec2.calls(url).get("SetInstanceHealth", 0)
        # The boot never finishes: the machine ends while systemd is still starting.
        with pytest.raises(lab.LabError, match="machine stopped|is not running"):
            the_lab.boot(surplus, check=False, timeout=120)
        machine = the_lab.container(the_lab.node(surplus))
        assert not machine.alive()
        journal = disk_journal(machine)
        gave_up = [line for line in journal.splitlines() if line.startswith("stage attach gave up")]
        assert gave_up, journal[-3000:]
        assert "no free etcd member in eu-west-1a" in gave_up[0], gave_up
        assert "powering off (systemctl poweroff)" in gave_up[0], gave_up
        assert "could not power off" not in journal, journal[-3000:]
        for later in ("nodeboot-mount.service", "nodeboot-etcd.service", "etcd-member.service"):
            assert disk_journal(machine, later).strip() == "", later
        assert lab_ec2.calls(url).get("SetInstanceHealth", 0) == before
        assert health(the_lab, surplus) == "HEALTHY"
        assert health_of_first_is_untouched(the_lab, first)
        assert the_lab.container(the_lab.node(first)).alive()


def disk_journal(machine, unit="nodeboot-attach.service"):
    """A unit's journal read from the machine's disk (the journal is
    persistent: /var/log/journal exists), so also after it powered off."""
    out = subprocess.run(
        ["journalctl", "--no-pager", "-o", "cat", "-u", unit]
        + [f"--directory={machine.root}/var/log/journal"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return out.stdout


def health_of_first_is_untouched(the_lab, node):
    """The node that holds the member was never marked (it is in no group)."""
    asg = autoscaling(the_lab.state["aws"]["url"])
    out = asg.describe_auto_scaling_instances(InstanceIds=[the_lab.node(node)["instance_id"]])
    return out["AutoScalingInstances"] == []
