variable "security_group_ids" {
  description = "The environment's security groups by name: etcd, compute, kubeapi_public, kubeapi_internal, bastion."
  type        = map(string)
}

variable "kubeapi_access_list" {
  description = "CIDRs allowed to reach the public load balancer."
  type        = list(string)
}

variable "ssh_access_list" {
  description = "CIDRs allowed to reach the bastion on port 22."
  type        = list(string)
}
