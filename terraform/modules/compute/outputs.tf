output "asg_name" {
  description = "Name of the compute auto-scaling group."
  value       = module.nodes.asg_names["compute"]
}

output "security_group_id" {
  description = "Security group of the workers."
  value       = aws_security_group.compute.id
}

output "groups" {
  description = "The compute auto-scaling group, as planned (node-group's groups output)."
  value       = module.nodes.groups
}
