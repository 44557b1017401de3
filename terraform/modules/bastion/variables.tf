variable "environment" {
  description = "Name of the environment."
  type        = string
}

variable "vpc_id" {
  description = "Id of the VPC."
  type        = string
}

variable "mgmt_subnet_id" {
  description = "Management subnet the bastion lives in."
  type        = string
}

variable "instance_type" {
  description = "EC2 instance type of the bastion."
  type        = string
}

variable "ami_id" {
  description = "Flatcar AMI."
  type        = string
}

variable "instance_profile_name" {
  description = "IAM instance profile of the bastion role."
  type        = string
}

variable "user_data" {
  description = "Base64 of the bastion Ignition config."
  type        = string
}
