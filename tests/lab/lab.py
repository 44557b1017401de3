#!/usr/bin/env python3
"""The lab of issue 4: a real etcd cluster on this machine, booted by the real
`nodeboot` stages, that loses nodes and gets them back.

    tests/lab/lab.py up [--name lab] [--members 3]   # or tests/lab/up
    tests/lab/lab.py status [--name lab]
    tests/lab/lab.py kill-node [--name lab] NODE      # as an instance failure
    tests/lab/lab.py boot-node [--name lab] ZONE      # a replacement (the ASG)
    tests/lab/lab.py stop-node / start-node [--name lab] NODE
    tests/lab/lab.py etcdctl [--name lab] -- ARGS...  # from the router, with the client cert
    tests/lab/lab.py run [--name lab] NODE -- CMD...  # inside the node (journalctl -b, ...)
    tests/lab/lab.py down [--name lab]                # or tests/lab/down

Everything the lab makes is recorded in /run/nodeboot-lab/NAME/state.json
before it is made, so `down` removes it all even after a crash. See
tests/lab/README.md for the topology.
"""

import argparse
import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ignition_apply
import lab_ec2
import lab_net
import lab_node
import lab_nspawn
import lab_proc
from lab_proc import LabError, run

LAB = Path(__file__).resolve().parent
REPO = LAB.parents[1]
BED = REPO / "tests/bed"
STATE_ROOT = Path(os.environ.get("NODEBOOT_LAB_STATE_DIR", "/run/nodeboot-lab"))
DATA_ROOT = Path(os.environ.get("NODEBOOT_LAB_DATA_DIR", "/var/tmp/nodeboot-lab"))


