//! `nodeboot sync manifests` against the emulated S3 and KMS, through the
//! real binary: one pass at a time (`--once`) where the order of events
//! matters, the long-running loop where the loop itself is under test.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::bed::runtime;
use common::secrets_bed::*;
use common::stderr;
use nodeboot::shared::node_config::SyncedConfig;
use nodeboot::shared::role::Role;

const LIMIT: Duration = Duration::from_secs(60);

fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

fn inode_and_mtime(path: &Path) -> (u64, i64, i64) {
    let m = std::fs::metadata(path).unwrap();
    (m.ino(), m.mtime(), m.mtime_nsec())
}

fn once_ok(node: &TestNode) {
    let out = node.sync_once();
    assert!(out.status.success(), "sync --once: {}", stderr(&out));
}

/// Injects an error the SDK does not retry on the next `count` calls of `action`.
fn refuse(p: &Platform, action: &str, count: u32) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let body = serde_json::json!({"action": action, "count": count, "code": "AccessDenied", "status": 403, "message": "Access Denied"});
    let r = agent
        .post(format!("{}/_bed/throttle", p.aws.server.url))
        .header("content-type", "application/json")
        .send(body.to_string())
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[test]
fn sync_follows_add_change_and_delete() {
    let p = Platform::new("syn-follow");
    let node = p.node(Role::Etcd);
    let dir = node.manifests_dir();
    p.upload("manifests/etcd/a.yaml", b"a: 1\n");
    p.upload("manifests/etcd/b.yaml", b"b: 1\n");
    p.upload("manifests/compute/other-role.yaml", b"x");
    once_ok(&node);
    assert_eq!(names(&dir), ["a.yaml", "b.yaml"]);
    assert_eq!(read(&dir, "a.yaml"), "a: 1\n");
    assert_eq!(std::fs::metadata(dir.join("a.yaml")).unwrap().mode() & 0o777, 0o600);

    let b_before = inode_and_mtime(&dir.join("b.yaml"));
    p.upload("manifests/etcd/a.yaml", b"a: 2\n");
    p.upload("manifests/etcd/c.yaml", b"c: 1\n");
    once_ok(&node);
    assert_eq!(names(&dir), ["a.yaml", "b.yaml", "c.yaml"]);
    assert_eq!(read(&dir, "a.yaml"), "a: 2\n");
    assert_eq!(
        inode_and_mtime(&dir.join("b.yaml")),
        b_before,
        "an unchanged manifest is not rewritten"
    );

    p.remove("manifests/etcd/b.yaml");
    once_ok(&node);
    assert_eq!(names(&dir), ["a.yaml", "c.yaml"]);
}

/// The prefixes `sync manifests` keeps on `node`: the static pods and each synced prefix.
fn synced_prefixes(node: &TestNode) -> u64 {
    1 + node.config().synced.len() as u64
}

/// What a writer that keeps no index (an older nodeboot, another tool) leaves:
/// the objects without their prefix's index.
fn drop_indexes(p: &Platform, prefixes: &[&str]) {
    runtime().block_on(async {
        for prefix in prefixes {
            p.s3.delete_object()
                .bucket(p.bucket())
                .key(format!("{prefix}.nodeboot-index"))
                .send()
                .await
                .unwrap();
        }
    });
}

/// An etcd node's sync keeps its static pods and the add-ons (applied by a
/// reload command, here one that does nothing): one object in the add-ons,
/// uploaded with `secrets upload` (which writes each prefix's index).
fn etcd_node_with_addons(p: &Platform) -> TestNode {
    let node = p.node(Role::Etcd);
    let mut config = node.config();
    assert_eq!(config.synced[0].prefix, "manifests/addons/");
    config.synced[0].reload = vec!["true".into()];
    node.set_config(&config);
    p.upload("manifests/addons/00-rbac.yaml", b"rbac\n");
    node
}

