#!/usr/bin/env python3
"""discover -> attach -> mount against the test bed: nodeboot and the seed's way.

    sudo python3 bench/attach.py [--runs 3] [--delays 0,2000]
                                 [--seed-interval 5] [--seed-timeout 20]

Prints a table of wall times and AWS API calls; asserts nothing on time.
Each run starts its own emulator (tests/bed/aws_server.py --attach-delay-ms D),
creates a VPC with one secure subnet per zone and 3 members (volume + ENI,
tagged as Terraform tags them), launches an instance, gives it a root
directory with node.json and its own IMDSv2 double (tests/bed/imds.py), then
times the stages. A "kernel" thread plays the node's part: once EC2 reports
the volume attached to the instance, it links a loop device as the volume's
Nitro by-id device under the node's root. Its DescribeVolumes calls are taken
out of the counts.

Needs root (loop devices, mounts). Talks to 127.0.0.1 only. See bench/README.md.
"""

import argparse
import base64
import gzip
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BED = REPO / "tests/bed"
SEED = REPO / "bench/seed-attach.sh"
REGION = "eu-west-1"
ZONES = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
# The example environment's network (environments/example.tfvars).
VPC_CIDR = "10.80.0.0/16"
SECURE_SUBNETS = ["10.80.10.0/24", "10.80.11.0/24", "10.80.12.0/24"]
MEMBERS = 3
TAG = "nodeboot.io/"
AWSCLI_VENV = Path(os.environ.get("AWSCLI_VENV", "/opt/awscli"))
SHORT = {
    "DescribeVolumes": "DV",
    "AttachVolume": "AV",
    "DetachVolume": "DtV",
    "DescribeNetworkInterfaces": "DNI",
    "AttachNetworkInterface": "ANI",
    "DetachNetworkInterface": "DtNI",
    "DescribeInstances": "DI",
    "CreateTags": "CT",
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --- tools ------------------------------------------------------------------


def nodeboot_binary():
    """NODEBOOT_BIN, else the release build, else the static one, else build it."""
    if os.environ.get("NODEBOOT_BIN"):
        return Path(os.environ["NODEBOOT_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", "/var/cache/nodeboot/target"))
    for p in (target / "release/nodeboot", target / "x86_64-unknown-linux-musl/release/nodeboot"):
        if p.is_file():
            return p
    log("no release binary: cargo build --release")
    subprocess.run(
        ["cargo", "build", "--release"],
        cwd=REPO,
        check=True,
        env={**os.environ, "CARGO_TARGET_DIR": str(target)},
    )
    return target / "release/nodeboot"


def aws_cli():
    """The aws CLI in its own virtualenv: its botocore must not meet moto's."""
    aws = AWSCLI_VENV / "bin/aws"
    if not aws.is_file():
        log(f"installing the aws CLI into {AWSCLI_VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(AWSCLI_VENV)], check=True)
        subprocess.run([str(AWSCLI_VENV / "bin/pip"), "install", "-q", "awscli"], check=True)
    return aws


def node_json(binary):
    """node.json exactly as `nodeboot render` puts it into etcd.ign."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [
                binary,
                "render",
                "--env",
                REPO / "environments/example.tfvars",
                "--out",
                out,
                "--role",
                "etcd",
            ],
            check=True,
            capture_output=True,
        )
        ign = Path(out) / "etcd.full.ign"
        if not ign.exists():
            ign = Path(out) / "etcd.ign"
        files = json.loads(ign.read_text())["storage"]["files"]
    entry = next(f for f in files if f["path"] == "/etc/nodeboot/node.json")
    header, _, data = entry["contents"]["source"].partition(",")
    raw = (
        base64.b64decode(data)
        if header.endswith(";base64")
        else urllib.parse.unquote_to_bytes(data)
    )
    if entry["contents"].get("compression") == "gzip":
        raw = gzip.decompress(raw)
    return json.loads(raw)


# --- the bed ----------------------------------------------------------------


class Server:
    """A bed server with stdin piped: it stops when we close the pipe."""

    def __init__(self, args):
        self.proc = subprocess.Popen(
            [sys.executable, *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"{args[0]} said {line!r}, not READY")
        self.url = line.removeprefix("READY ")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Aws:
    """One emulator and a boto3 client for the bench's own set-up calls."""

    def __init__(self, attach_delay_ms):
        import boto3  # moto's boto3, in the interpreter that runs the bed
        from botocore.config import Config

        self.delay_s = attach_delay_ms / 1000
        self.server = Server(
            [BED / "aws_server.py", "--port", 0, "--quiet", "--attach-delay-ms", attach_delay_ms]
        )
        self.ec2 = boto3.client(
            "ec2",
            region_name=REGION,
            endpoint_url=self.server.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1}),
        )

    def env(self):
        return {
            "AWS_ENDPOINT_URL": self.server.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        }

    def _bed(self, method, path):
        req = urllib.request.Request(
            self.server.url + path, method=method, data=b"" if method == "POST" else None
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def calls(self):
        return self._bed("GET", "/_bed/calls")

    def reset_calls(self):
        self._bed("POST", "/_bed/calls/reset")


def tags(resource, pairs):
    return [{"ResourceType": resource, "Tags": [{"Key": k, "Value": v} for k, v in pairs.items()]}]


def create_cluster(aws, environment):
    """VPC, one secure subnet per zone, and MEMBERS members laid out as Terraform does:
    member i in zone i % 3, ENI host 10 + i // 3 of that zone's subnet."""
    vpc = aws.ec2.create_vpc(CidrBlock=VPC_CIDR)["Vpc"]["VpcId"]
    subnets = {}
    for zone, cidr in zip(ZONES, SECURE_SUBNETS, strict=True):
        subnets[zone] = (
            aws.ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=zone)["Subnet"][
                "SubnetId"
            ],
            cidr,
        )
    members = []
    for i in range(MEMBERS):
        zone = ZONES[i % len(ZONES)]
        subnet, cidr = subnets[zone]
        ip = cidr.rsplit(".", 1)[0] + f".{10 + i // len(ZONES)}"
        pairs = {
            TAG + "environment": environment,
            TAG + "role": "etcd",
            TAG + "member": str(i),
            "Name": f"{environment}-etcd-{i}",
        }
        volume = aws.ec2.create_volume(
            AvailabilityZone=zone, Size=1, TagSpecifications=tags("volume", pairs)
        )["VolumeId"]
        eni = aws.ec2.create_network_interface(
            SubnetId=subnet, PrivateIpAddress=ip, TagSpecifications=tags("network-interface", pairs)
        )["NetworkInterface"]
        members.append(
            {"member": i, "zone": zone, "volume_id": volume, "eni_id": eni["NetworkInterfaceId"]}
        )
    return subnets, members


