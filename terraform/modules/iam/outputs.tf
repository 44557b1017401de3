output "instance_profile_names" {
  description = "Instance profile name per role (etcd, compute, bastion)."
  value       = { for role, profile in aws_iam_instance_profile.node : role => profile.name }
}

output "role_arns" {
  description = "IAM role ARN per role (etcd, compute, bastion)."
  value       = { for role, r in aws_iam_role.node : role => r.arn }
}

output "nodeboot_actions" {
  description = "The AWS actions nodeboot calls, per role."
  value       = { for role, groups in local.nodeboot_actions : role => sort(flatten(values(groups))) }
}