#[test]
fn an_unchanged_index_costs_one_conditional_get_per_prefix_and_no_list() {
    let p = Platform::new("syn-idle");
    let node = etcd_node_with_addons(&p);
    for i in 0..5 {
        p.upload(
            &format!("manifests/etcd/pod-{i}.yaml"),
            format!("pod: {i}\n").as_bytes(),
        );
    }
    once_ok(&node);
    p.aws.reset_calls();
    for _ in 0..3 {
        once_ok(&node);
    }
    let prefixes = synced_prefixes(&node);
    assert_eq!(
        p.aws.calls().into_iter().collect::<Vec<_>>(),
        [("GetObject".to_string(), 3 * prefixes)],
        "3 idle passes: the index of each prefix, no listing, no KMS call"
    );
    assert_eq!(
        p.aws.answers()["GetObject"],
        [("304".to_string(), 3 * prefixes)].into(),
        "each one a conditional GET answered 304 Not Modified"
    );
    assert_eq!(names(&node.manifests_dir()).len(), 5);
}

#[test]
fn a_change_reaches_the_node_in_the_next_pass() {
    let p = Platform::new("syn-next");
    let node = etcd_node_with_addons(&p);
    p.upload("manifests/etcd/a.yaml", b"a: 1\n");
    p.upload("manifests/etcd/b.yaml", b"b: 1\n");
    once_ok(&node);
    once_ok(&node);

    p.upload("manifests/etcd/a.yaml", b"a: 2\n");
    p.aws.reset_calls();
    once_ok(&node);
    assert_eq!(read(&node.manifests_dir(), "a.yaml"), "a: 2\n", "in the next pass");
    let calls = p.aws.calls();
    assert_eq!(
        calls.get("ListObjectsV2"),
        Some(&1),
        "only the changed prefix is listed: {calls:?}"
    );
    assert_eq!(
        calls.get("Decrypt"),
        Some(&1),
        "only the changed object is opened: {calls:?}"
    );
    assert_eq!(
        p.aws.answers()["GetObject"],
        [("200".to_string(), 2), ("304".to_string(), 1)].into(),
        "the changed index and a.yaml; the add-ons' index unchanged"
    );

    p.remove("manifests/etcd/b.yaml");
    once_ok(&node);
    assert_eq!(names(&node.manifests_dir()), ["a.yaml"], "a removal too");
}

#[test]
fn a_missing_index_falls_back_to_a_listing_every_pass() {
    let p = Platform::new("syn-noindex");
    let node = etcd_node_with_addons(&p);
    p.upload("manifests/etcd/a.yaml", b"a: 1\n");
    once_ok(&node);
    // From now on a writer that keeps no index.
    drop_indexes(&p, &["manifests/etcd/", "manifests/addons/"]);
    once_ok(&node);

    p.aws.reset_calls();
    once_ok(&node);
    once_ok(&node);
    let prefixes = synced_prefixes(&node);
    let calls = p.aws.calls();
    assert_eq!(calls.get("ListObjectsV2"), Some(&(2 * prefixes)), "{calls:?}");
    assert_eq!(
        p.aws.answers()["GetObject"],
        [("404".to_string(), 2 * prefixes)].into(),
        "the missing indexes"
    );

    p.upload("manifests/etcd/a.yaml", b"a: 2\n");
    drop_indexes(&p, &["manifests/etcd/", "manifests/addons/"]);
    once_ok(&node);
    assert_eq!(read(&node.manifests_dir(), "a.yaml"), "a: 2\n", "seen by the listing");
}

#[test]
fn an_unreadable_index_falls_back_to_a_listing() {
    let p = Platform::new("syn-badindex");
    let node = etcd_node_with_addons(&p);
    p.upload("manifests/etcd/a.yaml", b"a: 1\n");
    once_ok(&node);
    let (_, metadata) = p.get_raw("manifests/etcd/.nodeboot-index");
    p.put_raw("manifests/etcd/.nodeboot-index", b"{not an index", &metadata);
    p.aws.reset_calls();
    let out = node.sync_once();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("manifests/etcd/.nodeboot-index"),
        "{}",
        stderr(&out)
    );
    assert_eq!(p.aws.calls().get("ListObjectsV2"), Some(&1));
    p.aws.reset_calls();
    once_ok(&node);
    assert_eq!(p.aws.calls().get("ListObjectsV2"), Some(&1), "still not trusted");
    assert_eq!(names(&node.manifests_dir()), ["a.yaml"], "nothing removed");
}

