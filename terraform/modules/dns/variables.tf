variable "environment" {
  description = "Name of the environment; the public API is kube-<environment>.<public zone>."
  type        = string
}

variable "vpc_id" {
  description = "VPC the private zone is associated with."
  type        = string
}

variable "public_zone_name" {
  description = "Name of the public zone (existing, or created with public_zone_id = \"create\")."
  type        = string
}

variable "public_zone_id" {
  description = "\"\": the existing zone public_zone_name; a zone id: that existing zone; \"create\": create public_zone_name and delegate it from its parent."
  type        = string
}

variable "private_zone_name" {
  description = "Name of the private zone to create."
  type        = string
}

variable "public_lb" {
  description = "The public kube-apiserver load balancer (dns_name, zone_id)."
  type = object({
    dns_name = string
    zone_id  = string
  })
}

variable "internal_lb" {
  description = "The internal kube-apiserver load balancer (dns_name, zone_id)."
  type = object({
    dns_name = string
    zone_id  = string
  })
}

variable "etcd_member_ips" {
  description = "Fixed IP of each etcd member, by member index."
  type        = list(string)
}
