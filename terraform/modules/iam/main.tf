# One role and instance profile per node role, with the least the role needs.
# Every statement of every node policy is a line of one table,
# `local.policies`; one policy document renders them all.

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
      # No Auto Scaling action: a node that gives up booting (stage --retry)
      # powers itself off, and its launch template terminates it on shutdown.
      # etcd backups (nodeboot-etcd-backup.service, the etcd stage's backup
      # before a membership change): written and pruned under backups/etcd/.
      backup_write = ["s3:DeleteObject", "s3:PutObject"]
      # The cluster marker (backups/etcd-cluster/): put, never deleted.
      marker_write = ["s3:PutObject"]
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

  # What each role reads and decrypts in the secrets bucket, as object key
  # patterns (nodeboot's secrets layout: the seed calls the etcd and
  # control-plane layer "secure"). A secret's KMS encryption context carries
  # its key as `path`, so the same patterns bound Decrypt: a worker cannot
  # open secure/ca.key even with the ciphertext in hand. tests/iam.rs reads
  # this literal map and checks every context a boot really sends.
  secret_paths = {
    # The control plane also applies the cluster's add-ons (manifests/addons/).
    etcd    = ["common/*", "secure/*", "manifests/etcd/*", "manifests/addons/*"]
    compute = ["common/*", "compute/*", "manifests/compute/*"]
  }

  # Backups and restores of etcd (nodeboot's backup format): snapshots are
  # sealed with the context purpose = etcd-backup and their path; restore
  # requests (written by the operator) and reports are sealed like secrets.
  backup_paths  = ["backups/etcd/*"]
  restore_paths = ["backups/etcd/restore/*"]
  report_paths  = ["backups/etcd/restore/*/member-*"]
  # The cluster marker (etcd's cluster ID, written at the first backup):
  # an etcd node reads and writes it but never deletes it (no allow, and
  # the bucket policy denies it), and the bucket keeps every version.
  marker_paths = ["backups/etcd-cluster/*"]

  account    = var.account_id
  partition  = data.aws_partition.current.partition
  bucket_arn = "arn:${local.partition}:s3:::${var.secrets_bucket_name}"
  ec2_arn    = "arn:${local.partition}:ec2:${var.region}:${local.account}"
  grants     = { for role, groups in local.nodeboot_actions : role => merge(groups, lookup(local.delegated_actions, role, {})) }

  # What a role reads: its secrets and its full Ignition config.
  readable = { for role, paths in local.secret_paths : role => concat(paths, ["ignition/${role}.ign"]) }

  # Conditions, each [test, variable, values].
  in_environment = ["StringEquals", "kms:EncryptionContext:environment", [var.environment]]
  backup_purpose = ["StringEquals", "kms:EncryptionContext:purpose", ["etcd-backup"]]
  no_purpose     = ["Null", "kms:EncryptionContext:purpose", ["true"]]
  through_s3     = ["StringEquals", "kms:ViaService", ["s3.${var.region}.amazonaws.com"]]
  etcd_members = [
    ["StringEquals", "aws:ResourceTag/nodeboot.io/environment", [var.environment]],
    ["StringEquals", "aws:ResourceTag/nodeboot.io/role", ["etcd"]],
  ]
  # Each zone's etcd nodes act on that zone's members only (issue 23 items 2
  # and 3). No condition key names the caller's zone; its network path does:
  # an etcd node's calls to EC2 and KMS leave through its own zone's NAT
  # gateway (a secure subnet routes 0.0.0.0/0 to its zone's NAT and nowhere
  # else: modules/network), so aws:SourceIp is that NAT's address; its S3
  # calls come through the gateway endpoint from its own address
  # (aws:VpcSourceIp, which only-inside-the-vpc ties to the instance the
  # credentials were issued to), in its zone's secure subnet. Zones without
  # members get nothing.
  zones = {
    for z, zone in var.availability_zones : zone => {
      index       = z
      nat         = "${var.nat_public_ips[z]}/32"
      subnet      = var.secure_subnets[z]
      member_keys = [for m in module.placement.members : "secure/etcd/member-${m.index}.key" if m.zone_index == z]
    } if length([for m in module.placement.members : m if m.zone_index == z]) > 0
  }

  path_in     = { for name, paths in merge(local.secret_paths, { backups = local.backup_paths, restore = local.restore_paths, reports = local.report_paths }) : name => ["StringLike", "kms:EncryptionContext:path", paths] }
  object_arns = { for role, paths in local.readable : role => [for p in paths : "${local.bucket_arn}/${p}"] }
  not_via_aws = ["BoolIfExists", "aws:ViaAWSService", ["false"]]

  # The table: role => policy name => statements, each
  # { sid, effect, actions, resources, conditions }. Allow statements take
  # their actions from one group of the maps above; Deny statements take
  # every action of the role a network path carries.
  policies = {
    for role in keys(local.secret_paths) : role => merge(
      {
        "read-secrets" = [
          { sid = "ReadOwnObjects", effect = "Allow", actions = local.grants[role].read, resources = local.object_arns[role], conditions = [] },
          { sid = "ListOwnPrefixes", effect = "Allow", actions = local.grants[role].list, resources = [local.bucket_arn], conditions = [["StringLike", "s3:prefix", local.readable[role]]] },
          # nodeboot's envelope binds every secret to its environment and path
          # (and has no purpose: a backup is not a secret).
          { sid = "DecryptOwnSecrets", effect = "Allow", actions = local.grants[role].decrypt, resources = [var.kms_key_arn], conditions = [local.in_environment, local.no_purpose, local.path_in[role]] },
          # Objects stored with SSE-KMS under the same key (Ignition fetching
          # ignition/<role>.ign, for one) are decrypted by S3 with the context
          # aws:s3:arn: only through S3, only the objects this role may read
          # (or the bucket, when S3 Bucket Keys are on).
          { sid = "DecryptOwnObjectsThroughS3", effect = "Allow", actions = local.grants[role].decrypt, resources = [var.kms_key_arn], conditions = [local.through_s3, ["StringLike", "kms:EncryptionContext:aws:s3:arn", concat([local.bucket_arn], local.object_arns[role])]] },
        ]
        "only-inside-the-vpc" = local.perimeter[role]
      },
      [for extra in [local.etcd_only] : extra if role == "etcd"]...
    )
  }

  # etcd claims a member's volume and network interface, and keeps backups.
  etcd_only = {
    "attach-members" = concat([
      # Describe calls cannot be limited to resources; they are limited to the region.
      { sid = "FindMembers", effect = "Allow", actions = local.grants.etcd.describe, resources = ["*"], conditions = [["StringEquals", "aws:RequestedRegion", [var.region]]] },
      # Both sides of an attachment (the instance and the volume or interface)
      # must be tagged as etcd of this environment, so a node can neither take
      # another environment's members nor detach a root volume. A node
      # attaches to itself only: the instance side must be the caller's own
      # instance (ec2:SourceInstanceARN, set on requests signed with an
      # instance profile's credentials).
      { sid = "AttachToTheCallingInstanceOnly", effect = "Allow", actions = local.grants.etcd.attach, resources = ["${local.ec2_arn}:instance/*"], conditions = concat([["ArnEquals", "ec2:SourceInstanceARN", ["${local.ec2_arn}:instance/$${ec2:InstanceID}"]]], local.etcd_members) },
      { sid = "AttachMembersOfThisEnvironment", effect = "Allow", actions = local.grants.etcd.attach, resources = ["${local.ec2_arn}:volume/*", "${local.ec2_arn}:network-interface/*"], conditions = local.etcd_members },
      # Taking over a member held by a dead instance detaches it from that
      # instance, so the instance side of a detach is any etcd node of this
      # environment (the attach stage never detaches from a running holder).
      { sid = "DetachMembersOfThisEnvironment", effect = "Allow", actions = local.grants.etcd.detach, resources = ["${local.ec2_arn}:instance/*", "${local.ec2_arn}:volume/*", "${local.ec2_arn}:network-interface/*"], conditions = local.etcd_members },
      ],
      # ... but only from a node of the same zone (local.zones: the call's
      # NAT): a volume, interface or instance of a zone is attached or
      # detached through that zone's NAT only. One Deny per zone is shorter
      # than an Allow per zone and action (a role's inline policies may hold
      # 10,240 characters in all).
      [for zone, z in local.zones : { sid = "Zone${z.index}MembersFromZone${z.index}Only", effect = "Deny", actions = concat(local.grants.etcd.attach, local.grants.etcd.detach), resources = ["*"], conditions = [["StringEquals", "ec2:AvailabilityZone", [zone]], ["NotIpAddress", "aws:SourceIp", [z.nat]]] }],
      [
        # The mount stage marks a member's volume that holds a filesystem
        # (nodeboot.io/formatted), so it is never formatted again; that one tag
        # key only, on this environment's etcd volumes only.
        { sid = "MarkFormattedVolumes", effect = "Allow", actions = local.grants.etcd.tag, resources = ["${local.ec2_arn}:volume/*"], conditions = concat(local.etcd_members, [["ForAllValues:StringEquals", "aws:TagKeys", ["nodeboot.io/formatted"]]]) },
        { sid = "LetEc2UnlockAttachedVolumes", effect = "Allow", actions = local.grants.etcd.volume_key_grant, resources = [var.kms_key_arn], conditions = [["Bool", "kms:GrantIsForAWSResource", ["true"]], ["StringEquals", "kms:ViaService", ["ec2.${var.region}.amazonaws.com"]]] },
    ])
    # A member's private key is fetched and opened only by a node of the
    # member's zone (secure/* allows the rest of the control plane's
    # secrets). With one member per zone, that is one node per key. A
    # managed policy (local.managed): it grows with the zones. A call an
    # AWS service makes for the role never carries nodeboot's path context.
    "member-keys-of-its-zone" = concat(
      [for zone, z in local.zones : { sid = "MemberKeysOfZone${z.index}OnlyFromIt", effect = "Deny", actions = local.grants.etcd.read, resources = [for k in z.member_keys : "${local.bucket_arn}/${k}"], conditions = [["NotIpAddress", "aws:VpcSourceIp", [z.subnet]]] }],
      [for zone, z in local.zones : { sid = "MemberKeysOfZone${z.index}OpenedOnlyInIt", effect = "Deny", actions = local.grants.etcd.decrypt, resources = [var.kms_key_arn], conditions = [["StringEquals", "kms:EncryptionContext:path", z.member_keys], ["NotIpAddress", "aws:SourceIp", [z.nat]]] }],
    )
    # Snapshots, restore requests and reports under backups/etcd/ of the
    # secrets bucket: read (download, HEAD), write, prune; nothing outside.
    "etcd-backups" = [
      { sid = "ReadBackups", effect = "Allow", actions = local.grants.etcd.read, resources = ["${local.bucket_arn}/${local.backup_paths[0]}"], conditions = [] },
      { sid = "WriteAndPruneBackups", effect = "Allow", actions = local.grants.etcd.backup_write, resources = ["${local.bucket_arn}/${local.backup_paths[0]}"], conditions = [] },
      { sid = "ReadClusterMarker", effect = "Allow", actions = local.grants.etcd.read, resources = ["${local.bucket_arn}/${local.marker_paths[0]}"], conditions = [] },
      { sid = "WriteClusterMarker", effect = "Allow", actions = local.grants.etcd.marker_write, resources = ["${local.bucket_arn}/${local.marker_paths[0]}"], conditions = [] },
      { sid = "ListBackups", effect = "Allow", actions = local.grants.etcd.list, resources = [local.bucket_arn], conditions = [["StringLike", "s3:prefix", local.backup_paths]] },
      # A backup's data key has its own context (purpose etcd-backup, its
      # path), so a node can neither seal a secret nor open one as a backup.
      { sid = "SealBackups", effect = "Allow", actions = local.grants.etcd.encrypt, resources = [var.kms_key_arn], conditions = [local.in_environment, local.backup_purpose, local.path_in.backups] },
      { sid = "OpenBackups", effect = "Allow", actions = local.grants.etcd.decrypt, resources = [var.kms_key_arn], conditions = [local.in_environment, local.backup_purpose, local.path_in.backups] },
      # Restore requests and reports: opened like secrets; sealed only as a
      # member's report, never as a request.
      { sid = "SealRestoreReports", effect = "Allow", actions = local.grants.etcd.encrypt, resources = [var.kms_key_arn], conditions = [local.in_environment, local.no_purpose, local.path_in.reports] },
      { sid = "OpenRestoreRequestsAndReports", effect = "Allow", actions = local.grants.etcd.decrypt, resources = [var.kms_key_arn], conditions = [local.in_environment, local.no_purpose, local.path_in.restore] },
      # The bucket encrypts by default under the same key (SSE-KMS): S3 asks
      # KMS for a data key with the writer's credentials, context aws:s3:arn
      # (the bucket's ARN with S3 Bucket Keys).
      { sid = "EncryptBackupObjectsThroughS3", effect = "Allow", actions = local.grants.etcd.encrypt, resources = [var.kms_key_arn], conditions = [local.through_s3, ["StringLike", "kms:EncryptionContext:aws:s3:arn", [local.bucket_arn, "${local.bucket_arn}/${local.backup_paths[0]}", "${local.bucket_arn}/${local.marker_paths[0]}"]]] },
    ]
  }

  # A node role's credentials work from its own instances only: S3 through
  # the VPC's endpoint from the instance the credentials were issued to,
  # every other service through the VPC's NAT gateways (or an endpoint of
  # the VPC), and only for instances of this VPC. Calls an AWS service makes
  # on the role's behalf (S3 asking KMS for SSE-KMS, EC2 creating a volume's
  # KMS grant) are its own and pass.
  perimeter = {
    for role, groups in local.grants : role => [
      { sid = "S3OnlyThroughTheVpcEndpoint", effect = "Deny", actions = local.s3_actions[role], resources = ["*"], conditions = [["StringNotEquals", "aws:SourceVpce", [var.s3_endpoint_id]]] },
      { sid = "S3OnlyFromTheInstanceItself", effect = "Deny", actions = local.s3_actions[role], resources = ["*"], conditions = [["StringNotEquals", "aws:EC2InstanceSourcePrivateIPv4", ["$${aws:VpcSourceIp}"]], ["Null", "aws:VpcSourceIp", ["false"]]] },
      { sid = "OtherServicesOnlyFromTheVpc", effect = "Deny", actions = local.other_actions[role], resources = ["*"], conditions = [["NotIpAddress", "aws:SourceIp", [for ip in var.nat_public_ips : "${ip}/32"]], ["StringNotEquals", "aws:SourceVpc", [var.vpc_id]], local.not_via_aws] },
      { sid = "OnlyInstancesOfTheVpc", effect = "Deny", actions = sort(concat(local.s3_actions[role], local.other_actions[role])), resources = ["*"], conditions = [["StringNotEquals", "aws:EC2InstanceSourceVPC", [var.vpc_id]], local.not_via_aws] },
    ] if length(groups) > 0
  }
  role_actions  = { for role, groups in local.grants : role => sort(distinct(flatten(values(groups)))) }
  s3_actions    = { for role, actions in local.role_actions : role => [for a in actions : a if startswith(a, "s3:")] }
  other_actions = { for role, actions in local.role_actions : role => [for a in actions : a if !startswith(a, "s3:")] }

  # "<role>/<policy name>" => statements, and the secrets bucket's policy;
  # a statement with principals belongs to a resource policy.
  documents = merge(concat(
    [
      for role, named in local.policies : {
        for name, statements in named : "${role}/${name}" => { role = role, name = name, statements = [for st in statements : merge(st, { principals = [] })] }
      }
    ],
    [{ bucket = { role = null, name = "secrets-bucket", statements = local.bucket_statements } }],
  )...)
}

