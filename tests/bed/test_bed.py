"""Tests of the test bed itself: each EC2 rule and IMDS behaviour nodeboot
relies on, checked through the real SDK (boto3) against a fresh server.

Run: python3 -m pytest -q tests/bed -n auto
"""

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from botocore.exceptions import ClientError
from botocore.utils import InstanceMetadataFetcher, InstanceMetadataRegionFetcher

from bed_harness import (
    BED,
    PRIMARY_MAC,
    client,
    describe_eni,
    describe_volume,
    eni_in,
    launch,
    make_bucket,
    node_identity,
    require_root,
    subnet_in,
    volume_in,
    write_identity,
)

ZONE_A, ZONE_B = "eu-west-1a", "eu-west-1b"


def aws_error(call, *args, **kwargs):
    """(code, message, HTTP status) of the ClientError `call` must raise."""
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    response = info.value.response
    return (
        response["Error"]["Code"],
        response["Error"]["Message"],
        response["ResponseMetadata"]["HTTPStatusCode"],
    )


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(0.05)


def bed_get(server, path):
    return requests.get(server.url + path, timeout=5).json()


def bed_post(server, path, body=None):
    return requests.post(server.url + path, json=body or {}, timeout=5)


def block_devices(ec2, instance_id):
    reservation = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]
    instance = reservation["Instances"][0]
    return {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]}


def instance_state(ec2, instance_id):
    reservation = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]
    return reservation["Instances"][0]["State"]["Name"]


# --- EBS volumes -----------------------------------------------------------------


def test_racing_attach_volume_has_exactly_one_winner(aws, ec2):
    instances = launch(ec2, ZONE_A, count=5)
    volume = volume_in(ec2, ZONE_A)
    # One client per racer, built here: boto3 does not build clients thread-safely.
    clients = [client(aws.url, "ec2") for _ in instances]
    start = threading.Barrier(len(instances))

    def attempt(racer):
        node, racer_client = racer
        start.wait()
        try:
            racer_client.attach_volume(VolumeId=volume, InstanceId=node, Device="/dev/xvdf")
            return node, None
        except ClientError as err:
            return node, err.response["Error"]["Code"]

    with ThreadPoolExecutor(len(instances)) as pool:
        results = list(pool.map(attempt, zip(instances, clients, strict=True)))

    winners = [node for node, error in results if error is None]
    assert len(winners) == 1, results
    assert sorted(error for _, error in results if error) == ["VolumeInUse"] * 4
    attachments = describe_volume(ec2, volume)["Attachments"]
    assert [a["InstanceId"] for a in attachments] == winners
    holders = [node for node in instances if volume in block_devices(ec2, node).values()]
    assert holders == winners


def test_attach_of_in_use_volume_is_refused_with_volume_in_use(ec2):
    first, second = launch(ec2, ZONE_A, count=2)
    volume = volume_in(ec2, ZONE_A)
    ec2.attach_volume(VolumeId=volume, InstanceId=first, Device="/dev/xvdf")

    code, message, status = aws_error(
        ec2.attach_volume, VolumeId=volume, InstanceId=second, Device="/dev/xvdf"
    )

    assert (code, status) == ("VolumeInUse", 400)
    assert message == f"{volume} is already attached to an instance"
    assert describe_volume(ec2, volume)["Attachments"][0]["InstanceId"] == first


def test_attach_across_zones_is_refused_with_zone_mismatch(ec2):
    (node,) = launch(ec2, ZONE_A)
    volume = volume_in(ec2, ZONE_B)

    code, message, status = aws_error(
        ec2.attach_volume, VolumeId=volume, InstanceId=node, Device="/dev/xvdf"
    )

    assert (code, status) == ("InvalidVolume.ZoneMismatch", 400)
    assert message == (
        f"The volume '{volume}' is not in the same availability zone as instance '{node}'"
    )
    assert describe_volume(ec2, volume)["State"] == "available"


def test_attach_on_a_used_device_name_is_refused(ec2):
    (node,) = launch(ec2, ZONE_A)
    first, second = volume_in(ec2, ZONE_A), volume_in(ec2, ZONE_A)
    ec2.attach_volume(VolumeId=first, InstanceId=node, Device="/dev/xvdf")

    code, message, _ = aws_error(
        ec2.attach_volume, VolumeId=second, InstanceId=node, Device="/dev/xvdf"
    )

    assert code == "InvalidParameterValue"
    assert "Attachment point /dev/xvdf is already in use" in message
    assert describe_volume(ec2, second)["State"] == "available"
    # moto's launch attaches the root volume on /dev/sda1: also taken.
    code, _, _ = aws_error(ec2.attach_volume, VolumeId=second, InstanceId=node, Device="/dev/sda1")
    assert code == "InvalidParameterValue"


def test_detach_without_instance_id_finds_the_attachment(ec2):
    (node,) = launch(ec2, ZONE_A)
    volume = volume_in(ec2, ZONE_A)
    ec2.attach_volume(VolumeId=volume, InstanceId=node, Device="/dev/xvdf")

    answer = ec2.detach_volume(VolumeId=volume)

    assert (answer["State"], answer["InstanceId"], answer["Device"]) == (
        "detaching",
        node,
        "/dev/xvdf",
    )
    assert describe_volume(ec2, volume)["State"] == "available"
    assert "/dev/xvdf" not in block_devices(ec2, node)


def test_detach_of_available_volume_is_incorrect_state(ec2):
    volume = volume_in(ec2, ZONE_A)

    code, message, status = aws_error(ec2.detach_volume, VolumeId=volume)

    assert (code, status) == ("IncorrectState", 400)
    assert message == f"Volume '{volume}'is in the 'available' state."


