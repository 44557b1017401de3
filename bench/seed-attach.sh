#!/usr/bin/env bash
# bench/seed-attach.sh: the seed's way of claiming an etcd member, rebuilt for
# the attach benchmark (bench/attach.py). A comparison point, not a tool for
# nodes: it only talks to the local test bed.
#
# The seed (the kubernetes-platform repository nodeboot replaces) claimed a
# member with a bash script around the aws CLI and mounted the volume from a
# systemd unit. What this script keeps of it:
#   * a fixed-interval poll until a free volume shows up (--interval; the seed
#     slept 120 s between tries, and tried forever);
#   * one listing of the zone's tagged volumes (ENIs), then one more describe
#     call per candidate to read its state;
#   * attach the first free one and move on at once: it never waited for an
#     attachment to complete;
#   * races left to EC2: a losing AttachVolume fails (VolumeInUse) and the
#     script tries the next candidate;
#   * the mount unit: `blkid`; no filesystem type -> `mkfs.ext4`; `mount`.
# What differs, because of the test bed:
#   * IMDSv2 (a token) instead of the seed's IMDSv1: the bed's double, like
#     an instance with IMDSv2 required, refuses requests without a token;
#   * endpoints come from AWS_ENDPOINT_URL and AWS_EC2_METADATA_SERVICE_ENDPOINT,
#     which must point at this machine (127.0.0.1 / localhost);
#   * the volume's device is the Nitro by-id link under --root, which the
#     bench creates once EC2 says "attached" (the seed waited for /dev/xvdf);
#   * --timeout bounds the poll (the seed had no bound);
#   * the volume and the ENI are paired by the nodeboot.io/member tag.
#
# usage:
#   seed-attach.sh attach --root DIR [--environment NAME] [--interval S] [--timeout S]
#   seed-attach.sh mount  --root DIR [--timeout S]
# environment: AWS_ENDPOINT_URL, AWS_EC2_METADATA_SERVICE_ENDPOINT, AWS
# credentials; AWS_CLI (default /opt/awscli/bin/aws, see bench/README.md).
set -euo pipefail

die() { echo "seed-attach: $*" >&2; exit 1; }
say() { echo "seed-attach: $*" >&2; }

loopback_only() { # name value
    case "$2" in
        http://127.*|http://localhost:*|http://localhost/*|http://\[::1\]*) ;;
        *) die "$1 must point at this machine (http://127.0.0.1:PORT), not ${2:-nothing}" ;;
    esac
}

command=${1:-}; shift || true
root= environment= interval=5 timeout=
while [ $# -gt 0 ]; do
    case "$1" in
        --root) root=$2; shift 2 ;;
        --environment) environment=$2; shift 2 ;;
        --interval) interval=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
[ -n "$root" ] || die "--root DIR is required"
state_file="$root/run/seed-attach.env"

# --- attach --------------------------------------------------------------

metadata() {
    curl -sf --max-time 5 -H "X-aws-ec2-metadata-token: $imds_token" "$AWS_EC2_METADATA_SERVICE_ENDPOINT/latest/meta-data/$1"
}

aws_ec2() {
    "$AWS_CLI" --endpoint-url "$AWS_ENDPOINT_URL" --region "$region" --output text ec2 "$@"
}

# Each claim_* prints what it attached ("VOLUME MEMBER", "ENI"), or nothing
# when no candidate was free.
claim_volume() {
    local v state member
    for v in $(aws_ec2 describe-volumes --filters "${filters[@]}" --query 'Volumes[].VolumeId'); do
        # The seed's extra call: describe the candidate again to read its state.
        read -r state member < <(aws_ec2 describe-volumes --volume-ids "$v" \
            --query 'Volumes[0].[State, Tags[?Key==`nodeboot.io/member`].Value | [0]]')
        [ "$state" = available ] || continue
        # No wait for "attached": the seed moved on as soon as EC2 accepted the call.
        if aws_ec2 attach-volume --volume-id "$v" --instance-id "$instance_id" --device /dev/xvdf >/dev/null; then
            echo "$v $member"
            return
        fi
        say "attaching $v failed (another node won it?); trying the next volume"
    done
}

claim_eni() { # member
    local e status
    for e in $(aws_ec2 describe-network-interfaces --filters "${filters[@]}" "Name=tag:nodeboot.io/member,Values=$1" \
            --query 'NetworkInterfaces[].NetworkInterfaceId'); do
        status=$(aws_ec2 describe-network-interfaces --network-interface-ids "$e" --query 'NetworkInterfaces[0].Status')
        [ "$status" = available ] || continue
        if aws_ec2 attach-network-interface --network-interface-id "$e" --instance-id "$instance_id" --device-index 1 >/dev/null; then
            echo "$e"
            return
        fi
        say "attaching $e failed; trying the next ENI"
    done
}

