variable "environment" {
  description = "Name of the environment; prefixes resource names."
  type        = string
}

variable "availability_zones" {
  description = "Availability zones, in order; the n-th subnet of every layer is in the n-th zone."
  type        = list(string)
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC."
  type        = string
}

variable "secure_subnets" {
  description = "Per-zone CIDRs of the secure layer (etcd, control plane): private, outbound through the zone's NAT gateway."
  type        = list(string)
}

variable "compute_subnets" {
  description = "Per-zone CIDRs of the compute layer (workers): private, outbound through the zone's NAT gateway."
  type        = list(string)
}

variable "elb_subnets" {
  description = "Per-zone CIDRs of the load balancer layer: routed to the internet gateway."
  type        = list(string)
}

variable "mgmt_subnets" {
  description = "Per-zone CIDRs of the management layer (bastion, NAT gateways): routed to the internet gateway."
  type        = list(string)
}

variable "flow_log_retention_days" {
  description = "Days the VPC flow logs are kept."
  type        = number
  default     = 365
}

variable "region" {
  description = "AWS region of the VPC (the S3 endpoint's service name)."
  type        = string
}

variable "secrets_bucket_name" {
  description = "The environment's secrets bucket, reachable through the S3 endpoint."
  type        = string
}

variable "node_s3_actions" {
  description = "The S3 actions of the node roles: what the endpoint carries to the environment's buckets."
  type        = list(string)
}

variable "readable_objects" {
  description = "Further objects (\"bucket/key\") nodes read through the S3 endpoint: nodeboot's binary when Ignition fetches it."
  type        = list(string)
}
