# The platform of one environment: run with -var-file=../environments/<name>.tfvars.

provider "aws" {
  region              = var.region
  profile             = var.aws_profile
  allowed_account_ids = [var.aws_account]

  default_tags {
    tags = {
      "nodeboot.io/environment" = var.environment
      "nodeboot.io/managed-by"  = "terraform"
    }
  }

  # The mount stage tags an etcd volume it formatted (or found a filesystem
  # on) so that it is never formatted again; a plan must not remove that tag.
  ignore_tags {
    keys = ["nodeboot.io/formatted"]
  }
}

locals {
  # `nodeboot render` writes one Ignition config per role here. When a full
  # config is over EC2's 16 KiB user_data limit it writes a small pointer
  # config (fetching ignition/<role>.ign from the secrets bucket) under the
  # same name, so Terraform always reads <role>.ign.
  ignition_dir = "${path.root}/../build/${var.environment}/ignition"
}

# The image images/ami/flatcar.pkr.hcl bakes in this account from Flatcar's
# own (owner 075585003325): Flatcar of the channel plus /opt/bin/kubelet and
# /opt/bin/nodeboot, which the rendered units run. With nodeboot_source = "s3"
# Ignition replaces the baked nodeboot; the kubelet always comes from here.
data "aws_ami" "flatcar" {
  most_recent = true
  owners      = [var.aws_account]

  filter {
    name   = "name"
    values = ["nodeboot-flatcar-${var.flatcar_channel}-*"]
  }

  filter {
    name   = "architecture"
    values = ["x86_64"]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }

  # The kubelet must match the control plane's Kubernetes version: the bake
  # tags each image with the kubelet it carries, so a rebake for the next
  # minor is never picked up by an environment still on this one.
  filter {
    name   = "tag:nodeboot.io/kubelet-version"
    values = [var.kubernetes_version]
  }

  # Only an image whose bake checked nodeboot against its SHA-256 (and
  # whose nodes check it again at every boot, images/README.md).
  filter {
    name   = "tag-key"
    values = ["nodeboot.io/nodeboot-sha256"]
  }

  lifecycle {
    postcondition {
      condition     = can(regex("^[0-9a-f]{64}$", lookup(self.tags, "nodeboot.io/nodeboot-sha256", "")))
      error_message = "The image ${self.id} carries no nodeboot.io/nodeboot-sha256 tag of 64 hex digits: bake it again with `make ami` (images/README.md)."
    }
  }
}

# kms_master_id may be an alias; policies and volumes need the key's ARN.
data "aws_kms_key" "master" {
  key_id = var.kms_master_id
}

module "network" {
  source = "./modules/network"

  environment         = var.environment
  availability_zones  = var.availability_zones
  vpc_cidr            = var.vpc_cidr
  secure_subnets      = var.secure_subnets
  compute_subnets     = var.compute_subnets
  elb_subnets         = var.elb_subnets
  mgmt_subnets        = var.mgmt_subnets
  region              = var.region
  secrets_bucket_name = var.secrets_bucket_name
  node_s3_actions     = module.iam.node_s3_actions
  readable_objects    = var.nodeboot_source == "s3" ? [trimprefix(var.nodeboot_s3_url, "s3://")] : []
}

module "iam" {
  source = "./modules/iam"

  environment         = var.environment
  account_id          = var.aws_account
  region              = var.region
  secrets_bucket_name = var.secrets_bucket_name
  kms_key_arn         = data.aws_kms_key.master.arn
  s3_endpoint_id      = module.network.s3_endpoint_id
  vpc_id              = module.network.vpc_id
  nat_public_ips      = module.network.nat_public_ips
  availability_zones  = var.availability_zones
  secure_subnets      = var.secure_subnets
  etcd_count          = var.etcd_count
}

module "lb" {
  source = "./modules/lb"

  environment    = var.environment
  vpc_id         = module.network.vpc_id
  elb_subnet_ids = module.network.subnet_ids.elb
}

module "etcd" {
  source = "./modules/etcd"

  environment           = var.environment
  availability_zones    = var.availability_zones
  vpc_id                = module.network.vpc_id
  secure_subnets        = var.secure_subnets
  secure_subnet_ids     = module.network.subnet_ids.secure
  etcd_count            = var.etcd_count
  instance_type         = var.etcd_instance_type
  ami_id                = data.aws_ami.flatcar.id
  instance_profile_name = module.iam.instance_profile_names.etcd
  kms_key_arn           = data.aws_kms_key.master.arn
  target_group_arns     = module.lb.target_group_arns
  user_data             = filebase64("${local.ignition_dir}/etcd.ign")
}

module "compute" {
  source = "./modules/compute"

  environment             = var.environment
  vpc_id                  = module.network.vpc_id
  compute_subnet_ids      = module.network.subnet_ids.compute
  compute_count           = var.compute_count
  min_healthy_percentage  = var.compute_min_healthy_percentage
  health_target_group_arn = module.lb.worker_health_target_group_arn
  instance_type           = var.compute_instance_type
  ami_id                  = data.aws_ami.flatcar.id
  instance_profile_name   = module.iam.instance_profile_names.compute
  user_data               = filebase64("${local.ignition_dir}/compute.ign")
}

module "bastion" {
  source = "./modules/bastion"

  environment           = var.environment
  vpc_id                = module.network.vpc_id
  mgmt_subnet_id        = module.network.subnet_ids.mgmt[0]
  instance_type         = var.bastion_instance_type
  ami_id                = data.aws_ami.flatcar.id
  instance_profile_name = module.iam.instance_profile_names.bastion
  user_data             = filebase64("${local.ignition_dir}/bastion.ign")
}

# Every flow between the groups above and the internet, from one table.
module "flows" {
  source = "./modules/flows"

  security_group_ids = {
    etcd             = module.etcd.security_group_id
    compute          = module.compute.security_group_id
    kubeapi_public   = module.lb.security_group_ids.public
    kubeapi_internal = module.lb.security_group_ids.internal
    bastion          = module.bastion.security_group_id
  }
  kubeapi_access_list = var.kubeapi_access_list
  ssh_access_list     = var.ssh_access_list
}

module "dns" {
  source = "./modules/dns"

  environment       = var.environment
  vpc_id            = module.network.vpc_id
  public_zone_name  = lower(trimsuffix(var.public_zone_name, "."))
  public_zone_id    = var.public_zone_id
  private_zone_name = lower(trimsuffix(var.private_zone_name, "."))
  public_lb         = module.lb.public
  internal_lb       = module.lb.internal
  etcd_member_ips   = module.etcd.member_ips
}

# Warnings, not errors: the plan goes on, but the risk is shown. They are the
# warnings of `nodeboot validate` for the same file.
check "access_lists_are_narrow" {
  assert {
    condition     = !anytrue([for c in concat(var.kubeapi_access_list, var.ssh_access_list) : endswith(c, "/0")])
    error_message = "kubeapi_access_list or ssh_access_list holds a /0: the API or the bastion is open to the whole internet. List your own networks instead."
  }

  assert {
    condition     = length(var.kubeapi_access_list) > 0 && length(var.ssh_access_list) > 0
    error_message = "kubeapi_access_list or ssh_access_list is empty: nothing outside the VPC can reach the public API or the bastion."
  }
}

check "etcd_count_is_odd" {
  assert {
    condition     = var.etcd_count % 2 == 1
    error_message = "etcd_count is ${var.etcd_count}: an even cluster tolerates no more failures than ${var.etcd_count - 1} members would. Prefer an odd count."
  }
}
