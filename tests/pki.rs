//! `nodeboot pki`: certificates checked by an independent verifier
//! (`openssl verify`), their SANs, key modes, and reruns that change nothing.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;

fn pki(out: &Path) -> String {
    pki_with(out, &[])
}

fn pki_with(out: &Path, extra: &[&str]) -> String {
    let env = example_env();
    let mut args = vec!["pki", "--env", env.to_str().unwrap(), "--dir", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let run = nodeboot(&args);
    assert!(run.status.success(), "{}", stderr(&run));
    String::from_utf8_lossy(&run.stdout).into_owned()
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in walk(dir) {
        files.insert(
            entry.strip_prefix(dir).unwrap().display().to_string(),
            std::fs::read(&entry).unwrap(),
        );
    }
    files
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn etcd_certificates_verify_against_their_ca_with_the_member_addresses() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let etcd = dir.path().join("secure/etcd");
    let ca = etcd.join("ca.crt");
    for (i, ip) in ["10.80.10.10", "10.80.11.10", "10.80.12.10"].iter().enumerate() {
        let cert = etcd.join(format!("member-{i}.crt"));
        let verified = openssl(&[
            "verify",
            "-CAfile",
            ca.to_str().unwrap(),
            "-purpose",
            "sslserver",
            cert.to_str().unwrap(),
        ]);
        assert!(verified.trim().ends_with(": OK"), "{verified}");
        openssl(&[
            "verify",
            "-CAfile",
            ca.to_str().unwrap(),
            "-purpose",
            "sslclient",
            cert.to_str().unwrap(),
        ]);
        let sans = openssl(&[
            "x509",
            "-noout",
            "-ext",
            "subjectAltName",
            "-in",
            cert.to_str().unwrap(),
        ]);
        for want in [
            format!("IP Address:{ip}"),
            "IP Address:127.0.0.1".into(),
            format!("DNS:etcd-{i}.example.internal"),
        ] {
            assert!(sans.contains(&want), "member {i} lacks {want}: {sans}");
        }
        let subject = openssl(&["x509", "-noout", "-subject", "-in", cert.to_str().unwrap()]);
        assert!(subject.contains(&format!("example-etcd-{i}")), "{subject}");
        let mode = std::fs::metadata(etcd.join(format!("member-{i}.key")))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "member-{i}.key");
    }
    let client = etcd.join("client.crt");
    openssl(&[
        "verify",
        "-CAfile",
        ca.to_str().unwrap(),
        "-purpose",
        "sslclient",
        client.to_str().unwrap(),
    ]);
    let ca_text = openssl(&["x509", "-noout", "-text", "-in", ca.to_str().unwrap()]);
    assert!(ca_text.contains("CA:TRUE"), "{ca_text}");
}

