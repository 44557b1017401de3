variable "environment" {
  description = "Name of the environment."
  type        = string
}

variable "vpc_id" {
  description = "Id of the VPC."
  type        = string
}

variable "compute_subnet_ids" {
  description = "Per-zone subnet ids of the compute layer."
  type        = list(string)
}

variable "min_healthy_percentage" {
  description = "Share of the workers kept in service while a new launch template version rolls through them."
  type        = number
}

variable "health_target_group_arn" {
  description = "Target group whose health check (kube-proxy's /healthz) is the workers' health."
  type        = string
}

variable "compute_count" {
  description = "Number of workers."
  type        = number
}

variable "instance_type" {
  description = "EC2 instance type of the workers."
  type        = string
}

variable "ami_id" {
  description = "Flatcar AMI."
  type        = string
}

variable "instance_profile_name" {
  description = "IAM instance profile of the compute role."
  type        = string
}

variable "user_data" {
  description = "Base64 of the compute Ignition config."
  type        = string
}
