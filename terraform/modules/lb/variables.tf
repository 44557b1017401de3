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