#[test]
fn a_second_run_changes_no_byte() {
    let dir = tempfile::tempdir().unwrap();
    let first = pki(dir.path());
    assert!(first.contains("created  etcd-ca"));
    let before = snapshot(dir.path());
    let second = pki(dir.path());
    assert!(!second.contains("created"), "{second}");
    assert!(second.contains("kept     etcd-member-0"));
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn rotating_a_ca_reissues_what_it_signs_and_its_kubeconfigs() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let before = snapshot(dir.path());
    let out = pki_with(dir.path(), &["--rotate", "kubernetes-ca"]);
    for id in [
        "kubernetes-ca",
        "apiserver",
        "admin",
        "admin-kubeconfig",
        "bootstrap-token-kubeconfigs",
    ] {
        assert!(out.contains(&format!("created  {id}\n")), "{id} not re-issued:\n{out}");
    }
    assert!(
        out.contains("kept     etcd-ca") && out.contains("kept     etcd-member-0"),
        "other CAs untouched:\n{out}"
    );
    let after = snapshot(dir.path());
    assert_eq!(before["secure/etcd/ca.crt"], after["secure/etcd/ca.crt"]);
    assert_ne!(before["common/ca.crt"], after["common/ca.crt"]);
    let ca = dir.path().join("common/ca.crt");
    openssl(&[
        "verify",
        "-CAfile",
        ca.to_str().unwrap(),
        dir.path().join("secure/apiserver.crt").to_str().unwrap(),
    ]);
    let bad = nodeboot(&[
        "pki",
        "--env",
        example_env().to_str().unwrap(),
        "--dir",
        dir.path().to_str().unwrap(),
        "--rotate",
        "nope",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("--rotate nope: no such certificate"));
}

#[test]
fn kubernetes_certificates_carry_what_each_component_needs() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let ca = dir.path().join("common/ca.crt");
    let cert = |p: &str| dir.path().join(p).display().to_string();
    let apiserver = openssl(&[
        "x509",
        "-noout",
        "-ext",
        "subjectAltName",
        "-in",
        &cert("secure/apiserver.crt"),
    ]);
    for want in [
        "DNS:kube-example.example.com",
        "DNS:kubeapi.example.internal",
        "DNS:kubernetes.default.svc.cluster.local",
        "IP Address:10.32.0.1",
        "IP Address:10.80.10.10",
        "IP Address:10.80.12.10",
    ] {
        assert!(apiserver.contains(want), "apiserver lacks {want}: {apiserver}");
    }
    openssl(&[
        "verify",
        "-CAfile",
        ca.to_str().unwrap(),
        "-purpose",
        "sslserver",
        &cert("secure/apiserver.crt"),
    ]);
    let admin = openssl(&["x509", "-noout", "-subject", "-in", &cert("ca/admin.crt")]);
    assert!(
        admin.contains("O = system:masters") && admin.contains("CN = kubernetes-admin"),
        "{admin}"
    );
    let front = dir.path().join("secure/front-proxy-ca.crt");
    openssl(&[
        "verify",
        "-CAfile",
        front.to_str().unwrap(),
        "-purpose",
        "sslclient",
        &cert("secure/front-proxy-client.crt"),
    ]);
    // Private keys of CAs stay local (not in a folder that is uploaded),
    // except the cluster CA's, which the control plane's controller-manager
    // signs kubelet certificates with.
    for folder in ["common", "secure", "compute"] {
        for f in walk(&dir.path().join(folder)) {
            let name = f.strip_prefix(dir.path()).unwrap().display().to_string();
            assert!(
                name == "secure/ca.key" || !name.ends_with("ca.key"),
                "{name}: a CA key in an uploaded folder"
            );
        }
    }
    let public_of_key = openssl(&["pkey", "-pubout", "-in", &cert("secure/ca.key")]);
    let public_of_cert = openssl(&["x509", "-noout", "-pubkey", "-in", &cert("common/ca.crt")]);
    assert_eq!(public_of_key, public_of_cert, "secure/ca.key is the cluster CA's key");
    assert_eq!(
        std::fs::metadata(dir.path().join("secure/sa.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // The admin kubeconfig: kubectl's own parser accepts it when present;
    // otherwise check its embedded client certificate against the CA.
    let kubeconfig: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("ca/admin.kubeconfig")).unwrap()).unwrap();
    assert_eq!(
        kubeconfig["clusters"][0]["cluster"]["server"],
        "https://kube-example.example.com"
    );
    use base64::Engine;
    let embedded = base64::engine::general_purpose::STANDARD
        .decode(
            kubeconfig["users"][0]["user"]["client-certificate-data"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let embedded_path = dir.path().join("embedded.crt");
    std::fs::write(&embedded_path, embedded).unwrap();
    openssl(&[
        "verify",
        "-CAfile",
        ca.to_str().unwrap(),
        "-purpose",
        "sslclient",
        embedded_path.to_str().unwrap(),
    ]);
}

#[test]
fn the_admin_kubeconfig_stays_out_of_every_uploaded_folder_and_an_old_one_is_moved() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    for folder in ["common", "secure", "compute", "manifests"] {
        let folder = dir.path().join(folder);
        for f in if folder.exists() { walk(&folder) } else { Vec::new() } {
            assert!(
                !f.display().to_string().contains("admin"),
                "{}: the admin's credentials in an uploaded folder",
                f.display()
            );
        }
    }
    // A tree an older nodeboot made: the kubeconfig in secure/, where `secrets upload` takes it from.
    let new = dir.path().join("ca/admin.kubeconfig");
    let old = dir.path().join("secure/kubeconfig_admin");
    let bytes = std::fs::read(&new).unwrap();
    std::fs::rename(&new, &old).unwrap();
    let env = example_env();
    let run = nodeboot(&[
        "pki",
        "--env",
        env.to_str().unwrap(),
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let printed = format!("{}{}", String::from_utf8_lossy(&run.stdout), stderr(&run));
    assert!(!old.exists(), "moved out of secure/");
    assert_eq!(
        std::fs::read(&new).unwrap(),
        bytes,
        "the same credentials, not new ones"
    );
    assert!(
        printed.contains("secrets rm") && printed.contains("secure/kubeconfig_admin"),
        "says how to remove the bucket's copy:\n{printed}"
    );
}

#[test]
fn no_shared_kubelet_identity_is_issued() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    for f in walk(dir.path()) {
        let text = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&text).contains("system:node:nodeboot"),
            "{}",
            f.display()
        );
        if f.extension().is_some_and(|e| e == "crt") {
            let subject = openssl(&["x509", "-noout", "-subject", "-in", f.to_str().unwrap()]);
            assert!(
                !subject.contains("system:nodes"),
                "{}: a node certificate made ahead of time: {subject}",
                f.display()
            );
        }
    }
    assert!(!dir.path().join("common/kubelet.kubeconfig").exists());
}

#[test]
fn an_old_tree_keeps_its_cluster_ca_when_the_key_moves_to_the_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let ca = std::fs::read(dir.path().join("common/ca.crt")).unwrap();
    // A tree made before: the key in ca/, never uploaded.
    std::fs::create_dir_all(dir.path().join("ca")).unwrap();
    std::fs::rename(
        dir.path().join("secure/ca.key"),
        dir.path().join("ca/kubernetes-ca.key"),
    )
    .unwrap();
    let out = pki(dir.path());
    assert!(out.contains("kept     kubernetes-ca"), "{out}");
    assert_eq!(std::fs::read(dir.path().join("common/ca.crt")).unwrap(), ca);
    assert!(dir.path().join("secure/ca.key").exists() && !dir.path().join("ca/kubernetes-ca.key").exists());
}

