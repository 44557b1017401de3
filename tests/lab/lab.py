#!/usr/bin/env python3
"""The lab of issue 4: a real etcd cluster on this machine, booted by the real
`nodeboot` stages, that loses nodes and gets them back.

    tests/lab/lab.py up [--name lab] [--members 3]   # or tests/lab/up
    tests/lab/lab.py status [--name lab]
    tests/lab/lab.py kill-node [--name lab] NODE      # as an instance failure
    tests/lab/lab.py boot-node [--name lab] ZONE      # a replacement (the ASG)
    tests/lab/lab.py stop-node / start-node [--name lab] NODE
    tests/lab/lab.py etcdctl [--name lab] -- ARGS...  # from the router, with the client cert
    tests/lab/lab.py down [--name lab]                # or tests/lab/down

Everything the lab makes is recorded in /run/nodeboot-lab/NAME/state.json
before it is made, so `down` removes it all even after a crash. See
tests/lab/README.md for the topology.
"""

import argparse
import base64
import gzip
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
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lab_ec2
import lab_net
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
IMDS_ADDRESS = "169.254.169.254"
ENDPOINT_PORT = 80
VOLUME_MB = 1024  # sparse: only what is written takes space
# A lab name is also the environment's name (3-32 of a-z, 0-9, '-').
NAME_RE = re.compile(r"[a-z][a-z0-9-]{2,23}")
ABORT_VAR = "NODEBOOT_LAB_ABORT_AT"
STAGE_TIMEOUT = 240


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
    for tool in ("ip", "nsenter", "losetup", "mkfs.ext4", "blkid", "sysctl"):
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
        return self._ec2

    @property
    def router(self):
        return f"nbl-{self.name}-router"

    def netns_of(self, node):
        return f"nbl-{self.name}-{node}"

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
        the node.json that Ignition would write, and the PKI."""
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
        run([self.bin, "render", "--env", env_file, "--out", render, "--role", "etcd"])
        (self.dir / "node.json").write_bytes(node_json_from_ignition(render))
        run([self.bin, "pki", "--env", env_file, "--dir", self.dir / "secrets"])
        self.save()

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
        zones, subnets_cidr = self.state["zones"], self.state["secure_subnets"]
        for place in lab_ec2.placement(zones, subnets_cidr, self.state["etcd_count"]):
            image = self.data / f"member-{place['member']}.img"
            with open(image, "wb") as f:
                f.truncate(VOLUME_MB * 1024 * 1024)
            loop = run(["losetup", "--find", "--show", image]).stdout.strip()
            made = lab_ec2.create_member(
                self.ec2,
                self.name,
                place["member"],
                place["zone"],
                subnets[place["zone"]]["id"],
                place["eni_ip"],
                max(1, VOLUME_MB // 1024),
            )
            self.state["members"].append({**place, **made, "image": str(image), "loop": loop})
            self.save()

    # --- nodes ---------------------------------------------------------------

    def launch(self, zone):
        """The autoscaling group launches an instance in `zone`: RunInstances,
        then the machine itself (a network namespace with eth0) and its IMDS."""
        if zone not in self.state["subnets"]:
            raise LabError(f"zone {zone}: the lab's zones are {', '.join(self.state['subnets'])}")
        with self.lock:
            number = self.state["next_node"]
            self.state["next_node"] += 1
            name = f"n{number}"
            d = self.dir / "nodes" / name
            n = {
                "zone": zone,
                "number": number,
                "netns": self.netns_of(name),
                "dir": str(d),
                "root": str(d / "root"),
                "state": "launching",
                "boots": [],
            }
            self.state["nodes"][name] = n
            self.save()
        n.update(
            lab_ec2.launch(self.ec2, self.state["subnets"][zone]["id"], self.state["instance_type"])
        )
        if n["primary_ip"] in {m["eni_ip"] for m in self.state["members"]}:
            raise LabError(
                f"the emulator gave {n['instance_id']} a member's ENI address {n['primary_ip']}"
            )
        config = Path(n["root"]) / "etc/nodeboot/node.json"
        config.parent.mkdir(parents=True)
        shutil.copy(self.dir / "node.json", config)
        self.save()
        self._power_on(n)
        return name

    def _power_on(self, n):
        """The machine: its namespace, eth0 as EC2's DHCP leaves it, its IMDS
        on 169.254.169.254, and whatever EC2 already has attached."""
        subnet = ipaddress.ip_network(self.state["subnets"][n["zone"]]["cidr"])
        lab_net.add(n["netns"])
        lab_net.ip("addr", "add", f"{IMDS_ADDRESS}/32", "dev", "lo", ns=n["netns"])
        lab_net.plug(self.router, f"n{n['number']}e0", n["netns"], "eth0", n["mac"])
        lab_net.configure_primary(
            n["netns"], f"{n['primary_ip']}/{subnet.prefixlen}", str(subnet.network_address + 1)
        )
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
        n["state"] = "running"
        self.save()
        self.hotplug(n)

    def hotplug(self, n):
        """EC2's part once an attachment is made: the ENI appears in the node as
        a NIC with its MAC (and in the metadata), the volume as its Nitro
        by-id link. Idempotent; driven by what EC2 says is attached."""
        volumes, enis = lab_ec2.attached(self.ec2, n["instance_id"])
        by_id = Path(n["root"]) / "dev/disk/by-id"
        by_id.mkdir(parents=True, exist_ok=True)
        for volume_id in volumes:
            member = next((m for m in self.state["members"] if m["volume_id"] == volume_id), None)
            if member is None:
                continue  # the root volume: not ours to show
            link = by_id / f"nvme-Amazon_Elastic_Block_Store_{volume_id.replace('-', '')}"
            if not link.is_symlink():
                link.symlink_to(member["loop"])
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

    def _hotplug_claim(self, n, timeout=120):
        """EC2 hot-plugs once an attachment completes: wait until EC2 says the
        claimed volume and ENI are attached here (at once after nodeboot's
        attach, which waits for that itself; not after the seed's, which does
        not), then plug them."""
        claim = json.loads((Path(n["root"]) / "run/nodeboot/claim.json").read_text())
        deadline = time.monotonic() + timeout
        while True:
            volumes, enis = lab_ec2.attached(self.ec2, n["instance_id"])
            if claim["volume_id"] in volumes and claim["eni_id"] in [e["eni_id"] for e in enis]:
                break
            if time.monotonic() > deadline:
                raise LabError(
                    f"{claim['volume_id']} and {claim['eni_id']} not both attached to "
                    f"{n['instance_id']} after {timeout}s"
                )
            time.sleep(0.1)
        self.hotplug(n)

    def boot(self, node, attach=None, count_calls=True):
        """The node's boot, in the units' order: discover -> attach -> mount ->
        etcd (with the lab's stand-in for the secrets stage just before etcd).
        `attach(lab, node)` replaces the attach stage (the bench's seed loop).
        Returns a report: seconds per step and, with count_calls, the API
        calls of the node's own steps (GET /_bed/calls before and after each:
        exact only when one node boots at a time)."""
        n = self.node(node)
        started = time.monotonic()
        seconds, calls = {}, Counter()

        def step(what, fn, count=False):
            count = count and count_calls
            t = time.monotonic()
            before = lab_ec2.calls(self.state["aws"]["url"]) if count else None
            try:
                fn()
            finally:  # a failed step's calls and time count too
                if count:
                    after = lab_ec2.calls(self.state["aws"]["url"])
                    calls.update(Counter(after) - Counter(before))
                seconds[what] = round(time.monotonic() - t, 3)

        def report():
            r = {"node": node, "instance_id": n["instance_id"], "zone": n["zone"]}
            r["seconds"] = {**seconds, "total": round(time.monotonic() - started, 3)}
            if count_calls:
                r.update(api_calls=dict(sorted(calls.items())), api_calls_total=sum(calls.values()))
            return r

        try:
            step("discover", lambda: self._stage(node, "discover"))
            if attach is None:
                step(
                    "attach",
                    lambda: self._stage(
                        node, "attach", "--wait-timeout", "60s", "--detach-grace", "5s"
                    ),
                    True,
                )
            else:
                step("attach", lambda: attach(self, node), True)
            step("hotplug", lambda: self._hotplug_claim(n))
            step("mount", lambda: self._stage(node, "mount", "--wait-timeout", "30s"))
            step("secrets", lambda: self._install_secrets(n))
            step("etcd", lambda: self._start_etcd(node), True)
        except LabError as err:
            err.report = report()  # what got done, and its API calls
            raise
        claim = json.loads((Path(n["root"]) / "run/nodeboot/claim.json").read_text())
        report = {**report(), "member": claim["member"]}
        with self.lock:
            n["member"] = claim["member"]
            n["boots"].append(report)
            self.save()
        return report

    def _stage_env(self):
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AWS_")
            and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
        }
        env.pop("NODEBOOT_ABORT_AT", None)
        env.update(
            AWS_ENDPOINT_URL=self.state["endpoint"]["url"],
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_REGION=lab_ec2.REGION,
            AWS_CONFIG_FILE="/dev/null",
            AWS_SHARED_CREDENTIALS_FILE="/dev/null",
            NODEBOOT_LOG=os.environ.get("NODEBOOT_LOG", "info"),
            PATH=env.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin",
        )
        return env

    def _stage(self, node, *args):
        """`nodeboot stage --root ROOT ARGS` inside the node's network namespace."""
        n = self.node(node)
        cmd = [*lab_net.nsenter(n["netns"]), self.bin, "stage", "--root", n["root"], *args]
        t = time.monotonic()
        out = run(cmd, check=False, env=self._stage_env(), timeout=STAGE_TIMEOUT)
        with open(Path(n["dir"]) / "boot.log", "a") as log:
            log.write(
                f"== nodeboot stage {' '.join(args)}: exit {out.returncode} "
                f"after {time.monotonic() - t:.2f}s\n"
            )
            log.write(out.stderr)
        if out.returncode != 0:
            raise LabError(
                f"node {node}: stage {args[0]} exited {out.returncode}:\n"
                f"{out.stderr.strip()[-3000:]}"
            )

    @property
    def etcd_pki(self):
        """The etcd certificates in the lab's secrets tree (`nodeboot pki`
        keeps the CA's key apart, in ca/, which never reaches a node)."""
        return self.dir / "secrets/secure/etcd"

    def _install_secrets(self, n):
        """The lab's stand-in for `nodeboot stage secrets`: the secrets tree's
        secure/etcd/ into the node's /run/nodeboot/secrets/etcd/."""
        dst = Path(n["root"]) / "run/nodeboot/secrets/etcd"
        dst.mkdir(parents=True, exist_ok=True)
        for d in (dst.parent, dst):
            d.chmod(0o700)
        for f in sorted(self.etcd_pki.iterdir()):
            if f.name.endswith("ca.key") or not f.is_file():
                continue
            target = dst / f.name
            shutil.copyfile(f, target)
            target.chmod(0o600 if f.suffix == ".key" else 0o644)

    def _start_etcd(self, node, timeout=120):
        """`nodeboot stage etcd --exec` in the background, in the node's
        namespace: done when the process has become etcd."""
        n = self.node(node)
        log = Path(n["dir"]) / "etcd.log"
        cmd = [
            *lab_net.nsenter(n["netns"]),
            self.bin,
            "stage",
            "--root",
            n["root"],
            "etcd",
            "--exec",
            "--etcd-binary",
            ETCD,
        ]
        rec = lab_proc.spawn(cmd, log=log, env=self._stage_env())
        with self.lock:
            n["etcd"] = rec
            self.save()
        etcd = os.path.realpath(ETCD)
        deadline = time.monotonic() + timeout
        while lab_proc.exe(rec["pid"]) != etcd:
            if not lab_proc.alive(rec):
                raise LabError(
                    f"node {node}: the etcd stage ended before it became etcd; "
                    f"{log}:\n{lab_proc.tail(log)}"
                )
            if time.monotonic() > deadline:
                raise LabError(
                    f"node {node}: not running etcd after {timeout}s; {log}:\n{lab_proc.tail(log)}"
                )
            time.sleep(0.02)

    def boot_node(self, zone, attach=None):
        """Launch and boot one node; returns the boot report (with `launch` seconds)."""
        t = time.monotonic()
        node = self.launch(zone)
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

    def _power_off(self, n):
        """The machine is gone: etcd and every process in it, its mounts, its NICs."""
        for key in ("etcd", "imds"):
            lab_proc.kill(n.get(key))
        unmount_under(n["root"])
        lab_net.delete(n["netns"])

    def kill_node(self, node, how="stop"):
        """An instance failure: SIGKILL, the kernel's state gone, and in EC2
        `stop-instances --force` (how="stop": the instance keeps its volume and
        ENI until a replacement's attach stage takes them over) or a
        termination (how="terminate": EC2 detaches them itself, after
        --shutdown-delay-ms)."""
        n = self.node(node)
        self._power_off(n)
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
        """Stop the instance (it keeps its volume and ENI); /run is a tmpfs, so
        the node's run state is lost."""
        n = self.node(node)
        self._power_off(n)
        self.ec2.stop_instances(InstanceIds=[n["instance_id"]], Force=True)
        lab_ec2.wait_state(self.ec2, n["instance_id"], ["stopped"])
        shutil.rmtree(Path(n["root"]) / "run", ignore_errors=True)
        with self.lock:
            n["state"] = "stopped"
            self.save()

    def start_node(self, node):
        """Start a stopped instance: same instance, same primary address, its
        ENI and volume attached from the start; then the whole boot again."""
        n = self.node(node)
        if n["state"] != "stopped":
            raise LabError(f"node {node} is {n['state']}, not stopped")
        t = time.monotonic()
        self.ec2.start_instances(InstanceIds=[n["instance_id"]])
        lab_ec2.wait_state(self.ec2, n["instance_id"], ["running"])
        self._power_on(n)
        report = self.boot(node)
        report["seconds"]["total"] = round(time.monotonic() - t, 3)
        return report

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
            for key in ("etcd", "imds"):
                lab_proc.kill(n.get(key))
        unmount_under(self.dir)
        unmount_under(self.data)
        names = {n["netns"] for n in nodes} | {self.router}
        names |= {ns for ns in lab_net.listed() if self.own_netns(ns)}
        for ns in sorted(names, key=lambda s: s.endswith("-router")):
            lab_net.delete(ns)
        for key in ("endpoint", "aws"):
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
        procs = [self.state.get("aws"), self.state.get("endpoint")]
        for n in self.state.get("nodes", {}).values():
            procs += [n.get("etcd"), n.get("imds")]
        left += [f"process {p['pid']}" for p in procs if lab_proc.alive(p)]
        return left


def node_json_from_ignition(render_dir):
    """/etc/nodeboot/node.json as Ignition would write it from the rendered config."""
    full = Path(render_dir) / "etcd.full.ign"
    config = json.loads((full if full.exists() else Path(render_dir) / "etcd.ign").read_text())
    for f in config.get("storage", {}).get("files", []):
        if f["path"] == "/etc/nodeboot/node.json":
            contents = f["contents"]
            header, _, payload = contents["source"].partition(",")
            if header.endswith(";base64"):
                data = base64.b64decode(payload)
            else:
                data = urllib.parse.unquote_to_bytes(payload)
            return gzip.decompress(data) if contents.get("compression") == "gzip" else data
    raise LabError(f"no /etc/nodeboot/node.json in the etcd config rendered in {render_dir}")


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
        etcd = "etcd running" if lab_proc.alive(n.get("etcd")) else "no etcd"
        print(
            f"  node {name}: {n['state']:9} {n.get('instance_id', '?')} {n['zone']} "
            f"eth0 {n.get('primary_ip', '?')}"
            f"  member {n.get('member', '-')}  {etcd}  (netns {n['netns']}, logs in {n['dir']})"
        )
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
    sub.add_parser("boot-node", help="launch and boot a node (a replacement)").add_argument("zone")
    sub.add_parser("stop-node", help="stop an instance (keeps its attachments)").add_argument(
        "node"
    )
    sub.add_parser("start-node", help="start a stopped instance and boot it").add_argument("node")
    ctl = sub.add_parser("etcdctl", help="etcdctl at every member, from the router")
    ctl.add_argument("args", nargs=argparse.REMAINDER)
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
        else:
            lab = Lab.load(default_name(args))
            if args.command == "status":
                print_status(lab)
            elif args.command == "kill-node":
                lab.kill_node(args.node, "terminate" if args.terminate else "stop")
                print(f"node {args.node}: killed")
            elif args.command == "boot-node":
                t = time.monotonic()
                report = lab.boot_node(args.zone)
                healthy = lab.wait_healthy()
                print(json.dumps(report, indent=2))
                print(
                    f"node {report['node']}: booted; cluster healthy {time.monotonic() - t:.1f}s "
                    f"after launch ({healthy:.1f}s after etcd started)"
                )
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
    except LabError as err:
        print(f"lab: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
