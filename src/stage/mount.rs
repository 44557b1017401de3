//! `nodeboot stage mount`: find the claimed volume's block device, format it
//! only if it is blank, mount it at the etcd data path, and bring up the
//! ENI's address with the source routing a second interface needs.
//!
//! Never formats a device that holds anything: `blkid -p` must report no
//! filesystem and no partition table; any other answer stops the stage
//! without touching the device.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tracing::info;

use super::attach::{Claim, CLAIM_FILE};
use super::{Root, StageError};
use crate::cloud::Metadata;
use crate::fault;
use crate::node_config::{ETCD_DATA_DIR, ETCD_MOUNT_POINT};
use crate::retry::{self, Attempt, Gave, Policy};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("the device of volume {volume} did not appear (looked for {looked_for}) within {seconds}s")]
    NoDevice { volume: String, looked_for: String, seconds: u64 },
    #[error("{device} (volume {volume}) holds {found}; nodeboot only formats blank devices and only mounts ext4, so it leaves this one untouched")]
    NotBlank { device: String, volume: String, found: String },
    #[error("{0} is not a block device")]
    NotBlock(String),
    #[error("{mount_point} already has {other} mounted, not {device}")]
    MountedElsewhere { mount_point: String, device: String, other: String },
    #[error("{command} failed: {detail}")]
    Command { command: String, detail: String },
    #[error("mount {device} on {mount_point}: {source}")]
    Mount { device: String, mount_point: String, source: nix::Error },
    #[error("no network interface with MAC {mac} (ENI {eni}) appeared within {seconds}s")]
    NoInterface { mac: String, eni: String, seconds: u64 },
    #[error("the routing of ENI {eni} did not take effect within {seconds}s: {detail}")]
    Network { eni: String, detail: String, seconds: u64 },
    #[error(transparent)]
    Metadata(#[from] super::discover::DiscoverError),
    #[error(transparent)]
    Stage(#[from] StageError),
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How long to wait for the kernel to show the device / interface.
    pub wait_timeout: Duration,
    /// Skip the network half (bring up the ENI address).
    pub skip_network: bool,
}

const POLL: Policy = Policy::new(Duration::from_millis(100), Duration::from_secs(2), Duration::from_secs(120));

/// What `blkid -p` found on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Blank,
    Ext4,
    /// Anything else: another filesystem, a partition table, RAID, LUKS...
    Other(String),
}

/// Decides from `blkid -p -o export` output and exit status. Pure, so every
/// answer blkid can give is table-tested.
pub fn classify(status: Option<i32>, stdout: &str) -> Probe {
    match status {
        // blkid: exit 2 = "no identifiable signature".
        Some(2) if stdout.trim().is_empty() => Probe::Blank,
        Some(0) => {
            let field = |k: &str| stdout.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).map(str::to_string);
            match (field("TYPE"), field("PTTYPE")) {
                (Some(t), None) if t == "ext4" => Probe::Ext4,
                (_, Some(pt)) => Probe::Other(format!("a {pt} partition table")),
                (Some(t), None) => Probe::Other(format!("a {t} signature")),
                (None, None) => Probe::Other(format!("something blkid reports as {:?}", stdout.trim())),
            }
        }
        other => Probe::Other(format!("an answer blkid could not give cleanly (exit {other:?}): {}", stdout.trim())),
    }
}

pub fn run(root: &Root, metadata: &impl Metadata, options: Options) -> Result<(), MountError> {
    let claim: Claim = root.recorded(CLAIM_FILE, "attach")?;
    let device = find_device(root, &claim, options)?;
    prepare_filesystem(&device, &claim)?;
    let mount_point = root.path(ETCD_MOUNT_POINT);
    mount(&device, &mount_point)?;
    fault::point("mount:after-mount");
    let data_dir = root.path(ETCD_DATA_DIR);
    std::fs::create_dir_all(&data_dir).map_err(|e| StageError::io(&data_dir, e))?;
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| StageError::io(&data_dir, e))?;
    if !options.skip_network {
        bring_up_address(root, metadata, &claim, options)?;
    }
    info!(member = claim.member, device = %device.display(), mount_point = %mount_point.display(), "volume mounted");
    Ok(())
}