#[test]
fn the_listing_names_every_certificate_and_the_token_with_its_expiry() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let listed: Vec<serde_json::Value> = serde_json::from_str(&pki_with(dir.path(), &["--output", "json"])).unwrap();
    let env = nodeboot::operator::env::load(&example_env()).unwrap().env;
    let plan = nodeboot::operator::pki::plan(&env);
    let ids: Vec<&str> = listed.iter().map(|i| i["id"].as_str().unwrap()).collect();
    let mut want: Vec<&str> = plan.certs.iter().map(|c| c.id.as_str()).collect();
    want.push("bootstrap-token");
    assert_eq!(ids, want);
    for item in &listed {
        let path = dir.path().join(item["path"].as_str().unwrap());
        let days = item["days_left"].as_i64().unwrap();
        if item["kind"] == "bootstrap-token" {
            assert!(
                (nodeboot::operator::pki::BOOTSTRAP_TOKEN_VALIDITY_DAYS - 1
                    ..=nodeboot::operator::pki::BOOTSTRAP_TOKEN_VALIDITY_DAYS)
                    .contains(&days),
                "{item}"
            );
            continue;
        }
        // openssl's view of the end date agrees.
        let end = openssl(&["x509", "-noout", "-enddate", "-in", path.to_str().unwrap()]);
        let date = std::process::Command::new("date")
            .args([
                "-u",
                "-d",
                end.trim().trim_start_matches("notAfter="),
                "+%Y-%m-%dT%H:%M:%SZ",
            ])
            .output()
            .unwrap();
        assert_eq!(
            item["not_after"].as_str().unwrap(),
            String::from_utf8_lossy(&date.stdout).trim(),
            "{item}"
        );
        let id = item["id"].as_str().unwrap();
        let want = if item["kind"] == "ca" {
            nodeboot::operator::pki::CA_VALIDITY_DAYS
        } else if let Some(i) = id.strip_prefix("etcd-member-") {
            // Staggered a week apart (see member_certificates_end_a_week_apart).
            nodeboot::operator::pki::LEAF_VALIDITY_DAYS - 7 * i.parse::<i64>().unwrap()
        } else {
            nodeboot::operator::pki::LEAF_VALIDITY_DAYS
        };
        assert!(days == want || days == want - 1, "{item}: {days} days");
    }
}

