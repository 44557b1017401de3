# The VPC and its four layers, one subnet per layer and zone:
#   secure, compute: private; 0.0.0.0/0 goes to the zone's NAT gateway, never to the IGW.
#   elb, mgmt:       routed to the internet gateway; the NAT gateways live in mgmt.

locals {
  layers = {
    secure  = var.secure_subnets
    compute = var.compute_subnets
    elb     = var.elb_subnets
    mgmt    = var.mgmt_subnets
  }

  # "<layer>-<zone index>" => subnet; the index ties a subnet to availability_zones[index].
  subnets = merge([
    for layer, cidrs in local.layers : {
      for i, cidr in cidrs : "${layer}-${i}" => {
        layer = layer
        cidr  = cidr
        zone  = i
      }
    }
  ]...)

  # Tags the Kubernetes AWS cloud controller uses to place Service load balancers.
  subnet_role_tags = {
    secure  = {}
    compute = {}
    elb     = { "kubernetes.io/role/elb" = "1" }
    mgmt    = {}
  }

  public_layers = ["elb", "mgmt"]
}

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = {
    Name = var.environment
  }
}

# Take over the VPC's default security group and leave it without rules, so
# nothing that falls back to it can talk to anything.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id

  tags = {
    Name = "${var.environment}-default-deny"
  }
}

resource "aws_subnet" "this" {
  for_each = local.subnets

  vpc_id                  = aws_vpc.this.id
  cidr_block              = each.value.cidr
  availability_zone       = var.availability_zones[each.value.zone]
  map_public_ip_on_launch = false

  tags = merge(local.subnet_role_tags[each.value.layer], {
    Name                                       = "${var.environment}-${each.value.layer}-${var.availability_zones[each.value.zone]}"
    "nodeboot.io/layer"                        = each.value.layer
    "kubernetes.io/cluster/${var.environment}" = "owned"
  })
}

# --- Internet-facing layers (elb, mgmt) ------------------------------------

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id

  tags = {
    Name = var.environment
  }
}

resource "aws_route_table" "public" {
  for_each = toset(local.public_layers)

  vpc_id = aws_vpc.this.id

  tags = {
    Name = "${var.environment}-${each.key}"
  }
}

resource "aws_route" "public_default" {
  for_each = aws_route_table.public

  route_table_id         = each.value.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route_table_association" "public" {
  for_each = { for key, s in local.subnets : key => s if contains(local.public_layers, s.layer) }

  subnet_id      = aws_subnet.this[each.key].id
  route_table_id = aws_route_table.public[each.value.layer].id
}

# --- Private layers (secure, compute): one NAT gateway and route table per zone

resource "aws_eip" "nat" {
  count = length(var.availability_zones)

  domain = "vpc"

  tags = {
    Name = "${var.environment}-nat-${var.availability_zones[count.index]}"
  }

  depends_on = [aws_internet_gateway.this]
}

resource "aws_nat_gateway" "this" {
  count = length(var.availability_zones)

  allocation_id = aws_eip.nat[count.index].id
  subnet_id     = aws_subnet.this["mgmt-${count.index}"].id

  tags = {
    Name = "${var.environment}-${var.availability_zones[count.index]}"
  }

  depends_on = [aws_internet_gateway.this]
}

resource "aws_route_table" "private" {
  count = length(var.availability_zones)

  vpc_id = aws_vpc.this.id

  tags = {
    Name = "${var.environment}-private-${var.availability_zones[count.index]}"
  }
}

resource "aws_route" "private_default" {
  count = length(var.availability_zones)

  route_table_id         = aws_route_table.private[count.index].id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[count.index].id
}

resource "aws_route_table_association" "private" {
  for_each = { for key, s in local.subnets : key => s if !contains(local.public_layers, s.layer) }

  subnet_id      = aws_subnet.this[each.key].id
  route_table_id = aws_route_table.private[each.value.zone].id
}

# S3 from the private layers goes through a gateway endpoint rather than the
# NAT gateways: no NAT charge, and the secrets bucket's policy admits the
# node roles only through it.
resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = aws_route_table.private[*].id
  policy            = data.aws_iam_policy_document.s3_endpoint.json

  tags = {
    Name = "${var.environment}-s3"
  }
}

# What the endpoint carries: every request from the private layers to S3 of
# this region. The environment's own buckets, for what the node roles do
# there (their policies and the bucket's narrow it further); and reads of
# other accounts' objects, which is how public image layers arrive (the
# Kubernetes project's registry and ECR serve them from S3 buckets of the
# puller's region). Nothing else of this account, and no write or listing
# anywhere else: a node's data cannot leave through the endpoint into a
# bucket someone else owns. Flatcar's updates and the AMIs do not come
# through it (Flatcar's own servers; images are baked from the operator's
# machine).
locals {
  bucket_arn = "arn:${local.partition}:s3:::${var.secrets_bucket_name}"

  # Where the endpoint lets a request go, each with its one condition.
  s3_reach = concat(
    [{ sid = "EnvironmentBuckets", actions = var.node_s3_actions, resources = [local.bucket_arn, "${local.bucket_arn}/*"], condition = ["StringEquals", "aws:PrincipalAccount", [local.account]] }],
    # nodeboot itself, when Ignition fetches it from S3 (nodeboot_source = "s3").
    [for objects in [var.readable_objects] : { sid = "ReadableObjects", actions = ["s3:GetObject"], resources = [for o in objects : "arn:${local.partition}:s3:::${o}"], condition = ["StringEquals", "aws:PrincipalAccount", [local.account]] } if length(objects) > 0],
    [{ sid = "ReadOtherAccountsObjects", actions = ["s3:GetObject"], resources = ["arn:${local.partition}:s3:::*/*"], condition = ["StringNotEquals", "aws:ResourceAccount", [local.account]] }],
  )
}

data "aws_iam_policy_document" "s3_endpoint" {
  #checkov:skip=CKV_AWS_283:an endpoint policy narrows where requests may go, not who makes them (IAM and the bucket policy do): public image layers are read anonymously, so the principal is any; the environment's buckets are limited to this account's principals by condition
  dynamic "statement" {
    for_each = local.s3_reach

    content {
      sid       = statement.value.sid
      actions   = statement.value.actions
      resources = statement.value.resources

      principals {
        type        = "AWS"
        identifiers = ["*"]
      }

      condition {
        test     = statement.value.condition[0]
        variable = statement.value.condition[1]
        values   = statement.value.condition[2]
      }
    }
  }
}