def test_detach_naming_another_instance_is_refused(ec2):
    holder, other = launch(ec2, ZONE_A, count=2)
    volume = volume_in(ec2, ZONE_A)
    ec2.attach_volume(VolumeId=volume, InstanceId=holder, Device="/dev/xvdf")

    code, _, _ = aws_error(ec2.detach_volume, VolumeId=volume, InstanceId=other)

    assert code == "InvalidAttachment.NotFound"
    assert describe_volume(ec2, volume)["Attachments"][0]["InstanceId"] == holder


def test_force_detach_frees_the_volume_for_another_node(ec2):
    dead, replacement = launch(ec2, ZONE_A, count=2)
    volume = volume_in(ec2, ZONE_A)
    ec2.attach_volume(VolumeId=volume, InstanceId=dead, Device="/dev/xvdf")

    ec2.detach_volume(VolumeId=volume, InstanceId=dead, Force=True)
    ec2.attach_volume(VolumeId=volume, InstanceId=replacement, Device="/dev/xvdf")

    assert describe_volume(ec2, volume)["Attachments"][0]["InstanceId"] == replacement


def test_detaches_are_recorded_with_the_holders_state(aws, ec2):
    holder, other = launch(ec2, ZONE_A, count=2)
    volume = volume_in(ec2, ZONE_A)
    eni = eni_in(ec2, ZONE_A)
    ec2.attach_volume(VolumeId=volume, InstanceId=holder, Device="/dev/xvdf")
    attachment = ec2.attach_network_interface(NetworkInterfaceId=eni, InstanceId=holder, DeviceIndex=1)
    ec2.detach_volume(VolumeId=volume)
    ec2.attach_volume(VolumeId=volume, InstanceId=other, Device="/dev/xvdf")
    ec2.stop_instances(InstanceIds=[other], Force=True)
    ec2.detach_volume(VolumeId=volume, Force=True)
    ec2.detach_network_interface(AttachmentId=attachment["AttachmentId"])

    assert bed_get(aws, "/_bed/detaches") == [
        {"resource": volume, "instance": holder, "instance_state": "running", "force": False},
        {"resource": volume, "instance": other, "instance_state": "stopped", "force": True},
        {"resource": eni, "instance": holder, "instance_state": "running", "force": False},
    ]


def test_attaching_and_detaching_are_observable_with_a_delay(start_aws):
    aws = start_aws("--attach-delay-ms", "2000")
    ec2 = client(aws.url, "ec2")
    node, rival = launch(ec2, ZONE_A, count=2)
    volume = volume_in(ec2, ZONE_A)

    assert (
        ec2.attach_volume(VolumeId=volume, InstanceId=node, Device="/dev/xvdf")["State"]
        == "attaching"
    )
    seen = describe_volume(ec2, volume)
    assert seen["State"] == "in-use"
    assert seen["Attachments"][0]["State"] == "attaching"
    code, _, _ = aws_error(ec2.attach_volume, VolumeId=volume, InstanceId=rival, Device="/dev/xvdf")
    assert code == "VolumeInUse"  # attaching counts as in use
    wait_until(lambda: describe_volume(ec2, volume)["Attachments"][0]["State"] == "attached")

    ec2.detach_volume(VolumeId=volume)
    seen = describe_volume(ec2, volume)
    assert seen["State"] == "in-use"
    assert seen["Attachments"][0]["State"] == "detaching"
    code, _, _ = aws_error(ec2.attach_volume, VolumeId=volume, InstanceId=rival, Device="/dev/xvdf")
    assert code == "VolumeInUse"  # detaching still counts as in use
    wait_until(lambda: describe_volume(ec2, volume)["State"] == "available")
    assert describe_volume(ec2, volume)["Attachments"] == []


def test_attach_delay_can_be_changed_at_runtime(aws, ec2):
    (node,) = launch(ec2, ZONE_A)
    volume = volume_in(ec2, ZONE_A)

    config = bed_post(aws, "/_bed/config", {"attach_delay_ms": 2000}).json()
    ec2.attach_volume(VolumeId=volume, InstanceId=node, Device="/dev/xvdf")

    assert config == {"attach_delay_ms": 2000, "shutdown_delay_ms": 0, "max_page": 0}
    assert describe_volume(ec2, volume)["Attachments"][0]["State"] == "attaching"


# --- network interfaces -------------------------------------------------------------


def test_attach_of_in_use_eni_is_refused(ec2):
    first, second = launch(ec2, ZONE_A, count=2)
    eni = eni_in(ec2, ZONE_A)
    ec2.attach_network_interface(NetworkInterfaceId=eni, InstanceId=first, DeviceIndex=1)

    code, message, status = aws_error(
        ec2.attach_network_interface, NetworkInterfaceId=eni, InstanceId=second, DeviceIndex=1
    )

    assert (code, message, status) == ("InvalidParameterValue", f"Interface: [{eni}] in use.", 400)
    assert describe_eni(ec2, eni)["Attachment"]["InstanceId"] == first


def test_racing_attach_eni_has_exactly_one_winner(aws, ec2):
    instances = launch(ec2, ZONE_A, count=4)
    eni = eni_in(ec2, ZONE_A)
    clients = [client(aws.url, "ec2") for _ in instances]
    start = threading.Barrier(len(instances))

    def attempt(racer):
        node, racer_client = racer
        start.wait()
        try:
            racer_client.attach_network_interface(
                NetworkInterfaceId=eni, InstanceId=node, DeviceIndex=1
            )
            return True
        except ClientError:
            return False

    with ThreadPoolExecutor(len(instances)) as pool:
        won = list(pool.map(attempt, zip(instances, clients, strict=True)))
    assert sorted(won) == [False] * 3 + [True]