/// Where the volume's device may show up: Nitro's by-id link first (the
/// NVMe serial is the volume id without its dash), then the name asked for
/// at attach time and its `sd` alias (Xen instances).
pub fn device_candidates(root: &Root, claim: &Claim) -> Vec<PathBuf> {
    let serial = claim.volume_id.replace('-', "");
    let mut out = vec![root.path(&format!("/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{serial}"))];
    out.push(root.path(&claim.device_name));
    if let Some(suffix) = claim.device_name.strip_prefix("/dev/xvd") {
        out.push(root.path(&format!("/dev/sd{suffix}")));
    }
    out
}

fn find_device(root: &Root, claim: &Claim, options: Options) -> Result<PathBuf, MountError> {
    let candidates = device_candidates(root, claim);
    let what = format!("the device of volume {}", claim.volume_id);
    let found = retry::wait_blocking(&what, POLL.with_total(options.wait_timeout), || {
        match candidates.iter().find_map(|c| std::fs::canonicalize(c).ok()) {
            Some(dev) => Attempt::Done(dev),
            None => Attempt::Retry("not there yet"),
        }
    });
    let device = found.map_err(|_| MountError::NoDevice {
        volume: claim.volume_id.clone(),
        looked_for: candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", "),
        seconds: options.wait_timeout.as_secs(),
    })?;
    let meta = std::fs::metadata(&device).map_err(|e| StageError::io(&device, e))?;
    if !meta.file_type().is_block_device() {
        return Err(MountError::NotBlock(device.display().to_string()));
    }
    Ok(device)
}

fn probe(device: &Path) -> Result<Probe, MountError> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(device)
        .output()
        .map_err(|e| MountError::Command { command: "blkid".into(), detail: e.to_string() })?;
    Ok(classify(out.status.code(), &String::from_utf8_lossy(&out.stdout)))
}

fn prepare_filesystem(device: &Path, claim: &Claim) -> Result<(), MountError> {
    match probe(device)? {
        Probe::Ext4 => Ok(()),
        Probe::Other(found) => Err(MountError::NotBlank { device: device.display().to_string(), volume: claim.volume_id.clone(), found }),
        Probe::Blank => {
            info!(device = %device.display(), volume = %claim.volume_id, "blank device: creating ext4");
            fault::point("mount:before-mkfs");
            run_command(Command::new("mkfs.ext4").args(["-q", "-L", &format!("etcd-{}", claim.member)]).arg(device))?;
            fault::point("mount:after-mkfs");
            // Trust nothing: the new filesystem must probe as ext4.
            match probe(device)? {
                Probe::Ext4 => Ok(()),
                other => Err(MountError::Command { command: "mkfs.ext4".into(), detail: format!("device probes as {other:?} afterwards") }),
            }
        }
    }
}

