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