data "aws_partition" "current" {}

module "placement" {
  source = "../etcd/placement"

  availability_zones = var.availability_zones
  secure_subnets     = var.secure_subnets
  member_count       = var.etcd_count
}

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

data "aws_iam_policy_document" "node" {
  for_each = local.documents

  dynamic "statement" {
    for_each = each.value.statements

    content {
      sid       = statement.value.sid
      effect    = statement.value.effect
      actions   = statement.value.actions
      resources = statement.value.resources

      dynamic "principals" {
        for_each = length(statement.value.principals) > 0 ? [statement.value.principals] : []

        content {
          type        = "AWS"
          identifiers = principals.value
        }
      }

      dynamic "condition" {
        for_each = statement.value.conditions

        content {
          test     = condition.value[0]
          variable = condition.value[1]
          values   = condition.value[2]
        }
      }
    }
  }
}

resource "aws_iam_role_policy" "node" {
  for_each = { for key, document in local.documents : key => document if document.role != null && !contains(local.managed, key) }

  name   = each.value.name
  role   = aws_iam_role.node[each.value.role].id
  policy = data.aws_iam_policy_document.node[each.key].json
}

# A role's inline policies may hold 10,240 characters in all (whitespace
# not counted); these policies are managed ones (6,144 each) attached to the
# role instead. tests/terraform checks both limits on the plans.
locals {
  managed = ["etcd/member-keys-of-its-zone"]
}

