# Daily EBS snapshots of every member's data volume (Data Lifecycle Manager),
# besides etcd's own backups: they survive the loss of the volume, of the
# instance and of the cluster, and a member can be rebuilt from one.

data "aws_iam_policy_document" "dlm_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["dlm.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "snapshots" {
  name               = "${var.environment}-etcd-snapshots"
  description        = "Data Lifecycle Manager: snapshots of the etcd member volumes of ${var.environment}"
  assume_role_policy = data.aws_iam_policy_document.dlm_assume.json
}

# AWS's managed policy for DLM's EBS snapshot policies (create, tag and
# delete snapshots, describe volumes).
resource "aws_iam_role_policy_attachment" "snapshots" {
  role       = aws_iam_role.snapshots.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AWSDataLifecycleManagerServiceRole"
}

data "aws_partition" "current" {}

resource "aws_dlm_lifecycle_policy" "members" {
  description        = "${var.environment} daily snapshots of the etcd member volumes"
  execution_role_arn = aws_iam_role.snapshots.arn
  state              = "ENABLED"

  policy_details {
    resource_types = ["VOLUME"]
    target_tags    = local.snapshot_tag

    schedule {
      name      = "daily"
      copy_tags = true

      create_rule {
        interval      = 24
        interval_unit = "HOURS"
        times         = ["03:00"]
      }

      retain_rule {
        count = var.snapshot_retain_count
      }

      tags_to_add = {
        "nodeboot.io/snapshot-of" = "${var.environment}-etcd"
      }
    }
  }

  tags = {
    Name = "${var.environment}-etcd-snapshots"
  }
}
