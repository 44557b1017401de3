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

variable "s3_endpoint_id" {
  description = "The VPC's S3 gateway endpoint: the only way the node roles reach the secrets bucket."
  type        = string
}

variable "account_id" {
  description = "AWS account id of the environment (the provider's allowed_account_ids): the ARNs of its instances, volumes and interfaces."
  type        = string
}

variable "vpc_id" {
  description = "The environment's VPC: node credentials work only for its instances, and from it."
  type        = string
}

variable "nat_public_ips" {
  description = "Public IPs of the VPC's NAT gateways: node calls to AWS services other than S3 come from them."
  type        = list(string)
}

variable "availability_zones" {
  description = "Availability zones, in order: nat_public_ips and secure_subnets follow it; each zone's etcd nodes act on its members only."
  type        = list(string)
}

variable "secure_subnets" {
  description = "Per-zone CIDRs of the secure layer: an etcd node's own address, in its zone's subnet, is where it reads its members' keys from."
  type        = list(string)
}

variable "etcd_count" {
  description = "Number of etcd members (their zones: modules/etcd/placement)."
  type        = number
}
