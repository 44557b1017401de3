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

variable "groups" {
  description = "The auto-scaling groups of the role, by key: name, the subnets each spreads its nodes over, and its size (minimum, maximum and desired)."
  type = map(object({
    name       = string
    subnet_ids = list(string)
    size       = number
  }))
}

variable "min_healthy_percentage" {
  description = "With a number, a new launch template version rolls through the groups (instance refresh, Rolling) keeping this percentage healthy. null: Terraform never replaces the instances; the groups launch the newest version when something else replaces one."
  type        = number
  default     = null
}

variable "suspended_processes" {
  description = "Auto-scaling processes suspended on every group (etcd: AZRebalance, which may terminate a live member to even out zones)."
  type        = list(string)
  default     = []
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
