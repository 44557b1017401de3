# Two network load balancers in front of kube-apiserver (port 6443 on the
# etcd / control plane nodes), both listening on 443:
#   public:   internet-facing, reachable only from kubeapi_access_list;
#   internal: for the nodes (kubelets, kube-proxy, controllers).
#
# Network, not application, load balancers: kube-apiserver terminates TLS
# itself and authenticates clients by certificate. An ALB would end the TLS
# session and the client certificate with it; an NLB passes TCP through.

locals {
  # LB and target group names are limited to 32 characters and may not end with '-'.
  short_env = replace(substr(var.environment, 0, 20), "/-+$/", "")

  load_balancers = {
    public = {
      name     = "${local.short_env}-kubeapi"
      internal = false
    }
    internal = {
      name     = "${local.short_env}-kubeapi-int"
      internal = true
    }
  }
}

resource "aws_security_group" "kubeapi" {
  #checkov:skip=CKV2_AWS_5:each group is attached to aws_lb.kubeapi[each.key]; checkov's graph links only one instance of the for_each pair and reports the other as unattached
  for_each = local.load_balancers

  name        = "${var.environment}-kubeapi-${each.key}"
  description = "${each.key} kube-apiserver load balancer of ${var.environment}"
  vpc_id      = var.vpc_id

  tags = {
    Name = "${var.environment}-kubeapi-${each.key}"
  }
}

resource "aws_lb" "kubeapi" {
  #checkov:skip=CKV_AWS_91:an NLB writes access logs only for TLS listeners; these pass TCP through to kube-apiserver, which logs requests itself (audit log)
  #checkov:skip=CKV_AWS_150:the load balancers hold no state and are rebuilt with the environment; what holds data (member volumes, ENIs, addresses) has prevent_destroy, lifted only by `nodeboot down --confirm`, whose one destroy deletion protection would stop (lifting it needs an apply first)
  for_each = local.load_balancers

  name                             = each.value.name
  load_balancer_type               = "network"
  internal                         = each.value.internal
  subnets                          = var.elb_subnet_ids
  security_groups                  = [aws_security_group.kubeapi[each.key].id]
  enable_cross_zone_load_balancing = true

  tags = {
    Name = "${var.environment}-kubeapi-${each.key}"
  }
}

resource "aws_lb_target_group" "kubeapi" {
  for_each = local.load_balancers

  name        = each.value.name
  vpc_id      = var.vpc_id
  target_type = "instance"
  protocol    = "TCP"
  port        = 6443

  # The targets see the load balancer's address, not the client's: the etcd
  # security group then admits the load balancers' groups, and a control plane node that
  # reaches kube-apiserver through the internal LB is not routed back to itself
  # (an NLB drops such hairpin connections when client IPs are preserved).
  preserve_client_ip   = false
  deregistration_delay = 30

  health_check {
    protocol            = "TCP"
    port                = "traffic-port"
    interval            = 10
    healthy_threshold   = 3
    unhealthy_threshold = 3
  }

  tags = {
    Name = "${var.environment}-kubeapi-${each.key}"
  }
}

# The workers' health for their auto-scaling group: the internal load
# balancer checks kube-proxy's /healthz on every worker (port 10256,
# kubeadm's "Self, Load balancers"). It answers 200 once kube-proxy runs on
# that node with its credentials and keeps the Services programmed, which
# takes the kubelet, containerd, the node's secrets and the API server.
# Nothing is sent through this target group: its listener is there because
# an NLB checks only the targets of a listener, and the load balancer's
# security group admits nobody on 10256 (module flows opens only the health
# checks, from the load balancer to the workers).
resource "aws_lb_target_group" "workers" {
  name        = "${local.short_env}-workers"
  vpc_id      = var.vpc_id
  target_type = "instance"
  protocol    = "TCP"
  port        = 10256

  deregistration_delay = 0

  health_check {
    protocol            = "HTTP"
    port                = "traffic-port"
    path                = "/healthz"
    matcher             = "200"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  tags = {
    Name = "${var.environment}-workers"
  }
}

resource "aws_lb_listener" "workers" {
  load_balancer_arn = aws_lb.kubeapi["internal"].arn
  protocol          = "TCP"
  port              = 10256

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.workers.arn
  }
}

resource "aws_lb_listener" "kubeapi" {
  for_each = local.load_balancers

  load_balancer_arn = aws_lb.kubeapi[each.key].arn
  protocol          = "TCP"
  port              = 443

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.kubeapi[each.key].arn
  }
}
