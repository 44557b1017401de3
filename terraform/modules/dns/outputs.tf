output "kubeapi_public_fqdn" {
  description = "Public name of kube-apiserver."
  value       = aws_route53_record.kubeapi_public.fqdn
}

output "kubeapi_internal_fqdn" {
  description = "Name of kube-apiserver inside the VPC."
  value       = aws_route53_record.kubeapi_internal.fqdn
}

output "public_name_servers" {
  description = "Name servers of the public zone."
  value       = local.public_zone.name_servers
}

output "private_zone_id" {
  description = "Id of the private zone."
  value       = aws_route53_zone.private.zone_id
}
