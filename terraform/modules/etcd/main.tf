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

  # Only the zones that hold members: with fewer members than zones the ASG
  # must not start a node where no member lives.
  member_zone_count = min(var.etcd_count, length(var.availability_zones))
}

resource "aws_ebs_volume" "member" {
  count = var.etcd_count

  availability_zone = local.members[count.index].availability_zone
  size              = var.data_volume_size
  type              = "gp3"
  encrypted         = true
  kms_key_id        = var.kms_key_arn

  tags = local.member_tags[count.index]
}

resource "aws_network_interface" "member" {
  count = var.etcd_count

  description     = "etcd member ${count.index} of ${var.environment}"
  subnet_id       = var.secure_subnet_ids[local.members[count.index].zone_index]
  private_ips     = [local.members[count.index].ip]
  security_groups = [aws_security_group.etcd.id]

  tags = local.member_tags[count.index]
}

resource "aws_security_group" "etcd" {
  name        = "${var.environment}-etcd"
  description = "etcd members and the Kubernetes control plane of ${var.environment}"
  vpc_id      = var.vpc_id

  ingress {
    description = "etcd peers"
    protocol    = "tcp"
    from_port   = 2380
    to_port     = 2380
    cidr_blocks = var.secure_subnets
  }

  ingress {
    description = "etcd clients (kube-apiserver runs on the members)"
    protocol    = "tcp"
    from_port   = 2379
    to_port     = 2379
    cidr_blocks = var.secure_subnets
  }

  ingress {
    description = "kube-apiserver from the load balancers (client IPs are not preserved)"
    protocol    = "tcp"
    from_port   = 6443
    to_port     = 6443
    cidr_blocks = var.elb_subnets
  }

  ingress {
    description = "kube-apiserver from the workers"
    protocol    = "tcp"
    from_port   = 6443
    to_port     = 6443
    cidr_blocks = var.compute_subnets
  }

  ingress {
    description = "kubelet API, from kube-apiserver on the other members"
    protocol    = "tcp"
    from_port   = 10250
    to_port     = 10250
    cidr_blocks = var.secure_subnets
  }

  ingress {
    description = "ssh from the mgmt layer (the bastion)"
    protocol    = "tcp"
    from_port   = 22
    to_port     = 22
    cidr_blocks = var.mgmt_subnets
  }

  egress {
    description = "HTTPS to AWS APIs, S3 and image registries"
    protocol    = "tcp"
    from_port   = 443
    to_port     = 443
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "anything inside the VPC"
    protocol    = "-1"
    from_port   = 0
    to_port     = 0
    cidr_blocks = [var.vpc_cidr]
  }

  tags = {
    Name = "${var.environment}-etcd"
  }
}

module "nodes" {
  source = "../node-group"

  environment           = var.environment
  role                  = "etcd"
  ami_id                = var.ami_id
  instance_type         = var.instance_type
  subnet_ids            = slice(var.secure_subnet_ids, 0, local.member_zone_count)
  size                  = var.etcd_count
  security_group_ids    = [aws_security_group.etcd.id]
  instance_profile_name = var.instance_profile_name
  target_group_arns     = var.target_group_arns
  user_data             = var.user_data
}
