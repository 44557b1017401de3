"""The lab's side of the emulated EC2: what Terraform creates (the VPC, each
member's tagged volume and ENI) and what the autoscaling group does (launch,
stop, terminate), through boto3 against tests/bed/aws_server.py."""

import ipaddress
import json
import time
import urllib.request

import boto3
from botocore.config import Config

from lab_proc import LabError

REGION = "eu-west-1"
IMAGE = "ami-12c6146b"  # the bed accepts any image id
# The tag scheme of src/shared/cloud/tags.rs, as terraform/modules/etcd writes it.
TAG_ENVIRONMENT = "nodeboot.io/environment"
TAG_ROLE = "nodeboot.io/role"
TAG_MEMBER = "nodeboot.io/member"
# The S3 and KMS operations a node makes; the emulator counts calls by action
# name across services, so every other action counted is taken as EC2's.
S3_KMS_ACTIONS = {
    "GetObject", "HeadObject", "ListObjectsV2", "ListObjects", "PutObject", "DeleteObject",
    "ListObjectVersions", "GetBucketVersioning", "HeadBucket",
    "Decrypt", "GenerateDataKey", "Encrypt", "DescribeKey",
}  # fmt: skip


def client(url):
    return boto3.client(
        "ec2",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "total_max_attempts": 5}),
    )


def calls(url):
    """API calls per action since the last reset (GET /_bed/calls)."""
    with urllib.request.urlopen(f"{url}/_bed/calls", timeout=10) as r:
        return json.load(r)


def reset_calls(url):
    req = urllib.request.Request(f"{url}/_bed/calls/reset", data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=10):
        pass


def placement(zones, subnets, count):
    """Where member i lives (README: zone i % zones, host 10 + i / zones of
    that zone's secure subnet), as Terraform places it."""
    out = []
    for i in range(count):
        z = i % len(zones)
        net = ipaddress.ip_network(subnets[z])
        out.append(
            {
                "member": i,
                "zone": zones[z],
                "eni_ip": str(net.network_address + 10 + i // len(zones)),
            }
        )
    return out


def create_network(ec2, vpc_cidr, zones, subnets):
    vpc_id = ec2.create_vpc(CidrBlock=vpc_cidr)["Vpc"]["VpcId"]
    made = {}
    for zone, cidr in zip(zones, subnets, strict=True):
        s = ec2.create_subnet(VpcId=vpc_id, CidrBlock=cidr, AvailabilityZone=zone)["Subnet"]
        made[zone] = {"id": s["SubnetId"], "cidr": cidr}
    return vpc_id, made


def _tags(resource, environment, member):
    pairs = {
        TAG_ENVIRONMENT: environment,
        TAG_ROLE: "etcd",
        TAG_MEMBER: str(member),
        "Name": f"{environment}-etcd-{member}",
    }
    return [{"ResourceType": resource, "Tags": [{"Key": k, "Value": v} for k, v in pairs.items()]}]


def create_member(ec2, environment, member, zone, subnet_id, eni_ip, size_gib):
    volume = ec2.create_volume(
        AvailabilityZone=zone, Size=size_gib, TagSpecifications=_tags("volume", environment, member)
    )
    eni = ec2.create_network_interface(
        SubnetId=subnet_id,
        PrivateIpAddress=eni_ip,
        TagSpecifications=_tags("network-interface", environment, member),
    )["NetworkInterface"]
    return {
        "volume_id": volume["VolumeId"],
        "eni_id": eni["NetworkInterfaceId"],
        "eni_mac": eni["MacAddress"].lower(),
    }


def launch(ec2, subnet_id, instance_type):
    i = ec2.run_instances(
        ImageId=IMAGE, MinCount=1, MaxCount=1, SubnetId=subnet_id, InstanceType=instance_type
    )["Instances"][0]
    primary = next(n for n in i["NetworkInterfaces"] if n["Attachment"]["DeviceIndex"] == 0)
    return {
        "instance_id": i["InstanceId"],
        "primary_ip": i["PrivateIpAddress"],
        "mac": primary["MacAddress"].lower(),
        "primary_eni_id": primary["NetworkInterfaceId"],
        "vpc_id": i.get("VpcId", ""),
    }


def state(ec2, instance_id):
    r = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return r["State"]["Name"]


def wait_state(ec2, instance_id, wanted, timeout=60):
    deadline = time.monotonic() + timeout
    while (now := state(ec2, instance_id)) not in wanted:
        if time.monotonic() > deadline:
            raise LabError(
                f"instance {instance_id} is {now}, not {'/'.join(wanted)}, after {timeout}s"
            )
        time.sleep(0.1)
    return now


def attached(ec2, instance_id):
    """What EC2 has attached to the instance (attachment state `attached`):
    ([volume ids], [{eni_id, mac, ip, device_index, subnet_id}])."""
    f = [{"Name": "attachment.instance-id", "Values": [instance_id]}]
    volumes = [
        v["VolumeId"]
        for v in ec2.describe_volumes(Filters=f)["Volumes"]
        for a in v["Attachments"]
        if a["InstanceId"] == instance_id and a["State"] == "attached"
    ]
    enis = [
        {
            "eni_id": e["NetworkInterfaceId"],
            "mac": e["MacAddress"].lower(),
            "ip": e["PrivateIpAddress"],
            "device_index": e["Attachment"]["DeviceIndex"],
            "subnet_id": e["SubnetId"],
            "vpc_id": e.get("VpcId", ""),
        }
        for e in ec2.describe_network_interfaces(Filters=f)["NetworkInterfaces"]
        if e.get("Attachment", {}).get("InstanceId") == instance_id
        and e["Attachment"].get("Status") == "attached"
    ]
    return volumes, enis