# Runs `claim_* ARGS` every $interval seconds until it prints something.
poll() { # what claim_function args...
    local what=$1 found; shift
    local deadline=$((SECONDS + timeout))
    while :; do
        found=$("$@")
        if [ -n "$found" ]; then echo "$found"; return; fi
        if (( SECONDS + interval > deadline )); then
            die "no free $what in $zone after ${SECONDS}s (the seed polled on forever)"
        fi
        say "no free $what in $zone; next try in ${interval}s"
        sleep "$interval"
    done
}

attach() {
    loopback_only AWS_ENDPOINT_URL "${AWS_ENDPOINT_URL:-}"
    loopback_only AWS_EC2_METADATA_SERVICE_ENDPOINT "${AWS_EC2_METADATA_SERVICE_ENDPOINT:-}"
    AWS_CLI=${AWS_CLI:-/opt/awscli/bin/aws}
    [ -x "$AWS_CLI" ] || die "no aws CLI at $AWS_CLI (python3 -m venv /opt/awscli && /opt/awscli/bin/pip install awscli)"
    # The aws CLI must never look for 169.254.169.254 itself.
    export AWS_EC2_METADATA_DISABLED=true
    if [ -z "$environment" ]; then
        environment=$(sed -n 's/^ *"environment": *"\([^"]*\)".*/\1/p' "$root/etc/nodeboot/node.json")
    fi
    [ -n "$environment" ] || die "no environment name (--environment, or $root/etc/nodeboot/node.json)"

    imds_token=$(curl -sf --max-time 5 -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 300" \
        "$AWS_EC2_METADATA_SERVICE_ENDPOINT/latest/api/token") || die "no IMDS token"
    instance_id=$(metadata instance-id)
    zone=$(metadata placement/availability-zone)
    region=${zone%?}
    filters=(
        "Name=tag:nodeboot.io/environment,Values=$environment"
        "Name=tag:nodeboot.io/role,Values=etcd"
        "Name=availability-zone,Values=$zone"
    )

    local volume member eni
    read -r volume member < <(poll volume claim_volume)
    [ -n "$volume" ] || exit 1
    say "attached volume $volume (member $member) to $instance_id"
    eni=$(poll "ENI of member $member" claim_eni "$member")
    say "attached ENI $eni to $instance_id"
    mkdir -p "$(dirname "$state_file")"
    printf 'VOLUME_ID=%s\nMEMBER=%s\nENI_ID=%s\n' "$volume" "$member" "$eni" >"$state_file"
}

# --- mount ---------------------------------------------------------------

mount_volume() {
    [ -f "$state_file" ] || die "$state_file missing: run attach first"
    # shellcheck disable=SC1090
    . "$state_file"
    local link="$root/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${VOLUME_ID//-/}"
    local mount_point="$root/var/lib/etcd"
    # The seed's unit started once systemd saw the device (Requires= and
    # After= on the device unit, 90 s default timeout): a short poll stands
    # in for udev's event here.
    local waited=0
    until [ -b "$link" ]; do
        (( waited < timeout * 10 )) || die "device of $VOLUME_ID did not appear"
        sleep 0.1
        waited=$((waited + 1))
    done
    local device
    device=$(readlink -f "$link")
    # The bench only ever hands this script its own loop devices.
    case "$device" in /dev/loop*) ;; *) die "refusing $device: the bench formats loop devices only" ;; esac

    # Plain blkid, as the seed ran it (no -p: it may answer from its cache,
    # and says nothing of a partition table without a filesystem on it).
    local fstype
    fstype=$(blkid -o value -s TYPE "$device" || true)
    if [ -z "$fstype" ]; then
        say "no filesystem on $device: mkfs.ext4"
        mkfs.ext4 -q "$device"
    elif [ "$fstype" != ext4 ]; then
        # The seed ran `wipefs -a "$device"` and then mkfs.ext4 here: it
        # destroyed whatever an unrecognised device held. Never done here.
        die "$device holds $fstype: the seed would wipefs and reformat it; this script stops"
    fi
    mkdir -p "$mount_point"
    mount -t ext4 "$device" "$mount_point"
    say "mounted $device on $mount_point"
}

case "$command" in
    attach) timeout=${timeout:-600}; attach ;;
    mount) timeout=${timeout:-90}; mount_volume ;;
    *) die "usage: seed-attach.sh attach|mount --root DIR [--environment NAME] [--interval S] [--timeout S]" ;;
esac
