variable "environment" {
  description = "Name of the environment."
  type        = string
}

variable "vpc_id" {
  description = "Id of the VPC."
  type        = string
}

variable "elb_subnet_ids" {
  description = "Per-zone subnet ids of the elb layer; both load balancers live there."
  type        = list(string)
}

variable "etcd_security_group_id" {
  description = "Security group of the control plane: the targets, and clients of the internal load balancer."
  type        = string
}

variable "compute_security_group_id" {
  description = "Security group of the workers, clients of the internal load balancer."
  type        = string
}

variable "kubeapi_access_list" {
  description = "CIDRs allowed to reach the public load balancer."
  type        = list(string)
}
