# One role and instance profile per node role, with the least the role needs.

locals {
  # Every AWS action nodeboot calls, per role, grouped by the statement that
  # allows it. This map is the one list: the statements below take their
  # actions from it, and tests/terraform compares it with what nodeboot's
  # code calls. No wildcards.
  nodeboot_actions = {
    etcd = {
      describe = ["ec2:DescribeInstances", "ec2:DescribeNetworkInterfaces", "ec2:DescribeVolumes"]
      attach   = ["ec2:AttachNetworkInterface", "ec2:AttachVolume", "ec2:DetachNetworkInterface", "ec2:DetachVolume"]
      read     = ["s3:GetObject"]
      list     = ["s3:ListBucket"]
      decrypt  = ["kms:Decrypt"]
    }
    compute = {
      read    = ["s3:GetObject"]
      list    = ["s3:ListBucket"]
      decrypt = ["kms:Decrypt"]
    }
    # Nothing: Flatcar ships no SSM agent, and the bastion only forwards ssh.
    bastion = {}
  }

  # Actions an AWS service performs with the role's credentials on nodeboot's
  # behalf; nodeboot never calls them. When the etcd role attaches a data
  # volume encrypted with a customer managed key, EC2 creates a KMS grant for
  # the instance as the caller.
  delegated_actions = {
    etcd = {
      volume_key_grant = ["kms:CreateGrant"]
    }
  }

  # Roles that read their share of the secrets bucket.
  secret_readers = { for role, groups in local.nodeboot_actions : role => groups if contains(keys(groups), "read") }

  account    = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  bucket_arn = "arn:${local.partition}:s3:::${var.secrets_bucket_name}"

  # The folder of each role's own secrets in the bucket (nodeboot's
  # secrets layout: the seed calls the etcd and control-plane layer "secure").
  secret_folders = { etcd = "secure", compute = "compute" }

  # What each role may read in the secrets bucket, as S3 key patterns.
  object_patterns = {
    for role in keys(local.secret_readers) : role => [
      "common/*",
      "${local.secret_folders[role]}/*",
      "manifests/${role}/*",
      "ignition/${role}.ign",
    ]
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  for_each = local.nodeboot_actions

  name               = "${var.environment}-${each.key}"
  description        = "${each.key} nodes of ${var.environment}"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
}

resource "aws_iam_instance_profile" "node" {
  for_each = aws_iam_role.node

  name = each.value.name
  role = each.value.name
}

# --- Secrets: the role's prefixes of the secrets bucket, and the key ---------

data "aws_iam_policy_document" "secrets" {
  for_each = local.secret_readers

  statement {
    sid       = "ReadOwnObjects"
    actions   = each.value.read
    resources = [for p in local.object_patterns[each.key] : "${local.bucket_arn}/${p}"]
  }

  statement {
    sid       = "ListOwnPrefixes"
    actions   = each.value.list
    resources = [local.bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = local.object_patterns[each.key]
    }
  }

  # nodeboot's envelope encryption binds every secret to its environment.
  statement {
    sid       = "DecryptEnvironmentSecrets"
    actions   = each.value.decrypt
    resources = [var.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:EncryptionContext:environment"
      values   = [var.environment]
    }
  }

  # Objects stored with SSE-KMS under the same key (Ignition fetching
  # ignition/<role>.ign, for one) are decrypted by S3 with the encryption
  # context aws:s3:arn, not environment. Allowed only through S3 and only for
  # the objects this role may read (or the bucket, when S3 Bucket Keys are on).
  statement {
    sid       = "DecryptOwnObjectsThroughS3"
    actions   = each.value.decrypt
    resources = [var.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }

    condition {
      test     = "StringLike"
      variable = "kms:EncryptionContext:aws:s3:arn"
      values   = concat([local.bucket_arn], [for p in local.object_patterns[each.key] : "${local.bucket_arn}/${p}"])
    }
  }
}

resource "aws_iam_role_policy" "secrets" {
  for_each = local.secret_readers

  name   = "read-secrets"
  role   = aws_iam_role.node[each.key].id
  policy = data.aws_iam_policy_document.secrets[each.key].json
}

# --- etcd: claim a member's volume and network interface ---------------------

data "aws_iam_policy_document" "attach" {
  # Describe calls cannot be limited to resources; they are limited to the region.
  statement {
    sid       = "FindMembers"
    actions   = local.nodeboot_actions.etcd.describe
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = [var.region]
    }
  }

  # Both sides of an attachment (the instance and the volume or interface)
  # must be tagged as etcd of this environment, so a node can neither take
  # another environment's members nor detach a root volume.
  statement {
    sid     = "AttachMembersOfThisEnvironment"
    actions = local.nodeboot_actions.etcd.attach
    resources = [
      "arn:${local.partition}:ec2:${var.region}:${local.account}:instance/*",
      "arn:${local.partition}:ec2:${var.region}:${local.account}:volume/*",
      "arn:${local.partition}:ec2:${var.region}:${local.account}:network-interface/*",
    ]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/nodeboot.io/environment"
      values   = [var.environment]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/nodeboot.io/role"
      values   = ["etcd"]
    }
  }

  statement {
    sid       = "LetEc2UnlockAttachedVolumes"
    actions   = local.delegated_actions.etcd.volume_key_grant
    resources = [var.kms_key_arn]

    condition {
      test     = "Bool"
      variable = "kms:GrantIsForAWSResource"
      values   = ["true"]
    }

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["ec2.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "attach" {
  name   = "attach-members"
  role   = aws_iam_role.node["etcd"].id
  policy = data.aws_iam_policy_document.attach.json
}
