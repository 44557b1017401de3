# A Flatcar AMI with nodeboot and the kubelet baked in, for environments with
# nodeboot_source = "ami" (nodeboot_path = "/opt/bin/nodeboot"), and the
# standard CNI plugins the pod network runs (Flatcar ships none). Flatcar's
# /usr is read-only, so the binaries go to /opt/bin and the plugins to
# /opt/cni/bin.
#
#   make ami      # builds the static binary, then packer init + packer build
#
# Every input is pinned: the Flatcar release (flatcar_release), this
# template's plugin (an exact version; Packer has no checksum for plugins,
# see images/README.md), the nodeboot binary by its SHA-256 (nodeboot_sha256:
# `make ami` computes it from the binary it built; checked on the builder
# before anything is installed, tagged on the AMI and checked again at every
# boot by verify-nodeboot.service), the kubelet and the CNI plugins by their
# SHA-512. kubelet_sha512 and cni_plugins_sha512 have no default: pass them
# (PKR_VAR_kubelet_sha512=... PKR_VAR_cni_plugins_sha512=... make ami), from
# https://dl.k8s.io/release/v<kubelet_version>/bin/linux/amd64/kubelet.sha512 and
# https://github.com/containernetworking/plugins/releases/download/v<cni_plugins_version>/cni-plugins-linux-amd64-v<cni_plugins_version>.tgz.sha512.

packer {
  required_version = ">= 1.10.0"
  required_plugins {
    amazon = {
      source = "github.com/hashicorp/amazon"
      # Exactly this release: `packer init` installs nothing else.
      version = "= 1.3.10"
    }
  }
}

variable "region" {
  type        = string
  default     = "eu-west-1"
  description = "Region to build the AMI in (copy it elsewhere with ami_regions if needed)."
}

variable "channel" {
  type        = string
  default     = "stable"
  description = "Flatcar channel of the source AMI (flatcar_channel in the environment file)."

  validation {
    condition     = contains(["stable", "beta", "alpha"], var.channel)
    error_message = "The channel must be stable, beta or alpha."
  }
}

variable "flatcar_release" {
  type        = string
  default     = "4152.2.3"
  description = "The Flatcar release the image starts from (its AMI is Flatcar-<channel>-<release>-hvm of Flatcar's account): a rebake starts from the same OS until this changes. Stable releases are N.2.P, beta N.1.P, alpha N.0.P."

  validation {
    condition     = can(regex("^[0-9]+\\.[0-2]\\.[0-9]+$", var.flatcar_release))
    error_message = "The flatcar_release must be a Flatcar release number such as 4152.2.3."
  }
}

variable "instance_type" {
  type        = string
  default     = "t3.small"
  description = "Instance type of the temporary builder instance (x86_64)."
}

variable "subnet_id" {
  type        = string
  default     = ""
  description = "Subnet of the builder instance; empty: the region's default VPC."
}

variable "nodeboot_binary" {
  type        = string
  default     = "target/x86_64-unknown-linux-musl/release/nodeboot"
  description = "The static nodeboot binary (make binary), relative to the working directory."
}

variable "nodeboot_sha256" {
  type        = string
  description = "SHA-256 of nodeboot_binary (`make ami` computes it from the binary it built). The builder refuses an upload that does not match it; the AMI is tagged with it, and every boot checks the baked binary against it."

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.nodeboot_sha256))
    error_message = "The nodeboot_sha256 must be 64 lowercase hex digits (sha256sum of the binary)."
  }
}

variable "nodeboot_version" {
  type        = string
  description = "nodeboot's version (Cargo.toml), tagged on the AMI."

  validation {
    condition     = length(var.nodeboot_version) > 0
    error_message = "The nodeboot_version must not be empty."
  }
}

variable "nodeboot_commit" {
  type        = string
  description = "The git commit the binary was built from, tagged on the AMI."

  validation {
    condition     = length(var.nodeboot_commit) > 0
    error_message = "The nodeboot_commit must not be empty."
  }
}

variable "kubelet_version" {
  type        = string
  default     = "1.31.4"
  description = "Kubernetes version of the kubelet (kubernetes_version in the environment file)."
}

variable "kubelet_url" {
  type        = string
  default     = ""
  description = "Where the builder downloads the kubelet; empty: dl.k8s.io for kubelet_version."
}

variable "kubelet_sha512" {
  type        = string
  description = "SHA-512 of the kubelet binary (dl.k8s.io publishes it beside the binary as kubelet.sha512)."

  validation {
    condition     = can(regex("^[0-9a-fA-F]{128}$", var.kubelet_sha512))
    error_message = "The kubelet_sha512 must be 128 hex digits."
  }
}