#[test]
fn a_change_by_a_writer_that_keeps_no_index_is_seen_at_the_hourly_listing_and_the_index_is_distrusted() {
    let p = Platform::new("syn-stale");
    let node = etcd_node_with_addons(&p);
    p.upload("manifests/etcd/a.yaml", b"a: 2\n");
    let (v2, metadata) = p.get_raw("manifests/etcd/a.yaml");
    p.upload("manifests/etcd/a.yaml", b"a: 1\n");
    once_ok(&node);
    once_ok(&node);

    // Another tool puts a.yaml back to version 2 and leaves the index as it was.
    p.put_raw("manifests/etcd/a.yaml", &v2, &metadata);
    once_ok(&node);
    assert_eq!(
        read(&node.manifests_dir(), "a.yaml"),
        "a: 1\n",
        "the unchanged index hides it"
    );

    // An hour later (the remembered listing made to look that old).
    let state = node.path("/var/lib/nodeboot/sync/etc-kubernetes-manifests.listings");
    let mut seen: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    for prefix in seen.as_object_mut().unwrap().values_mut() {
        let listed_at = prefix["listed_at"].as_u64().unwrap();
        prefix["listed_at"] = (listed_at - 3600).into();
    }
    std::fs::write(&state, serde_json::to_vec(&seen).unwrap()).unwrap();
    once_ok(&node);
    assert_eq!(
        read(&node.manifests_dir(), "a.yaml"),
        "a: 2\n",
        "the full listing sees it"
    );

    // The index does not describe the bucket: listed every pass until it does.
    p.aws.reset_calls();
    once_ok(&node);
    assert_eq!(p.aws.calls().get("ListObjectsV2"), Some(&1));
    p.upload("manifests/etcd/b.yaml", b"b\n");
    once_ok(&node);
    p.aws.reset_calls();
    once_ok(&node);
    assert_eq!(p.aws.calls().get("ListObjectsV2"), None, "trusted again");
}

#[test]
fn refusing_to_empty_holds_on_an_unchanged_index() {
    let p = Platform::new("syn-empty-idx");
    let node = p.node(Role::Etcd);
    let dir = node.manifests_dir();
    p.upload("manifests/etcd/kube-apiserver.yaml", b"api\n");
    p.upload("manifests/etcd/kube-scheduler.yaml", b"sched\n");
    once_ok(&node);
    p.remove("manifests/etcd/kube-apiserver.yaml");
    p.remove("manifests/etcd/kube-scheduler.yaml");
    for pass in 0..3 {
        p.aws.reset_calls();
        let out = node.sync_once();
        assert_eq!(out.status.code(), Some(4), "pass {pass}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("refusing to remove all 2 files"),
            "{}",
            stderr(&out)
        );
        assert_eq!(names(&dir), ["kube-apiserver.yaml", "kube-scheduler.yaml"]);
        assert!(
            p.aws.calls().get("ListObjectsV2").is_some_and(|n| *n >= 1),
            "pass {pass}: a pass that would delete plans from a listing of its own: {:?}",
            p.aws.calls()
        );
    }
    p.upload("manifests/etcd/.nodeboot-empty", b"");
    once_ok(&node);
    assert!(names(&dir).is_empty(), "{:?}", names(&dir));
}

