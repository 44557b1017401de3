output "member_ips" {
  description = "Fixed private IP of each member, by member index."
  value       = aws_network_interface.member[*].private_ip
}

output "asg_name" {
  description = "Name of the etcd auto-scaling group."
  value       = module.nodes.asg_name
}

output "security_group_id" {
  description = "Security group of the members (instances and their fixed ENIs)."
  value       = aws_security_group.etcd.id
}
