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
