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
  description = "Every policy the module writes, as JSON: each node role's policies (inline and managed) by name, and the secrets bucket's policy."
  value = {
    node = {
      for role in keys(local.nodeboot_actions) : role => {
        for key, document in local.documents : document.name => data.aws_iam_policy_document.node[key].json if document.role == role
      }
    }
    secrets_bucket = data.aws_iam_policy_document.node["bucket"].json
  }
}

output "node_s3_actions" {
  description = "Every S3 action a node role is granted."
  value       = local.node_s3_actions
}
