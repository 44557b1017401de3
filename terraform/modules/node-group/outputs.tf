output "asg_names" {
  description = "Names of the auto-scaling groups, by key."
  value       = { for k, g in aws_autoscaling_group.this : k => g.name }
}

output "launch_template_id" {
  description = "Id of the launch template."
  value       = aws_launch_template.this.id
}

output "groups" {
  description = "Each group as planned, by key: name, size, subnets, suspended processes, launch template version, instance refresh preferences (for the tests and for operators)."
  value = {
    for k, g in aws_autoscaling_group.this : k => {
      name                    = g.name
      size                    = g.desired_capacity
      subnet_ids              = g.vpc_zone_identifier
      suspended_processes     = g.suspended_processes
      launch_template_version = g.launch_template[0].version
      instance_refresh        = g.instance_refresh
    }
  }
}
