# environments/example.tfvars: one environment of the platform.
#
# This one file drives both Terraform (`terraform apply -var-file=...`) and
# nodeboot (`nodeboot render --env ...`). Every attribute is declared in
# terraform/variables.tf; `nodeboot validate --env FILE` checks it.

# --- Identity ---------------------------------------------------------------
# Name of the environment: prefixes every resource, tag and bucket path.
# Lower-case letters, digits and '-', 3 to 32 characters.
environment = "example"

# AWS account id (12 digits) and the profile in ~/.aws/credentials that
# holds its credentials (the seed maps the profile to the environment name).
aws_account = "123456789012"
aws_profile = "example"

# --- Placement --------------------------------------------------------------
region = "eu-west-1"

# Availability zones, in order. The n-th entry of every per-AZ subnet list
# below belongs to the n-th zone. At least as many zones as the layout needs
# (etcd members are spread over them; 3 zones survive the loss of one).
availability_zones = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]

# --- Network ----------------------------------------------------------------
vpc_cidr = "10.80.0.0/16"

# One CIDR per availability zone for each layer; all inside vpc_cidr and
# none overlapping.
# secure: etcd and the Kubernetes control plane (private, NAT outbound).
secure_subnets = ["10.80.10.0/24", "10.80.11.0/24", "10.80.12.0/24"]
# compute: the worker nodes (private, NAT outbound).
compute_subnets = ["10.80.20.0/24", "10.80.21.0/24", "10.80.22.0/24"]
# elb: load balancers.
elb_subnets = ["10.80.100.0/24", "10.80.101.0/24", "10.80.102.0/24"]
# mgmt: the bastion, the internet gateway and the NAT gateways.
mgmt_subnets = ["10.80.110.0/24", "10.80.111.0/24", "10.80.112.0/24"]

# --- Nodes ------------------------------------------------------------------
# etcd members (the "secure" layer). Odd: 3 tolerates one failure, 5 two.
etcd_count         = 3
etcd_instance_type = "m6i.large"

# Kubernetes workers.
compute_count         = 3
compute_instance_type = "m6i.large"
# A new image or Ignition config rolls through the workers (instance
# refresh), keeping this percentage of them in service. etcd nodes are
# replaced only by `nodeboot roll`.
compute_min_healthy_percentage = 90

bastion_instance_type = "t3.micro"

# Flatcar Container Linux release channel: stable, beta or alpha.
flatcar_channel = "stable"

kubernetes_version = "1.31.4"
etcd_version       = "3.5.17"

# etcd backups (`nodeboot etcd backup` on the etcd nodes, the leader writes):
# a snapshot every etcd_backup_interval (1m to 24h) and before every
# membership change, sealed into s3://<secrets bucket>/backups/etcd/. One per
# hour is kept for etcd_backup_keep_hourly, one per day for
# etcd_backup_keep_daily; the newest is always kept. Optional (these defaults).
etcd_backup_interval    = "15m"
etcd_backup_keep_hourly = "7d"
etcd_backup_keep_daily  = "365d"

# etcd's database quota (--quota-backend-bytes on every member), 256 MiB to
# 8 GiB (etcd's suggested maximum). At the quota etcd raises NOSPACE and
# refuses every write until space is back: the etcd nodes' maintenance then
# compacts, defragments one member at a time and disarms the alarm (see the
# README's "etcd space"). 4 GiB, twice etcd's default, is the most nodeboot's
# backups can hold (validate warns above it).
etcd_quota_bytes = 4294967296

# Where nodeboot comes from on the node:
#   nodeboot_source = "ami": baked into the AMI at nodeboot_path (see images/);
#   nodeboot_source = "s3":  fetched by Ignition from nodeboot_s3_url and
#                            checked against nodeboot_sha512 (128 hex digits).
nodeboot_source = "ami"
nodeboot_path   = "/opt/bin/nodeboot"
nodeboot_s3_url = ""
nodeboot_sha512 = ""

# --- Cluster add-ons --------------------------------------------------------
# What the control plane applies to the cluster (server-side apply, see the
# README's "Add-ons"): "flannel", the pod network (VXLAN, UDP 8472 between
# nodes), and "coredns", the cluster DNS. Each runs the version named here,
# its images pinned by digest in nodeboot; validate names the versions it knows.
addons          = ["flannel", "coredns"]
flannel_version = "0.26.0"
coredns_version = "1.11.3"

# --- Secrets and state ------------------------------------------------------
# KMS key (id, ARN or alias/...) that encrypts the secrets and the volumes.
kms_master_id = "alias/example-nodeboot"

# Bucket holding the KMS-encrypted secrets, manifests and full Ignition configs.
secrets_bucket_name = "example-nodeboot-secrets-eu-west-1"

# Bucket holding the Terraform remote state.
terraform_bucket_name = "example-nodeboot-terraform-eu-west-1"

# --- DNS --------------------------------------------------------------------
# The public API is kube-<environment>.<public_zone_name>. public_zone_id:
#   ""       the existing public zone public_zone_name (found by name);
#   "Z..."   the existing public zone with this id (named public_zone_name);
#   "create" a new zone public_zone_name, which must be <environment>.<parent>,
#            with its NS records written into the existing zone <parent>.
# Existing zones outlive the environment: rebuilding it never changes the
# name servers anyone delegated to.
public_zone_name  = "example.com"
public_zone_id    = ""
private_zone_name = "example.internal"

# --- Access -----------------------------------------------------------------
# CIDRs allowed to reach the public kube-apiserver load balancer and the
# bastion. 0.0.0.0/0 is accepted with a warning: narrow these to your own.
kubeapi_access_list = ["203.0.113.0/24"]
ssh_access_list     = ["203.0.113.0/24"]

# OpenSSH public keys installed for the `core` user on every node.
ssh_authorized_keys = [
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ6bm9kZWJvb3QtZXhhbXBsZS1rZXktbm90LXJlYWw example@nodeboot",
]