def test_attach_eni_across_zones_is_refused(ec2):
    (node,) = launch(ec2, ZONE_A)
    eni = eni_in(ec2, ZONE_B)

    code, message, status = aws_error(
        ec2.attach_network_interface, NetworkInterfaceId=eni, InstanceId=node, DeviceIndex=1
    )

    assert (code, status) == ("InvalidParameterCombination", 400)
    assert "not in the same availability zone" in message
    assert describe_eni(ec2, eni)["Status"] == "available"


def test_attach_eni_on_a_taken_device_index_is_refused(ec2):
    (node,) = launch(ec2, ZONE_A)
    first, second = eni_in(ec2, ZONE_A), eni_in(ec2, ZONE_A)
    ec2.attach_network_interface(NetworkInterfaceId=first, InstanceId=node, DeviceIndex=1)

    code, message, _ = aws_error(
        ec2.attach_network_interface, NetworkInterfaceId=second, InstanceId=node, DeviceIndex=1
    )

    assert code == "InvalidParameterValue"
    assert message == f"Instance '{node}' already has an interface attached at device index '1'."
    code, _, _ = aws_error(  # index 0 holds the primary interface
        ec2.attach_network_interface, NetworkInterfaceId=second, InstanceId=node, DeviceIndex=0
    )
    assert code == "InvalidParameterValue"


def test_primary_eni_cannot_be_detached(ec2):
    (node,) = launch(ec2, ZONE_A)
    reservation = ec2.describe_instances(InstanceIds=[node])["Reservations"][0]
    primary = reservation["Instances"][0]["NetworkInterfaces"][0]["Attachment"]

    code, _, _ = aws_error(ec2.detach_network_interface, AttachmentId=primary["AttachmentId"])

    assert code == "OperationNotPermitted"


def test_eni_attaching_and_detaching_are_observable_with_a_delay(start_aws):
    aws = start_aws("--attach-delay-ms", "2000")
    ec2 = client(aws.url, "ec2")
    (node,) = launch(ec2, ZONE_A)
    eni = eni_in(ec2, ZONE_A)

    attachment_id = ec2.attach_network_interface(
        NetworkInterfaceId=eni, InstanceId=node, DeviceIndex=1
    )["AttachmentId"]
    seen = describe_eni(ec2, eni)
    assert (seen["Status"], seen["Attachment"]["Status"]) == ("in-use", "attaching")
    wait_until(lambda: describe_eni(ec2, eni)["Attachment"]["Status"] == "attached")

    ec2.detach_network_interface(AttachmentId=attachment_id)
    assert describe_eni(ec2, eni)["Attachment"]["Status"] == "detaching"
    wait_until(lambda: describe_eni(ec2, eni)["Status"] == "available")
    assert "Attachment" not in describe_eni(ec2, eni)


def test_filters_find_free_tagged_volumes_and_enis_in_a_zone(ec2):
    (node,) = launch(ec2, ZONE_A)
    tag = {"ResourceType": "volume", "Tags": [{"Key": "nodeboot/role", "Value": "etcd"}]}
    free, taken = (
        ec2.create_volume(Size=1, AvailabilityZone=ZONE_A, TagSpecifications=[tag])["VolumeId"]
        for _ in range(2)
    )
    ec2.create_volume(Size=1, AvailabilityZone=ZONE_B, TagSpecifications=[tag])
    ec2.attach_volume(VolumeId=taken, InstanceId=node, Device="/dev/xvdf")
    eni_tag = dict(tag, ResourceType="network-interface")
    eni = ec2.create_network_interface(
        SubnetId=subnet_in(ec2, ZONE_A), TagSpecifications=[eni_tag]
    )["NetworkInterface"]["NetworkInterfaceId"]

    def filters(**pairs):
        return [{"Name": name, "Values": [value]} for name, value in pairs.items()]

    in_zone = {"availability-zone": ZONE_A, "tag:nodeboot/role": "etcd"}
    volumes = ec2.describe_volumes(Filters=filters(status="available", **in_zone))
    held = ec2.describe_volumes(Filters=filters(**{"attachment.instance-id": node}))
    enis = ec2.describe_network_interfaces(Filters=filters(status="available", **in_zone))
    ec2.attach_network_interface(NetworkInterfaceId=eni, InstanceId=node, DeviceIndex=1)
    attached = ec2.describe_network_interfaces(
        Filters=filters(**{"attachment.status": "attached", "tag:nodeboot/role": "etcd"})
    )

    assert [v["VolumeId"] for v in volumes["Volumes"]] == [free]
    assert taken in [v["VolumeId"] for v in held["Volumes"]]
    assert [e["NetworkInterfaceId"] for e in enis["NetworkInterfaces"]] == [eni]
    assert [e["NetworkInterfaceId"] for e in attached["NetworkInterfaces"]] == [eni]


# --- paging ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "operation,key,item_id",
    [
        ("describe_volumes", "Volumes", "VolumeId"),
        ("describe_network_interfaces", "NetworkInterfaces", "NetworkInterfaceId"),
        ("describe_instances", "Reservations", "ReservationId"),
    ],
)
def test_describe_calls_page_by_max_results_and_the_bed_cap(aws, ec2, operation, key, item_id):
    for _ in range(6):
        launch(ec2, ZONE_A)  # a reservation, a root volume, a primary ENI each
    everything = [i[item_id] for i in getattr(ec2, operation)()[key]]

    def pages(**kwargs):
        out, token = [], None
        while True:
            page = getattr(ec2, operation)(**kwargs, **({"NextToken": token} if token else {}))
            out.append([i[item_id] for i in page[key]])
            token = page.get("NextToken")
            if not token:
                return out

    by_max_results = pages(MaxResults=5)
    bed_post(aws, "/_bed/config", {"max_page": 2})
    capped = pages()

    assert len(everything) >= 6
    assert len(by_max_results[0]) == 5, by_max_results
    assert sorted(sum(by_max_results, [])) == sorted(everything)
    assert [len(p) for p in capped][:2] == [2, 2], capped
    assert sorted(sum(capped, [])) == sorted(everything), "every item once, none lost"