def etcd_bin_dir():
    """Where Debian's etcd 3.5 is: $NODEBOOT_ETCD_BIN, else what
    tests/fetch-etcd prints (its cache; it fetches once, as root)."""
    if os.environ.get("NODEBOOT_ETCD_BIN"):
        return Path(os.environ["NODEBOOT_ETCD_BIN"])
    done = subprocess.run([REPO / "tests/fetch-etcd"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return Path(f"/nonexistent/etcd-3.5 (tests/fetch-etcd: {done.stderr.strip()})")
    return Path(done.stdout.strip())


ETCD_BIN = etcd_bin_dir()
ETCD = str(ETCD_BIN / "etcd")  # Debian's etcd-server 3.5, from tests/fetch-etcd
ETCDCTL = str(ETCD_BIN / "etcdctl")  # Debian's etcd-client 3.5
ROLES = ("etcd", "compute")
BOOT_TIMEOUT = 180
IMDS_ADDRESS = "169.254.169.254"
ENDPOINT_PORT = 80
VOLUME_MB = 1024  # sparse: only what is written takes space
# A lab name is also the environment's name (3-32 of a-z, 0-9, '-').
NAME_RE = re.compile(r"[a-z][a-z0-9-]{2,23}")
ABORT_VAR = "NODEBOOT_LAB_ABORT_AT"


def nodeboot_binary():
    """NODEBOOT_BIN, else the debug build in CARGO_TARGET_DIR, else the newest
    debug build of the usual target directories (CI's and the clone's)."""
    if os.environ.get("NODEBOOT_BIN"):
        return Path(os.environ["NODEBOOT_BIN"])
    if os.environ.get("CARGO_TARGET_DIR"):
        return Path(os.environ["CARGO_TARGET_DIR"]) / "debug/nodeboot"
    found = [
        p
        for p in (Path("/var/cache/nodeboot/target/debug/nodeboot"), REPO / "target/debug/nodeboot")
        if p.exists()
    ]
    return max(found, key=lambda p: p.stat().st_mtime) if found else REPO / "target/debug/nodeboot"


def preflight():
    """What stops the lab from running here, one line each (empty: nothing)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("the lab needs root (network namespaces, loop devices, mounts)")
    for tool in (
        "ip", "nsenter", "losetup", "mkfs.ext4", "blkid", "sysctl",
        "systemd-nspawn", "debootstrap", "dnsmasq", "useradd",
    ):  # fmt: skip
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            problems.append(f"{tool} is missing (tests/setup installs it)")
    for path in (ETCD, ETCDCTL):
        if not Path(path).exists():
            problems.append(f"{path} is missing: run tests/fetch-etcd (tests/setup does)")
    binary = nodeboot_binary()
    if not binary.exists():
        problems.append(f"no nodeboot binary at {binary}: run `cargo build` (or set NODEBOOT_BIN)")
        return problems
    for args, what in (
        (["pki", "--help"], "nodeboot pki"),
        (["stage", "etcd", "--help"], "nodeboot stage etcd"),
    ):
        if run([binary, *args], check=False, timeout=30).returncode != 0:
            problems.append(f"{binary} has no `{what}` (rebuild it: cargo build)")
    return problems


def require_lab():
    """For the lab's tests: fail, saying why, without root or a usable
    machine, unless NODEBOOT_SKIP_ROOT_TESTS=1 (then skip, visibly)."""
    import pytest

    if os.geteuid() != 0:
        if os.environ.get("NODEBOOT_SKIP_ROOT_TESTS") == "1":
            pytest.skip("the lab needs root (skipped knowingly: NODEBOOT_SKIP_ROOT_TESTS=1)")
        pytest.fail(
            "the lab needs root (network namespaces, loop devices, mounts): run the suite as "
            "root, or set NODEBOOT_SKIP_ROOT_TESTS=1 to skip it knowingly",
            pytrace=False,
        )
    problems = preflight()
    if problems:
        pytest.fail("the lab cannot run here:\n  " + "\n  ".join(problems), pytrace=False)


def abort_point(name):
    """Crash here when NODEBOOT_LAB_ABORT_AT=name (the teardown tests use it)."""
    if os.environ.get(ABORT_VAR) == name:
        print(f"lab: aborting at {name} ({ABORT_VAR})", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def read_tfvars(path):
    """The literal `key = value` lines of an environment file (the lab's own
    file: strings, numbers and one-line lists)."""
    values = {}
    for line in Path(path).read_text().splitlines():
        m = re.match(r"\s*([a-z_]+)\s*=\s*(.+?)\s*$", line)
        if m and not line.lstrip().startswith("#"):
            try:
                values[m[1]] = json.loads(m[2])
            except json.JSONDecodeError:
                pass  # multi-line lists: the lab needs none of them
    return values


def write_json(path, value):
    """Atomically, as EC2 updates metadata and as state must survive a crash."""
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(tmp, path)


def mounts_under(path):
    """Mount points at or under `path`, deepest first."""
    base = os.path.realpath(path)
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == base or point.startswith(base + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def unmount_under(path):
    for point in mounts_under(path):
        if run(["umount", point], check=False).returncode != 0:
            run(["umount", "--lazy", point], check=False)


def loops_over(directory):
    """Loop devices whose backing file lies in `directory`."""
    out = run(["losetup", "--json", "--list"], check=False).stdout.strip()
    devices = json.loads(out or '{"loopdevices": []}')["loopdevices"]
    base = os.path.realpath(directory) + "/"
    return [d["name"] for d in devices if (d.get("back-file") or "").startswith(base)]


def detach_loops(directory, timeout=30.0):
    """Detaches the loop devices over files in `directory`. The kernel defers
    a detach while the device is open (udev probes it on every change), so
    wait until they are gone."""
    deadline = time.monotonic() + timeout
    while (loops := loops_over(directory)) and time.monotonic() < deadline:
        for loop in loops:
            run(["losetup", "--detach", loop], check=False)
        time.sleep(0.1)


class Lab:
    def __init__(self, name):
        if not NAME_RE.fullmatch(name):
            raise LabError(f"lab name {name!r}: 3-24 characters, a-z first, then a-z, 0-9, '-'")
        self.name = name
        self.dir = STATE_ROOT / name
        self.data = DATA_ROOT / name
        self.state_file = self.dir / "state.json"
        self.state = {}
        self.lock = threading.RLock()
        self._ec2 = None
        self.own_calls = Counter()

    # --- state ---------------------------------------------------------------

    @classmethod
    def load(cls, name):
        lab = cls(name)
        if not lab.state_file.exists():
            raise LabError(f"no lab {name!r} ({lab.state_file} does not exist)")
        lab.state = json.loads(lab.state_file.read_text())
        return lab

    @staticmethod
    def names():
        return sorted(p.name for p in STATE_ROOT.glob("*") if (p / "state.json").exists())

    def save(self):
        with self.lock:
            write_json(self.state_file, self.state)

    @property
    def bin(self):
        return self.state["binary"]

    @property
    def ec2(self):
        if self._ec2 is None:
            self._ec2 = lab_ec2.client(self.state["aws"]["url"])
            # The lab's own calls (launching, EC2's hot-plug looking at
            # attachments) are left out of a boot's count.
            self._ec2.meta.events.register(
                "before-call.ec2.*", lambda model, **_: self.own_calls.update([model.name])
            )
        return self._ec2

    @property
    def router(self):
        return f"nbl-{self.name}-router"

    def netns_of(self, node):
        return f"nbl-{self.name}-{node}"

    def own_machine(self, machine):
        return re.fullmatch(rf"{re.escape(self.name)}-n\d+", machine) is not None

    def own_netns(self, ns):
        return re.fullmatch(rf"nbl-{re.escape(self.name)}-(router|n\d+)", ns) is not None

    def node(self, node):
        try:
            return self.state["nodes"][node]
        except KeyError:
            raise LabError(f"lab {self.name} has no node {node!r} (see `lab.py status`)") from None

    def member(self, **match):
        for m in self.state["members"]:
            if all(m.get(k) == v for k, v in match.items()):
                return m
        raise LabError(f"lab {self.name} has no member with {match}")

    def node_of_member(self, member):
        for name, n in self.state["nodes"].items():
            if n.get("member") == member and n["state"] == "running":
                return name
        raise LabError(f"no running node holds member {member}")

    # --- up ------------------------------------------------------------------

    @classmethod
    def up(cls, name, members=3, attach_delay_ms=0, shutdown_delay_ms=0, boot=True):
        """Builds the lab; with boot, boots one node per member and waits for
        a healthy cluster. On failure the lab is left for inspection: call down()."""
        problems = preflight()
        if problems:
            raise LabError("the lab cannot run here:\n  " + "\n  ".join(problems))
        lab = cls(name)
        if lab.state_file.exists() or lab.dir.exists():
            raise LabError(f"lab {name} exists ({lab.dir}); `tests/lab/down {name}` first")
        lab.dir.mkdir(parents=True)
        lab.data.mkdir(parents=True, exist_ok=True)
        lab.state = {
            "name": name,
            "binary": str(nodeboot_binary()),
            "dir": str(lab.dir),
            "data": str(lab.data),
            "router": lab.router,
            "nodes": {},
            "members": [],
            "next_node": 1,
        }
        lab.save()
        lab._environment(members)
        lab._start_aws(attach_delay_ms, shutdown_delay_ms)
        lab._operator()
        lab._make_router()
        abort_point("after-router")
        lab._terraform()
        abort_point("after-volumes")
        if boot:
            lab.boot_all()
            abort_point("after-boot")
            lab.wait_healthy()
        return lab

    def _environment(self, members):
        """The lab's environment file (`nodeboot env new` with per-lab names),
        every role's Ignition config (`nodeboot render`), and the PKI."""
        env_dir = self.dir / "env"
        env_dir.mkdir()
        run([self.bin, "env", "new", self.name, "--dir", env_dir])
        env_file = env_dir / f"{self.name}.tfvars"
        text = env_file.read_text()
        text = re.sub(r"(?m)^etcd_count\s*=.*$", f"etcd_count = {members}", text)
        text = re.sub(
            r"(?m)^private_zone_name\s*=.*$",
            f'private_zone_name = "{self.name}.lab.internal"',
            text,
        )
        env_file.write_text(text)
        run([self.bin, "validate", "--env", env_file])
        tf = read_tfvars(env_file)
        self.state.update(
            env_file=str(env_file),
            zones=tf["availability_zones"],
            secure_subnets=tf["secure_subnets"],
            vpc_cidr=tf["vpc_cidr"],
            instance_type=tf["etcd_instance_type"],
            etcd_count=int(tf["etcd_count"]),
        )
        render = self.dir / "render"
        run([self.bin, "render", "--env", env_file, "--out", render])
        for role in ROLES:  # user data over 16 KiB is a pointer: the lab applies the full one
            full = render / f"{role}.full.ign"
            if full.exists():
                os.replace(full, render / f"{role}.ign")
        run([self.bin, "pki", "--env", env_file, "--dir", self.dir / "secrets"])
        self.save()

    def operator_env(self):
        """An operator's shell pointed at the emulator."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AWS_") and k.lower() not in ("http_proxy", "https_proxy")
        }
        env.pop("NODEBOOT_ABORT_AT", None)
        env.update(
            AWS_ENDPOINT_URL=self.state["aws"]["url"],
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_REGION=lab_ec2.REGION,
            AWS_CONFIG_FILE="/dev/null",
            AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        )
        return env

    def _operator(self):
        """What `nodeboot up` does before Terraform, against the emulator:
        the KMS key and buckets, the secrets (not the CA keys in ca/), the
        static-pod manifests. The nodes' secrets stage fetches them."""
        env, env_file = self.operator_env(), self.state["env_file"]
        log = self.dir / "operator.log"
        steps = [
            ["prereqs", "--env", env_file],
            ["secrets", "upload", "--env", env_file, "--dir", self.dir / "secrets",
             "common", "secure", "compute"],
            ["manifests", "upload", "--env", env_file, self.dir / "render/manifests"],
        ]  # fmt: skip
        for args in steps:
            out = run([self.bin, *args], env=env, timeout=120)
            with open(log, "a") as f:
                f.write(f"== nodeboot {' '.join(map(str, args))}\n{out.stdout}{out.stderr}")

    def _start_aws(self, attach_delay_ms, shutdown_delay_ms):
        cmd = [
            sys.executable,
            BED / "aws_server.py",
            "--port",
            "0",
            "--quiet",
            "--attach-delay-ms",
            attach_delay_ms,
            "--shutdown-delay-ms",
            shutdown_delay_ms,
        ]
        self._start_server(self.state, "aws", cmd, self.dir / "aws")

    def _start_server(self, holder, key, cmd, files):
        """A bed-style server, recorded as holder[key] = {pid, start, url}
        (recorded the moment it is spawned); logs in FILES.log."""

        def keep(rec):
            with self.lock:
                holder[key] = rec
                self.save()

        url = lab_proc.start_server(cmd, ready=f"{files}.ready", log=f"{files}.log", on_spawn=keep)
        with self.lock:
            holder[key]["url"] = url
            self.save()
        return url

    def _make_router(self):
        gateways = []
        for cidr in self.state["secure_subnets"]:
            net = ipaddress.ip_network(cidr)
            gateways.append(f"{net.network_address + 1}/{net.prefixlen}")
        endpoint = str(ipaddress.ip_network(self.state["vpc_cidr"]).network_address + 10)
        lab_net.make_router(self.router, gateways, endpoint)
        self._start_dhcp()
        port = urllib.parse.urlsplit(self.state["aws"]["url"]).port
        cmd = [
            sys.executable,
            LAB / "ec2_endpoint.py",
            "--netns",
            self.router,
            "--listen",
            f"{endpoint}:{ENDPOINT_PORT}",
            "--to",
            f"127.0.0.1:{port}",
        ]
        self._start_server(self.state, "endpoint", cmd, self.dir / "endpoint")

    def _terraform(self):
        """What Terraform creates: the VPC, and per member a volume (here a
        loop device over a sparse file, blank) and an ENI, tagged."""
        vpc_id, subnets = lab_ec2.create_network(
            self.ec2, self.state["vpc_cidr"], self.state["zones"], self.state["secure_subnets"]
        )
        self.state.update(vpc_id=vpc_id, subnets=subnets)
        self.save()
        self.add_members()

    def add_members(self):
        """Terraform's side of the members up to etcd_count that do not exist
        yet (all of them at `up`; the new ones when etcd_count goes up): a
        tagged volume over a blank loop file and a tagged ENI each."""
        zones, subnets_cidr = self.state["zones"], self.state["secure_subnets"]
        have = {m["member"] for m in self.state["members"]}
        for place in lab_ec2.placement(zones, subnets_cidr, self.state["etcd_count"]):
            if place["member"] in have:
                continue
            made = lab_ec2.create_member(
                self.ec2,
                self.name,
                place["member"],
                place["zone"],
                self.state["subnets"][place["zone"]]["id"],
                place["eni_ip"],
                max(1, VOLUME_MB // 1024),
            )
            with self.lock:
                self.state["members"].append({**place, **made})
                self.save()
            self._blank_loop(self.state["members"][-1], made["volume_id"])
            self._dhcp_host(made["eni_mac"], place["eni_ip"])

    def _blank_loop(self, m, volume_id, suffix=""):
        """A blank sparse file and its loop device behind volume `volume_id`
        of member `m` (recorded before the loop device is made)."""
        image = self.data / f"member-{m['member']}{suffix}.img"
        with open(image, "wb") as f:
            f.truncate(VOLUME_MB * 1024 * 1024)
        loop = run(["losetup", "--find", "--show", image]).stdout.strip()
        with self.lock:
            m.update(volume_id=volume_id, image=str(image), loop=loop)
            self.save()

    def replace_volume(self, member, timeout=60):
        """The member's EBS volume is lost and replaced by a blank one (what
        Terraform does once the old one is gone): the old volume is detached
        (forced: its instance is stopped or terminated) and deleted, a new
        blank volume takes its tags. No running node may hold the member."""
        m = self.member(member=member)
        if any(
            n.get("member") == member and n["state"] == "running"
            for n in self.state["nodes"].values()
        ):
            raise LabError(f"member {member} is held by a running node: kill or stop it first")
        old, old_loop = m["volume_id"], m["loop"]
        deadline = time.monotonic() + timeout
        while (v := self.ec2.describe_volumes(VolumeIds=[old])["Volumes"][0])[
            "State"
        ] != "available":
            if v["State"] == "in-use" and all(a["State"] == "attached" for a in v["Attachments"]):
                self.ec2.detach_volume(VolumeId=old, Force=True)
            if time.monotonic() > deadline:
                raise LabError(f"volume {old} still {v['State']} after {timeout}s")
            time.sleep(0.1)
        self.ec2.delete_volume(VolumeId=old)
        run(["losetup", "--detach", old_loop], check=False)
        volume = self.ec2.create_volume(
            AvailabilityZone=m["zone"],
            Size=max(1, VOLUME_MB // 1024),
            TagSpecifications=lab_ec2._tags("volume", self.name, member),
        )
        self._blank_loop(m, volume["VolumeId"], suffix=f"-{volume['VolumeId']}")

    def set_etcd_count(self, count):
        """The operator changes etcd_count and runs `nodeboot up` up to
        Terraform: the environment file, every role's config rendered again
        (the launch templates' user data: only nodes launched from now on get
        it), `pki` (certificates for new members; the rest is kept) and the
        secrets uploaded again."""
        env_file = Path(self.state["env_file"])
        text = re.sub(r"(?m)^etcd_count\s*=.*$", f"etcd_count = {count}", env_file.read_text())
        env_file.write_text(text)
        render = self.dir / "render"
        run([self.bin, "render", "--env", env_file, "--out", render])
        for role in ROLES:
            full = render / f"{role}.full.ign"
            if full.exists():
                os.replace(full, render / f"{role}.ign")
        run([self.bin, "pki", "--env", env_file, "--dir", self.dir / "secrets"])
        args = ["secrets", "upload", "--env", env_file, "--dir", self.dir / "secrets", "secure"]
        out = run([self.bin, *args], env=self.operator_env(), timeout=120)
        with open(self.dir / "operator.log", "a") as f:
            f.write(f"== nodeboot {' '.join(map(str, args))}\n{out.stdout}{out.stderr}")
        with self.lock:
            self.state["etcd_count"] = count
            self.save()

    def remove_members(self):
        """Terraform's side of etcd_count going down: the instances holding
        members at or above etcd_count are terminated (after a clean
        shutdown), then those members' volumes and ENIs deleted."""
        count = self.state["etcd_count"]
        for m in [m for m in self.state["members"] if m["member"] >= count]:
            for name, n in self.state["nodes"].items():
                if n.get("member") == m["member"] and n["state"] in ("running", "stopped"):
                    self.kill_node(name, how="terminate", clean=True)
                    lab_ec2.wait_state(self.ec2, n["instance_id"], ["terminated"])
            deadline = time.monotonic() + 60
            while (
                self.ec2.describe_volumes(VolumeIds=[m["volume_id"]])["Volumes"][0]["State"]
                != "available"
            ):
                if time.monotonic() > deadline:
                    raise LabError(f"volume {m['volume_id']} not detached after 60s")
                time.sleep(0.1)
            self.ec2.delete_volume(VolumeId=m["volume_id"])
            self.ec2.delete_network_interface(NetworkInterfaceId=m["eni_id"])
            run(["losetup", "--detach", m["loop"]], check=False)
            with self.lock:
                self.state["members"].remove(m)
                self.save()

    def operator(self, *args, timeout=120):
        """A `nodeboot` command as the operator runs it from a machine in the
        VPC (the router's namespace), with the lab's secrets tree and the
        emulator as AWS. Returns the completed process (check it yourself)."""
        cmd = [*lab_net.nsenter(self.router), self.bin, *args]
        return run(cmd, check=False, timeout=timeout, env=self.operator_env())

    # --- nodes ---------------------------------------------------------------

    def launch(self, zone, role="etcd"):
        """The autoscaling group launches an instance of `role` in `zone`:
        RunInstances, then the machine (a network namespace with eth0, its
        IMDS, its DHCP lease) and its root with the role's rendered Ignition
        config applied, as on a first boot."""
        if zone not in self.state["subnets"]:
            raise LabError(f"zone {zone}: the lab's zones are {', '.join(self.state['subnets'])}")
        if role not in ROLES:
            raise LabError(f"role {role!r}: the lab boots {', '.join(ROLES)}")
        with self.lock:
            number = self.state["next_node"]
            self.state["next_node"] += 1
            name = f"n{number}"
            d = self.dir / "nodes" / name
            n = {
                "zone": zone,
                "role": role,
                "number": number,
                "netns": self.netns_of(name),
                "dir": str(d),
                "root": str(d / "root"),
                "machine": lab_nspawn.Container(f"{self.name}-{name}", d).state(),
                "state": "launching",
                "boots": [],
            }
            self.state["nodes"][name] = n
            self.save()
        d.mkdir(parents=True)
        n.update(
            lab_ec2.launch(self.ec2, self.state["subnets"][zone]["id"], self.state["instance_type"])
        )
        if n["primary_ip"] in {m["eni_ip"] for m in self.state["members"]}:
            raise LabError(
                f"the emulator gave {n['instance_id']} a member's ENI address {n['primary_ip']}"
            )
        self.save()
        self._dhcp_host(n["mac"], n["primary_ip"])
        self._ignite(n)
        self._power_on(n)
        return name

    def _ignite(self, n):
        """Ignition's first boot: the role's rendered config on the machine's
        own root, then the lab's test-only files (lab_node.py)."""
        c = self.container(n)
        c.prepare()
        done = ignition_apply.apply(c.root, self.dir / "render" / f"{n['role']}.ign")
        done += [f"lab: {p}" for p in lab_node.install(c.root, self.state["endpoint"]["url"])]
        (Path(n["dir"]) / "ignition.log").write_text("".join(line + "\n" for line in done))
        n["enabled"] = sorted(line.split()[1] for line in done if line.startswith("enabled "))
        with self.lock:
            n["machine"] = c.state()
            self.save()

    def container(self, n):
        return lab_nspawn.Container.from_state(n["machine"])

    def node_path(self, node, path):
        """A path inside a running node (its /run is the machine's own tmpfs)."""
        return self.container(self.node(node)).path(path)

    def node_run(self, node, *cmd, check=True, timeout=60):
        """A command inside a running node."""
        return self.container(self.node(node)).run(*cmd, check=check, timeout=timeout)

    def unit_journal(self, node, unit):
        """This boot's journal of one unit inside a running node."""
        return self.node_run(
            node, "journalctl", "--no-pager", "-b", "-o", "cat", "-u", unit, check=False
        ).stdout

    def _power_on(self, n):
        """The machine: its namespace, eth0 (networkd asks DHCP for its
        address), its IMDS on 169.254.169.254, whatever EC2 already has
        attached, and its root mounted (the instance's disk)."""
        subnet = ipaddress.ip_network(self.state["subnets"][n["zone"]]["cidr"])
        lab_net.add(n["netns"])
        lab_net.ip("addr", "add", f"{IMDS_ADDRESS}/32", "dev", "lo", ns=n["netns"])
        lab_net.plug(self.router, f"n{n['number']}e0", n["netns"], "eth0", n["mac"])
        lab_net.pin(self.router, n["primary_ip"], n["mac"])
        identity = {
            "instance_id": n["instance_id"],
            "availability_zone": n["zone"],
            "region": lab_ec2.REGION,
            "instance_type": self.state["instance_type"],
            "private_ip": n["primary_ip"],
            "interfaces": [
                {
                    "mac": n["mac"],
                    "device_number": 0,
                    "interface_id": n["primary_eni_id"],
                    "local_ipv4s": [n["primary_ip"]],
                    "subnet_id": self.state["subnets"][n["zone"]]["id"],
                    "subnet_ipv4_cidr_block": str(subnet),
                    "vpc_id": self.state["vpc_id"],
                }
            ],
        }
        write_json(Path(n["dir"]) / "imds-identity.json", identity)
        cmd = [
            "ip",
            "netns",
            "exec",
            n["netns"],
            sys.executable,
            BED / "imds.py",
            "--listen",
            f"{IMDS_ADDRESS}:80",
            "--identity",
            Path(n["dir"]) / "imds-identity.json",
        ]
        self._start_server(n, "imds", cmd, Path(n["dir"]) / "imds")
        self.container(n).prepare()
        n["state"] = "running"
        self.save()
        if n["role"] == "etcd":
            self.hotplug(n, volumes=False)

    def hotplug(self, n, volumes=True):
        """EC2's part once an attachment is made: the ENI appears in the node
        as a NIC with its MAC (and in the metadata), the volume as its loop
        device at the Nitro by-id path inside the machine. Idempotent;
        driven by what EC2 says is attached."""
        attached_volumes, enis = lab_ec2.attached(self.ec2, n["instance_id"])
        identity_file = Path(n["dir"]) / "imds-identity.json"
        identity = json.loads(identity_file.read_text())
        for eni in enis:
            index = eni["device_index"]
            if index == 0:
                continue
            lab_net.plug(
                self.router, f"n{n['number']}e{index}", n["netns"], f"eth{index}", eni["mac"]
            )
            lab_net.pin(self.router, eni["ip"], eni["mac"])
            if not any(i["mac"] == eni["mac"] for i in identity["interfaces"]):
                cidr = next(
                    s["cidr"] for s in self.state["subnets"].values() if s["id"] == eni["subnet_id"]
                )
                identity["interfaces"].append(
                    {
                        "mac": eni["mac"],
                        "device_number": index,
                        "interface_id": eni["eni_id"],
                        "local_ipv4s": [eni["ip"]],
                        "subnet_id": eni["subnet_id"],
                        "subnet_ipv4_cidr_block": cidr,
                        "vpc_id": eni["vpc_id"],
                    }
                )
        write_json(identity_file, identity)
        if volumes:
            c = self.container(n)
            for volume_id in attached_volumes:
                member = next(
                    (m for m in self.state["members"] if m["volume_id"] == volume_id), None
                )
                if member is not None:  # else the root volume: not ours to show
                    link = f"nvme-Amazon_Elastic_Block_Store_{volume_id.replace('-', '')}"
                    plug_block_device(c, member["loop"], f"/dev/disk/by-id/{link}")
        return attached_volumes, enis

    def _hotplug_claim(self, n, c, plugged):
        """Once the attach stage has claimed (its claim file exists) and EC2
        says both are attached, plug them. True when plugged."""
        try:
            claim = json.loads(c.path("/run/nodeboot/claim.json").read_text())
        except (OSError, ValueError, LabError):
            return False
        key = (claim["volume_id"], claim["eni_id"])
        if plugged.get("claim") == key:
            return True
        volumes, enis = self.hotplug(n)
        if claim["volume_id"] in volumes and claim["eni_id"] in [e["eni_id"] for e in enis]:
            plugged["claim"] = key
            return True
        return False

    def boot(self, node, attach=None, count_calls=True, timeout=BOOT_TIMEOUT, check=True):
        """Boots the node's machine: systemd runs the rendered units, the lab
        plays EC2 (hot-plugs what the attach stage claimed). Done when every
        unit the config enabled is active; LabError (with their journal)
        when one failed or the boot did not finish in time.
        `attach(lab, node)` replaces the attach stage (the bench's seed
        loop): the node's attach unit then waits for the claim file.
        Returns a report: seconds from the machine's start until each
        enabled unit became active and, with count_calls, the AWS API calls
        of the boot (GET /_bed/calls before and after, less the lab's own
        calls: exact only when one node boots at a time), `system` (systemd's
        `is-system-running`) and `units` ({unit: `is-active`}). With
        check=False a boot that ends with units not active (or is not done
        after `timeout`) returns its report instead of raising."""
        n = self.node(node)
        c = self.container(n)
        url = self.state["aws"]["url"]
        before = lab_ec2.calls(url) if count_calls else None
        own_before = Counter(self.own_calls)
        if attach is not None:
            lab_node.wait_for_claim(c.root)

        def keep(container):
            with self.lock:
                n["machine"] = container.state()
                self.save()

        binds = lab_node.binds(self.bin, ETCD)
        started = time.monotonic()
        c.boot(netns=n["netns"], binds=binds, on_spawn=keep)
        if n["role"] == "etcd":
            self.hotplug(n)  # what EC2 had attached before the boot (a restart)
        if attach is not None:
            attach(self, node)
        plugged = {}
        deadline = time.monotonic() + timeout
        units = n["enabled"]
        while True:
            if n["role"] == "etcd":
                self._hotplug_claim(n, c, plugged)
            state = c.systemctl("is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            if not c.alive():
                tail = lab_proc.tail(c.console)
                raise LabError(f"node {node}: its machine stopped; {c.console}:\n{tail}")
            if time.monotonic() > deadline:
                if check:
                    raise self._boot_failed(node, c, units, f"still {state} after {timeout}s")
                break
            time.sleep(0.1)
        active = c.systemctl("is-active", *units, check=False).stdout.split()
        report = {"node": node, "instance_id": n["instance_id"], "zone": n["zone"]}
        report.update(role=n["role"], system=state, units=dict(zip(units, active, strict=False)))
        seconds = {}
        for unit in units:
            entered = int(c.unit_property(unit, "ActiveEnterTimestampMonotonic") or 0)
            if entered:
                seconds[unit.removesuffix(".service")] = round(entered / 1e6 - started, 3)
        seconds = dict(sorted(seconds.items(), key=lambda kv: kv[1]))
        report["seconds"] = {**seconds, "total": round(time.monotonic() - started, 3)}
        if count_calls:
            made = Counter(lab_ec2.calls(url)) - Counter(before)
            made -= Counter(self.own_calls) - own_before
            report.update(api_calls=dict(sorted(made.items())), api_calls_total=sum(made.values()))
        if active != ["active"] * len(units) or state != "running":
            if not check:
                return report
            err = self._boot_failed(node, c, units, f"system {state}")
            err.report = report
            raise err
        if n["role"] == "etcd":
            claim = json.loads(c.path("/run/nodeboot/claim.json").read_text())
            report["member"] = claim["member"]
            n["member"] = claim["member"]
        with self.lock:
            n["boots"].append(report)
            self.save()
        return report

    def _boot_failed(self, node, c, units, why):
        active = c.systemctl("is-active", *units, check=False).stdout.split()
        states = dict(zip(units, active, strict=False))
        bad = [u for u, a in states.items() if a != "active"]
        failed = c.systemctl("--failed", "--plain", "--no-legend", check=False).stdout
        which = [f"--unit={u}" for u in bad or units]
        journal = c.journalctl("-b", "-n", "60", *which, check=False).stdout
        return LabError(
            f"node {node}: boot not done ({why}); not active: "
            f"{', '.join(f'{u} ({states[u]})' for u in bad) or 'none'}"
            f"\nfailed units: {failed.strip() or 'none'}\njournal:\n{journal[-4000:]}"
        )

    @property
    def etcd_pki(self):
        """The etcd certificates in the lab's secrets tree (`nodeboot pki`
        keeps the CA's key apart, in ca/, which never reaches a node)."""
        return self.dir / "secrets/secure/etcd"

    def boot_node(self, zone, attach=None, role="etcd"):
        """Launch and boot one node; returns the boot report (with `launch` seconds)."""
        t = time.monotonic()
        node = self.launch(zone, role)
        launched = round(time.monotonic() - t, 3)
        report = self.boot(node, attach=attach)
        report["seconds"] = {"launch": launched, **report["seconds"]}
        report["seconds"]["total"] = round(time.monotonic() - t, 3)
        return report

    def boot_all(self):
        """One node per member, launched one by one as the ASG does, booted together."""
        nodes = [self.launch(m["zone"]) for m in self.state["members"]]
        with ThreadPoolExecutor(len(nodes)) as pool:
            return list(pool.map(lambda node: self.boot(node, count_calls=False), nodes))

    def _power_off(self, n, clean=False):
        """The machine is gone: every process in it (its mounts go with its
        mount namespace), its IMDS, its NICs; its disk is unmounted."""
        c = self.container(n)
        if clean:
            c.poweroff()
        c.remove()
        with self.lock:
            n["machine"] = c.state()
            self.save()
        lab_proc.kill(n.get("imds"))
        lab_net.delete(n["netns"])

    def kill_node(self, node, how="stop", clean=False):
        """An instance failure: SIGKILL, the kernel's state gone, and in EC2
        `stop-instances --force` (how="stop": the instance keeps its volume and
        ENI until a replacement's attach stage takes them over) or a
        termination (how="terminate": EC2 detaches them itself, after
        --shutdown-delay-ms). clean=True: systemd shuts the machine down
        first, as on a TerminateInstances of a healthy instance (a roll)."""
        n = self.node(node)
        self._power_off(n, clean=clean)
        if how == "stop":
            self.ec2.stop_instances(InstanceIds=[n["instance_id"]], Force=True)
        elif how == "terminate":
            self.ec2.terminate_instances(InstanceIds=[n["instance_id"]])
        else:
            raise LabError(f"kill how={how!r}: stop or terminate")
        with self.lock:
            n["state"] = "killed"
            self.save()

    def stop_node(self, node):
        """Stop the instance (it keeps its volume and ENI): systemd shuts the
        machine down; its /run (a tmpfs) is lost, its disk kept."""
        n = self.node(node)
        self._power_off(n, clean=True)
        self.ec2.stop_instances(InstanceIds=[n["instance_id"]], Force=True)
        lab_ec2.wait_state(self.ec2, n["instance_id"], ["stopped"])
        with self.lock:
            n["state"] = "stopped"
            self.save()

    def start_node(self, node, check=True, timeout=BOOT_TIMEOUT):
        """Start a stopped instance: same instance, same primary address, its
        ENI and volume attached from the start; then the whole boot again
        (without Ignition: it runs on the first boot only). `check` and
        `timeout` as for `boot`."""
        n = self.node(node)
        if n["state"] != "stopped":
            raise LabError(f"node {node} is {n['state']}, not stopped")
        t = time.monotonic()
        self.ec2.start_instances(InstanceIds=[n["instance_id"]])
        lab_ec2.wait_state(self.ec2, n["instance_id"], ["running"])
        self._power_on(n)
        report = self.boot(node, check=check, timeout=timeout)
        report.setdefault("seconds", {})["total"] = round(time.monotonic() - t, 3)
        return report

    def went_down(self, node):
        """The node's machine has stopped by itself (a `systemctl reboot`
        inside ends systemd-nspawn, as a reboot ends the instance's OS)."""
        n = self.node(node)
        return n["state"] == "running" and not self.container(n).alive()

    def reboot_node(self, node):
        """The OS reboot of an instance that stays running in EC2: its
        machine (which ended itself) is cleaned up and booted again, with
        its disk, ENI and volume as they were; /run starts empty."""
        n = self.node(node)
        t = time.monotonic()
        self._power_off(n)
        self._power_on(n)
        report = self.boot(node)
        report["seconds"]["total"] = round(time.monotonic() - t, 3)
        return report

    # --- DHCP ------------------------------------------------------------------

    def _start_dhcp(self):
        gateways = []
        for cidr in self.state["secure_subnets"]:
            net = ipaddress.ip_network(cidr)
            gateways.append((net, net.network_address + 1))
        hosts = self.dir / "dhcp-hosts"
        hosts.write_text("")
        cmd = lab_net.dhcp_command(
            self.router, gateways, hosts, self.dir / "dhcp.leases", self.dir / "dhcp.log"
        )
        rec = lab_proc.spawn(cmd, log=self.dir / "dhcp.out")
        with self.lock:
            self.state["dhcp"] = rec
            self.save()
        deadline = time.monotonic() + 10
        while "started" not in lab_proc.tail(self.dir / "dhcp.log"):
            if not lab_proc.alive(rec) or time.monotonic() > deadline:
                raise LabError(f"dnsmasq did not start:\n{lab_proc.tail(self.dir / 'dhcp.out')}")
            time.sleep(0.02)

    def _dhcp_host(self, mac, ip):
        """A fixed lease, as EC2's DHCP hands each interface its address."""
        with self.lock:
            with open(self.dir / "dhcp-hosts", "a") as f:
                f.write(f"{mac},{ip}\n")
            os.kill(self.state["dhcp"]["pid"], signal.SIGHUP)

    def dhcp_log(self, mac=None):
        """dnsmasq's DHCP lines (for one MAC): DHCPDISCOVER/OFFER/REQUEST/ACK."""
        lines = (self.dir / "dhcp.log").read_text(errors="replace").splitlines()
        return [x for x in lines if re.search(r"DHCP[A-Z]+\(", x) and (mac is None or mac in x)]

    def renew_dhcp(self, node, iface, timeout=30):
        """`networkctl renew IFACE` in the node; waits until the server has
        ACKed a renewal (a DHCPREQUEST then DHCPACK for the interface's MAC
        after the call). Returns the new log lines."""
        link = json.loads(self.node_run(node, "ip", "-j", "link", "show", iface).stdout)
        mac = link[0]["address"]
        seen = len(self.dhcp_log(mac))
        self.node_run(node, "networkctl", "renew", iface)
        return self.wait_dhcp_ack(mac, seen, timeout)

    def wait_dhcp_ack(self, mac, after, timeout=90):
        """Waits for a DHCPACK for `mac` beyond the first `after` log lines
        (a renewal that networkd makes on its own comes at T1, about a
        minute into a two-minute lease)."""
        deadline = time.monotonic() + timeout
        while True:
            new = self.dhcp_log(mac)[after:]
            if any("DHCPACK(" in x for x in new):
                return new
            if time.monotonic() > deadline:
                raise LabError(f"no DHCPACK for {mac} within {timeout}s: {new}")
            time.sleep(0.2)

    # --- etcd ----------------------------------------------------------------

    def endpoints(self, members=None):
        chosen = (
            self.state["members"] if members is None else [self.member(member=m) for m in members]
        )
        return [f"https://{m['eni_ip']}:2379" for m in chosen]

    def etcdctl(self, *args, members=None, check=True, timeout=30, command_timeout="5s"):
        """etcdctl over TLS with the client certificate, from the router's namespace."""
        pki = self.etcd_pki
        cmd = [
            *lab_net.nsenter(self.router),
            ETCDCTL,
            f"--endpoints={','.join(self.endpoints(members))}",
            f"--cacert={pki / 'ca.crt'}",
            f"--cert={pki / 'client.crt'}",
            f"--key={pki / 'client.key'}",
            "--dial-timeout=2s",
            f"--command-timeout={command_timeout}",
            *args,
        ]
        return run(cmd, check=check, timeout=timeout, env={**os.environ, "ETCDCTL_API": "3"})

    def healthy(self, members=None):
        return (
            self.etcdctl(
                "endpoint", "health", members=members, check=False, command_timeout="3s"
            ).returncode
            == 0
        )

    def wait_healthy(self, timeout=90, members=None):
        """Seconds until every endpoint answers healthy; LabError after `timeout`
        (a liveness bound, not a measure: the measure is the return value)."""
        t = time.monotonic()
        while not self.healthy(members):
            if time.monotonic() - t > timeout:
                out = self.etcdctl("endpoint", "health", members=members, check=False)
                logs = "\n".join(
                    f"--- {name} etcd.log:\n{lab_proc.tail(Path(n['dir']) / 'etcd.log', 15)}"
                    for name, n in self.state["nodes"].items()
                    if n["state"] == "running"
                )
                raise LabError(
                    f"cluster not healthy after {timeout}s:\n{out.stdout}{out.stderr}\n{logs}"
                )
            time.sleep(0.2)
        return time.monotonic() - t

    # --- down ----------------------------------------------------------------

    def down(self):
        """Removes everything the lab made, whatever state it is in. Safe to
        repeat; works from the state file alone, and sweeps by name for what
        a crash may have left unrecorded."""
        nodes = self.state.get("nodes", {}).values()
        for n in nodes:
            if n.get("machine"):
                lab_nspawn.Container.from_state(n["machine"]).remove()
            lab_proc.kill(n.get("imds"))
        lab_nspawn.sweep(self.own_machine)
        lab_proc.kill(self.state.get("dhcp"))
        unmount_under(self.dir)
        unmount_under(self.data)
        names = {n["netns"] for n in nodes} | {self.router}
        names |= {ns for ns in lab_net.listed() if self.own_netns(ns)}
        for ns in sorted(names, key=lambda s: s.endswith("-router")):
            lab_net.delete(ns)
        for key in ("endpoint", "aws", "dhcp"):
            lab_proc.kill(self.state.get(key))
        detach_loops(self.data)
        left = self.leftovers()
        shutil.rmtree(self.data, ignore_errors=True)
        if not left:
            shutil.rmtree(self.dir, ignore_errors=True)
        if left:
            raise LabError(
                f"lab {self.name}: could not remove: {'; '.join(left)} (state kept in {self.dir})"
            )

    def leftovers(self):
        """What of this lab still exists on the machine (empty after down)."""
        left = [f"network namespace {ns}" for ns in lab_net.listed() if self.own_netns(ns)]
        left += [f"loop device {d}" for d in loops_over(self.data)]
        left += [f"mount {p}" for p in mounts_under(self.dir) + mounts_under(self.data)]
        procs = [self.state.get("aws"), self.state.get("endpoint"), self.state.get("dhcp")]
        for n in self.state.get("nodes", {}).values():
            procs.append(n.get("imds"))
            m = n.get("machine") or {}
            procs += [m.get("nspawn"), m.get("leader")]
        left += [f"process {p['pid']}" for p in procs if lab_proc.alive(p)]
        machines = [m for m in lab_nspawn.listed_cgroups() if self.own_machine(m)]
        left += [f"cgroup of machine {m}" for m in machines]
        return left


@contextlib.contextmanager
def session(prefix="t", **up):
    """A lab of a name of its own (tests run in parallel), torn down however
    the block ends; the teardown checks that nothing of it is left."""
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    try:
        yield Lab.up(name, **up)
    finally:
        lab = Lab.load(name) if (STATE_ROOT / name / "state.json").exists() else Lab(name)
        lab.down()
        assert lab.leftovers() == []


def plug_block_device(c, device, link):
    """A block device appears in a running machine: its node in the
    machine's /dev (a tmpfs of nspawn's) and a udev-style link to it."""
    rdev = os.stat(device).st_rdev
    script = (
        f"[ -b {device} ] || mknod {device} b {os.major(rdev)} {os.minor(rdev)}; "
        f'mkdir -p "$(dirname {link})"; ln -sfn {device} {link}'
    )
    run(["nsenter", "-t", c.leader["pid"], "-m", "--", "sh", "-c", script])


# --- CLI -----------------------------------------------------------------------


def default_name(args):
    if args.name:
        return args.name
    names = Lab.names()
    if len(names) == 1:
        return names[0]
    if not names:
        raise LabError("no lab is up (tests/lab/up starts one)")
    raise LabError(f"several labs are up ({', '.join(names)}): say which with --name")


def print_status(lab):
    s = lab.state
    print(f"lab {lab.name}: environment file {s.get('env_file')}, state {lab.state_file}")
    print(
        f"  emulator {s.get('aws', {}).get('url')}  "
        f"(nodes reach it at {s.get('endpoint', {}).get('url')})"
    )
    print(f"  router namespace {lab.router}: gateways of {', '.join(s.get('secure_subnets', []))}")
    for m in s.get("members", []):
        print(
            f"  member {m['member']}: {m['zone']} ENI {m['eni_id']} {m['eni_ip']}  "
            f"volume {m['volume_id']} on {m['loop']}"
        )
    for name, n in s.get("nodes", {}).items():
        units = ""
        if n["state"] == "running" and lab_proc.alive((n.get("machine") or {}).get("leader")):
            c = lab.container(n)
            active = c.systemctl("is-active", *n.get("enabled", []), check=False).stdout.split()
            units = " ".join(
                f"{u.removesuffix('.service')}={a}"
                for u, a in zip(n.get("enabled", []), active, strict=False)
            )
        print(
            f"  node {name}: {n['state']:9} {n.get('role', 'etcd')} {n.get('instance_id', '?')} "
            f"{n['zone']} eth0 {n.get('primary_ip', '?')}  member {n.get('member', '-')}"
            f"  (netns {n['netns']}, machine {n['machine']['machine']}, files in {n['dir']})"
        )
        if units:
            print(f"    {units}")
    if s.get("members") and s.get("endpoint"):
        out = lab.etcdctl("endpoint", "status", "-w", "table", check=False, command_timeout="3s")
        print(out.stdout + out.stderr, end="")


def main(argv=None):
    p = argparse.ArgumentParser(prog="lab.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--name", help="the lab (default: the only one up; `lab` for up)")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build the lab and boot one node per member")
    up.add_argument("--members", type=int, default=3)
    up.add_argument("--attach-delay-ms", type=int, default=0)
    up.add_argument("--shutdown-delay-ms", type=int, default=0)
    up.add_argument("--no-boot", action="store_true", help="only the network, emulator and volumes")
    sub.add_parser("down", help="remove everything the lab made").add_argument(
        "--all", action="store_true"
    )
    sub.add_parser("status", help="nodes, members, etcd endpoint status")
    kill = sub.add_parser("kill-node", help="an instance failure (SIGKILL, stop --force in EC2)")
    kill.add_argument("node")
    kill.add_argument("--terminate", action="store_true", help="terminate instead of stop --force")
    boot = sub.add_parser("boot-node", help="launch and boot a node (a replacement)")
    boot.add_argument("zone")
    boot.add_argument("--role", choices=ROLES, default="etcd")
    sub.add_parser("stop-node", help="stop an instance (keeps its attachments)").add_argument(
        "node"
    )
    sub.add_parser("start-node", help="start a stopped instance and boot it").add_argument("node")
    ctl = sub.add_parser("etcdctl", help="etcdctl at every member, from the router")
    ctl.add_argument("args", nargs=argparse.REMAINDER)
    inside = sub.add_parser("run", help="a command inside a running node (journalctl, systemctl)")
    inside.add_argument("node")
    inside.add_argument("args", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    try:
        if args.command == "up":
            name = args.name or "lab"
            print(f"lab {name}: building (logs under {STATE_ROOT / name})", file=sys.stderr)
            delays = (args.attach_delay_ms, args.shutdown_delay_ms)
            try:
                lab = Lab.up(name, args.members, *delays, boot=not args.no_boot)
            except LabError as err:
                hint = f"the lab is left for inspection; `tests/lab/down {name}` removes it"
                raise LabError(f"{err}\n({hint})") from err
            print_status(lab)
        elif args.command == "down":
            names = Lab.names() if args.all else [default_name(args)]
            for name in names:
                lab = Lab.load(name) if (STATE_ROOT / name / "state.json").exists() else Lab(name)
                lab.down()
                print(f"lab {name}: down")
            if args.all:
                for machine in lab_nspawn.remove_all_machines():
                    print(f"machine {machine}: removed")
        else:
            lab = Lab.load(default_name(args))
            if args.command == "status":
                print_status(lab)
            elif args.command == "kill-node":
                lab.kill_node(args.node, "terminate" if args.terminate else "stop")
                print(f"node {args.node}: killed")
            elif args.command == "boot-node":
                t = time.monotonic()
                report = lab.boot_node(args.zone, role=args.role)
                print(json.dumps(report, indent=2))
                if args.role == "etcd":
                    healthy = lab.wait_healthy()
                    print(
                        f"node {report['node']}: booted; cluster healthy "
                        f"{time.monotonic() - t:.1f}s after launch "
                        f"({healthy:.1f}s after etcd started)"
                    )
                else:
                    print(f"node {report['node']}: booted in {time.monotonic() - t:.1f}s")
            elif args.command == "stop-node":
                lab.stop_node(args.node)
                print(f"node {args.node}: stopped")
            elif args.command == "start-node":
                print(json.dumps(lab.start_node(args.node), indent=2))
            elif args.command == "etcdctl":
                rest = args.args[1:] if args.args[:1] == ["--"] else args.args
                out = lab.etcdctl(*rest, check=False)
                print(out.stdout + out.stderr, end="")
                return out.returncode
            elif args.command == "run":
                rest = args.args[1:] if args.args[:1] == ["--"] else args.args
                enter = lab.container(lab.node(args.node))._enter()
                return subprocess.run([*enter, *rest], check=False).returncode
    except LabError as err:
        print(f"lab: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
