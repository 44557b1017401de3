variable "environment" {
  description = "Name of the environment."
  type        = string
}

variable "vpc_id" {
  description = "Id of the VPC."
  type        = string
}

variable "vpc_cidr" {
  description = "CIDR of the VPC (the nodes may reach anything inside it)."
  type        = string
}

variable "compute_subnet_ids" {
  description = "Per-zone subnet ids of the compute layer."
  type        = list(string)
}

variable "secure_subnets" {
  description = "Per-zone CIDRs of the secure layer, whose kube-apiserver calls the kubelets."
  type        = list(string)
}

variable "mgmt_subnets" {
  description = "Per-zone CIDRs of the management layer (bastion), allowed to reach ssh."
  type        = list(string)
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