# --- instances that stop or die ---------------------------------------------------


def test_stopped_instance_keeps_its_volume(ec2):
    (node,) = launch(ec2, ZONE_A)
    volume = volume_in(ec2, ZONE_A)
    ec2.attach_volume(VolumeId=volume, InstanceId=node, Device="/dev/xvdf")

    ec2.stop_instances(InstanceIds=[node])

    assert instance_state(ec2, node) == "stopped"
    seen = describe_volume(ec2, volume)
    assert seen["State"] == "in-use"
    assert seen["Attachments"][0]["InstanceId"] == node


def test_shutting_down_instance_keeps_its_volume_until_terminated(start_aws):
    aws = start_aws("--shutdown-delay-ms", "2000")
    ec2 = client(aws.url, "ec2")
    dying, replacement = launch(ec2, ZONE_A, count=2)
    volume = volume_in(ec2, ZONE_A)
    ec2.attach_volume(VolumeId=volume, InstanceId=dying, Device="/dev/xvdf")

    ec2.terminate_instances(InstanceIds=[dying])

    assert instance_state(ec2, dying) == "shutting-down"
    seen = describe_volume(ec2, volume)
    assert (seen["State"], seen["Attachments"][0]["InstanceId"]) == ("in-use", dying)
    code, _, _ = aws_error(
        ec2.attach_volume, VolumeId=volume, InstanceId=replacement, Device="/dev/xvdf"
    )
    assert code == "VolumeInUse"
    # Once terminated, EC2 detaches (and keeps) a DeleteOnTermination=false volume.
    wait_until(lambda: instance_state(ec2, dying) == "terminated")
    assert describe_volume(ec2, volume)["State"] == "available"


def test_terminated_instance_releases_volume_and_secondary_eni(ec2):
    (node,) = launch(ec2, ZONE_A)
    volume, eni = volume_in(ec2, ZONE_A), eni_in(ec2, ZONE_A)
    ec2.attach_volume(VolumeId=volume, InstanceId=node, Device="/dev/xvdf")
    ec2.attach_network_interface(NetworkInterfaceId=eni, InstanceId=node, DeviceIndex=1)

    ec2.terminate_instances(InstanceIds=[node])

    assert instance_state(ec2, node) == "terminated"
    assert describe_volume(ec2, volume)["State"] == "available"
    assert describe_eni(ec2, eni)["Status"] == "available"


# --- /_bed/ control ---------------------------------------------------------------------


def test_throttle_answers_request_limit_exceeded_in_ec2_format(aws, ec2):
    bed_post(aws, "/_bed/throttle", {"action": "DescribeVolumes", "count": 2})
    signed_by_ec2 = (
        "AWS4-HMAC-SHA256 Credential=testing/20250101/eu-west-1/ec2/aws4_request, "
        "SignedHeaders=host, Signature=0"
    )

    raw = requests.post(
        aws.url + "/",
        data={"Action": "DescribeVolumes", "Version": "2016-11-15"},
        headers={"Authorization": signed_by_ec2},
        timeout=5,
    )
    code, message, status = aws_error(ec2.describe_volumes)

    assert raw.status_code == 503
    assert "<Response><Errors><Error><Code>RequestLimitExceeded</Code>" in raw.text
    assert (code, message, status) == ("RequestLimitExceeded", "Request limit exceeded.", 503)
    assert ec2.describe_volumes()["Volumes"] == []  # the third call goes through


def test_sdk_retries_through_throttling(aws):
    patient = client(aws.url, "ec2", attempts=5)
    bed_post(aws, "/_bed/throttle", {"action": "DescribeInstances", "count": 2})

    answer = patient.describe_instances()

    assert answer["ResponseMetadata"]["RetryAttempts"] == 2
    assert bed_get(aws, "/_bed/calls")["DescribeInstances"] == 3


def test_throttle_speaks_each_services_dialect(aws):
    s3, kms = client(aws.url, "s3"), client(aws.url, "kms")
    bed_post(aws, "/_bed/throttle", {"action": "ListBuckets", "count": 1})
    bed_post(aws, "/_bed/throttle", {"action": "ListKeys", "count": 1})

    assert aws_error(s3.list_buckets)[0::2] == ("SlowDown", 503)
    assert aws_error(kms.list_keys)[0::2] == ("ThrottlingException", 400)


def test_no_rate_quota_is_set_unless_asked(aws):
    kms = client(aws.url, "kms")
    key = kms.create_key()["KeyMetadata"]["KeyId"]

    for _ in range(20):
        kms.encrypt(KeyId=key, Plaintext=b"x")

    assert bed_get(aws, "/_bed/rates") == {"buckets": [], "throttled": {}}


