//! `nodeboot stage mount` with real loop devices, real ext4 and a real
//! network namespace. Needs root (CI is root); see `require_root`.

mod common;

use std::process::{Command, Output};

use common::bed::*;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(out.status.success(), "{cmd}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A cluster of one member per zone, a node in eu-west-1a that holds
/// member 0, and the loop device behind member 0's volume.
struct Bed {
    aws: Aws,
    env: nodeboot::operator::env::Environment,
    vpc: Vpc,
    members: Vec<MemberResources>,
    volume: LoopVolume,
}

impl Bed {
    fn new(name: &str) -> Bed {
        Bed::with_volume(name, LoopVolume::new(64))
    }

    fn with_volume(name: &str, volume: LoopVolume) -> Bed {
        let aws = Aws::start(0);
        let env = environment(name, 3);
        let vpc = Vpc::create(&aws, &env);
        let members = create_members(&aws, &env, &vpc);
        Bed {
            aws,
            env,
            vpc,
            members,
            volume,
        }
    }

    /// Member 0's tags in EC2.
    fn volume_tags(&self) -> std::collections::BTreeMap<String, String> {
        runtime().block_on(async {
            let out = self
                .aws
                .ec2
                .describe_volumes()
                .volume_ids(&self.members[0].volume_id)
                .send()
                .await
                .unwrap();
            out.volumes()[0]
                .tags()
                .iter()
                .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
                .collect()
        })
    }

    fn tag_volume(&self, key: &str, value: &str) {
        let tag = aws_sdk_ec2::types::Tag::builder().key(key).value(value).build();
        runtime()
            .block_on(
                self.aws
                    .ec2
                    .create_tags()
                    .resources(&self.members[0].volume_id)
                    .tags(tag)
                    .send(),
            )
            .unwrap();
    }

    /// Replaces member 0's volume with one created from a snapshot of it,
    /// tagged the same, as a restore does. Returns the snapshot id.
    fn restore_member_0_from_a_snapshot(&mut self) -> String {
        let old = self.members[0].volume_id.clone();
        let (snapshot, volume) = runtime().block_on(async {
            let ec2 = &self.aws.ec2;
            let snapshot = ec2
                .create_snapshot()
                .volume_id(&old)
                .send()
                .await
                .unwrap()
                .snapshot_id()
                .unwrap()
                .to_string();
            let described = ec2.describe_volumes().volume_ids(&old).send().await.unwrap();
            let tags = aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::Volume)
                .set_tags(Some(described.volumes()[0].tags().to_vec()))
                .build();
            let created = ec2
                .create_volume()
                .availability_zone(&self.members[0].zone)
                .snapshot_id(&snapshot)
                .tag_specifications(tags)
                .send()
                .await
                .unwrap();
            ec2.delete_volume().volume_id(&old).send().await.unwrap();
            (snapshot, created.volume_id().unwrap().to_string())
        });
        self.members[0].volume_id = volume;
        snapshot
    }

    /// Boots a node up to the mount stage: discover, attach, and the kernel's
    /// part (the by-id link of the attached volume).
    fn node_before_mount(&self) -> Node {
        let node = Node::launch(&self.aws, &self.env, &self.vpc, "eu-west-1a");
        for stage in [
            &["discover"][..],
            &["attach", "--wait-timeout", "30s", "--detach-grace", "2s"],
        ] {
            let out = node.stage(&self.aws, stage);
            assert!(out.status.success(), "{stage:?}: {}", stderr(&out));
        }
        plug_volume(&node, &self.members[0].volume_id, &self.volume);
        node
    }

    fn mount(&self, node: &Node, extra_env: &[(&str, &str)]) -> Output {
        node.stage_cmd(
            &self.aws,
            &["mount", "--skip-network", "--wait-timeout", "5s"],
            extra_env,
        )
        .output()
        .unwrap()
    }
}

/// Unmounts a node's mounts when the test ends, pass or fail.
struct Unmount(std::path::PathBuf);

impl Unmount {
    fn new(node: &Node) -> Unmount {
        Unmount(node.root().to_path_buf())
    }
}

