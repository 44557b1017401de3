# One role and instance profile per node role, with the least the role needs.

locals {
  # Every AWS action nodeboot calls, per role, grouped by the statement that
  # allows it. This map is the one list: the statements below take their
  # actions from it, and tests/terraform compares it with what nodeboot's
  # code calls. No wildcards.
  nodeboot_actions = {
    etcd = {
      describe = ["ec2:DescribeInstances", "ec2:DescribeNetworkInterfaces", "ec2:DescribeVolumes"]
      attach   = ["ec2:AttachNetworkInterface", "ec2:AttachVolume"]
      detach   = ["ec2:DetachNetworkInterface", "ec2:DetachVolume"]
      tag      = ["ec2:CreateTags"]
      read     = ["s3:GetObject"]
      list     = ["s3:ListBucket"]
      decrypt  = ["kms:Decrypt"]
      # A node that gives up booting marks itself Unhealthy (stage --retry).
      health = ["autoscaling:SetInstanceHealth"]
      # etcd backups (nodeboot-etcd-backup.service, the etcd stage's backup
      # before a membership change): written and pruned under backups/etcd/.
      backup_write = ["s3:DeleteObject", "s3:PutObject"]
      encrypt      = ["kms:GenerateDataKey"]
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

  account    = var.account_id
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
  # another environment's members nor detach a root volume. A node attaches
  # to itself only: the instance side must be the caller's own instance
  # (ec2:SourceInstanceARN, set on requests signed with an instance
  # profile's credentials).
  statement {
    sid       = "AttachToTheCallingInstanceOnly"
    actions   = local.nodeboot_actions.etcd.attach
    resources = ["arn:${local.partition}:ec2:${var.region}:${local.account}:instance/*"]

    condition {
      test     = "ArnEquals"
      variable = "ec2:SourceInstanceARN"
      values   = ["arn:${local.partition}:ec2:${var.region}:${local.account}:instance/$${ec2:InstanceID}"]
    }

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
    sid     = "AttachMembersOfThisEnvironment"
    actions = local.nodeboot_actions.etcd.attach
    resources = [
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

  # Taking over a member held by a dead instance detaches it from that
  # instance, so the instance side of a detach is any etcd node of this
  # environment (the attach stage never detaches from a running holder).
  statement {
    sid     = "DetachMembersOfThisEnvironment"
    actions = local.nodeboot_actions.etcd.detach
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

  # A node that gives up booting (no free member in its zone, AWS failing for
  # an hour) marks its own instance Unhealthy so its group replaces it.
  # Auto Scaling has no condition key for the instance a call names; the
  # call is limited to this environment's etcd groups (their tags and names).
  statement {
    sid       = "MarkOwnInstanceUnhealthy"
    actions   = local.nodeboot_actions.etcd.health
    resources = ["arn:${local.partition}:autoscaling:${var.region}:${local.account}:autoScalingGroup:*:autoScalingGroupName/${var.environment}-etcd-*"]

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

  # The mount stage marks a member's volume that holds a filesystem
  # (nodeboot.io/formatted), so it is never formatted again; that one tag
  # key only, on this environment's etcd volumes only.
  statement {
    sid       = "MarkFormattedVolumes"
    actions   = local.nodeboot_actions.etcd.tag
    resources = ["arn:${local.partition}:ec2:${var.region}:${local.account}:volume/*"]

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

    condition {
      test     = "ForAllValues:StringEquals"
      variable = "aws:TagKeys"
      values   = ["nodeboot.io/formatted"]
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

# --- etcd: backups under backups/etcd/ of the secrets bucket -----------------

locals {
  backup_objects = "${local.bucket_arn}/backups/etcd/*"
}

data "aws_iam_policy_document" "backups" {
  # Snapshots, restore requests and reports: read (download, HEAD), write,
  # prune. Nothing outside backups/etcd/.
  statement {
    sid       = "ReadBackups"
    actions   = local.nodeboot_actions.etcd.read
    resources = [local.backup_objects]
  }

  statement {
    sid       = "WriteAndPruneBackups"
    actions   = local.nodeboot_actions.etcd.backup_write
    resources = [local.backup_objects]
  }

  statement {
    sid       = "ListBackups"
    actions   = local.nodeboot_actions.etcd.list
    resources = [local.bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["backups/etcd/*"]
    }
  }

  # A backup's data key: its own encryption context (purpose etcd-backup),
  # so a node cannot seal a secret. Reading one back is the environment's
  # Decrypt of the read-secrets policy.
  statement {
    sid       = "SealBackups"
    actions   = local.nodeboot_actions.etcd.encrypt
    resources = [var.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:EncryptionContext:environment"
      values   = [var.environment]
    }

    condition {
      test     = "StringEquals"
      variable = "kms:EncryptionContext:purpose"
      values   = ["etcd-backup"]
    }
  }

  # A member's restore report (sealed like a secret, its path in the
  # context): only reports, never a restore request.
  statement {
    sid       = "SealRestoreReports"
    actions   = local.nodeboot_actions.etcd.encrypt
    resources = [var.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:EncryptionContext:environment"
      values   = [var.environment]
    }

    condition {
      test     = "StringLike"
      variable = "kms:EncryptionContext:path"
      values   = ["backups/etcd/restore/*/member-*"]
    }
  }

  # The bucket encrypts by default under the same key (SSE-KMS): S3 asks KMS
  # for a data key with the writer's credentials, context aws:s3:arn (the
  # bucket's ARN with S3 Bucket Keys).
  statement {
    sid       = "EncryptBackupObjectsThroughS3"
    actions   = local.nodeboot_actions.etcd.encrypt
    resources = [var.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }

    condition {
      test     = "StringLike"
      variable = "kms:EncryptionContext:aws:s3:arn"
      values   = [local.bucket_arn, local.backup_objects]
    }
  }
}

resource "aws_iam_role_policy" "backups" {
  name   = "etcd-backups"
  role   = aws_iam_role.node["etcd"].id
  policy = data.aws_iam_policy_document.backups.json
}

# --- The secrets bucket: node roles only through the VPC's S3 endpoint -------

locals {
  # Every S3 action a node role is granted, in any group of the map.
  node_s3_actions = sort(distinct([for a in flatten([for groups in local.nodeboot_actions : values(groups)]) : a if startswith(a, "s3:")]))
}

# The nodes reach S3 through the gateway endpoint of their route tables;
# credentials taken off a node are useless anywhere else. The operator and
# Terraform are not node roles and keep their access.
data "aws_iam_policy_document" "secrets_bucket" {
  statement {
    sid       = "NodeRolesOnlyThroughTheVpcEndpoint"
    effect    = "Deny"
    actions   = local.node_s3_actions
    resources = [local.bucket_arn, "${local.bucket_arn}/*"]

    principals {
      type        = "AWS"
      identifiers = ["*"]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:PrincipalArn"
      values   = [for role in keys(local.nodeboot_actions) : "arn:${local.partition}:iam::${local.account}:role/${var.environment}-${role}"]
    }

    condition {
      test     = "StringNotEquals"
      variable = "aws:SourceVpce"
      values   = [var.s3_endpoint_id]
    }
  }
}

resource "aws_s3_bucket_policy" "secrets" {
  bucket = var.secrets_bucket_name
  policy = data.aws_iam_policy_document.secrets_bucket.json
}
