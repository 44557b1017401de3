variable "environment" {
  description = "Name of the environment; attach/detach and KMS decryption are limited to it."
  type        = string
}

variable "region" {
  description = "AWS region of the environment."
  type        = string
}

variable "secrets_bucket_name" {
  description = "S3 bucket holding the secrets, manifests and full Ignition configs."
  type        = string
}

variable "kms_key_arn" {
  description = "ARN of the environment's KMS key (kms_master_id)."
  type        = string
}