#[test]
fn sync_secrets_on_an_unchanged_bucket_costs_one_conditional_get_per_prefix() {
    let p = Platform::new("syn-secrets");
    p.upload("common/ca.crt", b"CA\n");
    p.upload("compute/kubelet.kubeconfig", b"kubeconfig\n");
    let node = p.node(Role::Compute);
    let out = node.stage_secrets(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    p.aws.reset_calls();
    for _ in 0..2 {
        let out = node.command(&["sync", "secrets", "--once"]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(
        p.aws.answers(),
        [("GetObject".to_string(), [("304".to_string(), 4)].into())].into(),
        "common/ and compute/, twice: the boot's stage left what the sync needs"
    );
    p.upload("common/ca.crt", b"CA 2\n");
    let out = node.command(&["sync", "secrets", "--once"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read(&node.secrets_dir(), "ca.crt"), "CA 2\n");
}

#[test]
fn uploads_keep_an_index_in_every_folder_and_never_sync_prune_or_list_it() {
    let p = Platform::new("syn-writer");
    p.upload("secure/etcd/ca.crt", b"etcd ca\n");
    let keys = |prefix: &str| -> Vec<String> {
        runtime().block_on(async {
            let out =
                p.s3.list_objects_v2()
                    .bucket(p.bucket())
                    .prefix(prefix)
                    .send()
                    .await
                    .unwrap();
            out.contents().iter().map(|o| o.key().unwrap().to_string()).collect()
        })
    };
    assert_eq!(
        keys("secure/"),
        [
            "secure/.nodeboot-index",
            "secure/etcd/.nodeboot-index",
            "secure/etcd/ca.crt"
        ],
        "each folder of the key has its index, written after the object"
    );
    let (body, _) = p.get_raw("secure/.nodeboot-index");
    let index: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let objects = index["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 1, "the objects, not the indexes: {index}");
    assert_eq!(objects[0]["key"], "secure/etcd/ca.crt");

    // The index is nobody's secret: not listed, fetched or pruned as one.
    let ls = p.nodeboot(&["secrets", "ls", "--env"], &[]);
    assert!(
        !String::from_utf8_lossy(&ls.stdout).contains(".nodeboot-index"),
        "{}",
        String::from_utf8_lossy(&ls.stdout)
    );
    let out = p.nodeboot(&["secrets", "fetch", "--env"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    p.write_local("common/.nodeboot-index", b"a file of that name");
    let out = p.nodeboot(&["secrets", "upload", "--env"], &["common/.nodeboot-index"]);
    assert!(!out.status.success(), "an index is not uploaded as a secret");
    assert!(
        stderr(&out).contains("the name of a folder's index"),
        "{}",
        stderr(&out)
    );
    let rendered = p.dir.path().join("rendered");
    std::fs::create_dir_all(rendered.join("etcd")).unwrap();
    std::fs::write(rendered.join("etcd/kube-apiserver.yaml"), "api").unwrap();
    let out = p.nodeboot(
        &["manifests", "upload", "--env"],
        &["--prune", rendered.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = p.nodeboot(
        &["manifests", "upload", "--env"],
        &["--prune", rendered.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("removed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(keys("manifests/etcd/").contains(&"manifests/etcd/.nodeboot-index".to_string()));
    let node = p.node(Role::Etcd);
    once_ok(&node);
    assert_eq!(names(&node.manifests_dir()), ["kube-apiserver.yaml"]);
}

#[test]
fn a_reuploaded_identical_manifest_is_fetched_once_but_not_rewritten() {
    let p = Platform::new("syn-same");
    let node = p.node(Role::Etcd);
    p.upload("manifests/etcd/a.yaml", b"a: 1\n");
    once_ok(&node);
    let before = inode_and_mtime(&node.manifests_dir().join("a.yaml"));
    let out = p.nodeboot(&["secrets", "upload", "--force", "--env"], &["manifests/etcd/a.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    p.aws.reset_calls();
    once_ok(&node);
    once_ok(&node);
    let calls = p.aws.calls();
    assert_eq!(
        p.aws.answers()["GetObject"].get("200"),
        Some(&2),
        "new ETag: the changed index, then a.yaml once, then recorded: {calls:?}"
    );
    assert_eq!(calls.get("Decrypt"), Some(&1), "{calls:?}");
    assert_eq!(
        inode_and_mtime(&node.manifests_dir().join("a.yaml")),
        before,
        "same bytes: the kubelet sees no rewrite"
    );
}

#[test]
fn sync_never_removes_files_it_did_not_place_or_that_changed_since() {
    let p = Platform::new("syn-mine");
    let node = p.node(Role::Etcd);
    let dir = node.manifests_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("by-hand.yaml"), "admin: true\n").unwrap();
    p.upload("manifests/etcd/ours.yaml", b"ours\n");
    p.upload("manifests/etcd/edited.yaml", b"edited\n");
    p.upload("manifests/etcd/stays.yaml", b"stays\n");
    once_ok(&node);
    std::fs::write(dir.join("edited.yaml"), "edited on the node\n").unwrap();

    p.remove("manifests/etcd/ours.yaml");
    p.remove("manifests/etcd/edited.yaml");
    let out = node.sync_once();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(names(&dir), ["by-hand.yaml", "edited.yaml", "stays.yaml"]);
    assert!(
        stderr(&out).contains("changed locally since nodeboot placed it: left in place"),
        "{}",
        stderr(&out)
    );
    once_ok(&node);
    assert_eq!(names(&dir), ["by-hand.yaml", "edited.yaml", "stays.yaml"]);
}

#[test]
fn a_failed_listing_deletes_nothing() {
    let p = Platform::new("syn-fail");
    let node = p.node(Role::Etcd);
    let dir = node.manifests_dir();
    p.upload("manifests/etcd/a.yaml", b"a\n");
    p.upload("manifests/etcd/b.yaml", b"b\n");
    p.upload("manifests/etcd/c.yaml", b"c\n");
    once_ok(&node);
    p.remove("manifests/etcd/a.yaml");
    p.remove("manifests/etcd/b.yaml");

    refuse(&p, "ListObjectsV2", 100);
    for _ in 0..2 {
        let out = node.sync_once();
        assert_eq!(out.status.code(), Some(13), "{}", stderr(&out));
        assert!(stderr(&out).contains("nothing deleted"), "{}", stderr(&out));
        assert_eq!(names(&dir), ["a.yaml", "b.yaml", "c.yaml"]);
    }
    refuse(&p, "ListObjectsV2", 0);
    once_ok(&node);
    assert_eq!(names(&dir), ["c.yaml"], "a complete listing removes them");
}

#[test]
fn a_tampered_manifest_is_skipped_and_the_others_synced() {
    let p = Platform::new("syn-tamper");
    let node = p.node(Role::Etcd);
    let dir = node.manifests_dir();
    p.upload("manifests/etcd/a.yaml", b"a: 1\n");
    once_ok(&node);
    p.upload("manifests/etcd/a.yaml", b"a: 2\n");
    p.upload("manifests/etcd/b.yaml", b"b: 1\n");
    let (mut body, metadata) = p.get_raw("manifests/etcd/a.yaml");
    let middle = body.len() / 2;
    body[middle] ^= 1;
    p.put_raw("manifests/etcd/a.yaml", &body, &metadata);

    let out = node.sync_once();
    assert_eq!(out.status.code(), Some(20), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("manifests/etcd/a.yaml: refused"),
        "{}",
        stderr(&out)
    );
    assert_eq!(read(&dir, "a.yaml"), "a: 1\n", "the last good version stays");
    assert_eq!(read(&dir, "b.yaml"), "b: 1\n");
}

#[test]
fn the_running_sync_deletes_nothing_while_aws_is_away_and_recovers() {
    let p = Platform::new("syn-away");
    let mut proxy = Proxy::new(&p.aws.server.url);
    let mut node = p.node(Role::Etcd);
    node.endpoint = proxy.url.clone();
    let dir = node.manifests_dir();
    p.upload("manifests/etcd/a.yaml", b"a\n");
    p.upload("manifests/etcd/b.yaml", b"b\n");
    let sync = node.start_sync("200ms");
    wait_until("a.yaml and b.yaml", LIMIT, || names(&dir) == ["a.yaml", "b.yaml"]);

    proxy.stop();
    p.remove("manifests/etcd/a.yaml");
    p.upload("manifests/etcd/c.yaml", b"c\n");
    sync.wait_for_line("pass failed, nothing deleted", LIMIT);
    sync.wait_for_line("pass failed, nothing deleted", LIMIT);
    assert_eq!(
        names(&dir),
        ["a.yaml", "b.yaml"],
        "nothing deleted while the bucket is out of reach"
    );

    proxy.start();
    sync.wait_for_line("the bucket answers again", LIMIT);
    wait_until("the directory to follow the bucket again", LIMIT, || {
        names(&dir) == ["b.yaml", "c.yaml"]
    });
    assert_eq!(read(&dir, "c.yaml"), "c\n");
}

#[test]
fn a_reader_polling_the_directory_never_sees_a_truncated_file() {
    let p = Platform::new("syn-reader");
    let node = p.node(Role::Etcd);
    let dir = node.manifests_dir();
    let version = |k: usize| {
        let filler = format!("# filler {k}\n").repeat(40_000);
        format!("version: {k}\nlength: {}\n{filler}end: {k}\n", filler.len()).into_bytes()
    };
    p.upload("manifests/etcd/big.yaml", &version(0));
    let sync = node.start_sync("50ms");
    wait_until("the first version", LIMIT, || dir.join("big.yaml").exists());

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let reader = {
        let (stop, reads, bad, seen, file) = (
            stop.clone(),
            reads.clone(),
            bad.clone(),
            seen.clone(),
            dir.join("big.yaml"),
        );
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let text = std::fs::read_to_string(&file).unwrap_or_else(|e| format!("unreadable: {e}"));
                reads.fetch_add(1, Ordering::SeqCst);
                let k = text
                    .lines()
                    .next()
                    .and_then(|l| l.strip_prefix("version: "))
                    .unwrap_or("?")
                    .to_string();
                if !text.ends_with(&format!("end: {k}\n")) || text.len() != version(k.parse().unwrap_or(0)).len() {
                    bad.lock().unwrap().push(format!("{} bytes, header {k:?}", text.len()));
                }
                seen.lock().unwrap().insert(k);
            }
        })
    };
    for k in 1..=8 {
        p.upload("manifests/etcd/big.yaml", &version(k));
        wait_until(&format!("version {k}"), LIMIT, || {
            seen.lock().unwrap().contains(&k.to_string())
        });
    }
    stop.store(true, Ordering::SeqCst);
    reader.join().unwrap();
    drop(sync);
    let bad = bad.lock().unwrap();
    assert!(
        bad.is_empty(),
        "{} of {} reads saw a partial file: {:?}",
        bad.len(),
        reads.load(Ordering::SeqCst),
        &bad[..bad.len().min(5)]
    );
    eprintln!("{} reads, all whole", reads.load(Ordering::SeqCst));
}

#[test]
fn an_extra_synced_prefix_runs_its_reload_command_only_when_it_changed() {
    let p = Platform::new("syn-reload");
    let node = p.node(Role::Etcd);
    let log = node.root.path().join("reloads.log");
    let mut config = node.config();
    config.synced.push(SyncedConfig {
        prefix: "secure/auth/".into(),
        dir: "/run/nodeboot/secrets/auth".into(),
        owner: None,
        reload: vec!["sh".into(), "-c".into(), format!("echo reloaded >> {}", log.display())],
    });
    node.set_config(&config);
    let reloads = || std::fs::read_to_string(&log).map(|s| s.lines().count()).unwrap_or(0);
    p.upload("secure/auth/tokens.csv", b"token,user,1\n");

    once_ok(&node);
    let auth = node.secrets_dir().join("auth");
    assert_eq!(read(&auth, "tokens.csv"), "token,user,1\n");
    assert_eq!(std::fs::metadata(&auth).unwrap().mode() & 0o777, 0o700);
    assert_eq!(reloads(), 1);
    once_ok(&node);
    assert_eq!(reloads(), 1, "nothing changed, no reload");
    p.upload("secure/auth/tokens.csv", b"token,user,1\ntoken2,user2,2\n");
    once_ok(&node);
    assert_eq!(reloads(), 2);

    let mut config = node.config();
    config.synced.last_mut().unwrap().reload = vec!["false".into()];
    node.set_config(&config);
    p.upload("secure/auth/tokens.csv", b"v3\n");
    let out = node.sync_once();
    assert_eq!(
        out.status.code(),
        Some(16),
        "a failed reload is reported: {}",
        stderr(&out)
    );
    assert_eq!(read(&auth, "tokens.csv"), "v3\n");
}

#[test]
fn the_running_sync_keeps_no_capabilities() {
    if !common::bed::require_root("capabilities to drop") {
        return;
    }
    let p = Platform::new("syn-caps");
    let node = p.node(Role::Etcd);
    let sync = node.start_sync("1s");
    let line = sync.wait_for_line("capabilities:", LIMIT);
    assert!(line.contains("kept none"), "{line}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", sync.child.id())).unwrap();
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let value = status
            .lines()
            .find(|l| l.starts_with(set))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string();
        assert_eq!(value, "0000000000000000", "{set}");
    }
    p.upload("manifests/etcd/a.yaml", b"a\n");
    wait_until("a.yaml written without capabilities", LIMIT, || {
        node.manifests_dir().join("a.yaml").exists()
    });
}

#[test]
fn manifests_upload_sends_each_roles_directory_and_prunes_on_request() {
    let p = Platform::new("syn-upload");
    let rendered = p.dir.path().join("rendered");
    for (path, text) in [
        ("etcd/kube-apiserver.yaml", "api"),
        ("etcd/kube-scheduler.yaml", "sched"),
        ("compute/kube-proxy.yaml", "proxy"),
    ] {
        std::fs::create_dir_all(rendered.join(path).parent().unwrap()).unwrap();
        std::fs::write(rendered.join(path), text).unwrap();
    }
    let upload = |extra: &[&str]| {
        let mut more = extra.to_vec();
        more.push(rendered.to_str().unwrap());
        let out = p.nodeboot(&["manifests", "upload", "--env"], &more);
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    upload(&[]);
    let node = p.node(Role::Etcd);
    once_ok(&node);
    assert_eq!(
        names(&node.manifests_dir()),
        ["kube-apiserver.yaml", "kube-scheduler.yaml"]
    );

    std::fs::remove_file(rendered.join("etcd/kube-scheduler.yaml")).unwrap();
    let printed = upload(&[]);
    assert!(
        printed.contains("unchanged manifests/etcd/kube-apiserver.yaml"),
        "{printed}"
    );
    once_ok(&node);
    assert_eq!(
        names(&node.manifests_dir()).len(),
        2,
        "without --prune the bucket keeps it"
    );
    let printed = upload(&["--prune"]);
    assert!(
        printed.contains("removed   manifests/etcd/kube-scheduler.yaml"),
        "{printed}"
    );
    once_ok(&node);
    assert_eq!(names(&node.manifests_dir()), ["kube-apiserver.yaml"]);
}

#[test]
fn a_node_with_nothing_to_sync_says_so() {
    let p = Platform::new("syn-none");
    let node = p.node(Role::Bastion);
    let out = node.sync_once();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing to sync"), "{}", stderr(&out));
}

/// A reboot empties /run (tmpfs) but not the static-pod directory on disk.
fn reboot(node: &TestNode) {
    let run = node.path("/run");
    if run.exists() {
        std::fs::remove_dir_all(&run).unwrap();
    }
}

#[test]
fn a_manifest_deleted_while_the_node_was_down_is_removed_after_the_reboot() {
    let p = Platform::new("syn-reboot");
    let node = p.node(Role::Etcd);
    let dir = node.manifests_dir();
    p.upload("manifests/etcd/a.yaml", b"a\n");
    p.upload("manifests/etcd/b.yaml", b"b\n");
    once_ok(&node);
    assert_eq!(names(&dir), ["a.yaml", "b.yaml"]);

    reboot(&node);
    p.remove("manifests/etcd/b.yaml");
    once_ok(&node);
    assert_eq!(
        names(&dir),
        ["a.yaml"],
        "the record of placed files outlives the reboot"
    );
    assert!(node.path("/var/lib/nodeboot/sync").is_dir(), "the record lives on disk");
}

#[test]
fn a_record_left_in_run_by_an_older_nodeboot_is_moved_to_disk_and_said_so() {
    let p = Platform::new("syn-migrate");
    let node = p.node(Role::Etcd);
    let dir = node.manifests_dir();
    p.upload("manifests/etcd/a.yaml", b"a\n");
    p.upload("manifests/etcd/stays.yaml", b"stays\n");
    once_ok(&node);
    // What an older nodeboot left: its record under /run, none on disk.
    let old = node.path("/run/nodeboot/sync/etc-kubernetes-manifests.json");
    let new = node.path("/var/lib/nodeboot/sync/etc-kubernetes-manifests.json");
    std::fs::create_dir_all(old.parent().unwrap()).unwrap();
    std::fs::rename(&new, &old).unwrap();

    p.remove("manifests/etcd/a.yaml");
    let out = node.sync_once();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("moved the record of placed files from {}", old.display())),
        "{}",
        stderr(&out)
    );
    assert_eq!(names(&dir), ["stays.yaml"], "the moved record still knows a.yaml");
    assert!(!old.exists() && new.exists());
}

#[test]
fn an_empty_listing_does_not_empty_the_directory_without_the_marker() {
    let p = Platform::new("syn-empty");
    let node = p.node(Role::Etcd);
    let dir = node.manifests_dir();
    p.upload("manifests/etcd/kube-apiserver.yaml", b"api\n");
    p.upload("manifests/etcd/kube-scheduler.yaml", b"sched\n");
    once_ok(&node);

    // An accidental prune: the prefix is complete and empty.
    p.remove("manifests/etcd/kube-apiserver.yaml");
    p.remove("manifests/etcd/kube-scheduler.yaml");
    for _ in 0..2 {
        let out = node.sync_once();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(4), "{err}");
        assert!(
            err.contains("ERROR") && err.contains("refusing to remove all 2 files"),
            "{err}"
        );
        assert!(
            err.contains("manifests/etcd/.nodeboot-empty"),
            "says how to mean it: {err}"
        );
        assert_eq!(names(&dir), ["kube-apiserver.yaml", "kube-scheduler.yaml"]);
    }

    // The operator means it: the marker lets the node empty the directory.
    p.upload("manifests/etcd/.nodeboot-empty", b"");
    once_ok(&node);
    assert!(names(&dir).is_empty(), "{:?}", names(&dir));
    assert!(
        !dir.join(".nodeboot-empty").exists(),
        "the marker is never a file on the node"
    );
}

#[test]
fn an_empty_prune_is_refused_by_the_operator_unless_allowed_and_then_writes_the_marker() {
    let p = Platform::new("syn-prune0");
    let rendered = p.dir.path().join("rendered");
    std::fs::create_dir_all(rendered.join("etcd")).unwrap();
    std::fs::write(rendered.join("etcd/kube-apiserver.yaml"), "api").unwrap();
    let upload = |extra: &[&str]| {
        let mut more = extra.to_vec();
        more.push(rendered.to_str().unwrap());
        p.nodeboot(&["manifests", "upload", "--env"], &more)
    };
    assert!(upload(&[]).status.success());
    let node = p.node(Role::Etcd);
    once_ok(&node);

    std::fs::remove_file(rendered.join("etcd/kube-apiserver.yaml")).unwrap();
    let out = upload(&["--prune"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("--allow-empty"), "{}", stderr(&out));
    once_ok(&node);
    assert_eq!(
        names(&node.manifests_dir()),
        ["kube-apiserver.yaml"],
        "nothing was pruned"
    );

    let out = upload(&["--prune", "--allow-empty"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("marked    manifests/etcd/.nodeboot-empty"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    once_ok(&node);
    assert!(names(&node.manifests_dir()).is_empty());

    // Manifests again: the marker goes, so a later accidental prune is refused again.
    std::fs::write(rendered.join("etcd/kube-apiserver.yaml"), "api 2").unwrap();
    assert!(upload(&[]).status.success());
    let ls = p.nodeboot(&["secrets", "ls", "--env"], &["manifests/"]);
    assert!(
        !String::from_utf8_lossy(&ls.stdout).contains(".nodeboot-empty"),
        "{}",
        String::from_utf8_lossy(&ls.stdout)
    );
}

#[test]
fn a_sync_that_cannot_drop_its_capabilities_stops() {
    let p = Platform::new("syn-capfail");
    let node = p.node(Role::Etcd);
    p.upload("manifests/etcd/a.yaml", b"a\n");
    let out = node
        .command(&["sync", "manifests", "--once"])
        .env(nodeboot::shared::fault::FAIL_VAR, "sync:drop-capabilities")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(16), "{}", stderr(&out));
    assert!(stderr(&out).contains("could not drop capabilities"), "{}", stderr(&out));
    assert!(
        names(&node.manifests_dir()).is_empty(),
        "no pass ran with the capabilities"
    );
}
