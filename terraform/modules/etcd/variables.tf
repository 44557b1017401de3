variable "environment" {
  description = "Name of the environment."
  type        = string
}

variable "availability_zones" {
  description = "Availability zones, in order."
  type        = list(string)
}

variable "vpc_id" {
  description = "Id of the VPC."
  type        = string
}

variable "secure_subnets" {
  description = "Per-zone CIDRs of the secure layer: the members' fixed IPs are in them."
  type        = list(string)
}

variable "secure_subnet_ids" {
  description = "Per-zone subnet ids of the secure layer, in availability_zones order."
  type        = list(string)
}

variable "etcd_count" {
  description = "Number of etcd members."
  type        = number
}

variable "instance_type" {
  description = "EC2 instance type of the members."
  type        = string
}

variable "ami_id" {
  description = "Flatcar AMI."
  type        = string
}

variable "instance_profile_name" {
  description = "IAM instance profile of the etcd role."
  type        = string
}

variable "kms_key_arn" {
  description = "ARN of the KMS key that encrypts the members' data volumes."
  type        = string
}

variable "target_group_arns" {
  description = "kube-apiserver target groups (public and internal load balancers)."
  type        = list(string)
}

variable "user_data" {
  description = "Base64 of the etcd Ignition config."
  type        = string
}

variable "data_volume_size" {
  description = "Size in GiB of each member's etcd data volume."
  type        = number
  default     = 20
}

variable "snapshot_retain_count" {
  description = "Daily snapshots of each member's data volume kept by Data Lifecycle Manager."
  type        = number
  default     = 14
}