impl Drop for Unmount {
    fn drop(&mut self) {
        unmount_all(&self.0);
    }
}

fn is_mounted(node: &Node) -> bool {
    let Ok(target) = std::fs::canonicalize(node.root().join("var/lib/etcd")) else {
        return false;
    };
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(target.to_str().unwrap()))
}

fn blkid(device: &str, tag: &str) -> String {
    let out = Command::new("blkid")
        .args(["-p", "-s", tag, "-o", "value", device])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A filesystem with one file of random bytes, made before any node sees it.
fn ext4_with_file(volume: &LoopVolume) -> Vec<u8> {
    sh(&format!("mkfs.ext4 -q {}", volume.device));
    let dir = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..100_000).map(|_| fastrand::u8(..)).collect();
    sh(&format!("mount {} {}", volume.device, dir.path().display()));
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/keep.bin"), &bytes).unwrap();
    sh(&format!("umount {}", dir.path().display()));
    bytes
}

#[test]
fn mount_formats_a_blank_volume_once_and_reruns_as_a_no_op() {
    if !require_root("mount_formats_a_blank_volume_once_and_reruns_as_a_no_op") {
        return;
    }
    let bed = Bed::new("mnt-blank");
    let node = bed.node_before_mount();
    let _cleanup = Unmount::new(&node);
    let out = bed.mount(&node, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("blank device: creating ext4"));
    assert_eq!(blkid(&bed.volume.device, "TYPE"), "ext4");
    let formatted = bed
        .volume_tags()
        .get("nodeboot.io/formatted")
        .cloned()
        .expect("tagged after mkfs");
    assert!(
        formatted.ends_with('Z') && formatted.len() == "2026-11-30T11:00:00Z".len(),
        "{formatted}"
    );
    assert!(is_mounted(&node));
    let data = node.root().join("var/lib/etcd/data");
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
    let uuid = blkid(&bed.volume.device, "UUID");

    std::fs::write(data.join("written-after-mount"), b"etcd data").unwrap();
    bed.aws.reset_calls();
    let again = bed.mount(&node, &[]);
    assert_eq!(
        bed.aws.calls(),
        Default::default(),
        "a rerun in the same boot calls no API"
    );
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stderr(&again).contains("already mounted"), "{}", stderr(&again));
    assert_eq!(blkid(&bed.volume.device, "UUID"), uuid, "never formatted twice");
    assert_eq!(std::fs::read(data.join("written-after-mount")).unwrap(), b"etcd data");
    assert_eq!(bed.volume_tags()["nodeboot.io/formatted"], formatted, "tagged once");
}

use std::os::unix::fs::PermissionsExt;

#[test]
fn existing_data_survives_mount_reruns_and_a_takeover_by_another_node() {
    if !require_root("existing_data_survives_mount_reruns_and_a_takeover_by_another_node") {
        return;
    }
    let bed = Bed::new("mnt-keep");
    let bytes = ext4_with_file(&bed.volume);
    let uuid = blkid(&bed.volume.device, "UUID");
    let first = bed.node_before_mount();
    {
        let _cleanup = Unmount::new(&first);
        for _ in 0..2 {
            let out = bed.mount(&first, &[]);
            assert!(out.status.success(), "{}", stderr(&out));
            assert_eq!(
                std::fs::read(first.root().join("var/lib/etcd/data/keep.bin")).unwrap(),
                bytes
            );
        }
    } // the first node dies: its mount is gone with it
    first.stop(&bed.aws);
    let second = bed.node_before_mount();
    let _cleanup = Unmount::new(&second);
    assert_eq!(
        second.claim().unwrap()["volume_id"],
        bed.members[0].volume_id,
        "took the volume over"
    );
    let out = bed.mount(&second, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(second.root().join("var/lib/etcd/data/keep.bin")).unwrap(),
        bytes,
        "byte for byte"
    );
    assert_eq!(blkid(&bed.volume.device, "UUID"), uuid);
}

