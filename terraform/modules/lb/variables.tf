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

variable "secure_subnets" {
  description = "Per-zone CIDRs of the secure layer, where kube-apiserver listens on 6443."
  type        = list(string)
}

variable "compute_subnets" {
  description = "Per-zone CIDRs of the workers, the clients of the internal load balancer."
  type        = list(string)
}

variable "kubeapi_access_list" {
  description = "CIDRs allowed to reach the public load balancer."
  type        = list(string)
}
