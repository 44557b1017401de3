//! `prereqs`, `secrets upload|fetch|ls|rm` and `stage secrets` against the
//! emulated S3 and KMS (tests/bed/aws_server.py), through the real binary.
//! Each test has its own emulator, environment, key and buckets.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Output;

use common::bed::runtime;
use common::secrets_bed::*;
use common::stderr;
use nodeboot::shared::role::Role;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Deterministic bytes that are not text.
fn binary(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.map(Result::unwrap) {
            if e.path().is_dir() {
                out.extend(
                    files_below(&e.path())
                        .into_iter()
                        .map(|f| format!("{}/{f}", e.file_name().to_string_lossy())),
                );
            } else {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn prereqs_creates_key_and_buckets_and_a_rerun_changes_nothing() {
    let p = Platform::new("pre-fresh");
    assert!(
        p.prereqs.contains("created KMS key alias/pre-fresh-nodeboot"),
        "{}",
        p.prereqs
    );
    for bucket in ["pre-fresh-secrets", "pre-fresh-tfstate"] {
        assert!(
            p.prereqs.contains(&format!("created bucket {bucket}: created")),
            "{}",
            p.prereqs
        );
        runtime().block_on(async {
            let v = p.s3.get_bucket_versioning().bucket(bucket).send().await.unwrap();
            assert_eq!(v.status().map(|s| s.as_str()), Some("Enabled"));
            let pab = p.s3.get_public_access_block().bucket(bucket).send().await.unwrap();
            let c = pab.public_access_block_configuration().unwrap();
            assert_eq!(
                [
                    c.block_public_acls(),
                    c.ignore_public_acls(),
                    c.block_public_policy(),
                    c.restrict_public_buckets()
                ],
                [Some(true); 4]
            );
            let enc = p.s3.get_bucket_encryption().bucket(bucket).send().await.unwrap();
            let rule = &enc.server_side_encryption_configuration().unwrap().rules()[0];
            let default = rule.apply_server_side_encryption_by_default().unwrap();
            assert_eq!(default.sse_algorithm().as_str(), "aws:kms");
            let key = p
                .kms
                .describe_key()
                .key_id("alias/pre-fresh-nodeboot")
                .send()
                .await
                .unwrap();
            assert_eq!(default.kms_master_key_id(), key.key_metadata().unwrap().arn());
        });
    }

    p.aws.reset_calls();
    let out = p.nodeboot(&["prereqs", "--env"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = stdout(&out);
    assert_eq!(lines.lines().count(), 3, "{lines}");
    assert!(
        lines.lines().all(|l| l.starts_with("found ")),
        "a rerun found everything:\n{lines}"
    );
    let calls = p.aws.calls();
    let changes: Vec<&String> = calls
        .keys()
        .filter(|a| a.starts_with("Create") || a.starts_with("Put") || a.starts_with("Enable"))
        .collect();
    assert!(changes.is_empty(), "a rerun changed something: {calls:?}");

    // Someone turned versioning off: the next run turns it back on, and only that.
    runtime().block_on(async {
        let suspended = aws_sdk_s3::types::VersioningConfiguration::builder()
            .status(aws_sdk_s3::types::BucketVersioningStatus::Suspended)
            .build();
        p.s3.put_bucket_versioning()
            .bucket("pre-fresh-secrets")
            .versioning_configuration(suspended)
            .send()
            .await
            .unwrap();
    });
    let out = p.nodeboot(&["prereqs", "--env"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let changed: Vec<&str> = text.lines().filter(|l| !l.starts_with("found ")).collect();
    assert_eq!(changed, ["changed bucket pre-fresh-secrets: versioning turned on"]);
}

#[test]
fn prereqs_uses_an_existing_key_named_by_id_and_refuses_a_missing_one() {
    let p = Platform::new("pre-key");
    let key_id = runtime().block_on(async {
        p.kms
            .create_key()
            .send()
            .await
            .unwrap()
            .key_metadata()
            .unwrap()
            .key_id()
            .to_string()
    });
    let by_id = p.other_env_file("pre-byid", &[("kms_master_id", &format!("\"{key_id}\""))]);
    let out = p.nodeboot_with(&["prereqs", "--env"], &by_id, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("found   KMS key {key_id}")),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("created KMS key"), "{}", stdout(&out));

    let missing = p.other_env_file(
        "pre-missing",
        &[("kms_master_id", "\"1234abcd-12ab-34cd-56ef-1234567890ab\"")],
    );
    let out = p.nodeboot_with(&["prereqs", "--env"], &missing, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("names no key"), "{}", stderr(&out));
}

#[test]
fn upload_then_fetch_gives_identical_bytes_text_and_binary_up_to_5_mib() {
    let p = Platform::new("sec-round");
    let files: Vec<(&str, Vec<u8>)> = vec![
        (
            "common/ca.crt",
            b"-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n".to_vec(),
        ),
        ("common/empty", Vec::new()),
        ("secure/etcd/peer.key", binary(1, 1)),
        ("compute/blob.bin", binary(64 * 1024 + 3, 2)),
        (
            "manifests/etcd/kube-apiserver.yaml",
            "apiVersion: v1\nkind: Pod\n# ünïcödé\n".repeat(500).into_bytes(),
        ),
        ("secure/big.bin", binary(5 * 1024 * 1024, 3)),
    ];
    for (path, bytes) in &files {
        p.write_local(path, bytes);
    }
    p.aws.reset_calls();
    let out = p.nodeboot(&["secrets", "upload", "--env"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        p.aws.calls().get("GenerateDataKey"),
        Some(&2),
        "one data key per role that reads them (etcd, compute), not one per object"
    );

    let fetched = p.dir.path().join("fetched");
    let out = p.nodeboot(&["secrets", "fetch", "--dir", fetched.to_str().unwrap(), "--env"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    for (path, bytes) in &files {
        let file = fetched.join(path);
        assert_eq!(&std::fs::read(&file).unwrap(), bytes, "{path}");
        assert_eq!(mode(&file), 0o600, "{path}");
        assert_eq!(mode(file.parent().unwrap()), 0o700, "{path}");
    }
    assert!(!stderr(&out).contains("MIIB"), "contents never reach the log");
}

#[test]
fn the_stored_object_is_a_versioned_envelope_not_the_plaintext() {
    let p = Platform::new("sec-env");
    p.upload("common/token", b"plaintext-token-value");
    p.upload("secure/etcd/member-0.key", b"plaintext-member-key");
    for (path, version) in [("common/token", 4u8), ("secure/etcd/member-0.key", 1)] {
        let (body, metadata) = p.get_raw(path);
        assert_eq!(&body[..9], [&b"NBSECRET"[..], &[version]].concat(), "{path}");
        assert_eq!(metadata.get("nodeboot-format"), Some(&version.to_string()), "{path}");
        assert!(
            !body.windows(10).any(|w| w == b"plaintext-"),
            "the plaintext is not in {path}"
        );
    }
    // Format 4: a slot per role that reads it, each naming its data key's scope.
    let (body, _) = p.get_raw("common/token");
    assert_eq!(body[9], 2, "common/ is read by both roles");
    assert_eq!(&body[10..19], b"\x00\x07secure/");
}

#[test]
fn a_changed_byte_anywhere_in_the_stored_object_fails_and_writes_nothing() {
    let p = Platform::new("sec-tamper");
    p.upload("common/token", &binary(300, 4));
    let (original, metadata) = p.get_raw("common/token");
    // Format 4 (src/shared/secrets/format.rs): two slots, then the content.
    let u16_at = |i: usize| u16::from_be_bytes([original[i], original[i + 1]]) as usize;
    let slot = |start: usize| {
        let key_len_at = start + 2 + u16_at(start);
        let nonce = key_len_at + 2 + u16_at(key_len_at);
        (key_len_at, nonce, nonce + 12 + 48)
    };
    let (key_len_at, slot_nonce, second) = slot(10);
    let (second_key_at, _, content_nonce) = slot(second);
    let ciphertext = content_nonce + 12;
    let n = original.len();
    let positions = [
        0,
        7,
        8,
        9,
        11,
        13,
        key_len_at + 1,
        key_len_at + 40,
        slot_nonce,
        slot_nonce + 12,
        second - 1,
        second + 3,
        second_key_at + 20,
        content_nonce,
        ciphertext,
        ciphertext + 150,
        n - 17,
        n - 16,
        n - 1,
    ];
    for i in positions {
        let mut bad = original.clone();
        bad[i] ^= 0x01;
        p.put_raw("common/token", &bad, &metadata);
        let target = p.dir.path().join(format!("fetch-{i}"));
        let out = p.nodeboot(
            &["secrets", "fetch", "--dir", target.to_str().unwrap(), "--env"],
            &["common/token"],
        );
        assert_eq!(out.status.code(), Some(20), "byte {i} changed: {}", stderr(&out));
        assert!(
            stderr(&out).contains("common/token: refused"),
            "byte {i}: {}",
            stderr(&out)
        );
        assert!(files_below(&target).is_empty(), "byte {i}: something was written");
    }
    p.put_raw("common/token", &original[..n - 1], &metadata);
    let out = p.nodeboot(&["secrets", "fetch", "--env"], &["common/token"]);
    assert_eq!(out.status.code(), Some(20), "cut short: {}", stderr(&out));

    p.put_raw("common/token", &original, &metadata);
    let out = p.nodeboot(&["secrets", "fetch", "--env"], &["common/token"]);
    assert!(out.status.success(), "the original still opens: {}", stderr(&out));
}

#[test]
fn another_environment_another_path_or_another_key_cannot_open_a_secret() {
    let p = Platform::new("sec-ctx");
    p.upload("common/token", b"for sec-ctx only");
    let same_bucket = [
        ("secrets_bucket_name", "\"sec-ctx-secrets\""),
        ("terraform_bucket_name", "\"sec-other-tfstate\""),
        ("kms_master_id", "\"alias/sec-ctx-nodeboot\""),
    ];
    let other = p.other_env_file("sec-other", &same_bucket);
    let target = p.dir.path().join("other");
    let out = p.nodeboot_with(
        &["secrets", "fetch", "--dir", target.to_str().unwrap(), "--env"],
        &other,
        &["common/token"],
    );
    assert_eq!(out.status.code(), Some(20), "{}", stderr(&out));
    assert!(stderr(&out).contains("common/token: refused"), "{}", stderr(&out));
    assert!(files_below(&target).is_empty());

    // The same object under another path.
    let (body, metadata) = p.get_raw("common/token");
    p.put_raw("secure/token", &body, &metadata);
    let out = p.nodeboot(
        &["secrets", "fetch", "--dir", target.to_str().unwrap(), "--env"],
        &["secure/token"],
    );
    assert_eq!(out.status.code(), Some(20), "{}", stderr(&out));
    assert!(files_below(&target).is_empty());

    // The environment's key replaced by another one.
    let other_key = runtime().block_on(async {
        p.kms
            .create_key()
            .send()
            .await
            .unwrap()
            .key_metadata()
            .unwrap()
            .key_id()
            .to_string()
    });
    let rekeyed = p.other_env_file("sec-ctx", &[("kms_master_id", &format!("\"{other_key}\""))]);
    let out = p.nodeboot_with(
        &["secrets", "fetch", "--dir", target.to_str().unwrap(), "--env"],
        &rekeyed,
        &["common/token"],
    );
    assert_eq!(out.status.code(), Some(20), "{}", stderr(&out));
    assert!(files_below(&target).is_empty());
}

#[test]
fn plain_sse_kms_objects_are_read_under_the_environments_key_only() {
    let p = Platform::new("sec-legacy");
    let key_arn = runtime().block_on(async {
        p.kms
            .describe_key()
            .key_id("alias/sec-legacy-nodeboot")
            .send()
            .await
            .unwrap()
            .key_metadata()
            .unwrap()
            .arn()
            .unwrap()
            .to_string()
    });
    let other_arn = runtime().block_on(async {
        p.kms
            .create_key()
            .send()
            .await
            .unwrap()
            .key_metadata()
            .unwrap()
            .arn()
            .unwrap()
            .to_string()
    });
    let put = |key: &str, body: &[u8], sse: aws_sdk_s3::types::ServerSideEncryption, kms_key: Option<&str>| {
        runtime().block_on(async {
            p.s3.put_object()
                .bucket(p.bucket())
                .key(key)
                .server_side_encryption(sse)
                .set_ssekms_key_id(kms_key.map(str::to_string))
                .body(body.to_vec().into())
                .send()
                .await
                .unwrap();
        })
    };
    use aws_sdk_s3::types::ServerSideEncryption::{Aes256, AwsKms};
    put("common/seed.csv", b"token,user,uid\n", AwsKms, Some(&key_arn));
    put("common/other-key.csv", b"x", AwsKms, Some(&other_arn));
    put("common/sse-s3.csv", b"x", Aes256, None);

    let out = p.nodeboot(&["secrets", "fetch", "--env"], &["common/seed.csv"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(p.local().join("common/seed.csv")).unwrap(),
        b"token,user,uid\n"
    );
    assert!(
        stderr(&out).contains("plain SSE-KMS object"),
        "a legacy read is flagged: {}",
        stderr(&out)
    );

    for (key, why) in [
        ("common/other-key.csv", "under the KMS key"),
        ("common/sse-s3.csv", "neither a nodeboot envelope nor"),
    ] {
        let out = p.nodeboot(&["secrets", "fetch", "--env"], &[key]);
        assert_eq!(out.status.code(), Some(20), "{key}: {}", stderr(&out));
        assert!(stderr(&out).contains(why), "{key}: {}", stderr(&out));
    }
}

#[test]
fn ls_rm_and_missing_secrets() {
    let p = Platform::new("sec-ls");
    p.upload("common/a", b"a");
    p.upload("secure/b", b"bb");
    let out = p.nodeboot(&["secrets", "ls", "--env"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listing: Vec<String> = stdout(&out)
        .lines()
        .map(|l| l.split_whitespace().last().unwrap().to_string())
        .collect();
    assert_eq!(listing, ["common/a", "secure/b"]);

    p.remove("common/a");
    let out = p.nodeboot(&["secrets", "ls", "--env"], &["common"]);
    assert!(
        stdout(&out).trim().is_empty() && out.status.code() == Some(21),
        "{} {}",
        stdout(&out),
        stderr(&out)
    );
    for args in [&["secrets", "rm", "--env"][..], &["secrets", "fetch", "--env"][..]] {
        let out = p.nodeboot(args, &["common/a"]);
        assert_eq!(out.status.code(), Some(21), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("common/a: no such secret"), "{}", stderr(&out));
    }
}

#[test]
fn upload_skips_unchanged_secrets_and_refuses_files_outside_the_layout() {
    let p = Platform::new("sec-skip");
    p.upload("common/a", b"same");
    let (before, _) = p.get_raw("common/a");
    let out = p.nodeboot(&["secrets", "upload", "--env"], &["common/a"]);
    assert!(
        out.status.success() && stdout(&out).contains("unchanged common/a"),
        "{}",
        stdout(&out)
    );
    assert_eq!(p.get_raw("common/a").0, before, "not rewritten: nodes see no change");

    p.write_local("notes.txt", b"x");
    let out = p.nodeboot(&["secrets", "upload", "--env"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("notes.txt: not in the secrets layout"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn credentials_come_from_the_profile_the_environment_names() {
    let p = Platform::new("sec-creds");
    p.upload("common/a", b"a");
    let credentials = p.dir.path().join("credentials");
    let run = |file_text: &str| {
        std::fs::write(&credentials, file_text).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_nodeboot"))
            .args(["secrets", "ls", "--env"])
            .arg(&p.env_file)
            .current_dir(p.dir.path())
            .env("AWS_ENDPOINT_URL", &p.aws.server.url)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_PROFILE")
            .output()
            .unwrap()
    };
    let out = run("[sec-creds]\naws_access_key_id = fromfile\naws_secret_access_key = fromfile\n");
    assert!(out.status.success(), "the environment's profile: {}", stderr(&out));
    assert!(stdout(&out).contains("common/a"));
    let out = run("[someone-else]\naws_access_key_id = x\naws_secret_access_key = x\n");
    assert_eq!(
        out.status.code(),
        Some(13),
        "no credentials for the profile: {}",
        stderr(&out)
    );
}

fn upload_role_tree(p: &Platform) {
    p.upload("common/ca.crt", b"CA");
    p.upload("common/shared", b"common version");
    p.upload("secure/etcd/peer.key", b"PEER KEY");
    p.upload("secure/shared", b"secure version");
    p.upload("compute/worker.key", b"WORKER KEY");
    p.upload("manifests/etcd/pod.yaml", b"kind: Pod");
}

#[test]
fn stage_secrets_pulls_common_and_the_roles_folder_into_a_private_directory() {
    let p = Platform::new("stg-pull");
    upload_role_tree(&p);
    let node = p.node(Role::Etcd);
    node.claim(0);
    let out = node.stage_secrets(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = node.secrets_dir();
    assert_eq!(files_below(&dir), ["ca.crt", "etcd/peer.key", "shared"]);
    assert_eq!(
        std::fs::read(dir.join("shared")).unwrap(),
        b"secure version",
        "the role's folder wins over common/"
    );
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("etcd")), 0o700);
    for f in ["ca.crt", "etcd/peer.key", "shared"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    assert!(
        !stderr(&out).contains("PEER KEY") && !stderr(&out).contains("secure version"),
        "{}",
        stderr(&out)
    );

    let worker = p.node(Role::Compute);
    let out = worker.stage_secrets(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(files_below(&worker.secrets_dir()), ["ca.crt", "shared", "worker.key"]);
}

#[test]
fn an_etcd_node_fetches_only_its_own_members_key() {
    let p = Platform::new("stg-member");
    p.upload("secure/etcd/ca.crt", b"ETCD CA");
    for i in 0..3 {
        p.upload(&format!("secure/etcd/member-{i}.crt"), format!("CERT {i}").as_bytes());
        p.upload(&format!("secure/etcd/member-{i}.key"), format!("KEY {i}").as_bytes());
    }
    let node = p.node(Role::Etcd);
    let out = node.stage_secrets(&[]);
    assert_eq!(out.status.code(), Some(2), "no claim yet: {}", stderr(&out));
    assert!(
        stderr(&out).contains("claim.json does not exist yet: run `nodeboot stage attach` first"),
        "{}",
        stderr(&out)
    );

    node.claim(1);
    p.aws.reset_calls();
    let out = node.stage_secrets(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        files_below(&node.secrets_dir()),
        [
            "etcd/ca.crt",
            "etcd/member-0.crt",
            "etcd/member-1.crt",
            "etcd/member-1.key",
            "etcd/member-2.crt"
        ]
    );
    assert_eq!(
        p.aws.calls().get("GetObject"),
        Some(&(5 + 2)),
        "the other members' keys are never fetched (5 secrets, the indexes of common/ and secure/)"
    );

    // The node takes another member over (a rerun after a new claim): the old key goes.
    node.claim(2);
    let out = node.stage_secrets(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(files_below(&node.secrets_dir()).contains(&"etcd/member-2.key".to_string()));
    assert!(!files_below(&node.secrets_dir()).contains(&"etcd/member-1.key".to_string()));
}

/// A role's secrets as one `secrets upload` puts them (issue 24 part 2,
/// a boot storm): common/, both roles' folders and two member keys.
fn upload_fleet_tree(p: &Platform) {
    for (path, bytes) in [
        ("common/ca.crt", &b"CA"[..]),
        ("common/shared", b"common version"),
        ("common/token", b"TOKEN"),
        ("compute/worker.key", b"WORKER KEY"),
        ("compute/kube-proxy.kubeconfig", b"KUBECONFIG"),
        ("secure/etcd/ca.crt", b"ETCD CA"),
        ("secure/apiserver.key", b"APISERVER KEY"),
        ("secure/etcd/member-0.key", b"KEY 0"),
        ("secure/etcd/member-1.key", b"KEY 1"),
    ] {
        p.write_local(path, bytes);
    }
    let out = p.nodeboot(&["secrets", "upload", "--env"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_nodes_boot_asks_kms_once_for_what_one_upload_sealed_for_its_role() {
    let p = Platform::new("stg-kms");
    p.aws.reset_calls();
    upload_fleet_tree(&p);
    assert_eq!(
        p.aws.calls().get("GenerateDataKey"),
        Some(&4),
        "one data key per role that reads the upload's secrets, and one per member key"
    );

    let worker = p.node(Role::Compute);
    p.aws.reset_calls();
    let out = worker.stage_secrets(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        files_below(&worker.secrets_dir()),
        ["ca.crt", "kube-proxy.kubeconfig", "shared", "token", "worker.key"]
    );
    assert_eq!(
        p.aws.calls().get("Decrypt"),
        Some(&1),
        "a worker's five secrets: one Decrypt"
    );

    let etcd = p.node(Role::Etcd);
    etcd.claim(1);
    p.aws.reset_calls();
    let out = etcd.stage_secrets(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(etcd.secrets_dir().join("etcd/member-1.key")).unwrap(),
        b"KEY 1"
    );
    assert_eq!(
        p.aws.calls().get("Decrypt"),
        Some(&2),
        "an etcd node: its role's data key and its own member key"
    );
}

#[test]
fn nodes_retry_throttling_in_the_sdks_standard_mode() {
    // What every node command's clients are built from (`aws::sdk_config`):
    // a throttled call (KMS ThrottlingException, S3 SlowDown) is retried by
    // the SDK itself, with exponential backoff and full jitter, before the
    // stage sees a failure (bench/boot-storm.py measures it under a storm).
    let config = runtime().block_on(nodeboot::shared::cloud::aws::sdk_config("eu-west-1"));
    let retry = config.retry_config().expect("a retry config");
    assert_eq!(retry.mode(), aws_config::retry::RetryMode::Standard);
    assert_eq!(retry.max_attempts(), 6);
    assert_eq!(retry.initial_backoff(), std::time::Duration::from_millis(200));
    assert_eq!(retry.max_backoff(), std::time::Duration::from_secs(5));
}

#[test]
fn a_stage_attempt_after_a_failed_one_asks_kms_for_nothing_it_had() {
    use std::io::BufRead;
    let p = Platform::new("stg-again");
    upload_fleet_tree(&p);
    // A worker's secret that does not open: the first attempt unwraps the
    // compute key, then fails (exit 20, which `stage --retry` retries).
    let (good, metadata) = p.get_raw("common/ca.crt");
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 1;
    p.put_raw("common/ca.crt", &bad, &metadata);
    let worker = p.node(Role::Compute);
    p.aws.reset_calls();
    let mut child = worker
        .command(&["stage", "--retry", "secrets"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    let stderr_pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut log = Vec::new();
    while !log.iter().any(|l: &String| l.contains("attempt 1 failed (exit 20)")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) => log.push(line),
            Err(_) => panic!("no failed first attempt within 60 s: {log:#?}"),
        }
    }
    p.put_raw("common/ca.crt", &good, &metadata);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "not done within 60 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    log.extend(seen.try_iter());
    assert!(status.success(), "{log:#?}");
    assert_eq!(std::fs::read(worker.secrets_dir().join("ca.crt")).unwrap(), b"CA");
    assert_eq!(
        p.aws.calls().get("Decrypt"),
        Some(&1),
        "the next attempts took the compute key from the first: {log:#?}"
    );
}

#[test]
fn a_worker_cannot_open_what_was_sealed_for_etcd_nodes_only() {
    let p = Platform::new("stg-slot");
    upload_fleet_tree(&p);
    // An etcd-only object copied into the workers' folder: no compute slot.
    let (body, metadata) = p.get_raw("secure/apiserver.key");
    p.put_raw("compute/apiserver.key", &body, &metadata);
    let worker = p.node(Role::Compute);
    let out = worker.stage_secrets(&[]);
    assert_eq!(out.status.code(), Some(20), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("compute/apiserver.key: refused: the envelope is sealed for [\"secure/\"] only"),
        "{}",
        stderr(&out)
    );
    assert!(files_below(&worker.secrets_dir()).is_empty(), "nothing written");
}

#[test]
fn an_object_sealed_in_format_1_still_opens_on_a_node() {
    use nodeboot::shared::secrets::{format, Context};
    let p = Platform::new("stg-old");
    upload_fleet_tree(&p);
    // What nodeboot before format 4 stored: its own data key, bound to its path.
    let context = Context {
        environment: p.env.name.clone(),
        path: "compute/old-format".into(),
    };
    let key = runtime().block_on(async {
        p.kms
            .generate_data_key()
            .key_id(&p.env.kms_master_id)
            .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
            .set_encryption_context(Some(context.kms().into_iter().collect()))
            .send()
            .await
            .unwrap()
    });
    let sealed = format::seal(
        &nodeboot::shared::secret::Secret::new(key.plaintext().unwrap().as_ref().to_vec()),
        key.ciphertext_blob().unwrap().as_ref(),
        &context,
        b"OLD",
    )
    .unwrap();
    let metadata = HashMap::from([("nodeboot-format".to_string(), "1".to_string())]);
    p.put_raw("compute/old-format", &sealed, &metadata);

    let worker = p.node(Role::Compute);
    let out = worker.stage_secrets(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(worker.secrets_dir().join("old-format")).unwrap(), b"OLD");
}

#[test]
fn stage_secrets_with_a_tampered_object_fails_naming_it_and_writes_nothing() {
    let p = Platform::new("stg-tamper");
    upload_role_tree(&p);
    let (mut body, metadata) = p.get_raw("secure/etcd/peer.key");
    let last = body.len() - 1;
    body[last] ^= 0x80;
    p.put_raw("secure/etcd/peer.key", &body, &metadata);
    let node = p.node(Role::Etcd);
    node.claim(0);
    let out = node.stage_secrets(&[]);
    assert_eq!(out.status.code(), Some(20), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("secure/etcd/peer.key: refused"),
        "{}",
        stderr(&out)
    );
    assert!(
        files_below(&node.secrets_dir()).is_empty(),
        "nothing written: {:?}",
        files_below(&node.secrets_dir())
    );
}

#[test]
fn stage_secrets_rerun_keeps_unchanged_files_and_removes_deleted_ones() {
    let p = Platform::new("stg-rerun");
    upload_role_tree(&p);
    let node = p.node(Role::Etcd);
    node.claim(0);
    assert!(node.stage_secrets(&[]).status.success());
    let dir = node.secrets_dir();
    let inode = |f: &str| std::fs::metadata(dir.join(f)).unwrap().ino();
    let before = inode("ca.crt");
    std::fs::write(dir.join("added-by-hand"), "mine").unwrap();

    p.remove("secure/etcd/peer.key");
    p.upload("common/ca.crt", b"CA v2");
    let out = node.stage_secrets(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        files_below(&dir),
        ["added-by-hand", "ca.crt", "shared"],
        "peer.key removed, the hand-made file kept"
    );
    assert_eq!(std::fs::read(dir.join("ca.crt")).unwrap(), b"CA v2");
    assert_ne!(inode("ca.crt"), before);
    let shared = inode("shared");
    assert!(node.stage_secrets(&[]).status.success());
    assert_eq!(inode("shared"), shared, "an unchanged secret is not rewritten");
}

#[test]
fn stage_secrets_gives_the_directory_and_files_to_the_owner() {
    if !common::bed::require_root("chown to another user") {
        return;
    }
    let p = Platform::new("stg-owner");
    upload_role_tree(&p);
    let node = p.node(Role::Compute);
    let out = node.stage_secrets(&["--owner", "4242:4343"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for f in ["", "ca.crt", "worker.key"] {
        let meta = std::fs::metadata(node.secrets_dir().join(f)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4242, 4343), "{f:?}");
    }
    let out = node.stage_secrets(&["--owner", "core"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn secrets_never_show_in_debug_output() {
    let p = Platform::new("sec-log");
    p.upload("common/token", b"s3cr3t-value");
    let node = p.node(Role::Etcd);
    node.claim(0);
    let out = node
        .command(&["stage", "secrets"])
        .env("NODEBOOT_LOG", "trace")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("s3cr3t"), "a secret reached the log");
}

#[test]
fn stage_secrets_killed_after_its_first_write_converges_on_rerun() {
    let p = Platform::new("stg-abort");
    upload_role_tree(&p);
    let node = p.node(Role::Etcd);
    node.claim(0);
    let out = node
        .command(&["stage", "secrets"])
        .env(nodeboot::shared::fault::VAR, "sync-after-write")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the fault point was reached");
    assert_eq!(files_below(&node.secrets_dir()).len(), 1, "killed after one file");
    let out = node.stage_secrets(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(files_below(&node.secrets_dir()), ["ca.crt", "etcd/peer.key", "shared"]);
    p.remove("common/ca.crt");
    assert!(node.stage_secrets(&[]).status.success());
    assert_eq!(
        files_below(&node.secrets_dir()),
        ["etcd/peer.key", "shared"],
        "a file written before the abort is removed like any other"
    );
}
