# The environment's zones and names:
#   kube-<environment>.<public zone>  -> public load balancer
#   kubeapi.<private zone>            -> internal load balancer
#   etcd-<i>.<private zone>           -> member i's fixed IP

resource "aws_route53_zone" "public" {
  #checkov:skip=CKV2_AWS_38:DNSSEC signing needs a KMS key in us-east-1 and a DS record in the parent zone, which is delegated outside this platform (see public_name_services)
  #checkov:skip=CKV2_AWS_39:query logging for a public zone must go to a CloudWatch log group in us-east-1, outside the environment's region and provider; the zone serves only the API name
  name    = var.public_zone_name
  comment = "Public names of ${var.environment}"
}

resource "aws_route53_zone" "private" {
  name    = var.private_zone_name
  comment = "Names inside the VPC of ${var.environment}"

  vpc {
    vpc_id = var.vpc_id
  }
}

resource "aws_route53_record" "kubeapi_public" {
  zone_id = aws_route53_zone.public.zone_id
  name    = "kube-${var.environment}.${var.public_zone_name}"
  type    = "A"

  alias {
    name                   = var.public_lb.dns_name
    zone_id                = var.public_lb.zone_id
    evaluate_target_health = true
  }
}

resource "aws_route53_record" "kubeapi_internal" {
  zone_id = aws_route53_zone.private.zone_id
  name    = "kubeapi.${var.private_zone_name}"
  type    = "A"

  alias {
    name                   = var.internal_lb.dns_name
    zone_id                = var.internal_lb.zone_id
    evaluate_target_health = true
  }
}

resource "aws_route53_record" "etcd" {
  #checkov:skip=CKV2_AWS_23:each record holds the fixed IP of a member's network interface (module etcd); checkov accepts only aliases, instances and EIPs as attached resources
  count = length(var.etcd_member_ips)

  zone_id = aws_route53_zone.private.zone_id
  name    = "etcd-${count.index}.${var.private_zone_name}"
  type    = "A"
  ttl     = 60
  records = [var.etcd_member_ips[count.index]]
}
