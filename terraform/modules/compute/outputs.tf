output "asg_name" {
  description = "Name of the compute auto-scaling group."
  value       = module.nodes.asg_name
}

output "security_group_id" {
  description = "Security group of the workers."
  value       = aws_security_group.compute.id
}
