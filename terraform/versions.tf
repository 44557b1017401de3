terraform {
  # 1.9: validations that refer to other variables; 1.10: S3 native state
  # locking (use_lockfile) in backend.tf.
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.40"
    }
  }
}