def test_a_rate_quota_throttles_beyond_its_burst_in_the_services_dialect(start_aws, tmp_path):
    # One token every 1,000 s: nothing refills while the test runs.
    quotas = {"buckets": [{"name": "kms", "actions": ["Encrypt"], "rate": 0.001, "burst": 2}]}
    (tmp_path / "rates.json").write_text(json.dumps(quotas))
    aws = start_aws("--rates", str(tmp_path / "rates.json"))
    kms = client(aws.url, "kms")
    key = kms.create_key()["KeyMetadata"]["KeyId"]

    kms.encrypt(KeyId=key, Plaintext=b"x")
    kms.encrypt(KeyId=key, Plaintext=b"x")
    throttled = aws_error(kms.encrypt, KeyId=key, Plaintext=b"x")
    kms.describe_key(KeyId=key)  # another action: no quota

    assert throttled[0::2] == ("ThrottlingException", 400)
    assert bed_get(aws, "/_bed/rates")["throttled"] == {"Encrypt": 1}
    assert bed_get(aws, "/_bed/calls")["Encrypt"] == 3
    bed_post(aws, "/_bed/rates", {"buckets": []})
    kms.encrypt(KeyId=key, Plaintext=b"x")  # turned off


def test_an_s3_rate_quota_counts_each_prefix_apart(aws):
    s3 = client(aws.url, "s3")
    make_bucket(s3, "prefixes")
    for key in ("a/1", "a/2", "b/1"):
        s3.put_object(Bucket="prefixes", Key=key, Body=b"x")
    gets = ["GetObject", "HeadObject", "ListObjectsV2"]
    quota = {"name": "s3-get", "actions": gets, "rate": 0.001, "burst": 1, "per_prefix": True}
    bed_post(aws, "/_bed/rates", {"buckets": [quota]})

    s3.get_object(Bucket="prefixes", Key="a/1")
    second = aws_error(s3.get_object, Bucket="prefixes", Key="a/2")
    listed = aws_error(s3.list_objects_v2, Bucket="prefixes", Prefix="a/")
    s3.head_object(Bucket="prefixes", Key="b/1")
    s3.list_objects_v2(Bucket="prefixes", Prefix="c/")

    assert second[0::2] == ("SlowDown", 503)
    assert listed[0::2] == ("SlowDown", 503)
    assert bed_get(aws, "/_bed/rates")["throttled"] == {"GetObject": 1, "ListObjectsV2": 1}


def test_calls_and_throttles_are_counted_per_access_key(aws):
    first, second = client(aws.url, "kms"), client(aws.url, "kms")
    second._request_signer._credentials.access_key = "ASIASECOND"
    bed_post(aws, "/_bed/throttle", {"action": "ListKeys", "count": 1})

    aws_error(first.list_keys)
    first.list_keys()
    second.list_aliases()

    assert bed_get(aws, "/_bed/callers") == {
        "testing": {"calls": {"ListKeys": 2}, "throttled": {"ListKeys": 1}},
        "ASIASECOND": {"calls": {"ListAliases": 1}, "throttled": {}},
    }