/// A certificate that ends within 35 days is renewed by `--renew`, with what
/// depends on it; the rest is kept byte for byte.
#[test]
fn renew_reissues_only_what_ends_soon() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    // Make the scheduler's certificate end in 10 days (signed by the same CA).
    let cert = dir.path().join("ca/scheduler.crt");
    let key = dir.path().join("ca/scheduler.key");
    let csr = dir.path().join("s.csr");
    openssl(&[
        "req",
        "-new",
        "-key",
        key.to_str().unwrap(),
        "-subj",
        "/CN=system:kube-scheduler",
        "-out",
        csr.to_str().unwrap(),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        csr.to_str().unwrap(),
        "-CA",
        dir.path().join("common/ca.crt").to_str().unwrap(),
        "-CAkey",
        dir.path().join("secure/ca.key").to_str().unwrap(),
        "-days",
        "10",
        "-out",
        cert.to_str().unwrap(),
    ]);
    let before = snapshot(dir.path());
    let warned = nodeboot(&[
        "pki",
        "--env",
        example_env().to_str().unwrap(),
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&warned.stdout).into_owned();
    assert!(
        said.contains("expiring scheduler in 9 days") || said.contains("expiring scheduler in 10 days"),
        "{said}"
    );
    assert_eq!(snapshot(dir.path()), before, "without --renew nothing changes");
    let out = pki_with(dir.path(), &["--renew"]);
    assert!(
        out.contains("created  scheduler\n") && out.contains("created  scheduler-kubeconfig\n"),
        "{out}"
    );
    let after = snapshot(dir.path());
    let changed: Vec<&String> = after.keys().filter(|k| before.get(*k) != after.get(*k)).collect();
    assert_eq!(
        changed,
        ["ca/scheduler.crt", "ca/scheduler.key", "secure/scheduler.kubeconfig"]
    );
}

#[test]
fn rotating_the_bootstrap_token_and_the_encryption_key() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let token = |folder: &str| -> String {
        let kc: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join(format!("{folder}/bootstrap-kubelet.kubeconfig"))).unwrap(),
        )
        .unwrap();
        kc["users"][0]["user"]["token"].as_str().unwrap().to_string()
    };
    let old = token("compute");
    assert_eq!(old, token("secure"));
    let out = pki_with(dir.path(), &["--rotate", "bootstrap-token"]);
    assert!(out.contains("created  bootstrap-token\n"), "{out}");
    assert_ne!(token("compute"), old);
    assert_eq!(token("compute"), token("secure"));
    let secret: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("secure/addons/bootstrap-token.yaml")).unwrap()).unwrap();
    assert_eq!(
        format!(
            "{}.{}",
            secret["stringData"]["token-id"].as_str().unwrap(),
            secret["stringData"]["token-secret"].as_str().unwrap()
        ),
        token("compute")
    );

    let keys = |_: ()| -> Vec<String> {
        let c: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("secure/encryption-config.yaml")).unwrap()).unwrap();
        c["resources"][0]["providers"][0]["aescbc"]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["secret"].as_str().unwrap().to_string())
            .collect()
    };
    let first = keys(());
    assert_eq!(first.len(), 1);
    std::thread::sleep(std::time::Duration::from_millis(1100)); // key names carry the second
    pki_with(dir.path(), &["--rotate", "encryption-key"]);
    let second = keys(());
    assert_eq!(second.len(), 2);
    // Step 1 of the upstream rotation: the new key is added second, so every
    // API server can read with it before any writes with it.
    assert_eq!(
        second[0], first[0],
        "the old key still writes until every API server reads the new one"
    );
    assert_ne!(second[1], first[0]);
}

/// What `stage secrets` places on a node of `role`: `common/` and the role's
/// folder, the role's file winning on a clash.
fn node_view(dir: &Path, role: nodeboot::shared::role::Role) -> BTreeMap<String, Vec<u8>> {
    let mut view = BTreeMap::new();
    let Some(folder) = nodeboot::shared::secrets::layout::role_folder(role) else {
        return view;
    };
    for top in ["common", folder] {
        let base = dir.join(top);
        if base.is_dir() {
            for f in walk(&base) {
                view.insert(
                    f.strip_prefix(&base).unwrap().display().to_string(),
                    std::fs::read(&f).unwrap(),
                );
            }
        }
    }
    view
}