fn assert_refused(prepare: &str, says: &str) {
    let bed = Bed::new("mnt-refuse");
    sh(&prepare.replace("DEV", &bed.volume.device));
    let before = bed.volume.sha256();
    let node = bed.node_before_mount();
    let _cleanup = Unmount::new(&node);
    let out = bed.mount(&node, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(15), "{prepare}: {err}");
    assert!(
        err.contains(&bed.volume.device) && err.contains(says) && err.contains("untouched"),
        "{prepare}: {err}"
    );
    assert_eq!(bed.volume.sha256(), before, "{prepare}: the device was not written");
    assert!(!is_mounted(&node));
}

#[test]
fn an_unknown_signature_is_never_formatted() {
    if require_root("an_unknown_signature_is_never_formatted") {
        assert_refused("mkswap DEV >/dev/null", "a swap signature");
    }
}

#[test]
fn a_partition_table_is_never_formatted() {
    if require_root("a_partition_table_is_never_formatted") {
        assert_refused("echo 'label: gpt' | sfdisk --quiet DEV", "a gpt partition table");
    }
}

/// A FUSE file (tests/bed/faulty_disk.py) that reads as zeros except where
/// reads fail with EIO; a loop device over it fails those reads in the
/// kernel. Unmounted when dropped (after the loop device over it).
struct FaultyDisk {
    dir: tempfile::TempDir,
    writes: std::path::PathBuf,
    _server: Server,
}

impl FaultyDisk {
    const SIZE: u64 = 64 << 20;

    fn new(bad: &[(u64, u64)]) -> FaultyDisk {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        let writes = dir.path().join("writes.log");
        let mut cmd = Command::new("python3");
        cmd.arg(common::repo().join("tests/bed/faulty_disk.py"))
            .arg("--mount")
            .arg(&mount)
            .args(["--size", &Self::SIZE.to_string()]);
        cmd.arg("--writes").arg(&writes);
        for (start, end) in bad {
            cmd.args(["--bad", &format!("{start}:{end}")]);
        }
        let server = start_server(cmd);
        FaultyDisk {
            dir,
            writes,
            _server: server,
        }
    }

    fn file(&self) -> std::path::PathBuf {
        self.dir.path().join("mnt/disk")
    }

    /// Every write that reached the disk: `offset length` lines.
    fn writes(&self) -> String {
        std::fs::read_to_string(&self.writes).unwrap_or_default()
    }
}

impl Drop for FaultyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path().join("mnt"))
            .status();
    }
}

/// What the real blkid (util-linux 2.38.1 here) says. Its exit code 2
/// ("nothing found") is no proof of a blank device: on a device whose every
/// read fails, a zero-size device and a path that does not exist it prints
/// nothing, on stdout or stderr, and exits 2, exactly as on a blank device.
/// Only a device it cannot open gets a word on stderr:
/// `blkid: error: /dev/loop1: Permission denied`, exit 2.
#[test]
fn blkid_exit_2_does_not_tell_blank_from_unreadable() {
    if !require_root("blkid_exit_2_does_not_tell_blank_from_unreadable") {
        return;
    }
    let run = |device: &str, user: Option<&str>| {
        let out = match user {
            Some(u) => Command::new("setpriv")
                .args([
                    "--reuid",
                    u,
                    "--regid",
                    u,
                    "--clear-groups",
                    "blkid",
                    "-p",
                    "-o",
                    "export",
                    device,
                ])
                .output()
                .unwrap(),
            None => Command::new("blkid")
                .args(["-p", "-o", "export", device])
                .output()
                .unwrap(),
        };
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr(&out),
        )
    };
    let silent = (Some(2), String::new(), String::new());
    let blank = LoopVolume::new(64);
    assert_eq!(run(&blank.device, None), silent, "a blank device");
    let disk = FaultyDisk::new(&[(0, FaultyDisk::SIZE)]);
    let unreadable = LoopVolume::over(&disk.file());
    let dd = Command::new("dd")
        .args([
            &format!("if={}", unreadable.device),
            "of=/dev/null",
            "bs=4096",
            "count=1",
        ])
        .output()
        .unwrap();
    assert!(
        stderr(&dd).contains("Input/output error"),
        "the device's reads fail: {}",
        stderr(&dd)
    );
    assert_eq!(
        run(&unreadable.device, None),
        silent,
        "an unreadable device looks blank to blkid"
    );
    let empty = tempfile::NamedTempFile::new().unwrap();
    let zero = LoopVolume::over(empty.path());
    assert_eq!(run(&zero.device, None), silent, "a zero-size device too");
    assert_eq!(run("/dev/nodeboot-no-such-device", None), silent, "and a missing path");
    let (code, stdout, err) = run(&blank.device, Some("65534"));
    assert_eq!((code, stdout.as_str()), (Some(2), ""), "{err}");
    assert!(
        err.contains(&format!("blkid: error: {}: Permission denied", blank.device)),
        "{err}"
    );
}