resource "aws_iam_policy" "node" {
  for_each = toset(local.managed)

  name        = "${var.environment}-${replace(each.key, "/", "-")}"
  description = "${local.documents[each.key].name} of the ${local.documents[each.key].role} nodes of ${var.environment}"
  policy      = data.aws_iam_policy_document.node[each.key].json
}

resource "aws_iam_role_policy_attachment" "node" {
  for_each = aws_iam_policy.node

  role       = aws_iam_role.node[local.documents[each.key].role].name
  policy_arn = each.value.arn
}

# The inline policies were one resource each before the table.
moved {
  from = aws_iam_role_policy.secrets["etcd"]
  to   = aws_iam_role_policy.node["etcd/read-secrets"]
}

moved {
  from = aws_iam_role_policy.secrets["compute"]
  to   = aws_iam_role_policy.node["compute/read-secrets"]
}

moved {
  from = aws_iam_role_policy.attach
  to   = aws_iam_role_policy.node["etcd/attach-members"]
}

moved {
  from = aws_iam_role_policy.backups
  to   = aws_iam_role_policy.node["etcd/etcd-backups"]
}

# --- The secrets bucket's policy ----------------------------------------------

locals {
  # Every S3 action a node role is granted, in any group of the map.
  node_s3_actions = sort(distinct(flatten(values(local.s3_actions))))

  bucket_objects = [local.bucket_arn, "${local.bucket_arn}/*"]
  bucket_statements = [
    { sid = "NodeRolesOnlyThroughTheVpcEndpoint", effect = "Deny", principals = ["*"], actions = local.node_s3_actions, resources = local.bucket_objects, conditions = [["ArnEquals", "aws:PrincipalArn", [for role in keys(local.nodeboot_actions) : "arn:${local.partition}:iam::${local.account}:role/${var.environment}-${role}"]], ["StringNotEquals", "aws:SourceVpce", [var.s3_endpoint_id]]] },
    # No node role deletes the cluster marker or any version of it, whatever
    # its own policies say: it is the evidence that the etcd cluster existed.
    { sid = "NoNodeRoleDeletesTheClusterMarker", effect = "Deny", principals = ["*"], actions = ["s3:DeleteObject", "s3:DeleteObjectVersion"], resources = ["${local.bucket_arn}/${local.marker_paths[0]}"], conditions = [["ArnEquals", "aws:PrincipalArn", [for role in keys(local.nodeboot_actions) : "arn:${local.partition}:iam::${local.account}:role/${var.environment}-${role}"]]] },
    { sid = "OnlyOverTls", effect = "Deny", principals = ["*"], actions = ["s3:*"], resources = local.bucket_objects, conditions = [["Bool", "aws:SecureTransport", ["false"]]] },
  ]
}

# The node roles reach the bucket only through the VPC's S3 endpoint, even if
# their own policies were loosened; the roles' only-inside-the-vpc policies
# hold the same line for KMS, EC2 and Auto Scaling. The operator and
# Terraform are not node roles and keep their access, over TLS like anyone.
resource "aws_s3_bucket_policy" "secrets" {
  bucket = var.secrets_bucket_name
  policy = data.aws_iam_policy_document.node["bucket"].json
}