variable "cni_plugins_version" {
  type        = string
  default     = "1.5.1"
  description = "Release of containernetworking/plugins baked into /opt/cni/bin: the one kubelet_version's minor is tested with (\"cni\" in Kubernetes' build/dependencies.yaml; release-1.31: 1.5.1)."
}

variable "cni_plugins_url" {
  type        = string
  default     = ""
  description = "Where the builder downloads the CNI plugins archive; empty: the release's cni-plugins-linux-amd64-v<cni_plugins_version>.tgz."
}

variable "cni_plugins_sha512" {
  type        = string
  description = "SHA-512 of the CNI plugins archive (the release publishes it beside the archive as .tgz.sha512)."

  validation {
    condition     = can(regex("^[0-9a-fA-F]{128}$", var.cni_plugins_sha512))
    error_message = "The cni_plugins_sha512 must be 128 hex digits."
  }
}

variable "images_file" {
  type        = string
  description = "The images the nodes run, one \"<runtime> <repository:tag@sha256:...>\" a line: `nodeboot images --env <environment file>` (make ami writes it). Each is pulled by its digest into its runtime's store, which the AMI keeps: no boot needs a registry."
}

variable "encrypt_boot" {
  type        = bool
  default     = true
  description = "Encrypt the AMI's snapshot (with the account's default EBS key)."
}

locals {
  # The paths the rendered units use: nodeboot_path in the environment file and
  # KUBELET_BINARY in src/node_config.rs. The baked nodeboot lives in
  # nodeboot_store with the SHA-256 it was baked with (nodeboot.sha256) and
  # the boot check (verify-nodeboot); nodeboot_path is a link to it, which
  # Ignition replaces when nodeboot_source = "s3".
  nodeboot_path  = "/opt/bin/nodeboot"
  nodeboot_store = "/opt/nodeboot"
  kubelet_path   = "/opt/bin/kubelet"
  # The boot check's unit, and the drop-in that makes every nodeboot-*.service
  # require it (systemd reads nodeboot-.service.d/ for each of them).
  boot_check_unit   = "/etc/systemd/system/verify-nodeboot.service"
  boot_check_dropin = "/etc/systemd/system/nodeboot-.service.d"
  kubelet_url       = var.kubelet_url != "" ? var.kubelet_url : "https://dl.k8s.io/release/v${var.kubelet_version}/bin/linux/amd64/kubelet"
  timestamp         = formatdate("YYYYMMDDhhmmss", timestamp())

  # Where containerd looks for CNI plugins on Flatcar and Flannel's DaemonSet
  # copies its own. The whole release is installed; the bake fails unless
  # these are in it: what Flannel's CNI chain runs (its delegate bridge with
  # host-local IPAM, portmap) and the loopback plugin containerd runs for
  # every sandbox (tests/images checks the list against the rendered chain).
  cni_bin_dir = "/opt/cni/bin"

  # The pod network's kernel modules (br_netfilter) and sysctls (bridged
  # traffic through iptables, forwarding), applied at every boot.
  kernel_modules_conf = "/etc/modules-load.d/nodeboot-kubernetes.conf"
  kernel_sysctl_conf  = "/etc/sysctl.d/90-nodeboot-kubernetes.conf"

  # Where the images the bake pulls stay: containerd's store (the kubelet's
  # pods, namespace k8s.io) and docker's (etcd, kubectl).
  containerd_store = "/var/lib/containerd"
  docker_store     = "/var/lib/docker"
  cni_plugins      = ["bridge", "host-local", "loopback", "portmap"]
  cni_plugins_url  = var.cni_plugins_url != "" ? var.cni_plugins_url : "https://github.com/containernetworking/plugins/releases/download/v${var.cni_plugins_version}/cni-plugins-linux-amd64-v${var.cni_plugins_version}.tgz"

  # Every image, by digest (tests/images checks each line's form); their
  # list is in the image (<store>/images) and its SHA-256 in a tag.
  images      = sort(compact([for line in split("\n", file(var.images_file)) : trimspace(line)]))
  images_text = join("\n", local.images)

  tags = {
    "nodeboot.io/images-sha256"       = sha256("${local.images_text}\n")
    "nodeboot.io/images-count"        = tostring(length(local.images))
    "nodeboot.io/version"             = var.nodeboot_version
    "nodeboot.io/commit"              = var.nodeboot_commit
    "nodeboot.io/nodeboot-sha256"     = var.nodeboot_sha256
    "nodeboot.io/kubelet-version"     = var.kubelet_version
    "nodeboot.io/flatcar-channel"     = var.channel
    "nodeboot.io/flatcar-release"     = var.flatcar_release
    "nodeboot.io/cni-plugins-version" = var.cni_plugins_version
    "nodeboot.io/cni-plugins-sha512"  = lower(var.cni_plugins_sha512)
  }
}

