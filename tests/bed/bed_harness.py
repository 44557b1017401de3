"""Helpers for tests that use the bed: start a server, build SDK clients,
make EC2 resources, write an IMDS identity.

Not named conftest.py so that `from bed_harness import ...` is unambiguous
when other test folders have their own conftest.py.
"""

import json
import queue
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import boto3
from botocore.config import Config

BED = Path(__file__).resolve().parent
REGION = "eu-west-1"


class BedProcess:
    """One bed server, started as a harness would: stdin and stdout are pipes."""

    def __init__(self, script, *args, prefix=()):
        """prefix: a command to run it under, e.g. ("ip", "netns", "exec", "ns1")."""
        self.log = tempfile.TemporaryFile()  # a file: a full pipe would block the server
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, str(BED / script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        self.url = self._await_ready(timeout=30)

    def _await_ready(self, timeout):
        lines = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=timeout).decode()
        except queue.Empty:
            line = ""
        if not line.startswith("READY "):
            self.proc.kill()
            raise RuntimeError(f"no READY line (got {line!r}); stderr:\n{self.stderr()}")
        return line.split(" ", 1)[1].strip()

    def stderr(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self, timeout=10):
        """Close stdin (the harness-died path) and return the exit code."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def require_root(what):
    """Root-only tests fail without root, saying why, unless the user opts
    out with NODEBOOT_SKIP_ROOT_TESTS=1; then they are skipped, visibly
    (pytest prints the reason with -rs)."""
    import os

    import pytest

    if os.geteuid() == 0:
        return
    if os.environ.get("NODEBOOT_SKIP_ROOT_TESTS") == "1":
        pytest.skip(f"{what} needs root (skipped knowingly: NODEBOOT_SKIP_ROOT_TESTS=1)")
    pytest.fail(
        f"{what} needs root: run the suite as root, "
        "or set NODEBOOT_SKIP_ROOT_TESTS=1 to skip it knowingly",
        pytrace=False,
    )


def client(url, service, attempts=1):
    """A boto3 client as nodeboot's SDK would be set up: endpoint URL, dummy keys.

    attempts=1 means no retry: most tests want EC2's answer, not a retry.
    """
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(
            # botocore's "max_attempts" counts retries; "total_max_attempts" attempts.
            retries={"mode": "standard", "total_max_attempts": attempts},
            s3={"addressing_style": "path"},
        ),
    )


def subnet_in(ec2, zone):
    """moto's default VPC has one subnet per AZ of the region."""
    subnets = ec2.describe_subnets(Filters=[{"Name": "availability-zone", "Values": [zone]}])
    return subnets["Subnets"][0]["SubnetId"]


def launch(ec2, zone, count=1):
    """Instance ids of `count` new instances in `zone`."""
    reservation = ec2.run_instances(
        ImageId="ami-12345678",
        InstanceType="t3.medium",
        MinCount=count,
        MaxCount=count,
        SubnetId=subnet_in(ec2, zone),
    )
    return [i["InstanceId"] for i in reservation["Instances"]]


def volume_in(ec2, zone):
    return ec2.create_volume(Size=1, AvailabilityZone=zone, VolumeType="gp3")["VolumeId"]


def describe_volume(ec2, volume_id):
    return ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]


def make_bucket(s3, name):
    # Outside us-east-1, S3 wants the region named again in the body.
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})


def eni_in(ec2, zone):
    eni = ec2.create_network_interface(SubnetId=subnet_in(ec2, zone))
    return eni["NetworkInterface"]["NetworkInterfaceId"]


def describe_eni(ec2, eni_id):
    return ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"][0]


# --- IMDS ----------------------------------------------------------------------

PRIMARY_MAC = "0a:1b:2c:3d:4e:5f"


def node_identity(**overrides):
    identity = {
        "instance_id": "i-0123456789abcdef0",
        "availability_zone": "eu-west-1b",
        "region": "eu-west-1",
        "account_id": "111122223333",
        "image_id": "ami-0fedcba9876543210",
        "instance_type": "m6i.large",
        "private_ip": "10.0.1.17",
        "interfaces": [
            {
                "mac": PRIMARY_MAC,
                "device_number": 0,
                "interface_id": "eni-0aaaaaaaaaaaaaaaa",
                "local_ipv4s": ["10.0.1.17"],
                "subnet_id": "subnet-0bbbbbbbbbbbbbbbb",
                "subnet_ipv4_cidr_block": "10.0.1.0/24",
                "vpc_id": "vpc-0ccccccccccccccccc",
            }
        ],
    }
    identity.update(overrides)
    return identity


def write_identity(path, identity):
    """Atomic, as a test must write it: the server may read at any moment."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(identity))
    tmp.replace(path)
