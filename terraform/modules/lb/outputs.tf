output "public" {
  description = "The public kube-apiserver load balancer: dns_name and zone_id (for DNS aliases)."
  value = {
    dns_name = aws_lb.kubeapi["public"].dns_name
    zone_id  = aws_lb.kubeapi["public"].zone_id
  }
}

output "internal" {
  description = "The internal kube-apiserver load balancer: dns_name and zone_id (for DNS aliases)."
  value = {
    dns_name = aws_lb.kubeapi["internal"].dns_name
    zone_id  = aws_lb.kubeapi["internal"].zone_id
  }
}

output "target_group_arns" {
  description = "Target groups the etcd (control plane) nodes join, port 6443."
  value       = [for tg in aws_lb_target_group.kubeapi : tg.arn]
}

output "worker_health_target_group_arn" {
  description = "Target group of the workers' health (kube-proxy's /healthz on 10256), checked by the internal load balancer."
  value       = aws_lb_target_group.workers.arn
}

output "security_group_ids" {
  description = "Security groups of the load balancers: public and internal."
  value       = { for k, g in aws_security_group.kubeapi : k => g.id }
}
