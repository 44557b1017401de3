output "kubeapi_public" {
  description = "URL of the public kube-apiserver: https://kube-<environment>.<public_zone_name>."
  value       = "https://${module.dns.kubeapi_public_fqdn}"
}

output "kubeapi_public_elb" {
  description = "URL of the public kube-apiserver by the load balancer's own name (works before the zone is delegated)."
  value       = "https://${module.lb.public.dns_name}"
}

output "kubeapi_internal" {
  description = "URL of the kube-apiserver for the nodes: https://kubeapi.<private_zone_name>."
  value       = "https://${module.dns.kubeapi_internal_fqdn}"
}

output "compute_asg" {
  description = "Name of the compute (worker) auto-scaling group."
  value       = module.compute.asg_name
}

output "etcd_asgs" {
  description = "Names of the etcd auto-scaling groups, one per zone that holds members."
  value       = module.etcd.asg_names
}

output "public_name_services" {
  description = "Name servers of the public zone (with public_zone_id = \"create\", already delegated from the parent zone)."
  value       = module.dns.public_name_servers
}

output "bastion_address" {
  description = "Public IPv4 address of the bastion."
  value       = module.bastion.public_ip
}

output "etcd_member_ips" {
  description = "Fixed private IP of each etcd member, by member index."
  value       = module.etcd.member_ips
}
