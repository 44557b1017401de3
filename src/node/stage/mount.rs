//! `nodeboot stage mount`: find the claimed volume's block device, format it
//! only if it is blank, mount it at the etcd data path, and bring up the
//! ENI's address with the source routing a second interface needs.
//!
//! Never formats a device that holds or may hold anything. Observe: what
//! `blkid -p` says (exit, stdout, stderr), what nodeboot reads itself at
//! both ends of the device, and the volume's past in EC2 (the
//! `nodeboot.io/formatted` tag, the snapshot it came from). Plan
//! ([`decide`], pure): format only when blkid finds nothing and says
//! nothing, the first and last MiB read without error and are all zeros,
//! and the volume never held a filesystem. Act: `mkfs.ext4`, then tag the
//! volume. Verify: the device probes as ext4.
//!
//! blkid alone cannot tell blank from unreadable. util-linux 2.38.1's
//! `blkid -p -o export` on a loop device whose every read fails with EIO
//! prints nothing at all and exits 2, exactly as on a blank device; so do a
//! zero-size device and a path that does not exist. Only a device it cannot
//! open says so, on stderr (`blkid: error: /dev/loop1: Permission denied`,
//! exit 2). tests/mount.rs checks each of these against the real blkid.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tracing::info;

use super::attach::{Claim, CLAIM_FILE};
use super::{Root, StageError};
use crate::shared::cloud::{tags, CloudError, Compute, Metadata};
use crate::shared::fault;
use crate::shared::node_config::{ETCD_DATA_DIR, ETCD_MOUNT_POINT};
use crate::shared::retry::{self, Attempt, Gave, Policy};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("the device of volume {volume} did not appear (looked for {looked_for}) within {seconds}s")]
    NoDevice {
        volume: String,
        looked_for: String,
        seconds: u64,
    },
    #[error("{device} (volume {volume}) holds {found}; nodeboot only formats blank devices and only mounts ext4, so it leaves this one untouched")]
    NotBlank {
        device: String,
        volume: String,
        found: String,
    },
    #[error("{device} (volume {volume}) reads blank, but {why}: it held data, so nodeboot will not format it. A human must look: is this the member's volume, and where did its data go? Restore it from a snapshot, or remove the tag {tag} once its data is known to be expendable", tag = tags::FORMATTED)]
    HeldData {
        device: String,
        volume: String,
        why: String,
    },
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error("{0} is not a block device")]
    NotBlock(String),
    #[error("{mount_point} already has {other} mounted, not {device}")]
    MountedElsewhere {
        mount_point: String,
        device: String,
        other: String,
    },
    #[error("{command} failed: {detail}")]
    Command { command: String, detail: String },
    #[error("mount {device} on {mount_point}: {source}")]
    Mount {
        device: String,
        mount_point: String,
        source: nix::Error,
    },
    #[error("no network interface with MAC {mac} (ENI {eni}) appeared within {seconds}s")]
    NoInterface { mac: String, eni: String, seconds: u64 },
    #[error(transparent)]
    Eni(#[from] super::eni::EniError),
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

const POLL: Policy = Policy::new(
    Duration::from_millis(100),
    Duration::from_secs(2),
    Duration::from_secs(120),
);

/// What `blkid -p` found on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// No signature found, and blkid reported no error.
    Blank,
    Ext4,
    /// Anything else: another filesystem, a partition table, RAID, LUKS,
    /// an error...
    Other(String),
}