/// The mount stage on a device it must leave alone: exit 15, naming what
/// it found, nothing written, nothing mounted.
fn assert_left_alone(bed: &Bed, says: &str) {
    let node = bed.node_before_mount();
    let _cleanup = Unmount::new(&node);
    let out = bed.mount(&node, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(15), "{err}");
    assert!(
        err.contains(&bed.volume.device) && err.contains(says) && err.contains("untouched"),
        "should say {says:?}: {err}"
    );
    assert!(!is_mounted(&node));
    assert!(!bed.volume_tags().contains_key("nodeboot.io/formatted"));
}

#[test]
fn an_unreadable_device_is_never_formatted() {
    if !require_root("an_unreadable_device_is_never_formatted") {
        return;
    }
    let disk = FaultyDisk::new(&[(0, FaultyDisk::SIZE)]);
    let bed = Bed::with_volume("mnt-eio", LoopVolume::over(&disk.file()));
    assert_left_alone(&bed, "Input/output error");
    assert_eq!(disk.writes(), "", "nothing was written");
}

/// blkid reads the last MiB too, but stays silent when it fails there.
#[test]
fn a_device_whose_last_mib_fails_is_never_formatted() {
    if !require_root("a_device_whose_last_mib_fails_is_never_formatted") {
        return;
    }
    let disk = FaultyDisk::new(&[(FaultyDisk::SIZE - (1 << 20), FaultyDisk::SIZE)]);
    let bed = Bed::with_volume("mnt-eio-end", LoopVolume::over(&disk.file()));
    assert_left_alone(&bed, "Input/output error");
    assert_eq!(disk.writes(), "", "nothing was written");
}

#[test]
fn a_zero_size_device_is_never_formatted() {
    if !require_root("a_zero_size_device_is_never_formatted") {
        return;
    }
    let empty = tempfile::NamedTempFile::new().unwrap();
    let bed = Bed::with_volume("mnt-zero", LoopVolume::over(empty.path()));
    assert_left_alone(&bed, "zero-size");
    assert_eq!(std::fs::metadata(empty.path()).unwrap().len(), 0);
}

/// A volume that held a filesystem and now reads blank: exit 18, a human
/// must look; the device is not written, nothing is mounted.
fn assert_held_data(bed: &Bed, says: &str) {
    let before = bed.volume.sha256();
    let node = bed.node_before_mount();
    let _cleanup = Unmount::new(&node);
    let out = bed.mount(&node, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(18), "{err}");
    assert!(
        err.contains(says) && err.contains("A human must look") && err.contains(&bed.members[0].volume_id),
        "{err}"
    );
    assert_eq!(bed.volume.sha256(), before, "the device was not written");
    assert!(!is_mounted(&node));
}

#[test]
fn a_blank_volume_tagged_formatted_is_refused_with_exit_18() {
    if !require_root("a_blank_volume_tagged_formatted_is_refused_with_exit_18") {
        return;
    }
    let bed = Bed::new("mnt-tagged");
    bed.tag_volume("nodeboot.io/formatted", "2026-11-30T10:00:00Z");
    assert_held_data(&bed, "nodeboot formatted it at 2026-11-30T10:00:00Z");
}

