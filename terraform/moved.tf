# The security group rules moved into modules/flows (issue 19): the same
# rules under their new addresses, kept rather than deleted and created
# again (AWS refuses a rule identical to one that still exists, and the
# delete of the old and the create of the new would race). Rules keyed by an
# access list's CIDR cannot be moved by a block: terraform/README.md.

moved {
  from = module.etcd.aws_vpc_security_group_ingress_rule.etcd["etcd_peers"]
  to   = module.flows.aws_vpc_security_group_ingress_rule.this["etcd_peers/etcd->etcd"]
}

moved {
  from = module.etcd.aws_vpc_security_group_ingress_rule.etcd["etcd_clients"]
  to   = module.flows.aws_vpc_security_group_ingress_rule.this["etcd_clients/etcd->etcd"]
}

moved {
  from = module.etcd.aws_vpc_security_group_ingress_rule.etcd["kubeapi_public"]
  to   = module.flows.aws_vpc_security_group_ingress_rule.this["kubeapi/kubeapi_public->etcd"]
}

moved {
  from = module.etcd.aws_vpc_security_group_ingress_rule.etcd["kubeapi_internal"]
  to   = module.flows.aws_vpc_security_group_ingress_rule.this["kubeapi/kubeapi_internal->etcd"]
}

moved {
  from = module.etcd.aws_vpc_security_group_ingress_rule.etcd["kubeapi_workers"]
  to   = module.flows.aws_vpc_security_group_ingress_rule.this["kubeapi/compute->etcd"]
}

moved {
  from = module.etcd.aws_vpc_security_group_ingress_rule.etcd["kubelet"]
  to   = module.flows.aws_vpc_security_group_ingress_rule.this["kubelet/etcd->etcd"]
}

moved {
  from = module.etcd.aws_vpc_security_group_ingress_rule.etcd["ssh"]
  to   = module.flows.aws_vpc_security_group_ingress_rule.this["ssh_nodes/bastion->etcd"]
}

moved {
  from = module.etcd.aws_vpc_security_group_ingress_rule.etcd["flannel_members"]
  to   = module.flows.aws_vpc_security_group_ingress_rule.this["flannel/etcd->etcd"]
}

moved {
  from = module.etcd.aws_vpc_security_group_ingress_rule.etcd["flannel_workers"]
  to   = module.flows.aws_vpc_security_group_ingress_rule.this["flannel/compute->etcd"]
}

moved {
  from = module.etcd.aws_vpc_security_group_egress_rule.etcd_https
  to   = module.flows.aws_vpc_security_group_egress_rule.this["https/etcd->0.0.0.0/0"]
}

moved {
  from = module.compute.aws_vpc_security_group_ingress_rule.compute["kubelet"]
  to   = module.flows.aws_vpc_security_group_ingress_rule.this["kubelet/etcd->compute"]
}

moved {
  from = module.compute.aws_vpc_security_group_ingress_rule.compute["flannel_control_plane"]
  to   = module.flows.aws_vpc_security_group_ingress_rule.this["flannel/etcd->compute"]
}

moved {
  from = module.compute.aws_vpc_security_group_ingress_rule.compute["ssh"]
  to   = module.flows.aws_vpc_security_group_ingress_rule.this["ssh_nodes/bastion->compute"]
}

moved {
  from = module.compute.aws_vpc_security_group_egress_rule.compute_https
  to   = module.flows.aws_vpc_security_group_egress_rule.this["https/compute->0.0.0.0/0"]
}

moved {
  from = module.lb.aws_vpc_security_group_ingress_rule.kubeapi["internal-etcd"]
  to   = module.flows.aws_vpc_security_group_ingress_rule.this["kubeapi_internal/etcd->kubeapi_internal"]
}

moved {
  from = module.lb.aws_vpc_security_group_ingress_rule.kubeapi["internal-compute"]
  to   = module.flows.aws_vpc_security_group_ingress_rule.this["kubeapi_internal/compute->kubeapi_internal"]
}

moved {
  from = module.lb.aws_vpc_security_group_egress_rule.kubeapi["public"]
  to   = module.flows.aws_vpc_security_group_egress_rule.this["kubeapi/kubeapi_public->etcd"]
}

moved {
  from = module.lb.aws_vpc_security_group_egress_rule.kubeapi["internal"]
  to   = module.flows.aws_vpc_security_group_egress_rule.this["kubeapi/kubeapi_internal->etcd"]
}

moved {
  from = module.bastion.aws_vpc_security_group_egress_rule.ssh["etcd"]
  to   = module.flows.aws_vpc_security_group_egress_rule.this["ssh_nodes/bastion->etcd"]
}

moved {
  from = module.bastion.aws_vpc_security_group_egress_rule.ssh["compute"]
  to   = module.flows.aws_vpc_security_group_egress_rule.this["ssh_nodes/bastion->compute"]
}

moved {
  from = module.bastion.aws_vpc_security_group_egress_rule.https
  to   = module.flows.aws_vpc_security_group_egress_rule.this["https/bastion->0.0.0.0/0"]
}
