output "member_ips" {
  description = "Fixed private IP of each member, by member index."
  value       = aws_network_interface.member[*].private_ip
}

output "asg_names" {
  description = "Names of the etcd auto-scaling groups, by zone."
  value       = module.nodes.asg_names
}

output "security_group_id" {
  description = "Security group of the members (instances and their fixed ENIs)."
  value       = aws_security_group.etcd.id
}

output "groups" {
  description = "The etcd auto-scaling groups by zone, as planned (node-group's groups output)."
  value       = module.nodes.groups
}
