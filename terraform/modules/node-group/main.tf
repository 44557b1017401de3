# A launch template and an auto-scaling group of Flatcar nodes of one role.
# Ignition runs on first boot only: a new config reaches nodes as they are
# replaced, never the running ones.

locals {
  name = "${var.environment}-${var.role}"

  # EC2 accepts at most 16 KiB of user data (before base64). nodeboot writes a
  # pointer config when the full one is larger; this catches a build that did not.
  user_data_bytes = floor(length(var.user_data) * 3 / 4) - (endswith(var.user_data, "==") ? 2 : endswith(var.user_data, "=") ? 1 : 0)

  # The etcd role's IAM conditions require environment and role on the
  # instance as well as on the volume or ENI it attaches. The cluster tag is
  # the one the Kubernetes AWS cloud provider looks for on its nodes (the
  # subnets carry it too).
  instance_tags = {
    Name                                       = local.name
    "nodeboot.io/environment"                  = var.environment
    "nodeboot.io/role"                         = var.role
    "kubernetes.io/cluster/${var.environment}" = "owned"
  }
}

resource "aws_launch_template" "this" {
  name          = local.name
  description   = "${var.role} nodes of ${var.environment}"
  image_id      = var.ami_id
  instance_type = var.instance_type
  user_data     = var.user_data
  ebs_optimized = true
  # null: EC2's default (stop).
  instance_initiated_shutdown_behavior = var.shutdown_behavior
  update_default_version               = true
  vpc_security_group_ids               = var.security_group_ids

  iam_instance_profile {
    name = var.instance_profile_name
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  monitoring {
    enabled = true
  }

  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_size           = var.root_volume_size
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  # Root volumes carry the environment but not nodeboot.io/role: the etcd
  # role may only attach and detach volumes tagged with its role, and a root
  # volume must never be one of them.
  tag_specifications {
    resource_type = "volume"
    tags = {
      Name                      = "${local.name}-root"
      "nodeboot.io/environment" = var.environment
    }
  }

  lifecycle {
    precondition {
      condition     = local.user_data_bytes <= 16384
      error_message = "The ${var.role} Ignition config is ${local.user_data_bytes} bytes, over EC2's 16 KiB user_data limit: nodeboot render should have written a pointer config."
    }
  }
}

# One group per entry of var.groups: compute has one over all its subnets,
# etcd one per zone (each sized to the zone's members). A group's max_size is
# its size plus its headroom: the instances a replacement may launch before
# it terminates (none for etcd: a surplus node finds no member to claim).
resource "aws_autoscaling_group" "this" {
  for_each = var.groups

  name                      = each.value.name
  min_size                  = each.value.size
  max_size                  = each.value.size + each.value.headroom
  desired_capacity          = each.value.size
  vpc_zone_identifier       = each.value.subnet_ids
  target_group_arns         = var.target_group_arns
  health_check_type         = var.health_check.type
  health_check_grace_period = var.health_check.grace_period
  suspended_processes       = var.suspended_processes

  # Every replacement (a failed health check as well as a refresh) keeps
  # this range in service: above 100, it launches before it terminates.
  dynamic "instance_maintenance_policy" {
    for_each = var.rollout == null ? [] : [var.rollout]

    content {
      min_healthy_percentage = instance_maintenance_policy.value.min_healthy_percentage
      max_healthy_percentage = instance_maintenance_policy.value.max_healthy_percentage
    }
  }

  launch_template {
    id = aws_launch_template.this.id
    # Rolling groups name the template's version, so a new version changes
    # the group and starts an instance refresh. Groups without a refresh
    # follow "$Latest": Terraform's change to the template never touches the
    # group or its instances, and whatever replaces an instance later (a
    # failure, `nodeboot roll`) boots the newest version.
    version = var.rollout == null ? "$Latest" : aws_launch_template.this.latest_version
  }

  dynamic "instance_refresh" {
    for_each = var.rollout == null ? [] : [var.rollout]

    content {
      strategy = "Rolling"

      preferences {
        min_healthy_percentage = instance_refresh.value.min_healthy_percentage
        max_healthy_percentage = instance_refresh.value.max_healthy_percentage
        instance_warmup        = 300
        # A refresh whose new instances do not become healthy fails, and
        # the group goes back to the launch template version it ran before.
        auto_rollback = true
      }
    }
  }

  dynamic "tag" {
    for_each = local.instance_tags

    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}
