terraform {
  # 1.9: validations that refer to other variables; 1.10: S3 native state
  # locking (use_lockfile) in backend.tf.
  required_version = ">= 1.10"

  # Exactly the release .terraform.lock.hcl pins by checksum (`terraform
  # init` refuses a package that does not match it). To move: change the
  # version here, then `terraform providers lock` for every platform
  # operators use (terraform/README.md) and commit both.
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "5.100.0"
    }
  }
}
