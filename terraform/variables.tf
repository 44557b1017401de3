# The environment file (environments/<name>.tfvars) is the contract between
# Terraform and nodeboot: every attribute in it is declared here and every
# variable declared here is in it (tests/terraform checks both ways). Some
# attributes are read only by `nodeboot render`; Terraform declares and
# validates them so that one file drives both tools.

# --- Identity ---------------------------------------------------------------

variable "environment" {
  description = "Name of the environment: prefixes every resource, tag and bucket path. Lower-case letters, digits and '-', 3 to 32 characters, starting with a letter and not ending with '-' (the rule of `nodeboot validate`)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.environment))
    error_message = "environment must be 3 to 32 characters of a-z, 0-9 and '-', starting with a letter and not ending with '-'."
  }
}

variable "aws_account" {
  description = "AWS account id (12 digits) the environment lives in; the provider refuses any other account."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{12}$", var.aws_account))
    error_message = "aws_account must be a 12-digit AWS account id, quoted."
  }
}

variable "aws_profile" {
  description = "Profile in ~/.aws/credentials holding the credentials for aws_account."
  type        = string

  validation {
    condition     = length(trimspace(var.aws_profile)) > 0
    error_message = "aws_profile must name a profile in ~/.aws/credentials."
  }
}

# --- Placement --------------------------------------------------------------

variable "region" {
  description = "AWS region, e.g. eu-west-1."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]+$", var.region))
    error_message = "region must look like eu-west-1."
  }
}

variable "availability_zones" {
  description = "Availability zones, in order. The n-th entry of every per-AZ subnet list belongs to the n-th zone, and etcd member i lives in zone i % length(availability_zones)."
  type        = list(string)

  validation {
    # The load balancers span two zones at least.
    condition     = length(var.availability_zones) >= 2 && length(distinct(var.availability_zones)) == length(var.availability_zones)
    error_message = "availability_zones must list at least two zones, each once."
  }

  validation {
    condition     = alltrue([for az in var.availability_zones : can(regex("^${var.region}[a-z]$", az))])
    error_message = "every availability zone must be a zone of region ${var.region}, such as ${var.region}a."
  }
}

# --- Network ----------------------------------------------------------------

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC; every subnet below lies inside it."
  type        = string

  validation {
    condition     = can(cidrnetmask(var.vpc_cidr)) && try(cidrhost(var.vpc_cidr, 0) == split("/", var.vpc_cidr)[0], false)
    error_message = "vpc_cidr must be an IPv4 network address with a prefix length, e.g. 10.80.0.0/16."
  }
}

# The four per-AZ subnet lists share their checks: one CIDR per zone, each a
# network address inside vpc_cidr. A CIDR c lies inside vpc_cidr when its
# prefix is at least as long and masking its address to the VPC's prefix gives
# the VPC's network address.

variable "secure_subnets" {
  description = "One CIDR per availability zone for the secure layer: etcd and the Kubernetes control plane (private, NAT outbound). Member i's fixed IP is cidrhost(secure_subnets[i % n], 10 + floor(i / n))."
  type        = list(string)

  validation {
    condition     = length(var.secure_subnets) == length(var.availability_zones)
    error_message = "secure_subnets needs exactly one CIDR per availability zone."
  }

  validation {
    condition = alltrue([for c in var.secure_subnets : try(
      cidrhost(c, 0) == split("/", c)[0] &&
      tonumber(split("/", c)[1]) >= tonumber(split("/", var.vpc_cidr)[1]) &&
      cidrhost("${split("/", c)[0]}/${split("/", var.vpc_cidr)[1]}", 0) == cidrhost(var.vpc_cidr, 0),
    false)])
    error_message = "every secure_subnets entry must be a network address inside vpc_cidr (${var.vpc_cidr})."
  }
}

variable "compute_subnets" {
  description = "One CIDR per availability zone for the compute layer: the Kubernetes workers (private, NAT outbound)."
  type        = list(string)

  validation {
    condition     = length(var.compute_subnets) == length(var.availability_zones)
    error_message = "compute_subnets needs exactly one CIDR per availability zone."
  }

  validation {
    condition = alltrue([for c in var.compute_subnets : try(
      cidrhost(c, 0) == split("/", c)[0] &&
      tonumber(split("/", c)[1]) >= tonumber(split("/", var.vpc_cidr)[1]) &&
      cidrhost("${split("/", c)[0]}/${split("/", var.vpc_cidr)[1]}", 0) == cidrhost(var.vpc_cidr, 0),
    false)])
    error_message = "every compute_subnets entry must be a network address inside vpc_cidr (${var.vpc_cidr})."
  }
}

