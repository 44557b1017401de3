# The compute layer: the Kubernetes workers, one auto-scaling group over the
# compute subnets of all zones.

resource "aws_security_group" "compute" {
  #checkov:skip=CKV2_AWS_5:attached to the workers' launch template in module node-group (vpc_security_group_ids); checkov's graph does not follow that module input once the group has no inline rules
  name        = "${var.environment}-compute"
  description = "Kubernetes workers of ${var.environment}"
  vpc_id      = var.vpc_id

  tags = {
    Name = "${var.environment}-compute"
  }
}

# Sources are security groups, not subnets.
locals {
  ingress = {
    kubelet = { port = 10250, protocol = "tcp", group = var.etcd_security_group_id, description = "kubelet API, from kube-apiserver on the control plane" }
    workers = { port = null, protocol = "-1", group = aws_security_group.compute.id, description = "workers to workers: pod network and node ports" }
    # Flannel's VXLAN overlay: the control plane's pods and kube-proxy reach pods on workers.
    flannel_control_plane = { port = 8472, protocol = "udp", group = var.etcd_security_group_id, description = "Flannel VXLAN from the control plane" }
    ssh                   = { port = 22, protocol = "tcp", group = var.bastion_security_group_id, description = "ssh from the bastion" }
  }
}

resource "aws_vpc_security_group_ingress_rule" "compute" {
  for_each = local.ingress

  security_group_id            = aws_security_group.compute.id
  description                  = each.value.description
  ip_protocol                  = each.value.protocol
  from_port                    = each.value.port
  to_port                      = each.value.port
  referenced_security_group_id = each.value.group
}

resource "aws_vpc_security_group_egress_rule" "compute_https" {
  security_group_id = aws_security_group.compute.id
  description       = "HTTPS to AWS APIs and image registries (S3 goes through the gateway endpoint)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "compute_vpc" {
  security_group_id = aws_security_group.compute.id
  description       = "anything inside the VPC"
  ip_protocol       = "-1"
  cidr_ipv4         = var.vpc_cidr
}

module "nodes" {
  source = "../node-group"

  environment   = var.environment
  role          = "compute"
  ami_id        = var.ami_id
  instance_type = var.instance_type
  groups = {
    compute = {
      name       = "${var.environment}-compute-asg"
      subnet_ids = var.compute_subnet_ids
      size       = var.compute_count
    }
  }
  # A new launch template version (AMI, Ignition config) rolls through the
  # workers, keeping this share of them in service.
  min_healthy_percentage = var.min_healthy_percentage
  security_group_ids     = [aws_security_group.compute.id]
  instance_profile_name  = var.instance_profile_name
  user_data              = var.user_data
}

# The group was node-group's single resource before etcd got one per zone.
moved {
  from = module.nodes.aws_autoscaling_group.this
  to   = module.nodes.aws_autoscaling_group.this["compute"]
}