def test_rate_quotas_refill_at_their_rate():
    from rates import Rates

    now = [100.0]
    rates = Rates(clock=lambda: now[0])
    rates.configure({"buckets": [{"name": "kms", "actions": ["Decrypt"], "rate": 2, "burst": 3}]})
    decrypt = lambda: rates.take("Decrypt", {})  # noqa: E731

    assert [decrypt() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one token back
    assert [decrypt(), decrypt()] == [True, False]
    now[0] += 60  # full again, never above the burst
    assert [decrypt() for _ in range(4)] == [True, True, True, False]
    assert rates.take("Encrypt", {}) is True
    assert rates.describe()["throttled"] == {"Decrypt": 3}


@pytest.mark.parametrize(
    "body",
    [
        {"buckets": [{"name": "x", "actions": [], "rate": 1}]},
        {"buckets": [{"name": "x", "actions": ["Decrypt"], "rate": 0}]},
        {
            "buckets": [
                {"name": "x", "actions": ["A"], "rate": 1},
                {"name": "x", "actions": ["B"], "rate": 1},
            ]
        },
        {"buckets": [{"actions": ["Decrypt"], "rate": 1}]},
    ],
)
def test_bad_rate_quotas_are_refused(aws, body):
    assert bed_post(aws, "/_bed/rates", body).status_code == 400


def test_throttle_can_inject_any_error(aws, ec2):
    bed_post(
        aws,
        "/_bed/throttle",
        {"action": "DescribeVolumes", "count": 1, "code": "InternalError", "status": 500},
    )

    code, _, status = aws_error(ec2.describe_volumes)

    assert (code, status) == ("InternalError", 500)


def test_calls_are_counted_by_action_and_reset(aws, ec2):
    s3, kms = client(aws.url, "s3"), client(aws.url, "kms")
    ec2.describe_volumes()
    ec2.describe_volumes()
    volume_in(ec2, ZONE_A)
    make_bucket(s3, "calls")
    s3.put_object(Bucket="calls", Key="a", Body=b"x")
    s3.get_object(Bucket="calls", Key="a")
    kms.create_key()

    calls = bed_get(aws, "/_bed/calls")
    assert bed_post(aws, "/_bed/calls/reset").json() == {}

    assert calls == {
        "DescribeVolumes": 2,
        "CreateVolume": 1,
        "CreateBucket": 1,
        "PutObject": 1,
        "GetObject": 1,
        "CreateKey": 1,
    }
    assert bed_get(aws, "/_bed/calls") == {}


def test_answers_are_counted_by_action_and_status_and_reset(aws):
    s3 = client(aws.url, "s3")
    make_bucket(s3, "answers")
    etag = s3.put_object(Bucket="answers", Key="a", Body=b"x")["ETag"]
    s3.get_object(Bucket="answers", Key="a")
    with pytest.raises(ClientError):
        s3.get_object(Bucket="answers", Key="a", IfNoneMatch=etag)
    with pytest.raises(ClientError):
        s3.get_object(Bucket="answers", Key="missing")
    bed_post(aws, "/_bed/throttle", {"action": "GetObject", "count": 1})
    with pytest.raises(ClientError):
        s3.get_object(Bucket="answers", Key="a")

    answers = bed_get(aws, "/_bed/answers")
    assert bed_post(aws, "/_bed/calls/reset").json() == {}

    assert answers == {
        "CreateBucket": {"200": 1},
        "PutObject": {"200": 1},
        "GetObject": {"200": 1, "304": 1, "404": 1, "503": 1},
    }
    assert bed_get(aws, "/_bed/answers") == {}


def test_bad_control_requests_are_refused(aws):
    assert bed_post(aws, "/_bed/throttle", {"count": 1}).status_code == 400
    bad_status = {"action": "X", "count": 1, "status": 999}
    assert bed_post(aws, "/_bed/throttle", bad_status).status_code == 400
    assert bed_post(aws, "/_bed/config", {"attach_delay_ms": -1}).status_code == 400
    assert requests.get(aws.url + "/_bed/nothing", timeout=5).status_code == 404


# --- the other services nodeboot uses ------------------------------------------------


def test_s3_round_trip_in_path_style(aws):
    s3 = client(aws.url, "s3")
    make_bucket(s3, "nodeboot-state")

    s3.put_object(Bucket="nodeboot-state", Key="etcd/ca.crt", Body=b"pem")

    assert s3.get_object(Bucket="nodeboot-state", Key="etcd/ca.crt")["Body"].read() == b"pem"
    listed = s3.list_objects_v2(Bucket="nodeboot-state", Prefix="etcd/")["Contents"]
    assert [o["Key"] for o in listed] == ["etcd/ca.crt"]


def test_s3_accepts_aws_chunked_upload_with_trailing_checksum(aws):
    """The body shape newer SDKs (Rust among them) send for streaming uploads."""
    s3 = client(aws.url, "s3")
    make_bucket(s3, "chunked")
    crc32 = base64.b64encode(zlib.crc32(b"hello").to_bytes(4, "big")).decode()
    body = f"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:{crc32}\r\n\r\n".encode()

    answer = requests.put(
        aws.url + "/chunked/obj?x-id=PutObject",
        data=body,
        headers={
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20250101/eu-west-1/s3/"
            "aws4_request, SignedHeaders=host, Signature=0",
            "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            "Content-Encoding": "aws-chunked",
            "x-amz-decoded-content-length": "5",
            "x-amz-trailer": "x-amz-checksum-crc32",
        },
        timeout=5,
    )

    assert answer.status_code == 200
    assert s3.get_object(Bucket="chunked", Key="obj")["Body"].read() == b"hello"


def test_a_conditional_get_answers_304_until_the_object_changes(aws):
    """S3's If-None-Match (API_GetObject): the object only if its ETag differs,
    else 304 Not Modified without a body; a missing key is 404 whatever the
    condition. moto 5.2.1 does this itself; the index of a synced prefix
    relies on it."""
    s3 = client(aws.url, "s3")
    make_bucket(s3, "conditional")
    first = s3.put_object(Bucket="conditional", Key="p/.nodeboot-index", Body=b"v1")["ETag"]

    with pytest.raises(ClientError) as unchanged:
        s3.get_object(Bucket="conditional", Key="p/.nodeboot-index", IfNoneMatch=first)
    assert unchanged.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    second = s3.put_object(Bucket="conditional", Key="p/.nodeboot-index", Body=b"v2")["ETag"]
    changed = s3.get_object(Bucket="conditional", Key="p/.nodeboot-index", IfNoneMatch=first)
    assert (changed["ETag"], changed["Body"].read()) == (second, b"v2")
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket="conditional", Key="q/.nodeboot-index", IfNoneMatch=first)
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"


def test_kms_round_trip(aws):
    kms = client(aws.url, "kms")
    key = kms.create_key()["KeyMetadata"]["KeyId"]

    sealed = kms.encrypt(KeyId=key, Plaintext=b"secret")["CiphertextBlob"]

    assert kms.decrypt(CiphertextBlob=sealed)["Plaintext"] == b"secret"


# --- process lifecycle ----------------------------------------------------------------


@pytest.mark.parametrize("script", ["aws_server.py", "imds.py"])
def test_server_exits_cleanly_on_sigterm(script, start_aws, start_imds):
    server = start_aws() if script == "aws_server.py" else start_imds()

    server.proc.send_signal(signal.SIGTERM)

    assert server.proc.wait(10) == 0
    assert server.proc.stdout.read() == b""  # READY was the only stdout line


@pytest.mark.parametrize("script", ["aws_server.py", "imds.py"])
def test_server_exits_when_stdin_closes(script, start_aws, start_imds):
    server = start_aws() if script == "aws_server.py" else start_imds()

    assert server.stop() == 0
    assert server.proc.stdout.read() == b""