class Node:
    """An instance, its root directory (node.json) and its IMDSv2 double."""

    def __init__(self, aws, subnets, zone, config, stack):
        subnet, cidr = subnets[zone]
        inst = aws.ec2.run_instances(
            ImageId="ami-12c6146b", MinCount=1, MaxCount=1, SubnetId=subnet
        )["Instances"][0]
        self.instance_id = inst["InstanceId"]
        self.root = Path(tempfile.mkdtemp(prefix="nodeboot-bench-"))
        stack.callback(remove_root, self.root)
        cfg = self.root / "etc/nodeboot/node.json"
        cfg.parent.mkdir(parents=True)
        cfg.write_text(json.dumps(config, indent=2))
        primary = inst["NetworkInterfaces"][0]
        identity = {
            "instance_id": self.instance_id,
            "availability_zone": zone,
            "region": REGION,
            "private_ip": inst["PrivateIpAddress"],
            "interfaces": [
                {
                    "mac": primary["MacAddress"].lower(),
                    "device_number": 0,
                    "interface_id": primary["NetworkInterfaceId"],
                    "local_ipv4s": [inst["PrivateIpAddress"]],
                    "subnet_id": subnet,
                    "subnet_ipv4_cidr_block": cidr,
                    "vpc_id": inst.get("VpcId", "vpc-0"),
                }
            ],
        }
        (self.root / "imds-identity.json").write_text(json.dumps(identity, indent=2))
        self.imds = Server(
            [
                BED / "imds.py",
                "--listen",
                "127.0.0.1:0",
                "--identity",
                self.root / "imds-identity.json",
            ]
        )
        stack.callback(self.imds.stop)


class LoopVolume:
    """A sparse file behind a loop device: the bed's EBS volume."""

    def __init__(self, stack, size_mb=64):
        fd, self.file = tempfile.mkstemp(prefix="nodeboot-bench-", suffix=".img")
        os.ftruncate(fd, size_mb << 20)
        os.close(fd)
        stack.callback(os.unlink, self.file)
        self.device = subprocess.run(
            ["losetup", "--find", "--show", self.file], check=True, capture_output=True, text=True
        ).stdout.strip()
        stack.callback(subprocess.run, ["losetup", "--detach", self.device], capture_output=True)


def unmount_all(root):
    root = os.path.realpath(root)
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for p in sorted(
        (p for p in points if p == root or p.startswith(root + "/")), key=len, reverse=True
    ):
        subprocess.run(["umount", "--lazy", p], capture_output=True)


