//! etcd backups against the emulator and a real etcd 3.5 (a single local
//! member over plain HTTP on loopback, read through nodeboot's own client:
//! no root needed): sealing, listing, opening, tampering, `nodeboot etcd
//! backups|verify-backup` as an operator runs them, and a member's restore
//! on request. (`etcd restore`'s refusals and the version rule are in
//! `tests/etcd_backup.rs`.)

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::bed::runtime;
use common::etcd::{etcd_bin_dir as etcd_bin, free_port};
use common::secrets_bed::*;
use common::stderr;
use nodeboot::shared::backup::etcd::EtcdAccess;
use nodeboot::shared::backup::restore::{self, Acted, Commands, MemberIdentity, Phase, Report, Restorer};
use nodeboot::shared::backup::service::NodeBackup;
use nodeboot::shared::backup::store::{BackupError, Backups, Entry};
use nodeboot::shared::cloud::aws::{Kms, S3};
use nodeboot::shared::etcd::Client;

/// One etcd member on 127.0.0.1, killed when dropped.
struct LocalEtcd {
    child: Child,
    _dir: tempfile::TempDir,
    url: String,
}

impl LocalEtcd {
    fn start() -> LocalEtcd {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = Command::new(etcd_bin().join("etcd"))
            .args(["--name", "source", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("source={peer_url}")])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let etcd = LocalEtcd { child, _dir: dir, url };
        let deadline = Instant::now() + Duration::from_secs(30);
        while etcd.ctl().status(&etcd.url).is_err() {
            assert!(Instant::now() < deadline, "the local etcd did not answer within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        etcd
    }

    fn ctl(&self) -> Client {
        Client::plain_local(vec![self.url.clone()])
    }

    fn put_keys(&self, prefix: &str, n: usize) {
        put_keys(&self.ctl(), prefix, n);
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn put_keys(client: &Client, prefix: &str, n: usize) {
    for i in 0..n {
        EtcdAccess::put(client, &format!("{prefix}{i:04}"), &format!("value {i}")).unwrap();
    }
}

fn backup_of(p: &Platform, etcd: &LocalEtcd) -> Entry {
    backup_through(p, &etcd.url)
}

/// A backup as the node's service takes it, of the member at `url`.
fn backup_through(p: &Platform, url: &str) -> Entry {
    let sdk = sdk_config(&p.aws.server.url);
    let (s3, kms) = (S3::new(&sdk), Kms::new(&sdk));
    let work = tempfile::tempdir().unwrap();
    let ctl = Client::plain_local(vec![url.to_string()]);
    let node = NodeBackup {
        backups: Backups::new(&s3, &kms, p.bucket(), &p.env.name, &p.env.kms_master_id),
        etcd: &ctl,
        endpoint: url.to_string(),
        work: work.path().to_path_buf(),
        member_name: "source".into(),
        members: 1,
    };
    let entry = runtime().block_on(node.backup_now(Some(url))).unwrap();
    assert_eq!(
        std::fs::read_dir(work.path()).unwrap().count(),
        0,
        "temporary files are removed"
    );
    entry
}

fn download(p: &Platform, entry: &Entry, out: &Path) -> Result<nodeboot::shared::backup::Metadata, BackupError> {
    let sdk = sdk_config(&p.aws.server.url);
    let (s3, kms) = (S3::new(&sdk), Kms::new(&sdk));
    runtime().block_on(Backups::new(&s3, &kms, p.bucket(), &p.env.name, &p.env.kms_master_id).download(&entry.id, out))
}

#[test]
fn a_backup_is_sealed_with_its_metadata_and_opens_to_etcds_snapshot() {
    let p = Platform::new("bk-roundtrip");
    let etcd = LocalEtcd::start();
    etcd.put_keys("/k/", 25);
    let entry = backup_of(&p, &etcd);
    assert!(
        entry.key.starts_with("backups/etcd/") && entry.key.ends_with(".snapshot"),
        "{}",
        entry.key
    );
    let (stored, metadata) = p.get_raw(&entry.key);
    assert_eq!(&stored[..9], b"NBSECRET\x03", "envelope format 3");
    assert_eq!(metadata.get("nodeboot-format").map(String::as_str), Some("3"));
    assert_eq!(metadata.get("nodeboot-keys").map(String::as_str), Some("25"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap.db");
    let meta = download(&p, &entry, &out).unwrap();
    assert_eq!((meta.keys, meta.members, meta.revision), (25, 1, entry.id.revision));
    assert!(meta.etcd_version.starts_with("3.5."), "{}", meta.etcd_version);
    // etcd's own tool accepts the opened snapshot (it checks etcd's hash).
    let status = Command::new(etcd_bin().join("etcdutl"))
        .args(["snapshot", "status", "-w", "json"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(status.status.success(), "etcdutl snapshot status: {}", stderr(&status));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(status["revision"].as_i64().unwrap() >= entry.id.revision, "{status}");
}

#[test]
fn a_tampered_backup_fails_to_open_naming_the_object_and_writes_nothing() {
    let p = Platform::new("bk-tamper");
    let etcd = LocalEtcd::start();
    etcd.put_keys("/k/", 5);
    let entry = backup_of(&p, &etcd);
    let (stored, metadata) = p.get_raw(&entry.key);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap.db");
    // A byte in the header's metadata, in the first chunk, in the last tag; and the object cut short.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("metadata byte", {
            let mut b = stored.clone();
            let i = stored.windows(8).position(|w| w == b"revision").unwrap();
            b[i] ^= 1;
            b
        }),
        ("chunk byte", {
            let mut b = stored.clone();
            let i = stored.len() / 2;
            b[i] ^= 0x80;
            b
        }),
        ("last tag byte", {
            let mut b = stored.clone();
            let i = stored.len() - 1;
            b[i] ^= 1;
            b
        }),
        ("cut short", stored[..stored.len() - 17].to_vec()),
    ];
    for (what, body) in cases {
        p.put_raw(&entry.key, &body, &metadata);
        let err = download(&p, &entry, &out).unwrap_err();
        assert!(matches!(err, BackupError::Refused { .. }), "{what}: {err}");
        assert!(
            err.to_string().contains(&entry.key),
            "{what}: the message names the object: {err}"
        );
        assert!(!out.exists(), "{what}: nothing is written");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{what}: no temporary file is left"
        );
    }
    // Moved to another key, it does not open either (the key is in the KMS context and the associated data).
    p.put_raw(&entry.key, &stored, &metadata);
    let other = nodeboot::shared::backup::BackupId {
        unix: entry.id.unix + 1,
        revision: entry.id.revision,
    };
    p.put_raw(&other.key(), &stored, &metadata);
    let moved = Entry {
        id: other.clone(),
        key: other.key(),
        size: entry.size,
    };
    let err = download(&p, &moved, &out).unwrap_err();
    assert!(err.to_string().contains(&other.key()), "{err}");
    download(&p, &entry, &out).expect("the original still opens");
}

#[test]
fn backups_lists_oldest_first_and_verify_backup_passes_then_fails_naming_a_corrupted_one() {
    let p = Platform::new("bk-verify");
    let etcd = LocalEtcd::start();
    etcd.put_keys("/a/", 10);
    let first = backup_of(&p, &etcd);
    std::thread::sleep(Duration::from_millis(1100)); // ids have one-second resolution
    etcd.put_keys("/b/", 10);
    let second = backup_of(&p, &etcd);
    let out = p.nodeboot(&["etcd", "backups", "--output", "json", "--env"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first.id.name(), second.id.name()]);

    let bin = etcd_bin();
    let tools = [
        format!("--etcd={}", bin.join("etcd").display()),
        format!("--etcdutl={}", bin.join("etcdutl").display()),
    ];
    let verify = |extra: &[&str]| {
        let mut more: Vec<&str> = tools.iter().map(String::as_str).collect();
        more.extend_from_slice(extra);
        p.nodeboot(&["etcd", "verify-backup", "--env"], &more)
    };
    let good = verify(&[]);
    let text = String::from_utf8_lossy(&good.stdout).to_string();
    assert!(good.status.success(), "{}", stderr(&good));
    assert!(
        text.contains(&format!("backup {} verified: 20 keys", second.id)),
        "{text}"
    );
    assert!(text.contains("restore into a scratch etcd"), "{text}");
    let older = verify(&["--backup", &first.id.name()]);
    assert!(older.status.success(), "{}", stderr(&older));
    assert!(String::from_utf8_lossy(&older.stdout).contains("10 keys"));

    let (stored, metadata) = p.get_raw(&second.key);
    let mut bad = stored.clone();
    let i = bad.len() - 100;
    bad[i] ^= 0x01;
    p.put_raw(&second.key, &bad, &metadata);
    let corrupted = verify(&[]);
    assert_eq!(corrupted.status.code(), Some(20), "{}", stderr(&corrupted));
    assert!(
        stderr(&corrupted).contains(&second.key),
        "names the object: {}",
        stderr(&corrupted)
    );
}

/// An etcd that outlives its starter, started and stopped by scripts on
/// "the volume", as the backup service drives `etcd-member.service`
/// (`systemctl start/stop` on a node). Stopped when dropped.
struct ScriptedEtcd {
    volume: tempfile::TempDir,
    url: String,
    peer_url: String,
}

impl ScriptedEtcd {
    fn start() -> ScriptedEtcd {
        let volume = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let (url, peer_url) = (format!("http://127.0.0.1:{client}"), format!("http://127.0.0.1:{peer}"));
        let v = volume.path().display().to_string();
        let etcd = etcd_bin().join("etcd").display().to_string();
        std::fs::write(
            volume.path().join("start.sh"),
            format!(
                "setsid {etcd} --name source --data-dir {v}/data --listen-client-urls {url} --advertise-client-urls {url} \
                 --listen-peer-urls {peer_url} --initial-advertise-peer-urls {peer_url} --initial-cluster source={peer_url} \
                 >>{v}/etcd.log 2>&1 </dev/null &\necho $! > {v}/etcd.pid\n"
            ),
        )
        .unwrap();
        std::fs::write(
            volume.path().join("stop.sh"),
            format!("pid=$(cat {v}/etcd.pid 2>/dev/null) || exit 0\nkill $pid 2>/dev/null\nwhile kill -0 $pid 2>/dev/null; do sleep 0.1; done\nrm -f {v}/etcd.pid\n"),
        )
        .unwrap();
        let etcd = ScriptedEtcd { volume, url, peer_url };
        assert!(Command::new("sh")
            .args(etcd.script("start.sh"))
            .status()
            .unwrap()
            .success());
        etcd.wait_answers();
        etcd
    }

    fn script(&self, name: &str) -> Vec<String> {
        vec![self.volume.path().join(name).display().to_string()]
    }

    fn client(&self) -> Client {
        Client::plain_local(vec![self.url.clone()])
    }

    fn wait_answers(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.client().status(&self.url).is_err() {
            assert!(
                Instant::now() < deadline,
                "the scripted etcd did not answer within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ScriptedEtcd {
    fn drop(&mut self) {
        let _ = Command::new("sh").args(self.script("stop.sh")).status();
    }
}

#[test]
fn a_member_restores_on_request_keeping_its_old_data_and_reports_done_once() {
    let p = Platform::new("bk-restore");
    let etcd = ScriptedEtcd::start();
    put_keys(&etcd.client(), "/before/", 10);
    let entry = backup_through(&p, &etcd.url);
    put_keys(&etcd.client(), "/after/", 5);
    assert_eq!(etcd.client().key_count(None).unwrap().0, 15);

    let sdk = sdk_config(&p.aws.server.url);
    let (s3, kms) = (S3::new(&sdk), Kms::new(&sdk));
    let backups = Backups::new(&s3, &kms, p.bucket(), &p.env.name, &p.env.kms_master_id);
    let store = nodeboot::shared::secrets::Store::new(&s3, &kms, p.bucket(), &p.env.name, &p.env.kms_master_id);
    let client = etcd.client();
    let volume = etcd.volume.path().to_path_buf();
    let restorer = Restorer {
        backups: &backups,
        store: &store,
        etcd: &client,
        member: 0,
        identity: MemberIdentity {
            name: "source".into(),
            peer_url: etcd.peer_url.clone(),
            initial_cluster: format!("source={}", etcd.peer_url),
            token: "bk-restore-etcd".into(),
            data_dir: volume.join("data"),
        },
        volume: volume.clone(),
        endpoint: etcd.url.clone(),
        commands: Commands {
            stop_etcd: etcd
                .script("stop.sh")
                .into_iter()
                .fold(vec!["sh".to_string()], |mut v, s| {
                    v.push(s);
                    v
                }),
            rerun_stage: vec!["true".into()],
            start_etcd: etcd
                .script("start.sh")
                .into_iter()
                .fold(vec!["sh".to_string()], |mut v, s| {
                    v.push(s);
                    v
                }),
            etcdutl: vec![etcd_bin().join("etcdutl").display().to_string()],
        },
        static_pods: None,
        etcd_env: None,
        wait: Duration::from_secs(60),
    };
    let request = restore::new_request(&entry.id, nodeboot::shared::backup::service::now_unix(), 0);
    let acted = runtime().block_on(restorer.act(&request)).unwrap();
    assert_eq!(acted, Acted::Done, "the restore ran");

    // The cluster holds exactly what the backup held: the keys written after it are gone.
    let (keys, revision) = etcd.client().key_count(None).unwrap();
    assert_eq!(keys, 10, "every key of the backup, none written after it");
    // Past every revision a watcher saw before (etcdutl --bump-revision): no revision goes back.
    assert!(
        revision >= entry.id.revision + restore::REVISION_BUMP,
        "revision {revision}, backup {}",
        entry.id.revision
    );
    // The old data directory is kept on the volume, whole.
    let aside = volume.join(format!("member.pre-restore-{}", request.id));
    assert!(
        aside.join("snap/db").is_file(),
        "{} holds the old database",
        aside.display()
    );
    assert!(volume.join("data/member/snap/db").is_file());
    let report: Report = runtime()
        .block_on(restore::read_json(&store, &restore::report_path(&request.id, 0)))
        .unwrap()
        .expect("a report");
    assert_eq!(report.phase, Phase::Done, "{report:?}");
    // Done is done: a second pass does not stop etcd or restore again.
    let again = runtime().block_on(restorer.act(&request)).unwrap();
    assert_eq!(
        again,
        Acted::AlreadyDone,
        "a member that reported done does not restore again"
    );
    assert_eq!(etcd.client().key_count(None).unwrap().0, 10);
    let asides = std::fs::read_dir(&volume)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("member.pre-restore-")
        })
        .count();
    assert_eq!(asides, 1);
}

#[test]
fn the_etcd_stages_hook_backs_up_through_a_quorum_and_changes_nothing_without_one() {
    use common::etcd::{member_tls, pki, start_cluster};
    use nodeboot::node::stage::etcd::BackupHook;
    let p = Platform::new("bk-hook");
    let dir = tempfile::tempdir().unwrap();
    let etcd_dir = pki(dir.path());
    let mut members = start_cluster(dir.path(), &etcd_dir, 3);
    // The blank member 0's view: the other members' client URLs, its own certificate.
    let others = Client::new(
        vec![members[1].client_url.clone(), members[2].client_url.clone()],
        &member_tls(&etcd_dir, 0),
    )
    .unwrap();
    common::etcd::wait_until("a leader", Duration::from_secs(30), || others.key_count(None).is_ok());
    put_keys(&others, "/k/", 7);

    let sdk = sdk_config(&p.aws.server.url);
    let (s3, kms) = (S3::new(&sdk), Kms::new(&sdk));
    let work = tempfile::tempdir().unwrap();
    let hook = nodeboot::node::stage::etcd::backups::StageBackups {
        backups: Backups::new(&s3, &kms, p.bucket(), &p.env.name, &p.env.kms_master_id),
        work: work.path().to_path_buf(),
        member_name: "m0".into(),
        members: 3,
    };
    let backups = Backups::new(&s3, &kms, p.bucket(), &p.env.name, &p.env.kms_master_id);
    assert!(
        !runtime().block_on(hook.existed()).unwrap().any(),
        "no backup and no marker yet: no evidence"
    );
    runtime()
        .block_on(hook.before_membership_change(&others, "adding m0"))
        .unwrap();
    let listed = runtime().block_on(backups.list()).unwrap();
    assert_eq!(listed.len(), 1, "one backup before the change");
    let head = runtime()
        .block_on(backups.head_metadata(&listed[0].id))
        .unwrap()
        .unwrap();
    assert_eq!(head.metadata.get("nodeboot-keys").map(String::as_str), Some("7"));
    assert_eq!(head.metadata.get("nodeboot-members").map(String::as_str), Some("3"));
    let existed = runtime().block_on(hook.existed()).unwrap();
    assert!(existed.backup.is_some(), "a backup is evidence: {existed:?}");

    // Two of three gone: the one left has no quorum, the hook fails and writes nothing.
    members[2].kill();
    members[0].kill();
    let alone = Client::new(vec![members[1].client_url.clone()], &member_tls(&etcd_dir, 0)).unwrap();
    let err = runtime()
        .block_on(hook.before_membership_change(&alone, "replacing m0"))
        .unwrap_err();
    assert!(!err.is_empty());
    assert_eq!(
        runtime().block_on(backups.list()).unwrap().len(),
        1,
        "no backup without quorum"
    );
    assert_eq!(
        std::fs::read_dir(work.path()).unwrap().count(),
        0,
        "no temporary file left"
    );
}

#[test]
fn etcd_status_reports_members_leader_and_the_newest_backup_and_fails_when_one_is_down() {
    use common::etcd::{member_tls, pki, start_cluster};
    let p = Platform::new("bk-status");
    let dir = tempfile::tempdir().unwrap();
    let etcd_dir = pki(dir.path());
    let mut members = start_cluster(dir.path(), &etcd_dir, 3);
    let urls: Vec<String> = members.iter().map(|m| m.client_url.clone()).collect();
    let client = Client::new(urls.clone(), &member_tls(&etcd_dir, 0)).unwrap();
    common::etcd::wait_until("a leader", Duration::from_secs(30), || client.key_count(None).is_ok());
    put_keys(&client, "/s/", 3);
    // A backup, through the cluster (as the etcd stage's hook takes one).
    let sdk = sdk_config(&p.aws.server.url);
    let (s3, kms) = (S3::new(&sdk), Kms::new(&sdk));
    let work = tempfile::tempdir().unwrap();
    let node = NodeBackup {
        backups: Backups::new(&s3, &kms, p.bucket(), &p.env.name, &p.env.kms_master_id),
        etcd: &client,
        endpoint: String::new(),
        work: work.path().to_path_buf(),
        member_name: "m0".into(),
        members: 3,
    };
    let backup = runtime().block_on(node.backup_now(None)).unwrap();

    let secrets = dir.path().join("secrets");
    let mut args: Vec<String> = urls.iter().map(|u| format!("--endpoint={u}")).collect();
    args.extend([format!("--dir={}", secrets.display()), "--output=json".into()]);
    let more: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = p.nodeboot(&["etcd", "status", "--env"], &more);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["healthy"], true, "{report}");
    let names: Vec<&str> = report["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["m0", "m1", "m2"], "{report}");
    assert!(names.contains(&report["leader"].as_str().unwrap()), "{report}");
    assert!(report["members"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["revision"].as_i64().unwrap() >= backup.id.revision
            && m["version"].as_str().unwrap().starts_with("3.5.")));
    assert_eq!(report["newest_backup"]["id"], backup.id.name(), "{report}");

    members[2].kill();
    let out = p.nodeboot(&["etcd", "status", "--env"], &more);
    assert_eq!(out.status.code(), Some(30), "{}", stderr(&out));
    assert!(stderr(&out).contains("not healthy"), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let down = &report["members"][2];
    assert_eq!(
        (down["healthy"].as_bool(), down["endpoint"].as_str()),
        (Some(false), Some(urls[2].as_str())),
        "{report}"
    );
    assert!(down["error"].as_str().is_some_and(|e| !e.is_empty()), "{report}");
}

#[test]
fn a_member_that_is_not_the_seed_waits_for_it_then_keeps_its_data_aside_and_reruns_the_stage() {
    let p = Platform::new("bk-joiner");
    let etcd = ScriptedEtcd::start();
    put_keys(&etcd.client(), "/before/", 4);
    let entry = backup_through(&p, &etcd.url);
    let sdk = sdk_config(&p.aws.server.url);
    let (s3, kms) = (S3::new(&sdk), Kms::new(&sdk));
    let backups = Backups::new(&s3, &kms, p.bucket(), &p.env.name, &p.env.kms_master_id);
    let store = nodeboot::shared::secrets::Store::new(&s3, &kms, p.bucket(), &p.env.name, &p.env.kms_master_id);
    let client = etcd.client();
    let volume = etcd.volume.path().to_path_buf();
    let sh = |name: &str| vec!["sh".to_string(), etcd.volume.path().join(name).display().to_string()];
    let rerun = volume.join("stage-rerun");
    // Member 1; member 0 (another node) is the seed and has not restored yet.
    let restorer = Restorer {
        backups: &backups,
        store: &store,
        etcd: &client,
        member: 1,
        identity: MemberIdentity {
            name: "source".into(),
            peer_url: etcd.peer_url.clone(),
            initial_cluster: format!("source={}", etcd.peer_url),
            token: "bk-joiner-etcd".into(),
            data_dir: volume.join("data"),
        },
        volume: volume.clone(),
        endpoint: etcd.url.clone(),
        commands: Commands {
            stop_etcd: sh("stop.sh"),
            rerun_stage: vec!["touch".into(), rerun.display().to_string()],
            start_etcd: sh("start.sh"),
            etcdutl: vec![etcd_bin().join("etcdutl").display().to_string()],
        },
        static_pods: None,
        etcd_env: None,
        wait: Duration::from_secs(30),
    };
    let request = restore::new_request(&entry.id, nodeboot::shared::backup::service::now_unix(), 0);
    let acted = runtime().block_on(restorer.act(&request)).unwrap();
    assert_eq!(acted, Acted::WaitingForSeed);
    assert!(!volume.join("etcd.pid").exists(), "etcd stopped, not started again");
    assert!(
        volume.join("data/member").is_dir(),
        "its data untouched while the seed restores"
    );
    assert!(!rerun.exists(), "the etcd stage not run again yet");
    let mine: Report = runtime()
        .block_on(restore::read_json(&store, &restore::report_path(&request.id, 1)))
        .unwrap()
        .expect("a report");
    assert_eq!(mine.phase, Phase::Waiting, "{mine:?}");
    assert_eq!(
        runtime().block_on(restorer.act(&request)).unwrap(),
        Acted::WaitingForSeed,
        "the next pass looks again"
    );

    // The seed restored: this member's data goes aside, the stage runs again
    // (here etcd then starts on the blank directory), and it reports done.
    let seed = Report {
        request: request.id.clone(),
        member: 0,
        phase: Phase::Done,
        revision: 1,
        detail: "test".into(),
        unix: 0,
    };
    runtime()
        .block_on(restore::write_json(
            &store,
            &restore::report_path(&request.id, 0),
            &seed,
        ))
        .unwrap();
    assert_eq!(runtime().block_on(restorer.act(&request)).unwrap(), Acted::Done);
    assert!(rerun.exists(), "the etcd stage ran again");
    let aside = volume.join(format!("member.pre-restore-{}", request.id));
    assert!(
        aside.join("snap/db").is_file(),
        "{} holds the old data",
        aside.display()
    );
    assert_eq!(etcd.client().key_count(None).unwrap().0, 0, "not the old data");
}

/// A backup service killed while it held the lock `backup` (a `systemctl
/// restart` mid-backup, a crash) left the lock on a lease of ten minutes.
/// Before this, every other member waited for that lease whenever the
/// restarted service could not take the lock back itself (it reaches no
/// S3, so it never gets as far as the lock): no backup for ten minutes
/// (CI, tests/lab/test_backup_schedule.py). The service gives back, when
/// it starts, a lock that names its own member; another's lock stays.
#[test]
fn a_restarted_backup_service_gives_back_the_lock_its_killed_run_held() {
    use nodeboot::shared::backup::service::LOCK;
    use nodeboot::shared::etcd::lock;
    let p = Platform::new("bk-orphan");
    let etcd = LocalEtcd::start();
    etcd.put_keys("/k/", 3);
    let ctl = etcd.ctl();
    let sdk = sdk_config(&p.aws.server.url);
    let (s3, kms) = (S3::new(&sdk), Kms::new(&sdk));
    // Nothing listens on port 9: the restarted service reaches no S3.
    let cut_off = sdk_config("http://127.0.0.1:9");
    let (s3_cut, kms_cut) = (S3::new(&cut_off), Kms::new(&cut_off));
    let work = tempfile::tempdir().unwrap();
    let node = |name: &str, s3: &'static S3, kms: &'static Kms| NodeBackup {
        backups: Backups::new(s3, kms, p.bucket(), &p.env.name, &p.env.kms_master_id),
        etcd: &ctl,
        endpoint: etcd.url.clone(),
        work: work.path().to_path_buf(),
        member_name: name.to_string(),
        members: 3,
    };
    let (s3, kms, s3_cut, kms_cut) = (leak(s3), leak(kms), leak(s3_cut), leak(kms_cut));
    let interval = Duration::from_secs(1);
    let retention = nodeboot::shared::backup::retention::Retention {
        hourly_for: Duration::from_secs(3600),
        daily_for: Duration::from_secs(86400),
    };

    // A killed run of member m1's service: the lock is held on a long lease.
    let orphan = lock::try_acquire(&ctl, LOCK, "m1", 600)
        .unwrap()
        .expect("nobody held it");
    drop(orphan);
    let other = node("m2", s3, kms);
    assert_eq!(
        runtime().block_on(other.pass(interval, retention, None)).unwrap(),
        None,
        "the lock is held: no backup"
    );
    // Someone else's lock is not ours to give back.
    runtime().block_on(node("m3", s3_cut, kms_cut).started());
    assert_eq!(lock::holder(&ctl, LOCK).unwrap().as_deref(), Some("m1"));
    // m1's service starts again, cut off from S3.
    runtime().block_on(node("m1", s3_cut, kms_cut).started());
    assert_eq!(lock::holder(&ctl, LOCK).unwrap(), None, "m1 gave its lock back");
    let taken = runtime().block_on(other.pass(interval, retention, None)).unwrap();
    assert!(taken.is_some(), "m2 backs up at once");
    assert_eq!(lock::holder(&ctl, LOCK).unwrap(), None, "and gives the lock back");
}

fn leak<T>(t: T) -> &'static T {
    Box::leak(Box::new(t))
}