/// Decides from `blkid -p -o export` output and exit status. Pure, so every
/// answer blkid can give is table-tested.
pub fn classify(status: Option<i32>, stdout: &str, stderr: &str) -> Probe {
    match status {
        // blkid: exit 2 = "no identifiable signature", or an error it printed.
        Some(2) if stdout.trim().is_empty() && stderr.trim().is_empty() => Probe::Blank,
        Some(2) if stdout.trim().is_empty() => {
            Probe::Other(format!("something blkid could not read ({})", stderr.trim()))
        }
        Some(0) => {
            let field = |k: &str| {
                stdout
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{k}=")))
                    .map(str::to_string)
            };
            match (field("TYPE"), field("PTTYPE")) {
                (Some(t), None) if t == "ext4" => Probe::Ext4,
                (_, Some(pt)) => Probe::Other(format!("a {pt} partition table")),
                (Some(t), None) => Probe::Other(format!("a {t} signature")),
                (None, None) => Probe::Other(format!("something blkid reports as {:?}", stdout.trim())),
            }
        }
        other => Probe::Other(format!(
            "an answer blkid could not give cleanly (exit {other:?}): {} {}",
            stdout.trim(),
            stderr.trim()
        )),
    }
}

/// What `blkid -p -o export` printed and how it exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blkid {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// What nodeboot read itself from the device's first and last MiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ends {
    /// Every byte read, and every byte zero (a fresh EBS volume).
    Zeros,
    NonZero {
        offset: u64,
    },
    /// The device has no bytes.
    Empty,
    /// Opening, sizing or reading failed.
    Unreadable(String),
}

/// What EC2 says about the volume's past.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct History {
    /// The `nodeboot.io/formatted` tag's value.
    pub formatted: Option<String>,
    /// The snapshot the volume was created from.
    pub snapshot: Option<String>,
}

/// What to do with the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Mount,
    Format,
    /// Leave it untouched: it holds (or may hold) this.
    Refuse(String),
    /// It reads blank, but held data once (why): a human must look.
    HeldData(String),
}

/// The plan: pure, so every combination is table-tested.
pub fn decide(blkid: &Blkid, ends: &Ends, history: &History) -> Decision {
    match classify(blkid.status, &blkid.stdout, &blkid.stderr) {
        Probe::Ext4 => Decision::Mount,
        Probe::Other(found) => Decision::Refuse(found),
        Probe::Blank => match ends {
            Ends::Unreadable(e) => Decision::Refuse(format!(
                "no signature blkid knows, but its own read failed ({e}); an unreadable device may hold data"
            )),
            Ends::Empty => Decision::Refuse("no bytes at all (a zero-size device)".into()),
            Ends::NonZero { offset } => Decision::Refuse(format!(
                "no signature blkid knows, but data (a non-zero byte at offset {offset})"
            )),
            Ends::Zeros => match (&history.formatted, &history.snapshot) {
                (Some(time), _) => {
                    Decision::HeldData(format!("nodeboot formatted it at {time} (tag {})", tags::FORMATTED))
                }
                (None, Some(snapshot)) => Decision::HeldData(format!("it was created from snapshot {snapshot}")),
                (None, None) => Decision::Format,
            },
        },
    }
}

/// How much nodeboot reads at each end: signatures live in the first MiB
/// (filesystems, MBR, GPT) or the last (GPT's backup, MD RAID 0.90/1.0).
const END_BYTES: u64 = 1 << 20;

/// Reads the device's first and last MiB (the whole device if smaller).
pub fn read_ends(device: &Path) -> Ends {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::fs::FileExt;
    let mut file = match std::fs::File::open(device) {
        Ok(f) => f,
        Err(e) => return Ends::Unreadable(format!("open: {e}")),
    };
    let size = match file.seek(SeekFrom::End(0)) {
        Ok(size) => size,
        Err(e) => return Ends::Unreadable(format!("size: {e}")),
    };
    if size == 0 {
        return Ends::Empty;
    }
    for offset in [0, size.saturating_sub(END_BYTES)] {
        let mut buf = vec![0u8; END_BYTES.min(size) as usize];
        if let Err(e) = file.read_exact_at(&mut buf, offset) {
            return Ends::Unreadable(format!("{} bytes at offset {offset}: {e}", buf.len()));
        }
        if let Some(i) = buf.iter().position(|b| *b != 0) {
            return Ends::NonZero {
                offset: offset + i as u64,
            };
        }
    }
    Ends::Zeros
}

