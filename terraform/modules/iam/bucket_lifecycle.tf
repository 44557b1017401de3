# --- The secrets bucket's lifecycle --------------------------------------------
#
# The bucket itself is created by `nodeboot prereqs` before the first apply
# (versioned, public access blocked, encrypted under the environment's key);
# Terraform gives it its policy (main.tf) and this lifecycle configuration,
# both by name, on a bucket it does not own.
#
# A backup is an S3 multipart upload in 8 MiB parts (src/shared/backup/store.rs).
# A backup that fails while it runs aborts its upload; one whose process is
# killed (a node terminated, the service stopped mid-stream) cannot, and S3
# keeps and bills its parts until they are aborted. This rule aborts them a
# day after the upload began. It covers the whole bucket, not only backups/:
# no upload of this environment lasts a day (an 8 GiB backup at 10 MiB/s is
# 14 minutes), so an upload a day old anywhere in the bucket is dead, whoever
# started it (an operator's `aws s3 cp` of a large file is a multipart upload
# too); and checkov's CKV_AWS_300 accepts only a rule with no filter.
#
# A lifecycle configuration is one document per bucket: a rule set on the
# bucket outside Terraform is replaced by this one at the next apply (add it
# here instead). Nothing expires objects: backups are pruned by the backup
# service's retention, secrets are never expired.
resource "aws_s3_bucket_lifecycle_configuration" "secrets" {
  bucket = var.secrets_bucket_name

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}
