"""EC2's attachment rules, patched into moto 5.2 where moto is laxer.

moto accepts, and real EC2 refuses: a second attachment of a volume or ENI
(moto silently moves it), attachments across Availability Zones, two volumes on
one device name, two ENIs on one device index. moto also answers DetachVolume
without InstanceId with HTTP 500, and goes attaching -> attached instantly.

We replace the four API handlers (AttachVolume, DetachVolume,
AttachNetworkInterface, DetachNetworkInterface) rather than moto's backend
methods: moto itself calls the backend methods while launching and terminating
instances, and those internal calls must keep their instant semantics.

Every check-and-change runs under LOCK, so five clients racing AttachVolume on
one volume see exactly one success. Delayed transitions (`attaching` ->
`attached`, `detaching` -> gone) run on timers that take the same lock and
first check the attachment they were scheduled for is still the current one.

Error codes and messages are EC2's, as observed from the real API (see
tests/README.md for the sources).
"""

import copy
import threading

from moto.core.responses import ActionResult, EmptyResult
from moto.ec2.exceptions import (
    EC2ClientError,
    InvalidNetworkAttachmentIdError,
    LastEniDetachError,
)
from moto.ec2.models.elastic_block_store import VolumeAttachment
from moto.ec2.models.elastic_network_interfaces import NetworkInterface
from moto.ec2.models.instances import Instance
from moto.ec2.responses.elastic_block_store import ElasticBlockStore
from moto.ec2.responses.elastic_network_interfaces import ElasticNetworkInterfaces
from moto.ec2.responses.instances import InstanceResponse
from moto.ec2.responses.subnets import Subnets
from moto.packages.boto.ec2.blockdevicemapping import BlockDeviceType

LOCK = threading.RLock()


class Timing:
    """Delays in seconds; changed at start-up and through POST /_bed/config."""

    attach = 0.0  # attaching -> attached, detaching -> detached
    shutdown = 0.0  # shutting-down -> terminated, stopping -> stopped


TIMING = Timing()


class Paging:
    """At most `max_page` items per Describe page (0: only MaxResults limits)."""

    max_page = 0


PAGING = Paging()

# Every DetachVolume/DetachNetworkInterface the bed accepted, with the state
# the holder was in at that moment: tests check nodeboot never detaches from
# an instance whose OS may still write (GET /_bed/detaches).
DETACHES = []


def _record_detach(resource, instance, force):
    DETACHES.append(
        {"resource": resource, "instance": instance.id, "instance_state": instance._state.name, "force": force}
    )


def _after(delay, change):
    """Run `change` under LOCK now (delay <= 0) or on a timer after `delay` s."""

    def run():
        with LOCK:
            change()

    if delay <= 0:
        run()
        return
    timer = threading.Timer(delay, run)
    timer.daemon = True  # a pending transition must not keep the server alive
    timer.start()


def _zone_of(instance):
    # moto keeps the instance's AZ on a private Placement object.
    return instance._placement.zone


# --- EBS volumes -------------------------------------------------------------


def _check_volume_attachable(volume, instance, device):
    if volume.attachment is not None:
        # EC2 names only the volume here; a client that wants the holder
        # must DescribeVolumes.
        raise EC2ClientError("VolumeInUse", f"{volume.id} is already attached to an instance")
    if volume.zone.name != _zone_of(instance):
        raise EC2ClientError(
            "InvalidVolume.ZoneMismatch",
            f"The volume '{volume.id}' is not in the same availability zone "
            f"as instance '{instance.id}'",
        )
    if device in instance.block_device_mapping:
        raise EC2ClientError(
            "InvalidParameterValue",
            f"Invalid value '{device}' for unixDevice. Attachment point {device} is already in use",
        )


