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

locals {
  # A replacement launches before it terminates: `headroom` workers ahead of
  # the desired count (at least one, at most the share that may be out of
  # service), so min_healthy_percentage of them stay in service while a
  # new launch template version (AMI, Ignition config) rolls through. AWS
  # takes max_healthy_percentage of the desired count, rounded down, within
  # max_size, and allows max - min <= 100 (so with 0 kept, a refresh
  # replaces in place: max 100).
  count    = max(var.compute_count, 1)
  headroom = max(1, ceil(local.count * (100 - var.min_healthy_percentage) / 100))
  max_healthy_percentage = min(
    200,
    var.min_healthy_percentage + 100,
    100 + ceil(100 * local.headroom / local.count),
  )
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
      headroom   = local.headroom
    }
  }
  rollout = {
    min_healthy_percentage = var.min_healthy_percentage
    max_healthy_percentage = local.max_healthy_percentage
  }
  # A worker is healthy once the internal load balancer finds its
  # kube-proxy healthy (/healthz on 10256, module lb): a new worker that
  # never gets there within the grace period is replaced, and a refresh
  # whose workers do not become healthy fails and rolls back.
  target_group_arns = [var.health_target_group_arn]
  health_check = {
    type         = "ELB"
    grace_period = 600
  }
  security_group_ids    = [aws_security_group.compute.id]
  instance_profile_name = var.instance_profile_name
  user_data             = var.user_data
}

# The group was node-group's single resource before etcd got one per zone.
moved {
  from = module.nodes.aws_autoscaling_group.this
  to   = module.nodes.aws_autoscaling_group.this["compute"]
}
