# The bastion: the one way in over ssh. A single instance with an Elastic IP,
# so its address stays put when the instance is replaced (a size-1 ASG would
# need the node itself to claim the address, which takes IAM rights the
# bastion does not otherwise need).

resource "aws_security_group" "bastion" {
  name        = "${var.environment}-bastion"
  description = "Bastion of ${var.environment}"
  vpc_id      = var.vpc_id

  tags = {
    Name = "${var.environment}-bastion"
  }
}

# No rule at all when the list is empty.
resource "aws_vpc_security_group_ingress_rule" "ssh" {
  for_each = toset(var.ssh_access_list)

  security_group_id = aws_security_group.bastion.id
  description       = "ssh from the operators"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = each.value
}

# ssh to the nodes' groups only (their ssh rules admit this group alone).
resource "aws_vpc_security_group_egress_rule" "ssh" {
  for_each = var.node_security_group_ids

  security_group_id            = aws_security_group.bastion.id
  description                  = "ssh to the ${each.key} nodes"
  ip_protocol                  = "tcp"
  from_port                    = 22
  to_port                      = 22
  referenced_security_group_id = each.value
}

resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.bastion.id
  description       = "HTTPS for OS updates and image pulls"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_instance" "bastion" {
  ami                         = var.ami_id
  instance_type               = var.instance_type
  subnet_id                   = var.mgmt_subnet_id
  vpc_security_group_ids      = [aws_security_group.bastion.id]
  iam_instance_profile        = var.instance_profile_name
  associate_public_ip_address = false
  ebs_optimized               = true
  monitoring                  = true
  user_data_base64            = var.user_data
  # Ignition runs on first boot only: a new config needs a new instance.
  user_data_replace_on_change = true

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = 10
    encrypted             = true
    delete_on_termination = true
  }

  tags = {
    Name                                       = "${var.environment}-bastion"
    "nodeboot.io/role"                         = "bastion"
    "kubernetes.io/cluster/${var.environment}" = "owned"
  }

  volume_tags = {
    Name                      = "${var.environment}-bastion-root"
    "nodeboot.io/environment" = var.environment
  }

  lifecycle {
    # A new Flatcar release must not replace the bastion under an operator's
    # session; Flatcar updates itself in place.
    ignore_changes = [ami]
  }
}

resource "aws_eip" "bastion" {
  domain   = "vpc"
  instance = aws_instance.bastion.id

  tags = {
    Name = "${var.environment}-bastion"
  }
}