fn run_command(cmd: &mut Command) -> Result<String, MountError> {
    let rendered = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| MountError::Command { command: rendered.clone(), detail: e.to_string() })?;
    if !out.status.success() {
        return Err(MountError::Command { command: rendered, detail: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The device number mounted at `mount_point`, from /proc/self/mountinfo.
fn mounted_device(mount_point: &Path) -> Option<(u64, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let target = mount_point.to_str()?;
    // The last mount on a path hides the earlier ones.
    info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(4) != Some(&target) {
            return None;
        }
        let (major, minor) = fields.get(2)?.split_once(':')?;
        let dev = nix::sys::stat::makedev(major.parse().ok()?, minor.parse().ok()?);
        let source = fields.iter().skip_while(|f| **f != "-").nth(2).unwrap_or(&"?").to_string();
        Some((dev, source))
    })
}

fn mount(device: &Path, mount_point: &Path) -> Result<(), MountError> {
    std::fs::create_dir_all(mount_point).map_err(|e| StageError::io(mount_point, e))?;
    let mount_point = std::fs::canonicalize(mount_point).map_err(|e| StageError::io(mount_point, e))?;
    let rdev = std::fs::metadata(device).map_err(|e| StageError::io(device, e))?.rdev();
    if let Some((dev, source)) = mounted_device(&mount_point) {
        if dev == rdev {
            info!(mount_point = %mount_point.display(), "already mounted");
            return Ok(());
        }
        return Err(MountError::MountedElsewhere {
            mount_point: mount_point.display().to_string(),
            device: device.display().to_string(),
            other: source,
        });
    }
    nix::mount::mount(Some(device), &mount_point, Some("ext4"), nix::mount::MsFlags::MS_NOATIME, None::<&str>).map_err(|source| {
        MountError::Mount { device: device.display().to_string(), mount_point: mount_point.display().to_string(), source }
    })
}

/// The interface carrying `mac`, from the kernel (netlink via `ip`, which,
/// unlike /sys, always shows the caller's network namespace).
fn interface_with_mac(mac: &str) -> Result<Option<String>, MountError> {
    let out = run_command(Command::new("ip").args(["-o", "link", "show"]))?;
    Ok(out.lines().find_map(|line| {
        let name = line.split(':').nth(1)?.trim().split('@').next()?.to_string();
        line.contains(&format!("link/ether {mac}")).then_some(name)
    }))
}

fn bring_up_address(root: &Root, metadata: &impl Metadata, claim: &Claim, options: Options) -> Result<(), MountError> {
    let mac = claim.eni_mac.to_lowercase();
    let what = format!("the interface of ENI {} ({mac})", claim.eni_id);
    let interface = retry::wait_blocking(&what, POLL.with_total(options.wait_timeout), || match interface_with_mac(&mac) {
        Ok(Some(name)) => Attempt::Done(name),
        Ok(None) => Attempt::Retry(MountError::NoInterface { mac: mac.clone(), eni: claim.eni_id.clone(), seconds: 0 }),
        Err(e) => Attempt::Fail(e),
    })
    .map_err(|e| match e {
        Gave::Failed(e) => e,
        Gave::Up { .. } => MountError::NoInterface { mac: mac.clone(), eni: claim.eni_id.clone(), seconds: options.wait_timeout.as_secs() },
    })?;
    // Observe: the subnet (IMDS), the primary address (discover), the VPC (node.json).
    let cidr_path = format!("meta-data/network/interfaces/macs/{mac}/subnet-ipv4-cidr-block");
    let subnet: ipnet::Ipv4Net = super::discover::field(metadata, &cidr_path, "an IPv4 CIDR", |s| s.parse::<ipnet::Ipv4Net>().is_ok())?
        .parse()
        .expect("checked");
    let facts: super::discover::Facts = root.recorded(super::discover::FACTS_FILE, "discover")?;
    let vpc = root.node_config()?.etcd.and_then(|e| e.vpc_cidr).unwrap_or(subnet);
    let eni_ip = claim.eni_ip.parse().map_err(|_| StageError::BadFile { path: root.state(CLAIM_FILE), detail: format!("eni_ip {:?} is not an IPv4 address", claim.eni_ip) })?;
    // Plan (pure), act, verify: see stage/eni.rs.
    let plan = super::eni::plan(&claim.eni_id, &mac, eni_ip, subnet, facts.identity.private_ip, vpc);
    let applier = super::eni::Applier::detect(root);
    info!(interface, ?applier, "bringing up ENI {} at {}", claim.eni_id, plan.address);
    super::eni::apply(&applier, &plan, &interface, options.wait_timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_silent_blkid_means_blank() {
        assert_eq!(classify(Some(2), ""), Probe::Blank);
        assert_eq!(classify(Some(0), "DEVNAME=/dev/loop0\nUUID=x\nTYPE=ext4\n"), Probe::Ext4);
        assert!(matches!(classify(Some(0), "PTTYPE=gpt\n"), Probe::Other(s) if s.contains("gpt partition table")));
        assert!(matches!(classify(Some(0), "TYPE=xfs\n"), Probe::Other(s) if s.contains("xfs")));
        assert!(matches!(classify(Some(0), "TYPE=ext4\nPTTYPE=dos\n"), Probe::Other(_)));
        // blkid's "ambivalent probing result" and usage errors are never "blank".
        assert!(matches!(classify(Some(8), ""), Probe::Other(_)));
        assert!(matches!(classify(Some(4), ""), Probe::Other(_)));
        assert!(matches!(classify(None, ""), Probe::Other(_)));
        assert!(matches!(classify(Some(2), "garbage"), Probe::Other(_)));
    }
}