def test_server_with_dev_null_stdin_keeps_running(identity_file):
    """Started from a script with `&`, stdin is /dev/null: that is no reason to stop."""
    proc = subprocess.Popen(
        [sys.executable, str(BED / "imds.py"), "--identity", str(identity_file)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout.readline().startswith(b"READY ")
        time.sleep(0.5)
        assert proc.poll() is None
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


# --- IMDS -------------------------------------------------------------------------------

TOKEN_PATH = "/latest/api/token"
TTL = "X-aws-ec2-metadata-token-ttl-seconds"


def imds_token(imds, ttl="60"):
    answer = requests.put(imds.url + TOKEN_PATH, headers={TTL: ttl}, timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.text


def imds_get(imds, path, token=None):
    token = token or imds_token(imds)
    return requests.get(imds.url + path, headers={"X-aws-ec2-metadata-token": token}, timeout=5)


def test_token_answer_echoes_the_ttl_header(imds):
    answer = requests.put(imds.url + TOKEN_PATH, headers={TTL: "300"}, timeout=5)

    assert answer.status_code == 200
    assert answer.headers[TTL] == "300"
    assert len(answer.text) >= 40


@pytest.mark.parametrize("ttl", [None, "0", "21601", "ten"])
def test_token_needs_a_ttl_between_1_and_21600(imds, ttl):
    headers = {} if ttl is None else {TTL: ttl}

    answer = requests.put(imds.url + TOKEN_PATH, headers=headers, timeout=5)

    assert answer.status_code == 400
    assert imds_token(imds, ttl="21600")


def test_token_request_through_a_proxy_is_forbidden(imds):
    answer = requests.put(
        imds.url + TOKEN_PATH, headers={TTL: "60", "X-Forwarded-For": "10.0.0.9"}, timeout=5
    )

    assert answer.status_code == 403


def test_get_without_a_valid_token_is_unauthorized(imds):
    assert requests.get(imds.url + "/latest/meta-data/instance-id", timeout=5).status_code == 401
    assert imds_get(imds, "/latest/meta-data/instance-id", token="forged").status_code == 401


def test_token_expires_after_its_ttl(imds):
    token = imds_token(imds, ttl="1")
    assert imds_get(imds, "/latest/meta-data/instance-id", token).status_code == 200

    time.sleep(1.3)

    assert imds_get(imds, "/latest/meta-data/instance-id", token).status_code == 401


def test_unknown_path_is_not_found(imds):
    assert imds_get(imds, "/latest/meta-data/no-such-key").status_code == 404
    assert imds_get(imds, "/latest/meta-data/placement/nope").status_code == 404
    assert imds_get(imds, "/2009-04-04/meta-data/").status_code == 404


def test_meta_data_lists_keys_like_ec2(imds):
    listing = imds_get(imds, "/latest/meta-data/").text.split("\n")

    assert {"instance-id", "mac", "local-ipv4", "placement/", "network/"} <= set(listing)
    assert imds_get(imds, "/latest/meta-data/placement").text.split("\n") == [
        "availability-zone",
        "availability-zone-id",
        "region",
    ]


def test_instance_values_come_from_the_identity_file(imds):
    expected = {
        "instance-id": "i-0123456789abcdef0",
        "ami-id": "ami-0fedcba9876543210",
        "instance-type": "m6i.large",
        "local-ipv4": "10.0.1.17",
        "mac": PRIMARY_MAC,
        "hostname": "ip-10-0-1-17.eu-west-1.compute.internal",
        "local-hostname": "ip-10-0-1-17.eu-west-1.compute.internal",
        "placement/availability-zone": "eu-west-1b",
        "placement/availability-zone-id": "euw1-az2",
        "placement/region": "eu-west-1",
    }
    token = imds_token(imds)

    seen = {key: imds_get(imds, "/latest/meta-data/" + key, token).text for key in expected}

    assert seen == expected


def test_interfaces_are_listed_by_mac(imds):
    token = imds_token(imds)
    macs = "/latest/meta-data/network/interfaces/macs/"
    base = f"{macs}{PRIMARY_MAC}/"

    assert imds_get(imds, macs, token).text == PRIMARY_MAC + "/"
    keys = imds_get(imds, base, token).text.split("\n")
    fields = {key: imds_get(imds, base + key, token).text for key in keys}

    assert fields == {
        "device-number": "0",
        "interface-id": "eni-0aaaaaaaaaaaaaaaa",
        "local-ipv4s": "10.0.1.17",
        "mac": PRIMARY_MAC,
        "subnet-id": "subnet-0bbbbbbbbbbbbbbbb",
        "subnet-ipv4-cidr-block": "10.0.1.0/24",
        "vpc-id": "vpc-0ccccccccccccccccc",
    }


def test_identity_document_is_ec2_json(imds):
    document = json.loads(imds_get(imds, "/latest/dynamic/instance-identity/document").text)

    assert document["version"] == "2017-09-30"
    assert {
        key: document[key]
        for key in (
            "accountId",
            "availabilityZone",
            "imageId",
            "instanceId",
            "instanceType",
            "privateIp",
            "region",
            "architecture",
        )
    } == {
        "accountId": "111122223333",
        "availabilityZone": "eu-west-1b",
        "imageId": "ami-0fedcba9876543210",
        "instanceId": "i-0123456789abcdef0",
        "instanceType": "m6i.large",
        "privateIp": "10.0.1.17",
        "region": "eu-west-1",
        "architecture": "x86_64",
    }
    assert document["pendingTime"].endswith("Z")


def test_identity_file_is_reread_so_a_hot_plugged_eni_appears(imds, identity_file):
    token = imds_token(imds)
    identity = node_identity()
    identity["interfaces"].append(
        {
            "mac": "0a:99:88:77:66:55",
            "device_number": 1,
            "interface_id": "eni-0dddddddddddddddd",
            "local_ipv4s": ["10.0.1.50", "10.0.1.51"],
            "subnet_id": "subnet-0bbbbbbbbbbbbbbbb",
            "subnet_ipv4_cidr_block": "10.0.1.0/24",
            "vpc_id": "vpc-0ccccccccccccccccc",
        }
    )

    write_identity(identity_file, identity)

    macs = "/latest/meta-data/network/interfaces/macs/"
    assert imds_get(imds, macs, token).text.split("\n") == [PRIMARY_MAC + "/", "0a:99:88:77:66:55/"]
    ips = imds_get(imds, macs + "0a:99:88:77:66:55/local-ipv4s", token)
    assert ips.text == "10.0.1.50\n10.0.1.51"
    assert imds_get(imds, "/latest/meta-data/mac", token).text == PRIMARY_MAC


def test_the_aws_sdk_imds_client_reads_the_region(imds):
    fetcher = InstanceMetadataRegionFetcher(
        timeout=2, num_attempts=1, config={"ec2_metadata_service_endpoint": imds.url}
    )

    assert fetcher.retrieve_region() == "eu-west-1"


def test_the_instance_profiles_credentials_are_served_as_the_sdks_read_them(
    start_imds, identity_file
):
    iam = {"role": "nodeboot-compute", "access_key_id": "ASIANODE0001"}
    identity = node_identity(iam={**iam, "secret_access_key": "s3cr3t", "token": "tok"})
    write_identity(identity_file, identity)
    imds = start_imds()
    fetcher = InstanceMetadataFetcher(
        timeout=2, num_attempts=1, config={"ec2_metadata_service_endpoint": imds.url}
    )

    credentials = fetcher.retrieve_iam_role_credentials()

    assert credentials["role_name"] == "nodeboot-compute"
    assert (credentials["access_key"], credentials["secret_key"], credentials["token"]) == (
        "ASIANODE0001",
        "s3cr3t",
        "tok",
    )


def test_no_credentials_without_an_instance_profile(imds):
    token = imds_token(imds)
    assert imds_get(imds, "/latest/meta-data/iam/security-credentials/", token).status_code == 404


def test_fault_no_token_refuses_every_token(start_imds):
    imds = start_imds("--fault", "no-token")

    answer = requests.put(imds.url + TOKEN_PATH, headers={TTL: "60"}, timeout=5)

    assert answer.status_code == 403


def test_fault_garbage_answers_random_bytes(start_imds):
    imds = start_imds("--fault", "garbage")

    answer = imds_get(imds, "/latest/meta-data/instance-id")

    assert answer.status_code == 200
    assert answer.content != b"i-0123456789abcdef0"


def test_fault_404_answers_not_found_everywhere(start_imds):
    imds = start_imds("--fault", "404")

    assert imds_get(imds, "/latest/meta-data/instance-id").status_code == 404
    assert imds_get(imds, "/latest/dynamic/instance-identity/document").status_code == 404


def test_fault_slow_outlasts_a_client_timeout(start_imds):
    imds = start_imds("--fault", "slow", "--slow-seconds", "5")
    fetcher = InstanceMetadataRegionFetcher(
        timeout=1, num_attempts=1, config={"ec2_metadata_service_endpoint": imds.url}
    )

    with pytest.raises(requests.exceptions.Timeout):
        requests.put(imds.url + TOKEN_PATH, headers={TTL: "60"}, timeout=1)
    assert fetcher.retrieve_region() is None


def test_fault_switched_live_from_the_identity_file(imds, identity_file):
    token = imds_token(imds)

    write_identity(identity_file, node_identity(fault="404"))
    faulty = imds_get(imds, "/latest/meta-data/instance-id", token).status_code
    write_identity(identity_file, node_identity())
    healthy = imds_get(imds, "/latest/meta-data/instance-id", token).status_code

    assert (faulty, healthy) == (404, 200)


def test_root_only_tests_fail_without_root_unless_opted_out(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.delenv("NODEBOOT_SKIP_ROOT_TESTS", raising=False)
    with pytest.raises(pytest.fail.Exception, match="the probe needs root"):
        require_root("the probe")
    monkeypatch.setenv("NODEBOOT_SKIP_ROOT_TESTS", "0")
    with pytest.raises(pytest.fail.Exception):
        require_root("the probe")
    monkeypatch.setenv("NODEBOOT_SKIP_ROOT_TESTS", "1")
    with pytest.raises(pytest.skip.Exception, match="skipped knowingly"):
        require_root("the probe")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    require_root("the probe")


def test_imds_serves_169_254_169_254_inside_a_network_namespace(start_imds):
    require_root("a network namespace")
    namespace = f"bed-imds-{os.getpid()}"
    ip = ["ip", "-n", namespace]
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run([*ip, "link", "set", "lo", "up"], check=True)
        subprocess.run([*ip, "addr", "add", "169.254.169.254/32", "dev", "lo"], check=True)
        imds = start_imds(listen="169.254.169.254:80", prefix=("ip", "netns", "exec", namespace))
        fetch = (
            "import urllib.request as u\n"
            "t=u.urlopen(u.Request('http://169.254.169.254/latest/api/token',method='PUT',"
            "headers={'X-aws-ec2-metadata-token-ttl-seconds':'60'}),timeout=5).read()\n"
            "print(u.urlopen(u.Request('http://169.254.169.254/latest/meta-data/instance-id',"
            "headers={'X-aws-ec2-metadata-token':t.decode()}),timeout=5).read().decode())\n"
        )

        inside = subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", fetch],
            capture_output=True,
            text=True,
            timeout=30,
        )

        assert imds.url == "http://169.254.169.254:80"
        assert inside.stdout.strip() == "i-0123456789abcdef0", inside.stderr
        assert imds.stop() == 0
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)


def test_get_bucket_versioning_answers_s3s_root_element(aws):
    """The Rust SDK refuses moto's own `GetBucketVersioningResponse` root (s3_rules.py)."""
    s3 = client(aws.url, "s3")
    make_bucket(s3, "versioned")
    bodies = []
    s3.meta.events.register(
        "after-call.s3.GetBucketVersioning",
        lambda http_response, **_: bodies.append(http_response.content),
    )
    assert "Status" not in s3.get_bucket_versioning(Bucket="versioned")
    s3.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket="versioned")["Status"] == "Enabled"
    assert all(b"<VersioningConfiguration " in b for b in bodies), bodies