#[test]
fn no_compute_node_gets_a_control_plane_or_etcd_secret() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut forbidden: Vec<(String, Vec<u8>)> = [
        "secure/ca.key",
        "secure/sa.key",
        "ca/admin.kubeconfig",
        "secure/addons-applier.kubeconfig",
        "secure/encryption-config.yaml",
        "secure/addons/bootstrap-token.yaml",
    ]
    .iter()
    .map(|p| (p.to_string(), std::fs::read(dir.path().join(p)).unwrap()))
    .collect();
    // Every etcd key, and the keys of the CAs and control-plane clients kept
    // in ca/ (kube-proxy's own key is a worker's credential: allowed).
    for f in walk(&dir.path().join("secure/etcd"))
        .into_iter()
        .chain(walk(&dir.path().join("ca")))
    {
        if f.extension().is_some_and(|e| e == "key") && !f.ends_with("kube-proxy.key") {
            forbidden.push((
                f.strip_prefix(dir.path()).unwrap().display().to_string(),
                std::fs::read(&f).unwrap(),
            ));
        }
    }
    // The six named files, at least three etcd keys and one key in ca/.
    let at_least = 6 + 3 + 1;
    assert!(
        forbidden.len() >= at_least,
        "{:?}",
        forbidden.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    let compute = node_view(dir.path(), nodeboot::shared::role::Role::Compute);
    assert!(
        compute.contains_key("bootstrap-kubelet.kubeconfig") && compute.contains_key("ca.crt"),
        "{:?}",
        compute.keys()
    );
    for (name, bytes) in &compute {
        let text = String::from_utf8_lossy(bytes);
        for (secret, secret_bytes) in &forbidden {
            let raw = String::from_utf8_lossy(secret_bytes);
            assert!(
                !text.contains(raw.trim()) && !text.contains(&b64(secret_bytes)),
                "compute gets {secret} inside {name}"
            );
        }
    }
    assert!(
        node_view(dir.path(), nodeboot::shared::role::Role::Bastion).is_empty(),
        "the bastion pulls no secrets"
    );
    // The checker can fail: the control plane does hold them.
    let etcd = node_view(dir.path(), nodeboot::shared::role::Role::Etcd);
    assert_eq!(etcd["ca.key"], std::fs::read(dir.path().join("secure/ca.key")).unwrap());
    assert!(
        etcd.contains_key("sa.key")
            && etcd.contains_key("addons-applier.kubeconfig")
            && etcd.contains_key("encryption-config.yaml")
    );
    // ... but not the operator's admin kubeconfig (ca/ is never uploaded).
    assert!(
        !etcd.contains_key("admin.kubeconfig") && !etcd.contains_key("kubeconfig_admin"),
        "{:?}",
        etcd.keys()
    );
}