variable "elb_subnets" {
  description = "One CIDR per availability zone for the load balancers (public and internal kube-apiserver)."
  type        = list(string)

  validation {
    condition     = length(var.elb_subnets) == length(var.availability_zones)
    error_message = "elb_subnets needs exactly one CIDR per availability zone."
  }

  validation {
    condition = alltrue([for c in var.elb_subnets : try(
      cidrhost(c, 0) == split("/", c)[0] &&
      tonumber(split("/", c)[1]) >= tonumber(split("/", var.vpc_cidr)[1]) &&
      cidrhost("${split("/", c)[0]}/${split("/", var.vpc_cidr)[1]}", 0) == cidrhost(var.vpc_cidr, 0),
    false)])
    error_message = "every elb_subnets entry must be a network address inside vpc_cidr (${var.vpc_cidr})."
  }
}

variable "mgmt_subnets" {
  description = "One CIDR per availability zone for management: the bastion and the NAT gateways (routed to the internet gateway)."
  type        = list(string)

  validation {
    condition     = length(var.mgmt_subnets) == length(var.availability_zones)
    error_message = "mgmt_subnets needs exactly one CIDR per availability zone."
  }

  validation {
    condition = alltrue([for c in var.mgmt_subnets : try(
      cidrhost(c, 0) == split("/", c)[0] &&
      tonumber(split("/", c)[1]) >= tonumber(split("/", var.vpc_cidr)[1]) &&
      cidrhost("${split("/", c)[0]}/${split("/", var.vpc_cidr)[1]}", 0) == cidrhost(var.vpc_cidr, 0),
    false)])
    error_message = "every mgmt_subnets entry must be a network address inside vpc_cidr (${var.vpc_cidr})."
  }

  validation {
    # Checked here, on the last of the four lists, for all of them: two CIDRs
    # overlap when either holds the other's network address.
    condition = alltrue(flatten([
      for i, a in concat(var.secure_subnets, var.compute_subnets, var.elb_subnets, var.mgmt_subnets) : [
        for j, b in concat(var.secure_subnets, var.compute_subnets, var.elb_subnets, var.mgmt_subnets) : i >= j || try(
          cidrhost("${split("/", b)[0]}/${split("/", a)[1]}", 0) != cidrhost(a, 0) &&
          cidrhost("${split("/", a)[0]}/${split("/", b)[1]}", 0) != cidrhost(b, 0),
        true)
      ]
    ]))
    error_message = "the secure, compute, elb and mgmt subnets must not overlap one another."
  }
}

# --- Nodes ------------------------------------------------------------------

variable "etcd_count" {
  description = "Number of etcd members (the secure layer, which also runs the Kubernetes control plane). 1 or more, odd (an even count only warns): 3 tolerates one failure, 5 two."
  type        = number

  validation {
    condition     = floor(var.etcd_count) == var.etcd_count && var.etcd_count >= 1
    error_message = "etcd_count must be a whole number, 1 or more."
  }

  validation {
    # Zone z holds floor(count / n) members, one more when z < count % n; its
    # last member's fixed IP is host 10 + members - 1 of the zone's secure
    # subnet, and that host must be usable (AWS reserves the last address).
    condition = alltrue([for z, c in var.secure_subnets : try(
      10 + floor(var.etcd_count / length(var.availability_zones)) + (z < var.etcd_count % length(var.availability_zones) ? 1 : 0) - 1
      <= pow(2, 32 - tonumber(split("/", c)[1])) - 2,
    false)])
    error_message = "a secure subnet is too small for its zone's etcd members, whose fixed IPs start at host 10."
  }
}

variable "etcd_instance_type" {
  description = "EC2 instance type of the etcd / control plane nodes (x86_64: the Flatcar AMI lookup picks x86_64 images)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9-]+\\.[a-z0-9]+$", var.etcd_instance_type))
    error_message = "etcd_instance_type must be an EC2 instance type such as m6i.large."
  }
}

variable "compute_count" {
  description = "Number of Kubernetes workers (size of the compute auto-scaling group)."
  type        = number

  validation {
    condition     = floor(var.compute_count) == var.compute_count && var.compute_count >= 0
    error_message = "compute_count must be a whole number, 0 or more."
  }
}

variable "compute_instance_type" {
  description = "EC2 instance type of the Kubernetes workers (x86_64)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9-]+\\.[a-z0-9]+$", var.compute_instance_type))
    error_message = "compute_instance_type must be an EC2 instance type such as m6i.large."
  }
}

variable "compute_min_healthy_percentage" {
  description = "Percentage of the workers kept in service while a new launch template version (image, Ignition config) rolls through them by instance refresh. etcd nodes are never replaced by Terraform; `nodeboot roll` does it."
  type        = number

  validation {
    condition     = floor(var.compute_min_healthy_percentage) == var.compute_min_healthy_percentage && var.compute_min_healthy_percentage >= 0 && var.compute_min_healthy_percentage <= 100
    error_message = "compute_min_healthy_percentage must be a whole number from 0 to 100."
  }
}