def remove_root(root):
    unmount_all(root)
    shutil.rmtree(root, ignore_errors=True)


class Kernel(threading.Thread):
    """The node's kernel: once EC2 says the volume is attached to this
    instance, its Nitro by-id link appears (tests/common/bed.rs plug_volume).
    The thread waits for an AttachVolume call (free to watch on /_bed/calls),
    then the bed's attach delay, then describes the volume until it is
    attached; the bench also checks once between two steps, as udev is
    quicker than a process start. Those describes are counted in
    `self.describes` and taken out of the results."""

    def __init__(self, aws, node, volume_id, loop):
        super().__init__(daemon=True)
        self.aws, self.node, self.volume_id, self.loop = aws, node, volume_id, loop
        self.describes = 0
        self.plugged = False
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def check(self):
        """Plugs the device if the volume is attached to this node; True once plugged."""
        with self.lock:
            if not self.plugged:
                self.describes += 1
                vol = self.aws.ec2.describe_volumes(VolumeIds=[self.volume_id])["Volumes"][0]
                if any(
                    a["InstanceId"] == self.node.instance_id and a["State"] == "attached"
                    for a in vol["Attachments"]
                ):
                    serial = self.volume_id.replace("-", "")
                    link = (
                        self.node.root / f"dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{serial}"
                    )
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to(self.loop.device)
                    self.plugged = True
            return self.plugged

    def run(self):
        while not self.stopping.is_set() and not self.aws.calls().get("AttachVolume"):
            time.sleep(0.02)
        self.stopping.wait(max(self.aws.delay_s - 0.05, 0))
        while not self.stopping.is_set() and not self.check():
            self.stopping.wait(0.025)

    def stop(self):
        self.stopping.set()
        self.join()


# --- one run ----------------------------------------------------------------


def timed(cmd, env):
    start = time.monotonic()
    proc = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True)
    return time.monotonic() - start, proc


def steps_for(tool, ctx, node):
    if tool == "nodeboot":
        stage = [ctx.binary, "stage", "--root", node.root]
        return [
            ("discover", [*stage, "discover"]),
            ("attach", [*stage, "attach", "--wait-timeout", "60s"]),
            ("mount", [*stage, "mount", "--skip-network", "--wait-timeout", "30s"]),
        ]
    seed = ["bash", SEED]
    poll = ["--interval", ctx.seed_interval, "--timeout", ctx.seed_timeout]
    return [
        ("attach", [*seed, "attach", "--root", node.root, *poll]),
        ("mount", [*seed, "mount", "--root", node.root, "--timeout", 30]),
    ]


def one_run(ctx, scenario, delay_ms, tool):
    """Returns {"times": {step: s}, "calls": {action: n}, "result": str}."""
    with ExitStack() as stack:
        aws = Aws(delay_ms)
        stack.callback(aws.server.stop)
        subnets, members = create_cluster(aws, ctx.config["environment"])
        zone = "eu-west-1a"
        member = members[0]
        loop = LoopVolume(stack)
        if scenario == "replacement":
            # A first node holds member 0 (its volume carries a filesystem) and is stopped.
            subprocess.run(["mkfs.ext4", "-q", loop.device], check=True)
            old = Node(aws, subnets, zone, ctx.config, stack)
            env = {
                **os.environ,
                **aws.env(),
                "AWS_EC2_METADATA_SERVICE_ENDPOINT": old.imds.url,
                "NODEBOOT_LOG": "warn",
            }
            for step, cmd in steps_for("nodeboot", ctx, old)[:2]:
                _, proc = timed(cmd, env)
                if proc.returncode != 0:
                    raise RuntimeError(f"set-up {step} of the first node: {proc.stderr}")
            aws.ec2.stop_instances(InstanceIds=[old.instance_id], Force=True)
        node = Node(aws, subnets, zone, ctx.config, stack)
        env = {
            **os.environ,
            **aws.env(),
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": node.imds.url,
            "NODEBOOT_LOG": "info",
            "AWS_CLI": str(ctx.aws_cli),
        }
        env.pop("NODEBOOT_FAULT", None)
        kernel = Kernel(aws, node, member["volume_id"], loop)
        aws.reset_calls()
        kernel.start()
        stack.callback(kernel.stop)
        times, result = {}, "ok"
        for step, cmd in steps_for(tool, ctx, node):
            if step == "mount":
                kernel.check()
            times[step], proc = timed(cmd, env)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["?"])[-1].removeprefix("seed-attach: ")
                result = f"{step}: exit {proc.returncode}, {last}"
                if ctx.verbose:
                    log(proc.stderr)
                break
        kernel.stop()
        calls = aws.calls()
        calls["DescribeVolumes"] = calls.get("DescribeVolumes", 0) - kernel.describes
        calls = {k: v for k, v in calls.items() if v}
        return {"times": times, "calls": calls, "result": result}


