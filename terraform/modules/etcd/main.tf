# The secure layer: etcd and the Kubernetes control plane.
#
# The instances come and go with their auto-scaling group; what a member is
# made of stays: one encrypted data volume and one network interface with a
# fixed IP per member, both in the member's zone. On boot, nodeboot's attach
# stage finds a free member in its zone by the tags below and attaches its
# volume and interface.

module "placement" {
  source = "./placement"

  availability_zones = var.availability_zones
  secure_subnets     = var.secure_subnets
  member_count       = var.etcd_count
}

locals {
  members = module.placement.members

  # The tags nodeboot's attach stage reads, identical on a member's volume and
  # interface. tests/terraform checks the keys.
  member_tags = [
    for m in local.members : {
      "nodeboot.io/environment" = var.environment
      "nodeboot.io/role"        = "etcd"
      "nodeboot.io/member"      = tostring(m.index)
      Name                      = "${var.environment}-etcd-${m.index}"
    }
  ]

  # One auto-scaling group per zone that holds members, sized to them (as
  # kops does): a node can only claim a member of its own zone, so a group
  # spread over zones could start a node where every member is taken.
  zone_groups = {
    for z, zone in var.availability_zones : zone => {
      name       = "${var.environment}-etcd-${zone}-asg"
      subnet_ids = [var.secure_subnet_ids[z]]
      size       = length([for m in local.members : m if m.zone_index == z])
    } if length([for m in local.members : m if m.zone_index == z]) > 0
  }

  # The member volumes alone carry this tag: the snapshot policy selects by
  # it (DLM takes a volume that has any one of its target tags, and root
  # volumes carry the environment tag too).
  snapshot_tag = { "nodeboot.io/snapshots" = "${var.environment}-etcd" }
}

resource "aws_ebs_volume" "member" {
  count = var.etcd_count

  availability_zone = local.members[count.index].availability_zone
  size              = var.data_volume_size
  type              = "gp3"
  encrypted         = true
  kms_key_id        = var.kms_key_arn
  # A destroy that gets past prevent_destroy (the resource removed from the
  # configuration) still leaves a snapshot of the member's data.
  final_snapshot = true

  tags = merge(local.member_tags[count.index], local.snapshot_tag)

  lifecycle {
    # A member's data outlives every instance, and a plan that would replace
    # or delete it (a changed zone list, a lower etcd_count applied before
    # `nodeboot etcd retire-member`) stops here. Retiring a member on purpose:
    # `nodeboot etcd retire-member` (terraform/README.md).
    prevent_destroy = true
  }
}

# Each member's fixed address is reserved for explicit assignment, so EC2
# never gives it to an instance's primary interface, whatever starts first.
resource "aws_ec2_subnet_cidr_reservation" "member" {
  count = var.etcd_count

  subnet_id        = var.secure_subnet_ids[local.members[count.index].zone_index]
  cidr_block       = "${local.members[count.index].ip}/32"
  reservation_type = "explicit"
  description      = "etcd member ${count.index} of ${var.environment}"

  lifecycle {
    # A member's address is in its certificates and its peers' configuration:
    # released, another interface could take it. Stops a plan like the volume.
    prevent_destroy = true
  }
}

resource "aws_network_interface" "member" {
  count = var.etcd_count

  description     = "etcd member ${count.index} of ${var.environment}"
  subnet_id       = var.secure_subnet_ids[local.members[count.index].zone_index]
  private_ips     = [local.members[count.index].ip]
  security_groups = [aws_security_group.etcd.id]

  tags = local.member_tags[count.index]

  lifecycle {
    # The member's identity on the network (its fixed address, which its
    # certificates name): kept with its volume.
    prevent_destroy = true
  }

  depends_on = [aws_ec2_subnet_cidr_reservation.member]
}

resource "aws_security_group" "etcd" {
  name        = "${var.environment}-etcd"
  description = "etcd members and the Kubernetes control plane of ${var.environment}"
  vpc_id      = var.vpc_id

  tags = {
    Name = "${var.environment}-etcd"
  }
}

module "nodes" {
  source = "../node-group"

  environment         = var.environment
  role                = "etcd"
  ami_id              = var.ami_id
  instance_type       = var.instance_type
  groups              = local.zone_groups
  suspended_processes = ["AZRebalance"]
  # A node that powers itself off is terminated and replaced: the way out
  # for a node that gives up booting, which ends only itself and needs no
  # permission (autoscaling:SetInstanceHealth cannot be limited to the
  # caller's own instance; terraform/README.md). Member volumes and ENIs
  # are attached without delete-on-termination and outlive it; a reboot
  # is not a shutdown.
  shutdown_behavior     = "terminate"
  security_group_ids    = [aws_security_group.etcd.id]
  instance_profile_name = var.instance_profile_name
  target_group_arns     = var.target_group_arns
  user_data             = var.user_data

  # No instance before every member's address is reserved and its interface
  # and volume exist.
  depends_on = [aws_network_interface.member, aws_ebs_volume.member, aws_ec2_subnet_cidr_reservation.member]
}
