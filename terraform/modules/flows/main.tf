# Every flow of the environment, between its security groups and to and
# from the internet, in one table. A flow opens egress on each source that is
# a group and ingress on each destination that is a group, naming the other
# side by its group: whatever else runs in a subnet gets nothing. CIDRs only
# for the internet side. Adding a flow is one line of `flows`.
#
# tests/terraform/test_platform.py checks the plan against its own table,
# written from kubeadm's "Ports and Protocols" and Flannel's documentation.

locals {
  nodes = ["etcd", "compute"]

  # Endpoints that are lists of CIDRs; every other endpoint is a group of
  # var.security_group_ids.
  networks = {
    kubeapi_clients = var.kubeapi_access_list
    operators       = var.ssh_access_list
    internet        = ["0.0.0.0/0"]
  }

  flows = {
    # kubeadm's "Ports and Protocols"; the control plane is the etcd group.
    # 6443 from all: the load balancers' targets and health checks, and
    # every node's kube-proxy sends the `kubernetes` Service to any API
    # server's own address, control plane nodes included.
    kubeapi      = { protocol = "tcp", ports = "6443", from = concat(local.nodes, ["kubeapi_public", "kubeapi_internal"]), to = ["etcd"], why = "kube-apiserver" }
    etcd_clients = { protocol = "tcp", ports = "2379", from = ["etcd"], to = ["etcd"], why = "etcd clients (kube-apiserver and nodeboot on the members)" }
    etcd_peers   = { protocol = "tcp", ports = "2380", from = ["etcd"], to = ["etcd"], why = "etcd peers" }
    kubelet      = { protocol = "tcp", ports = "10250", from = ["etcd"], to = local.nodes, why = "kubelet API, from kube-apiserver" }
    node_ports   = { protocol = "tcp", ports = "30000-32767", from = local.nodes, to = ["compute"], why = "NodePort Services" }
    # 10256 "Self, Load balancers": kube-proxy's health, which the internal
    # load balancer checks as the workers' health (module lb).
    kube_proxy_health = { protocol = "tcp", ports = "10256", from = ["kubeapi_internal"], to = ["compute"], why = "kube-proxy health checks of the workers (their auto-scaling group's health)" }
    # Not here: 10257 and 10259 (controller manager, scheduler) serve the
    # node itself; the load balancers of Services, whose rules their cloud
    # controller adds, reach 10256 and the NodePorts on their own.

    # Flannel's VXLAN overlay runs on every node, the control plane too.
    flannel = { protocol = "udp", ports = "8472", from = local.nodes, to = local.nodes, why = "Flannel VXLAN" }

    # The platform's own: the API behind its two load balancers, ssh through
    # the bastion, HTTPS out (AWS APIs, image registries, OS updates; S3
    # through the VPC's gateway endpoint).
    kubeapi_public   = { protocol = "tcp", ports = "443", from = ["kubeapi_clients"], to = ["kubeapi_public"], why = "kube-apiserver clients (kubeapi_access_list)" }
    kubeapi_internal = { protocol = "tcp", ports = "443", from = local.nodes, to = ["kubeapi_internal"], why = "kube-apiserver through the internal load balancer" }
    ssh_bastion      = { protocol = "tcp", ports = "22", from = ["operators"], to = ["bastion"], why = "ssh from the operators (ssh_access_list)" }
    ssh_nodes        = { protocol = "tcp", ports = "22", from = ["bastion"], to = local.nodes, why = "ssh from the bastion" }
    https            = { protocol = "tcp", ports = "443", from = concat(local.nodes, ["bastion"]), to = ["internet"], why = "HTTPS to AWS APIs, image registries and OS updates" }
  }

  endpoints = merge(
    { for name in keys(var.security_group_ids) : name => [{ label = name, group = name, cidr = null }] },
    { for name, cidrs in local.networks : name => [for cidr in cidrs : { label = cidr, group = null, cidr = cidr }] },
  )

  # "<flow>/<source>-><destination>" => one rule's worth of the table.
  rules = {
    for rule in flatten([
      for name, flow in local.flows : [
        for from in flow.from : [
          for to in flow.to : [
            for source in local.endpoints[from] : [
              for destination in local.endpoints[to] : {
                key         = "${name}/${source.label}->${destination.label}"
                protocol    = flow.protocol
                from_port   = tonumber(split("-", flow.ports)[0])
                to_port     = tonumber(reverse(split("-", flow.ports))[0])
                description = flow.why
                source      = source
                destination = destination
              }
            ]
          ]
        ]
      ]
    ]) : rule.key => rule
  }
}

resource "aws_vpc_security_group_ingress_rule" "this" {
  for_each = { for key, rule in local.rules : key => rule if rule.destination.group != null }

  security_group_id            = var.security_group_ids[each.value.destination.group]
  description                  = each.value.description
  ip_protocol                  = each.value.protocol
  from_port                    = each.value.from_port
  to_port                      = each.value.to_port
  referenced_security_group_id = each.value.source.group == null ? null : var.security_group_ids[each.value.source.group]
  cidr_ipv4                    = each.value.source.cidr
}

resource "aws_vpc_security_group_egress_rule" "this" {
  for_each = { for key, rule in local.rules : key => rule if rule.source.group != null }

  security_group_id            = var.security_group_ids[each.value.source.group]
  description                  = each.value.description
  ip_protocol                  = each.value.protocol
  from_port                    = each.value.from_port
  to_port                      = each.value.to_port
  referenced_security_group_id = each.value.destination.group == null ? null : var.security_group_ids[each.value.destination.group]
  cidr_ipv4                    = each.value.destination.cidr
}
