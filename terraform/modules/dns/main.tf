# The environment's zones and names:
#   kube-<environment>.<public zone>  -> public load balancer (the zone exists
#                                        already, or is created and delegated)
#   kubeapi.<private zone>            -> internal load balancer
#   etcd-<i>.<private zone>           -> member i's fixed IP

locals {
  create_public_zone = var.public_zone_id == "create"
  parent_zone_name   = join(".", slice(split(".", var.public_zone_name), 1, length(split(".", var.public_zone_name))))
}

# By default the public zone exists already and outlives the environment:
# rebuilding the environment never changes the name servers anyone
# delegated to.
data "aws_route53_zone" "public" {
  count = local.create_public_zone ? 0 : 1

  zone_id      = var.public_zone_id == "" ? null : var.public_zone_id
  name         = var.public_zone_id == "" ? var.public_zone_name : null
  private_zone = false
}

# public_zone_id = "create": a zone <environment>.<parent> of the
# environment's own, delegated from the existing parent zone.
resource "aws_route53_zone" "public" {
  #checkov:skip=CKV2_AWS_38:DNSSEC signing needs a KMS key in us-east-1 and a DS record in the parent zone, outside the environment's region and provider
  #checkov:skip=CKV2_AWS_39:query logging for a public zone must go to a CloudWatch log group in us-east-1, outside the environment's region and provider; the zone serves only the API name
  count = local.create_public_zone ? 1 : 0

  name    = var.public_zone_name
  comment = "Public names of ${var.environment}, delegated from ${local.parent_zone_name}"
}

data "aws_route53_zone" "parent" {
  count = local.create_public_zone ? 1 : 0

  name         = local.parent_zone_name
  private_zone = false
}

resource "aws_route53_record" "delegation" {
  count = local.create_public_zone ? 1 : 0

  zone_id = data.aws_route53_zone.parent[0].zone_id
  name    = var.public_zone_name
  type    = "NS"
  ttl     = 172800
  records = aws_route53_zone.public[0].name_servers
}

locals {
  public_zone = local.create_public_zone ? {
    zone_id      = aws_route53_zone.public[0].zone_id
    name         = aws_route53_zone.public[0].name
    name_servers = aws_route53_zone.public[0].name_servers
    } : {
    zone_id      = data.aws_route53_zone.public[0].zone_id
    name         = data.aws_route53_zone.public[0].name
    name_servers = data.aws_route53_zone.public[0].name_servers
  }
}

resource "aws_route53_zone" "private" {
  name    = var.private_zone_name
  comment = "Names inside the VPC of ${var.environment}"

  vpc {
    vpc_id = var.vpc_id
  }
}

resource "aws_route53_record" "kubeapi_public" {
  zone_id = local.public_zone.zone_id
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