def attach_volume(backend, volume_id, instance_id, device):
    """Start attaching; the volume is `in-use` at once, `attached` after the delay."""
    with LOCK:
        volume = backend.get_volume(volume_id)
        instance = backend.get_instance(instance_id)
        _check_volume_attachable(volume, instance, device)
        delay = TIMING.attach  # read once: /_bed/config may change it meanwhile
        attachment = VolumeAttachment(
            volume, instance, device, "attaching" if delay > 0 else "attached"
        )
        attachment.delete_on_termination = False  # EC2's default for AttachVolume
        block = BlockDeviceType(
            volume_id=volume.id,
            status="attaching" if delay > 0 else "in-use",
            size=volume.size,
            attach_time=attachment.attach_time,
            delete_on_termination=False,
        )
        instance.block_device_mapping[device] = block
        volume.attachment = attachment

        def finish():
            if volume.attachment is attachment and attachment.status == "attaching":
                attachment.status = "attached"
                block.status = "in-use"  # moto shows in-use as Ebs.Status attached

        _after(delay, finish)
        return attachment


def _find_volume_attachment(volume, instance_id, device):
    attachment = volume.attachment
    if attachment is None:
        # Sic: EC2's message has no space before "is".
        raise EC2ClientError("IncorrectState", f"Volume '{volume.id}'is in the 'available' state.")
    if instance_id and instance_id != attachment.instance.id:
        raise EC2ClientError(
            "InvalidAttachment.NotFound",
            f"The volume '{volume.id}' is not attached to instance '{instance_id}'",
        )
    if device and device != attachment.device:
        raise EC2ClientError(
            "InvalidAttachment.NotFound",
            f"The volume '{volume.id}' is not attached to instance "
            f"'{attachment.instance.id}' as device '{device}'",
        )
    return attachment


def detach_volume(backend, volume_id, instance_id, device, force=False):
    """Start detaching; InstanceId and Device are optional, as in EC2.

    Force is accepted and changes nothing: the bed has no guest OS to refuse.
    A second DetachVolume while detaching answers `detaching` again.
    """
    with LOCK:
        volume = backend.get_volume(volume_id)
        attachment = _find_volume_attachment(volume, instance_id, device)
        _record_detach(volume_id, attachment.instance, force)
        if attachment.status == "detaching":
            return attachment
        attachment.status = "detaching"
        instance = attachment.instance
        block = instance.block_device_mapping.get(attachment.device)
        if block is not None:
            block.status = "detaching"

        def finish():
            if volume.attachment is not attachment:
                return  # moto's own teardown (termination) got there first
            if instance.block_device_mapping.get(attachment.device) is block:
                del instance.block_device_mapping[attachment.device]
            volume.attachment = None
            attachment.status = "detached"

        _after(TIMING.attach, finish)
        return attachment


def _volume_attachment_result(attachment, state):
    return ActionResult(
        {
            "VolumeId": attachment.volume.id,
            "InstanceId": attachment.instance.id,
            "Device": attachment.device,
            "State": state,
            "AttachTime": attachment.attach_time,
            "DeleteOnTermination": False,
        }
    )


def _attach_volume_handler(self):
    volume_id = self._get_param("VolumeId")
    instance_id = self._get_param("InstanceId")
    device = self._get_param("Device")
    self.error_on_dryrun()
    attachment = attach_volume(self.ec2_backend, volume_id, instance_id, device)
    return _volume_attachment_result(attachment, "attaching")


def _detach_volume_handler(self):
    volume_id = self._get_param("VolumeId")
    instance_id = self._get_param("InstanceId")
    device = self._get_param("Device")
    force = self._get_bool_param("Force", False)
    self.error_on_dryrun()
    attachment = detach_volume(self.ec2_backend, volume_id, instance_id, device, force)
    return _volume_attachment_result(attachment, "detaching")


# --- network interfaces ------------------------------------------------------


def _check_eni_attachable(eni, instance, device_index):
    if eni.instance is not None or eni.status != "available":
        # EC2 documents InvalidNetworkInterface.InUse for this too; the
        # AttachNetworkInterface API answers InvalidParameterValue.
        raise EC2ClientError("InvalidParameterValue", f"Interface: [{eni.id}] in use.")
    if eni.availability_zone != _zone_of(instance):
        raise EC2ClientError(
            "InvalidParameterCombination",
            "You may not attach a network interface to an instance "
            "if they are not in the same availability zone",
        )
    if device_index in instance.nics:
        raise EC2ClientError(
            "InvalidParameterValue",
            f"Instance '{instance.id}' already has an interface attached "
            f"at device index '{device_index}'.",
        )