variable "bastion_instance_type" {
  description = "EC2 instance type of the bastion (x86_64)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9-]+\\.[a-z0-9]+$", var.bastion_instance_type))
    error_message = "bastion_instance_type must be an EC2 instance type such as t3.micro."
  }
}

variable "flatcar_channel" {
  description = "Flatcar Container Linux release channel; the newest AMI of that channel is used."
  type        = string

  validation {
    condition     = contains(["stable", "beta", "alpha"], var.flatcar_channel)
    error_message = "flatcar_channel must be stable, beta or alpha."
  }
}

variable "kubernetes_version" {
  description = "Kubernetes release the nodes run (read by nodeboot render)."
  type        = string

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.kubernetes_version))
    error_message = "kubernetes_version must be MAJOR.MINOR.PATCH in digits, such as 1.31.4."
  }
}

variable "etcd_version" {
  description = "etcd release the secure nodes run (read by nodeboot render)."
  type        = string

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.etcd_version))
    error_message = "etcd_version must be MAJOR.MINOR.PATCH in digits, such as 3.5.17."
  }
}

variable "etcd_backup_interval" {
  description = "How often the etcd leader writes a backup (read by nodeboot render; 1m to 24h)."
  type        = string
}

variable "etcd_backup_keep_hourly" {
  description = "How long one etcd backup per hour is kept (read by nodeboot)."
  type        = string
}

variable "etcd_backup_keep_daily" {
  description = "How long one etcd backup per day is kept (read by nodeboot)."
  type        = string
}

variable "etcd_quota_bytes" {
  description = "etcd's --quota-backend-bytes on every member (read by nodeboot render; 256 MiB to 8 GiB, etcd's suggested maximum; above 4 GiB a full database cannot be backed up)."
  type        = number

  validation {
    condition     = var.etcd_quota_bytes >= 268435456 && var.etcd_quota_bytes <= 8589934592 && floor(var.etcd_quota_bytes) == var.etcd_quota_bytes
    error_message = "etcd_quota_bytes must be a whole number of bytes from 268435456 (256 MiB) to 8589934592 (8 GiB)."
  }
}

variable "nodeboot_source" {
  description = "Where nodes get nodeboot: \"ami\" (baked into the image at nodeboot_path) or \"s3\" (fetched by Ignition from nodeboot_s3_url and checked against nodeboot_sha512). Read by nodeboot render."
  type        = string

  validation {
    condition     = contains(["ami", "s3"], var.nodeboot_source)
    error_message = "nodeboot_source must be \"ami\" or \"s3\"."
  }
}

variable "nodeboot_path" {
  description = "Absolute path of the nodeboot binary on the node (read by nodeboot render)."
  type        = string

  validation {
    condition     = startswith(var.nodeboot_path, "/") && !endswith(var.nodeboot_path, "/") && !contains(split("/", var.nodeboot_path), "..")
    error_message = "nodeboot_path must be an absolute file path without '..'."
  }
}

variable "nodeboot_s3_url" {
  description = "s3://bucket/key of the nodeboot binary when nodeboot_source = \"s3\"; empty otherwise (read by nodeboot render)."
  type        = string

  validation {
    condition     = var.nodeboot_s3_url == "" || can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+$", var.nodeboot_s3_url))
    error_message = "nodeboot_s3_url must be empty or an s3://bucket/key URL."
  }

  validation {
    condition     = var.nodeboot_source != "s3" || var.nodeboot_s3_url != ""
    error_message = "nodeboot_s3_url is required when nodeboot_source = \"s3\"."
  }
}

variable "nodeboot_sha512" {
  description = "SHA-512 of the nodeboot binary (128 hex digits) when nodeboot_source = \"s3\"; empty otherwise (read by nodeboot render)."
  type        = string

  validation {
    condition     = var.nodeboot_sha512 == "" || can(regex("^[0-9a-fA-F]{128}$", var.nodeboot_sha512))
    error_message = "nodeboot_sha512 must be empty or 128 hex digits."
  }

  validation {
    condition     = var.nodeboot_source != "s3" || var.nodeboot_sha512 != ""
    error_message = "nodeboot_sha512 is required when nodeboot_source = \"s3\"."
  }
}

# --- Secrets and state ------------------------------------------------------

variable "kms_master_id" {
  description = "KMS key (key id, key ARN or alias/...) that encrypts the secrets and the etcd data volumes. Its key policy must let IAM policies grant access (the default key policy does)."
  type        = string

  validation {
    condition     = can(regex("^([0-9a-fA-F-]{36}|alias/[A-Za-z0-9/_-]+|arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key|alias)/.+)$", var.kms_master_id)) && !startswith(var.kms_master_id, "alias/aws/")
    error_message = "kms_master_id must be a KMS key id, key ARN, alias ARN or alias/NAME of a customer managed key (not alias/aws/...)."
  }
}

