# Where each etcd member lives. nodeboot's Rust code computes the same table
# (the attach stage claims the volume and ENI of a member in its own zone);
# tests/terraform evaluates this module and compares it with the expected
# table, so change both sides together or not at all.
#
#   member i lives in zone       i % n              (n = length(availability_zones))
#   member i's fixed IP is       cidrhost(secure_subnets[i % n], 10 + floor(i / n))
#
# This module holds no resources and needs no provider.

variable "availability_zones" {
  description = "Availability zones, in order."
  type        = list(string)
}

variable "secure_subnets" {
  description = "Per-zone CIDRs of the secure layer, in availability_zones order."
  type        = list(string)
}

variable "member_count" {
  description = "Number of etcd members."
  type        = number
}

locals {
  zones = length(var.availability_zones)
}

output "members" {
  description = "One entry per member, by index: index, zone_index, availability_zone, ip."
  value = [
    for i in range(var.member_count) : {
      index             = i
      zone_index        = i % local.zones
      availability_zone = var.availability_zones[i % local.zones]
      ip                = cidrhost(var.secure_subnets[i % local.zones], 10 + floor(i / local.zones))
    }
  ]
}