def attach_network_interface(backend, eni_id, instance_id, device_index):
    with LOCK:
        eni = backend.get_network_interface(eni_id)
        instance = backend.get_instance(instance_id)
        _check_eni_attachable(eni, instance, device_index)
        delay = TIMING.attach
        # Set before moto creates the attachment, so no reader sees `attached`
        # during the delay.
        eni.bed_attachment_status = "attaching" if delay > 0 else "attached"
        attachment_id = instance.attach_eni(eni, device_index)

        def finish():
            if eni.attachment_id == attachment_id:
                eni.bed_attachment_status = "attached"

        _after(delay, finish)
        return attachment_id


def _eni_by_attachment(backend, attachment_id):
    for eni in backend.enis.values():
        if attachment_id and eni.attachment_id == attachment_id:
            return eni
    raise InvalidNetworkAttachmentIdError(attachment_id)


def detach_network_interface(backend, attachment_id, force=False):
    with LOCK:
        eni = _eni_by_attachment(backend, attachment_id)
        if eni.device_index == 0:
            raise LastEniDetachError()  # the primary interface stays
        _record_detach(eni.id, eni.instance, force)
        if getattr(eni, "bed_attachment_status", None) == "detaching":
            return
        eni.bed_attachment_status = "detaching"

        def finish():
            if eni.attachment_id == attachment_id:
                eni.instance.detach_eni(eni)  # ENI becomes `available`
                eni.bed_attachment_status = None

        _after(TIMING.attach, finish)


def _attach_eni_handler(self):
    eni_id = self._get_param("NetworkInterfaceId")
    instance_id = self._get_param("InstanceId")
    device_index = self._get_int_param("DeviceIndex")
    self.error_on_dryrun()
    attachment_id = attach_network_interface(self.ec2_backend, eni_id, instance_id, device_index)
    return ActionResult({"AttachmentId": attachment_id, "NetworkCardIndex": 0})


def _detach_eni_handler(self):
    attachment_id = self._get_param("AttachmentId")
    force = self._get_bool_param("Force", False)
    self.error_on_dryrun()
    detach_network_interface(self.ec2_backend, attachment_id, force)
    return EmptyResult()


_moto_eni_attachment = NetworkInterface.attachment


def _eni_attachment(self):
    """moto builds a fresh Attachment, always `attached`; show the real status."""
    attachment = _moto_eni_attachment.fget(self)
    if attachment is not None:
        attachment.status = getattr(self, "bed_attachment_status", None) or "attached"
    return attachment


_moto_eni_filter_value = NetworkInterface.get_filter_value


def _eni_filter_value(self, filter_name, method_name=None):
    """moto lacks the `attachment.status` filter of DescribeNetworkInterfaces."""
    if filter_name == "attachment.status":
        attachment = self.attachment
        return attachment.status if attachment is not None else None
    return _moto_eni_filter_value(self, filter_name, method_name)


# --- instance shutdown -------------------------------------------------------

_moto_terminate = Instance.terminate
_moto_stop = Instance.stop


def _release_secondary_enis(instance):
    """EC2 detaches (keeps) ENIs with DeleteOnTermination=false at termination."""
    for eni in list(instance.nics.values()):
        if eni.device_index != 0 and not eni.delete_on_termination:
            eni.bed_attachment_status = None
            instance.detach_eni(eni)


def _terminate(self):
    """shutting-down for TIMING.shutdown with every attachment kept, then terminated.

    At the end moto's own teardown runs: volumes with DeleteOnTermination are
    deleted, the others detached (`available`), as EC2 does.
    """
    with LOCK:
        previous = copy.copy(self._state)
        if self._state.name in ("shutting-down", "terminated"):
            return previous
        self._state.name, self._state.code = "shutting-down", 32

        def finish():
            if self._state.name == "shutting-down":
                _moto_terminate(self)
                _release_secondary_enis(self)

        _after(TIMING.shutdown, finish)
        return previous


