output "vpc_id" {
  description = "Id of the VPC."
  value       = aws_vpc.this.id
}

output "subnet_ids" {
  description = "Subnet ids per layer (secure, compute, elb, mgmt), each list in availability_zones order."
  value = {
    for layer, cidrs in local.layers :
    layer => [for i in range(length(cidrs)) : aws_subnet.this["${layer}-${i}"].id]
  }
}

output "s3_endpoint_id" {
  description = "Id of the S3 gateway endpoint of the private route tables."
  value       = aws_vpc_endpoint.s3.id
}

output "nat_public_ips" {
  description = "Public IPs of the NAT gateways, the private layers' way to the internet."
  value       = aws_eip.nat[*].public_ip
}
