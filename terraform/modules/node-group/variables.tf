variable "environment" {
  description = "Name of the environment; tagged on every instance as nodeboot.io/environment."
  type        = string
}

variable "role" {
  description = "Node role (etcd or compute); tagged on every instance as nodeboot.io/role and used to name the group."
  type        = string
}

variable "ami_id" {
  description = "Flatcar AMI the nodes boot."
  type        = string
}

variable "instance_type" {
  description = "EC2 instance type of the nodes."
  type        = string
}

variable "subnet_ids" {
  description = "Subnets the auto-scaling group spreads the nodes over."
  type        = list(string)
}

variable "size" {
  description = "Number of nodes: the group's minimum, maximum and desired size."
  type        = number
}

variable "security_group_ids" {
  description = "Security groups of the nodes' primary network interface."
  type        = list(string)
}

variable "instance_profile_name" {
  description = "IAM instance profile of the nodes."
  type        = string
}

variable "user_data" {
  description = "Base64 of the role's Ignition config (at most 16 KiB once decoded)."
  type        = string
}

variable "target_group_arns" {
  description = "Load balancer target groups the nodes join."
  type        = list(string)
  default     = []
}

variable "root_volume_size" {
  description = "Size of the root volume in GiB."
  type        = number
  default     = 30
}