def _stop(self):
    """stopping for TIMING.shutdown, then stopped; attachments stay, as in EC2."""
    with LOCK:
        previous = copy.copy(self._state)
        if self._state.name in ("stopping", "stopped", "shutting-down", "terminated"):
            return previous
        self._state.name, self._state.code = "stopping", 64

        def finish():
            if self._state.name == "stopping":
                _moto_stop(self)

        _after(TIMING.shutdown, finish)
        return previous


# --- paging ------------------------------------------------------------------


def _page(self, items, key):
    """One page of `items` (sorted by `key`) after NextToken, and the next token.

    EC2 pages DescribeVolumes, DescribeNetworkInterfaces and DescribeInstances
    by MaxResults and NextToken, and may answer fewer items than asked for
    with a NextToken; only a page without one is the last. moto ignores
    MaxResults for volumes and ENIs, so the bed pages them, and
    PAGING.max_page makes any page short to prove a client follows the
    token. The token is the last id of the page, so a page holds the items
    after it.
    """
    items = sorted(items, key=key)
    token = self._get_param("NextToken")
    if token:
        items = [i for i in items if key(i) > token]
    size = int(self._get_param("MaxResults") or 0) or len(items)
    if PAGING.max_page:
        size = min(size, PAGING.max_page)
    page = items[:size]
    return page, (key(page[-1]) if len(items) > size else None)


def _describe_volumes_handler(self):
    filters = self._filters_from_querystring()
    volume_ids = self._get_param("VolumeIds", [])
    volumes = self.ec2_backend.describe_volumes(volume_ids=volume_ids, filters=filters)
    page, token = _page(self, volumes, lambda v: v.id)
    return ActionResult({"Volumes": page, "NextToken": token})


def _describe_enis_handler(self):
    eni_ids = self._get_param("NetworkInterfaceIds", [])
    filters = self._filters_from_querystring()
    self.error_on_dryrun()
    enis = self.ec2_backend.get_all_network_interfaces(eni_ids, filters)
    page, token = _page(self, enis, lambda e: e.id)
    return ActionResult({"NetworkInterfaces": page, "NextToken": token})


_moto_describe_instances = InstanceResponse.describe_instances


def _describe_instances_handler(self):
    """moto pages reservations by MaxResults (default 100); PAGING caps it."""
    if PAGING.max_page and "InstanceId.1" not in self.data:
        asked = int(self._get_param("MaxResults") or 100)
        self.params["MaxResults"] = min(asked, PAGING.max_page)
    return _moto_describe_instances(self)


_create_cidr_reservation = Subnets.create_subnet_cidr_reservation


def _create_cidr_reservation_handler(self):
    """moto drops a subnet CIDR reservation's Description; EC2 keeps and
    describes it, and Terraform's plan replaces a reservation whose read
    description differs from its configuration's (the etcd members' do)."""
    result = _create_cidr_reservation(self)
    result.result["SubnetCidrReservation"].description = self._get_param("Description")
    return result


def install(attach_delay_s=0.0, shutdown_delay_s=0.0, max_page=0):
    """Patch moto's EC2 in this process. Call once, before serving."""
    TIMING.attach = attach_delay_s
    TIMING.shutdown = shutdown_delay_s
    PAGING.max_page = max_page
    ElasticBlockStore.describe_volumes = _describe_volumes_handler
    ElasticNetworkInterfaces.describe_network_interfaces = _describe_enis_handler
    InstanceResponse.describe_instances = _describe_instances_handler
    ElasticBlockStore.attach_volume = _attach_volume_handler
    ElasticBlockStore.detach_volume = _detach_volume_handler
    ElasticNetworkInterfaces.attach_network_interface = _attach_eni_handler
    ElasticNetworkInterfaces.detach_network_interface = _detach_eni_handler
    NetworkInterface.attachment = property(_eni_attachment)
    NetworkInterface.get_filter_value = _eni_filter_value
    Instance.terminate = _terminate
    Instance.stop = _stop
    Subnets.create_subnet_cidr_reservation = _create_cidr_reservation_handler