pub async fn run(
    root: &Root,
    metadata: &impl Metadata,
    ec2: &impl Compute,
    options: Options,
) -> Result<(), MountError> {
    let claim: Claim = root.recorded(CLAIM_FILE, "attach")?;
    let device = find_device(root, &claim, options)?;
    prepare_filesystem(root, &device, &claim, ec2).await?;
    let mount_point = root.path(ETCD_MOUNT_POINT);
    mount(&device, &mount_point)?;
    fault::point("mount:after-mount");
    let data_dir = root.path(ETCD_DATA_DIR);
    std::fs::create_dir_all(&data_dir).map_err(|e| StageError::io(&data_dir, e))?;
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| StageError::io(&data_dir, e))?;
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
        looked_for: candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        seconds: options.wait_timeout.as_secs(),
    })?;
    let meta = std::fs::metadata(&device).map_err(|e| StageError::io(&device, e))?;
    if !meta.file_type().is_block_device() {
        return Err(MountError::NotBlock(device.display().to_string()));
    }
    Ok(device)
}

fn probe(device: &Path) -> Result<Blkid, MountError> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(device)
        .output()
        .map_err(|e| MountError::Command {
            command: "blkid".into(),
            detail: e.to_string(),
        })?;
    Ok(Blkid {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Recorded in `/run/nodeboot` once the claimed volume is known to hold a
/// filesystem and to carry the tag, so a rerun in this boot makes no API call.
pub const FILESYSTEM_FILE: &str = "filesystem.json";

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Filesystem {
    volume_id: String,
    /// The `nodeboot.io/formatted` tag's value.
    formatted: String,
}

async fn prepare_filesystem(root: &Root, device: &Path, claim: &Claim, ec2: &impl Compute) -> Result<(), MountError> {
    let known = match root.state(FILESYSTEM_FILE).exists() {
        true => Some(root.recorded::<Filesystem>(FILESYSTEM_FILE, "mount")?).filter(|f| f.volume_id == claim.volume_id),
        false => None,
    };
    if known.is_some() {
        let blkid = probe(device)?;
        if classify(blkid.status, &blkid.stdout, &blkid.stderr) == Probe::Ext4 {
            return Ok(());
        }
    }
    let volume = ec2.volume(&claim.volume_id).await?;
    let history = History {
        formatted: volume.tags.get(tags::FORMATTED).cloned(),
        snapshot: volume.snapshot_id.clone(),
    };
    let blkid = probe(device)?;
    let ends = read_ends(device);
    let shown = || device.display().to_string();
    match decide(&blkid, &ends, &history) {
        Decision::Mount => {}
        Decision::Refuse(found) => {
            return Err(MountError::NotBlank {
                device: shown(),
                volume: claim.volume_id.clone(),
                found,
            })
        }
        Decision::HeldData(why) => {
            return Err(MountError::HeldData {
                device: shown(),
                volume: claim.volume_id.clone(),
                why,
            })
        }
        Decision::Format => {
            info!(device = %device.display(), volume = %claim.volume_id, "blank device: creating ext4");
            fault::point("mount:before-mkfs");
            run_command(
                Command::new("mkfs.ext4")
                    .args(["-q", "-L", &format!("etcd-{}", claim.member)])
                    .arg(device),
            )?;
            fault::point("mount:after-mkfs");
            // Trust nothing: the new filesystem must probe as ext4.
            let after = probe(device)?;
            match classify(after.status, &after.stdout, &after.stderr) {
                Probe::Ext4 => {}
                other => {
                    return Err(MountError::Command {
                        command: "mkfs.ext4".into(),
                        detail: format!("device probes as {other:?} afterwards"),
                    })
                }
            }
        }
    }
    // The volume holds a filesystem now: record it in EC2, so that it is
    // never formatted again. A rerun after a crash between mkfs and here
    // finds ext4 and tags it then.
    let formatted = match history.formatted {
        Some(time) => time,
        None => {
            let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
            ec2.tag_volume(&claim.volume_id, tags::FORMATTED, &now).await?;
            info!(volume = %claim.volume_id, "tagged {}={now}: never to be formatted again", tags::FORMATTED);
            now
        }
    };
    root.record(
        FILESYSTEM_FILE,
        &Filesystem {
            volume_id: claim.volume_id.clone(),
            formatted,
        },
    )?;
    Ok(())
}

fn run_command(cmd: &mut Command) -> Result<String, MountError> {
    let rendered = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| MountError::Command {
        command: rendered.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(MountError::Command {
            command: rendered,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
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
        let source = fields
            .iter()
            .skip_while(|f| **f != "-")
            .nth(2)
            .unwrap_or(&"?")
            .to_string();
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
    nix::mount::mount(
        Some(device),
        &mount_point,
        Some("ext4"),
        nix::mount::MsFlags::MS_NOATIME,
        None::<&str>,
    )
    .map_err(|source| MountError::Mount {
        device: device.display().to_string(),
        mount_point: mount_point.display().to_string(),
        source,
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
    let interface = retry::wait_blocking(
        &what,
        POLL.with_total(options.wait_timeout),
        || match interface_with_mac(&mac) {
            Ok(Some(name)) => Attempt::Done(name),
            Ok(None) => Attempt::Retry(MountError::NoInterface {
                mac: mac.clone(),
                eni: claim.eni_id.clone(),
                seconds: 0,
            }),
            Err(e) => Attempt::Fail(e),
        },
    )
    .map_err(|e| match e {
        Gave::Failed(e) => e,
        Gave::Up { .. } => MountError::NoInterface {
            mac: mac.clone(),
            eni: claim.eni_id.clone(),
            seconds: options.wait_timeout.as_secs(),
        },
    })?;
    // Observe: the subnet (IMDS), the primary address (discover), the VPC (node.json).
    let cidr_path = format!("meta-data/network/interfaces/macs/{mac}/subnet-ipv4-cidr-block");
    let subnet: ipnet::Ipv4Net = super::discover::field(metadata, &cidr_path, "an IPv4 CIDR", |s| {
        s.parse::<ipnet::Ipv4Net>().is_ok()
    })?
    .parse()
    .expect("checked");
    let facts: super::discover::Facts = root.recorded(super::discover::FACTS_FILE, "discover")?;
    let vpc = root.node_config()?.etcd.and_then(|e| e.vpc_cidr).unwrap_or(subnet);
    let eni_ip = claim.eni_ip.parse().map_err(|_| StageError::BadFile {
        path: root.state(CLAIM_FILE),
        detail: format!("eni_ip {:?} is not an IPv4 address", claim.eni_ip),
    })?;
    // Plan (pure), act, verify: see stage/eni.rs.
    let plan = super::eni::plan(&claim.eni_id, &mac, eni_ip, subnet, facts.identity.private_ip, vpc);
    let applier = super::eni::Applier::detect(root);
    info!(
        interface,
        ?applier,
        "bringing up ENI {} at {}",
        claim.eni_id,
        plan.address
    );
    Ok(super::eni::apply(&applier, &plan, &interface, options.wait_timeout)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_silent_blkid_means_blank() {
        assert_eq!(classify(Some(2), "", ""), Probe::Blank);
        assert_eq!(
            classify(Some(0), "DEVNAME=/dev/loop0\nUUID=x\nTYPE=ext4\n", ""),
            Probe::Ext4
        );
        assert!(matches!(classify(Some(0), "PTTYPE=gpt\n", ""), Probe::Other(s) if s.contains("gpt partition table")));
        assert!(matches!(classify(Some(0), "TYPE=xfs\n", ""), Probe::Other(s) if s.contains("xfs")));
        assert!(matches!(
            classify(Some(0), "TYPE=ext4\nPTTYPE=dos\n", ""),
            Probe::Other(_)
        ));
        // blkid's "ambivalent probing result" and usage errors are never "blank".
        assert!(matches!(classify(Some(8), "", ""), Probe::Other(_)));
        assert!(matches!(classify(Some(4), "", ""), Probe::Other(_)));
        assert!(matches!(classify(None, "", ""), Probe::Other(_)));
        assert!(matches!(classify(Some(2), "garbage", ""), Probe::Other(_)));
        // What util-linux 2.38.1 prints for a device it cannot open.
        let denied = "blkid: error: /dev/loop1: Permission denied\n";
        assert!(matches!(classify(Some(2), "", denied), Probe::Other(s) if s.contains("Permission denied")));
    }

    /// Every combination of what blkid said, what nodeboot read and what
    /// EC2 knows of the volume's past.
    #[test]
    fn only_a_silent_readable_all_zero_never_formatted_volume_is_formatted() {
        let blkid = |status: i32, stdout: &str, stderr: &str| Blkid {
            status: Some(status),
            stdout: stdout.into(),
            stderr: stderr.into(),
        };
        let silent = blkid(2, "", "");
        let ext4 = blkid(0, "TYPE=ext4\n", "");
        let xfs = blkid(0, "TYPE=xfs\n", "");
        let error = blkid(2, "", "blkid: error: /dev/loop1: Permission denied\n");
        let fresh = History::default();
        let tagged = History {
            formatted: Some("2026-11-30T11:00:00Z".into()),
            snapshot: None,
        };
        let restored = History {
            formatted: None,
            snapshot: Some("snap-1".into()),
        };
        let eio = Ends::Unreadable("1048576 bytes at offset 0: Input/output error".into());
        use Decision::*;
        let is_refused = |d: &Decision| matches!(d, Refuse(_));
        let is_held = |d: &Decision| matches!(d, HeldData(_));
        for history in [&fresh, &tagged, &restored] {
            for ends in [Ends::Zeros, Ends::NonZero { offset: 7 }, Ends::Empty, eio.clone()] {
                // A filesystem blkid knows decides alone.
                assert_eq!(decide(&ext4, &ends, history), Mount, "{ends:?} {history:?}");
                assert!(is_refused(&decide(&xfs, &ends, history)));
                assert!(
                    is_refused(&decide(&error, &ends, history)),
                    "blkid's error refuses, {ends:?} {history:?}"
                );
            }
            // blkid silent: nodeboot's own read decides.
            assert!(is_refused(&decide(&silent, &eio, history)));
            assert!(is_refused(&decide(&silent, &Ends::Empty, history)));
            assert!(is_refused(&decide(
                &silent,
                &Ends::NonZero { offset: 1 << 20 },
                history
            )));
        }
        // All zeros: formatted only if it never held a filesystem.
        assert_eq!(decide(&silent, &Ends::Zeros, &fresh), Format);
        assert!(is_held(&decide(&silent, &Ends::Zeros, &tagged)));
        assert!(is_held(&decide(&silent, &Ends::Zeros, &restored)));
        let both = History {
            formatted: Some("t".into()),
            snapshot: Some("snap-1".into()),
        };
        assert!(is_held(&decide(&silent, &Ends::Zeros, &both)));
        // The reasons name what was found.
        assert!(matches!(decide(&silent, &eio, &fresh), Refuse(s) if s.contains("Input/output error")));
        assert!(matches!(decide(&silent, &Ends::Zeros, &restored), HeldData(s) if s.contains("snap-1")));
        assert!(matches!(decide(&silent, &Ends::Zeros, &tagged), HeldData(s) if s.contains(tags::FORMATTED)));
    }

    #[test]
    fn read_ends_sees_data_anywhere_in_the_first_or_last_mib() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(8 << 20).unwrap();
        assert_eq!(read_ends(&path), Ends::Zeros);
        use std::os::unix::fs::FileExt;
        file.write_all_at(&[1], (8 << 20) - 1).unwrap();
        assert_eq!(read_ends(&path), Ends::NonZero { offset: (8 << 20) - 1 });
        file.write_all_at(&[1], 4096).unwrap();
        assert_eq!(read_ends(&path), Ends::NonZero { offset: 4096 });
        file.set_len(0).unwrap();
        assert_eq!(read_ends(&path), Ends::Empty);
        assert!(matches!(read_ends(&dir.path().join("missing")), Ends::Unreadable(s) if s.contains("open")));
    }
}
