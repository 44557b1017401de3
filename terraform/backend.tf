# The state lives in the environment's Terraform bucket. A backend block cannot
# read variables, so its settings come from the environment file at init time:
#
#   terraform init \
#     -backend-config="bucket=<terraform_bucket_name>" \
#     -backend-config="key=<environment>/terraform.tfstate" \
#     -backend-config="region=<region>" \
#     -backend-config="profile=<aws_profile>" \
#     -backend-config="encrypt=true" \
#     -backend-config="use_lockfile=true"
#
# README.md has a one-liner that reads those values from the environment file.
terraform {
  backend "s3" {}
}
