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

output "policies" {
  description = "Every policy the module writes, as JSON: each node role's inline policies by name, and the secrets bucket's policy."
  value = {
    node = {
      for role in keys(local.nodeboot_actions) : role => merge(
        contains(keys(local.secret_readers), role) ? { "read-secrets" = data.aws_iam_policy_document.secrets[role].json } : {},
        role == "etcd" ? { "attach-members" = data.aws_iam_policy_document.attach.json, "etcd-backups" = data.aws_iam_policy_document.backups.json } : {},
      )
    }
    secrets_bucket = data.aws_iam_policy_document.secrets_bucket.json
  }
}