/// The test-only validity (`pki --test-validity-secs N`, hidden): leaf
/// certificates issued in that run end N seconds after they start (the lab's
/// expired-certificate tests need ends within minutes); CAs keep theirs, and a
/// later run without it keeps those certificates until `--renew` replaces them.
#[test]
fn a_test_validity_issues_leaf_certificates_that_end_within_minutes() {
    let dir = tempfile::tempdir().unwrap();
    pki_with(dir.path(), &["--test-validity-secs", "120"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let end = |path: &str| {
        nodeboot::operator::pki::not_after(&dir.path().join(path))
            .unwrap()
            .unix_timestamp()
    };
    for leaf in [
        "secure/etcd/member-0.crt",
        "secure/etcd/client.crt",
        "secure/apiserver.crt",
    ] {
        let left = end(leaf) - now;
        assert!((100..=120).contains(&left), "{leaf} ends in {left} s");
    }
    assert!(
        end("secure/etcd/ca.crt") - now > 3000 * 86_400,
        "a CA keeps its validity"
    );
    // The listing says what each end calls for, and warns.
    let table = pki_with(dir.path(), &["--output", "table"]);
    let member = table.lines().find(|l| l.starts_with("etcd-member-0 ")).unwrap();
    assert!(member.contains(" renew "), "{member}");
    let ca = table.lines().find(|l| l.starts_with("etcd-ca ")).unwrap();
    assert!(ca.contains(" ok "), "{ca}");
    let warning = table.lines().last().unwrap();
    assert!(
        warning.starts_with("warning: ") && warning.contains("etcd-member-0 (0 days)") && !warning.contains("etcd-ca"),
        "{warning}"
    );
    let listed: Vec<serde_json::Value> = serde_json::from_str(&pki_with(dir.path(), &["--output", "json"])).unwrap();
    let due = |id: &str| listed.iter().find(|i| i["id"] == id).unwrap()["due"].clone();
    assert_eq!(
        (due("apiserver"), due("kubernetes-ca"), due("bootstrap-token")),
        ("renew".into(), "ok".into(), "ok".into())
    );
    let out = pki(dir.path());
    assert!(
        out.contains("kept     etcd-member-0\n") && out.contains("expiring etcd-member-0 in 0 days"),
        "{out}"
    );
    let out = pki_with(dir.path(), &["--renew"]);
    assert!(out.contains("created  etcd-member-0\n"), "{out}");
    assert!(end("secure/etcd/member-0.crt") - now > 300 * 86_400);
}

/// kops#12620: member certificates issued together ended together. Each
/// member's ends a week from the others'; renewing one keeps it clear of the
/// others that stay.
#[test]
fn member_certificates_end_a_week_apart() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let end = |i: u32| {
        nodeboot::operator::pki::not_after(&dir.path().join(format!("secure/etcd/member-{i}.crt")))
            .unwrap()
            .unix_timestamp()
    };
    let week = 7 * 86_400;
    let first = end(0);
    for i in 1..3 {
        assert!((first - end(i) - i as i64 * week).abs() < 60, "member {i}");
    }
    // Issued again now, alone: a year from now is member 0's day, so it
    // ends a week before, clear of both others, which are kept.
    let member_2 = end(2);
    pki_with(dir.path(), &["--rotate", "etcd-member-1"]);
    assert!((first - end(1) - week).abs() < 60, "member 1: {} {first}", end(1));
    assert_eq!(end(2), member_2, "the others are kept");
    // All ending within 35 days (the test validity staggers by a fiftieth of
    // it), renewed together: a week apart again.
    let twenty_days = (20 * 86_400).to_string();
    pki_with(
        dir.path(),
        &["--rotate", "etcd-ca", "--test-validity-secs", &twenty_days],
    );
    assert!(end(0) - end(2) < 86_400, "within the test validity");
    let out = pki_with(dir.path(), &["--renew"]);
    assert!(out.contains("created  etcd-member-2\n"), "{out}");
    let ends: Vec<i64> = (0..3).map(end).collect();
    for a in 0..3 {
        for b in 0..a {
            assert!((ends[a] - ends[b]).abs() >= week - 60, "{ends:?}");
        }
    }
}

/// `up`'s renewal (`Options::keep_cas`) never rotates a CA by itself: a new
/// CA changes everything it signs at once, and what trusts only the old one
/// (members not yet restarted, kubelets) refuses the new certificates. A CA
/// that ends within 35 days is reported for a deliberate rotation instead;
/// `pki --renew` still renews it.
#[test]
fn ups_renewal_leaves_an_ending_ca_to_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    // The etcd CA re-made by openssl with its own key, ending in 10 days.
    let ca = dir.path().join("secure/etcd/ca.crt");
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        dir.path().join("ca/etcd-ca.key").to_str().unwrap(),
        "-subj",
        "/CN=example-etcd-ca",
        "-days",
        "10",
        "-out",
        ca.to_str().unwrap(),
    ]);
    let before = snapshot(dir.path());
    let env = nodeboot::operator::env::load(&example_env()).unwrap().env;
    let plan = nodeboot::operator::pki::plan(&env);
    let options = nodeboot::operator::pki::Options {
        renew: true,
        keep_cas: true,
        ..Default::default()
    };
    let outcome = nodeboot::operator::pki::ensure_with(dir.path(), &plan, &options).unwrap();
    assert!(outcome.renewed.is_empty(), "{:?}", outcome.renewed);
    assert!(
        matches!(outcome.cas_ending.as_slice(), [(id, 9 | 10)] if id == "etcd-ca"),
        "{:?}",
        outcome.cas_ending
    );
    assert_eq!(snapshot(dir.path()), before, "nothing changed");
    let out = pki_with(dir.path(), &["--renew"]);
    assert!(
        out.contains("created  etcd-ca\n") && out.contains("created  etcd-member-0\n"),
        "{out}"
    );
}
