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
  description = "The auto-scaling groups of the role, by key: name, the subnets each spreads its nodes over, its size (minimum and desired) and its headroom (max_size = size + headroom: the instances a replacement may launch before it terminates)."
  type = map(object({
    name       = string
    subnet_ids = list(string)
    size       = number
    headroom   = optional(number, 0)
  }))
}

variable "rollout" {
  description = "With min and max healthy percentages, a new launch template version rolls through the groups (instance refresh, Rolling, rolled back when it fails) and every replacement keeps that range in service (instance maintenance policy); a max over 100 launches before it terminates, within each group's headroom. null: Terraform never replaces the instances; the groups launch the newest version when something else replaces one."
  type = object({
    min_healthy_percentage = number
    max_healthy_percentage = number
  })
  default = null
}

variable "health_check" {
  description = "How the groups judge an instance: EC2 (the instance's status) or ELB (also its target groups' health checks), and the grace period after launch before a failed check counts."
  type = object({
    type         = string
    grace_period = number
  })
  default = { type = "EC2", grace_period = 300 }

  validation {
    condition     = contains(["EC2", "ELB"], var.health_check.type)
    error_message = "The health check type must be EC2 or ELB."
  }
}

variable "shutdown_behavior" {
  description = "What EC2 does with an instance that powers itself off: \"terminate\" (its group replaces it), or null for EC2's default (stop)."
  type        = string
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