variable "secrets_bucket_name" {
  description = "S3 bucket holding the KMS-encrypted secrets, manifests and full Ignition configs. Nodes read common/, <role>/, manifests/<role>/ and ignition/<role>.ign."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.secrets_bucket_name)) && !strcontains(var.secrets_bucket_name, "..") && !can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+$", var.secrets_bucket_name))
    error_message = "secrets_bucket_name must be a valid S3 bucket name."
  }
}

variable "terraform_bucket_name" {
  description = "S3 bucket holding the Terraform remote state (key <environment>/terraform.tfstate). Used at `terraform init` through -backend-config; a backend block cannot read variables."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.terraform_bucket_name)) && !strcontains(var.terraform_bucket_name, "..") && !can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+$", var.terraform_bucket_name))
    error_message = "terraform_bucket_name must be a valid S3 bucket name."
  }

  validation {
    condition     = var.terraform_bucket_name != var.secrets_bucket_name
    error_message = "terraform_bucket_name must differ from secrets_bucket_name: the state and the secrets have different readers."
  }
}

# --- DNS --------------------------------------------------------------------

variable "public_zone_name" {
  description = "Public Route 53 zone of the environment; the public API is kube-<environment>.<public_zone_name>. An existing zone unless public_zone_id = \"create\"."
  type        = string

  validation {
    condition     = length(trimsuffix(var.public_zone_name, ".")) <= 253 && can(regex("^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.?$", var.public_zone_name))
    error_message = "public_zone_name must be a DNS name of two labels or more, such as example.com."
  }
}

variable "public_zone_id" {
  description = "How the public zone is found: \"\" the existing public zone named public_zone_name; a zone id (Z...) of an existing zone named public_zone_name; \"create\" a new zone public_zone_name = <environment>.<parent>, its NS records written into the existing zone <parent>."
  type        = string

  validation {
    condition     = var.public_zone_id == "" || var.public_zone_id == "create" || can(regex("^Z[A-Z0-9]{1,31}$", var.public_zone_id))
    error_message = "public_zone_id must be \"\", \"create\" or a Route 53 zone id such as Z0123456789ABCDEFGHIJ."
  }

  validation {
    condition     = var.public_zone_id != "create" || can(regex("^${var.environment}\\.[^.]+\\..+$", lower(trimsuffix(var.public_zone_name, "."))))
    error_message = "with public_zone_id = \"create\", public_zone_name must be <environment>.<parent zone>, the parent of two labels or more."
  }
}

variable "private_zone_name" {
  description = "Private Route 53 zone associated with the VPC: kubeapi.<zone> (internal API) and etcd-<i>.<zone> (one per member)."
  type        = string

  validation {
    condition     = length(trimsuffix(var.private_zone_name, ".")) <= 253 && can(regex("^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.?$", var.private_zone_name))
    error_message = "private_zone_name must be a DNS name of two labels or more, such as example.com."
  }
}

# --- Access -----------------------------------------------------------------

variable "kubeapi_access_list" {
  description = "IPv4 CIDRs allowed to reach the public kube-apiserver load balancer. 0.0.0.0/0 and an empty list are accepted with a warning."
  type        = list(string)

  validation {
    condition     = alltrue([for c in var.kubeapi_access_list : can(cidrnetmask(c))])
    error_message = "kubeapi_access_list must be a list of IPv4 CIDRs."
  }
}

variable "ssh_access_list" {
  description = "IPv4 CIDRs allowed to reach the bastion on port 22. 0.0.0.0/0 and an empty list are accepted with a warning."
  type        = list(string)

  validation {
    condition     = alltrue([for c in var.ssh_access_list : can(cidrnetmask(c))])
    error_message = "ssh_access_list must be a list of IPv4 CIDRs."
  }
}

variable "ssh_authorized_keys" {
  description = "OpenSSH public keys installed for the `core` user on every node (read by nodeboot render)."
  type        = list(string)

  validation {
    condition = alltrue([for k in var.ssh_authorized_keys : can(regex(
      "^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\\.com|sk-ecdsa-sha2-nistp256@openssh\\.com) [A-Za-z0-9+/]+=*( .*)?$", k
    ))])
    error_message = "every ssh_authorized_keys entry must be an OpenSSH public key line (type, base64 key, optional comment)."
  }
}

variable "addons" {
  description = "Cluster add-ons the control plane applies (read by nodeboot render): flannel, coredns."
  type        = list(string)
}

variable "flannel_version" {
  description = "Flannel release (read by nodeboot render; opens UDP 8472 between nodes)."
  type        = string
}

variable "coredns_version" {
  description = "CoreDNS release (read by nodeboot render)."
  type        = string
}