#[test]
fn a_blank_volume_created_from_a_snapshot_is_refused_with_exit_18() {
    if !require_root("a_blank_volume_created_from_a_snapshot_is_refused_with_exit_18") {
        return;
    }
    let mut bed = Bed::new("mnt-snap");
    let snapshot = bed.restore_member_0_from_a_snapshot();
    assert_held_data(&bed, &format!("created from snapshot {snapshot}"));
}

/// An ext4 volume from before the tag (or a crash between mkfs and the
/// tag): the mount stage tags it, so it can never be formatted again.
#[test]
fn an_ext4_volume_without_the_tag_gets_it() {
    if !require_root("an_ext4_volume_without_the_tag_gets_it") {
        return;
    }
    let bed = Bed::new("mnt-tagext4");
    let bytes = ext4_with_file(&bed.volume);
    let node = bed.node_before_mount();
    let _cleanup = Unmount::new(&node);
    let out = bed.mount(&node, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(bed.volume_tags().contains_key("nodeboot.io/formatted"));
    assert_eq!(
        std::fs::read(node.root().join("var/lib/etcd/data/keep.bin")).unwrap(),
        bytes
    );
}

#[test]
fn a_device_that_never_appears_times_out_with_exit_11() {
    if !require_root("a_device_that_never_appears_times_out_with_exit_11") {
        return;
    }
    let bed = Bed::new("mnt-nodev");
    let node = bed.node_before_mount();
    std::fs::remove_dir_all(node.root().join("dev")).unwrap();
    let out = node.stage(&bed.aws, &["mount", "--skip-network", "--wait-timeout", "1s"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(11), "{err}");
    assert!(
        err.contains(&format!(
            "the device of volume {} did not appear",
            bed.members[0].volume_id
        )),
        "{err}"
    );
    assert!(
        err.contains("nvme-Amazon_Elastic_Block_Store_"),
        "names where it looked: {err}"
    );
}

/// Kill the stage at each step and rerun: it converges, never formats a
/// second time, and keeps what was written before the abort.
#[test]
fn mount_converges_after_an_abort_at_every_step() {
    if !require_root("mount_converges_after_an_abort_at_every_step") {
        return;
    }
    for point in ["mount:before-mkfs", "mount:after-mkfs", "mount:after-mount"] {
        let bed = Bed::new("mnt-abort");
        let node = bed.node_before_mount();
        let _cleanup = Unmount::new(&node);
        let out = bed.mount(&node, &[(nodeboot::shared::fault::VAR, point)]);
        assert!(
            stderr(&out).contains(&format!("aborting at {point}")),
            "{point}: {}",
            stderr(&out)
        );
        let uuid_after_abort = blkid(&bed.volume.device, "UUID");
        if point == "mount:after-mount" {
            std::fs::create_dir_all(node.root().join("var/lib/etcd/data")).unwrap();
            std::fs::write(node.root().join("var/lib/etcd/data/before-rerun"), b"keep me").unwrap();
        }
        let again = bed.mount(&node, &[]);
        assert!(again.status.success(), "{point}: rerun: {}", stderr(&again));
        assert!(is_mounted(&node), "{point}");
        assert_eq!(blkid(&bed.volume.device, "TYPE"), "ext4", "{point}");
        if !uuid_after_abort.is_empty() {
            assert_eq!(
                blkid(&bed.volume.device, "UUID"),
                uuid_after_abort,
                "{point}: not formatted again"
            );
        }
        if point == "mount:after-mount" {
            assert_eq!(
                std::fs::read(node.root().join("var/lib/etcd/data/before-rerun")).unwrap(),
                b"keep me"
            );
        }
    }
}

/// A network namespace as the node, with its IMDS double on the real
/// 169.254.169.254, removed when the test ends.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("nb-{tag}-{}", std::process::id());
        sh(&format!(
            "ip netns add {name} && ip -n {name} link set lo up && ip -n {name} addr add 169.254.169.254/32 dev lo"
        ));
        Netns { name }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

#[test]
fn eni_address_comes_up_with_source_routing_in_the_node_namespace() {
    if !require_root("eni_address_comes_up_with_source_routing_in_the_node_namespace") {
        return;
    }
    let bed = Bed::new("mnt-net");
    let mut node = bed.node_before_mount();
    let _cleanup = Unmount::new(&node);
    let member = &bed.members[0];
    let ns = Netns::new("net");
    // EC2 hot-plugs the ENI: an interface with its MAC appears in the node,
    // and the metadata lists it.
    let host_end = format!("nbh{}", std::process::id());
    let primary_end = format!("nbp{}", std::process::id());
    // The node's primary interface (its address from RunInstances), with a
    // default route via its subnet's router.
    let identity: serde_json::Value = serde_json::from_slice(&std::fs::read(&node.identity_path).unwrap()).unwrap();
    let primary = identity["private_ip"].as_str().unwrap().to_string();
    sh(&format!(
        "ip link add {primary_end} type veth peer name eth0 netns {ns} && ip -n {ns} addr add {primary}/24 dev eth0 \
         && ip -n {ns} link set eth0 up && ip -n {ns} route add default via 10.80.10.1 dev eth0",
        ns = ns.name
    ));
    sh(&format!(
        "ip link add {host_end} type veth peer name eth1 netns {ns} && ip -n {ns} link set eth1 address {mac}",
        ns = ns.name,
        mac = member.eni_mac
    ));
    node.plug_interface(member, &bed.env.subnets.secure[0]);
    node.imds = Some(node.start_imds("169.254.169.254:80", Some(&ns.name)));
    let run = |node: &Node| {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", ns.name))
            .arg(env!("CARGO_BIN_EXE_nodeboot"))
            .args(["stage", "--root"])
            .arg(node.root());
        cmd.args(["mount", "--wait-timeout", "10s"])
            .envs(bed.aws.env())
            .env_remove("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .output()
            .unwrap()
    };
    // The filesystem half first, where the emulator is reachable; the runs
    // in the node's namespace then find it done (recorded) and call no API.
    let out = bed.mount(&node, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    for _ in 0..2 {
        let out = run(&node);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let addrs = sh(&format!("ip -n {} -o -4 addr show dev eth1", ns.name));
    assert!(addrs.contains(&format!("inet {}/24", member.eni_ip)), "{addrs}");
    let rules = sh(&format!("ip -n {} rule show", ns.name));
    for rule in [
        format!("from {primary} lookup main"),
        format!("from {} lookup 1001", member.eni_ip),
        "from all to 10.80.0.0/16 lookup 1001".to_string(),
    ] {
        assert_eq!(
            rules.matches(&rule).count(),
            1,
            "one `{rule}`, even after a rerun:\n{rules}"
        );
    }
    let routes = sh(&format!("ip -n {} route show table 1001", ns.name));
    assert!(
        routes.contains(&format!("default via 10.80.10.1 dev eth1 src {}", member.eni_ip)),
        "{routes}"
    );
    assert!(
        routes.contains(&format!("10.80.10.0/24 dev eth1 scope link src {}", member.eni_ip)),
        "{routes}"
    );
    // The primary interface's own routes are left as they were.
    let main = sh(&format!("ip -n {} -4 route show table main", ns.name));
    assert!(
        main.contains("default via 10.80.10.1 dev eth0") && !main.contains(&member.eni_ip),
        "{main}"
    );
    // Connections to peers (etcd dials them unbound) leave from the ENI's
    // address through the ENI: in another zone, and in the same subnet.
    for peer in ["10.80.12.10", "10.80.10.11"] {
        let picked = sh(&format!("ip -n {} -4 -o route get {peer}", ns.name));
        assert!(
            picked.contains(&format!("src {}", member.eni_ip)) && picked.contains("dev eth1"),
            "{picked}"
        );
        // What the primary address sends keeps to the primary interface.
        let primary_route = sh(&format!("ip -n {} -4 -o route get {peer} from {primary}", ns.name));
        assert!(primary_route.contains("dev eth0"), "{primary_route}");
    }
    drop(node.imds.take());
}