# --- the table --------------------------------------------------------------


def summarise(runs):
    """The run with the median total time, with median times per step."""
    totals = [sum(r["times"].values()) for r in runs]
    median_run = runs[sorted(range(len(runs)), key=lambda i: totals[i])[len(runs) // 2]]
    steps = {s: statistics.median(r["times"].get(s, 0) for r in runs) for s in median_run["times"]}
    return {**median_run, "times": steps, "total": statistics.median(totals)}


def by_action(calls):
    return ", ".join(
        f"{SHORT.get(k, k)} {v}" for k, v in sorted(calls.items(), key=lambda kv: kv[0])
    )


def print_table(rows, ctx):
    head = [
        "scenario",
        "tool",
        "discover s",
        "attach s",
        "attach - waits s",
        "mount s",
        "total s",
        "API calls",
        "by action",
        "result",
    ]
    body = []
    for r in rows:
        times = [
            f"{r['times'][s]:.2f}" if s in r["times"] else "-"
            for s in ("discover", "attach", "mount")
        ]
        # What the attach stage costs beyond the transitions it must wait
        # for: an attachment (fresh), a detachment then an attachment
        # (replacement; volume and ENI in parallel).
        waits = r["delay_ms"] / 1000 * (2 if r["scenario"].startswith("replacement") else 1)
        times.insert(2, f"{r['times']['attach'] - waits:.2f}" if "attach" in r["times"] else "-")
        calls = [str(sum(r["calls"].values())), by_action(r["calls"])]
        body.append([r["scenario"], r["tool"], *times, f"{r['total']:.2f}", *calls, r["result"]])
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for b in body:
        print(line(b))
    notes = [
        f"Median of {ctx.runs} run(s); API calls of the median run.",
        "Each run: a fresh emulator, 3 members, one node in eu-west-1a.",
        "D: --attach-delay-ms, how long an attachment (or detachment) stays in progress.",
        "attach - waits: attach beyond the transitions it must wait for: D (fresh),",
        "  2 D (replacement: the dead holder's detach, then the attach).",
        f"seed: bench/seed-attach.sh polling every {ctx.seed_interval} s, given up after"
        f" {ctx.seed_timeout} s (the seed polled every 120 s, forever).",
        "The seed has no discover stage: its attach reads IMDS itself.",
        "replacement: member 0's holder is stopped (stop-instances --force),",
        "  then a second node boots in its zone; the volume already holds ext4.",
        "by action: " + ", ".join(f"{v} {k}" for k, v in SHORT.items()),
    ]
    print("\n" + "\n".join(notes))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument(
        "--delays", default="0,1000,5000", help="attach delays in ms, comma-separated"
    )
    p.add_argument("--scenarios", default="fresh,replacement")
    p.add_argument("--tools", default="nodeboot,seed")
    p.add_argument(
        "--seed-interval", type=int, default=5, help="the seed script's poll interval, s"
    )
    p.add_argument("--seed-timeout", type=int, default=20, help="how long the seed script polls, s")
    p.add_argument("--verbose", action="store_true", help="print a failed step's stderr")
    ctx = p.parse_args()
    if not set(ctx.scenarios.split(",")) <= {"fresh", "replacement"}:
        p.error("--scenarios: fresh and/or replacement")
    if not set(ctx.tools.split(",")) <= {"nodeboot", "seed"}:
        p.error("--tools: nodeboot and/or seed")
    if os.geteuid() != 0:
        sys.exit("bench/attach.py needs root (loop devices, mounts)")
    # SIGTERM unwinds like Ctrl-C, so every mount, loop device and server is cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ctx.binary = nodeboot_binary()
    ctx.aws_cli = aws_cli()
    ctx.config = node_json(ctx.binary)
    log(f"nodeboot: {ctx.binary}\naws CLI: {ctx.aws_cli}")
    rows = []
    for scenario in ctx.scenarios.split(","):
        for delay in map(int, ctx.delays.split(",")):
            for tool in ctx.tools.split(","):
                runs = []
                for i in range(ctx.runs):
                    log(f"{scenario}, delay {delay} ms, {tool}: run {i + 1}/{ctx.runs}")
                    runs.append(one_run(ctx, scenario, delay, tool))
                rows.append(
                    {
                        "scenario": f"{scenario}, D={delay} ms",
                        "tool": tool,
                        "delay_ms": delay,
                        **summarise(runs),
                    }
                )
    print_table(rows, ctx)


if __name__ == "__main__":
    main()