source "amazon-ebs" "flatcar" {
  region          = var.region
  instance_type   = var.instance_type
  subnet_id       = var.subnet_id
  ami_name        = "nodeboot-flatcar-${var.channel}-${var.nodeboot_version}-${local.timestamp}"
  ami_description = "Flatcar ${var.channel} with nodeboot ${var.nodeboot_version} (${var.nodeboot_commit}) and kubelet ${var.kubelet_version} in /opt/bin, CNI plugins ${var.cni_plugins_version} in /opt/cni/bin"

  # Flatcar's own account publishes the images, named Flatcar-<channel>-<release>-hvm:
  # the one of the pinned release, never the newest (without most_recent,
  # Packer also stops when the name matches more than one image).
  source_ami_filter {
    owners      = ["075585003325"]
    most_recent = false
    filters = {
      name                = "Flatcar-${var.channel}-${var.flatcar_release}-hvm"
      architecture        = "x86_64"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
  }

  ssh_username            = "core"
  temporary_key_pair_type = "ed25519"
  encrypt_boot            = var.encrypt_boot
  imds_support            = "v2.0"

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  tags = merge(local.tags, {
    "Name"                        = "nodeboot-flatcar-${var.channel}-${var.nodeboot_version}"
    "nodeboot.io/source-ami"      = "{{ .SourceAMI }}"
    "nodeboot.io/source-ami-name" = "{{ .SourceAMIName }}"
  })
  snapshot_tags = local.tags
  run_tags      = local.tags
}

build {
  name    = "nodeboot-flatcar"
  sources = ["source.amazon-ebs.flatcar"]

  provisioner "file" {
    source      = var.nodeboot_binary
    destination = "/tmp/nodeboot"
  }

  # The boot check: verify-nodeboot, its unit and the drop-in.
  provisioner "file" {
    source      = "${path.root}/boot/"
    destination = "/tmp/nodeboot-boot"
  }

  provisioner "shell" {
    script          = "${path.root}/provision.sh"
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    env = {
      NODEBOOT_UPLOAD     = "/tmp/nodeboot"
      NODEBOOT_SHA256     = var.nodeboot_sha256
      NODEBOOT_PATH       = local.nodeboot_path
      NODEBOOT_STORE      = local.nodeboot_store
      BOOT_CHECK_UPLOAD   = "/tmp/nodeboot-boot"
      BOOT_CHECK_UNIT     = local.boot_check_unit
      BOOT_CHECK_DROPIN   = local.boot_check_dropin
      KUBELET_PATH        = local.kubelet_path
      KUBELET_URL         = local.kubelet_url
      KUBELET_SHA512      = var.kubelet_sha512
      CNI_PLUGINS_URL     = local.cni_plugins_url
      CNI_PLUGINS_SHA512  = var.cni_plugins_sha512
      CNI_BIN_DIR         = local.cni_bin_dir
      CNI_PLUGINS         = join(" ", local.cni_plugins)
      IMAGES              = local.images_text
      KERNEL_MODULES_CONF = local.kernel_modules_conf
      KERNEL_SYSCTL_CONF  = local.kernel_sysctl_conf
    }
  }

  # Ignition runs on a Flatcar machine's first boot only, and this builder has
  # had its first boot. flatcar-reset stages a reset for the next boot, which
  # is the first boot of every instance launched from the AMI: the root
  # filesystem is cleaned except the binaries, the boot check, the CNI
  # plugins and the container runtimes' image stores (so a fresh machine-id
  # and SSH host keys, no builder key), and Ignition runs with that
  # instance's user data.
  provisioner "shell" {
    inline = [
      "sudo flatcar-reset --keep-paths '${local.nodeboot_path}' '${local.nodeboot_store}' '${local.kubelet_path}' '${local.cni_bin_dir}' '${local.boot_check_unit}' '${local.boot_check_dropin}' '${local.containerd_store}' '${local.docker_store}' '${local.kernel_modules_conf}' '${local.kernel_sysctl_conf}'",
    ]
  }

  post-processor "manifest" {
    output     = "out/ami/manifest.json"
    strip_path = true
    custom_data = {
      nodeboot_version    = var.nodeboot_version
      nodeboot_commit     = var.nodeboot_commit
      nodeboot_sha256     = var.nodeboot_sha256
      kubelet_version     = var.kubelet_version
      channel             = var.channel
      flatcar_release     = var.flatcar_release
      cni_plugins_version = var.cni_plugins_version
      cni_plugins_sha512  = lower(var.cni_plugins_sha512)
      images              = local.images_text
    }
  }
}
