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
    let out = Command::new("openssl").args(args).output().expect("openssl is installed");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in walk(dir) {
        files.insert(entry.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&entry).unwrap());
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
        let verified = openssl(&["verify", "-CAfile", ca.to_str().unwrap(), "-purpose", "sslserver", cert.to_str().unwrap()]);
        assert!(verified.trim().ends_with(": OK"), "{verified}");
        openssl(&["verify", "-CAfile", ca.to_str().unwrap(), "-purpose", "sslclient", cert.to_str().unwrap()]);
        let sans = openssl(&["x509", "-noout", "-ext", "subjectAltName", "-in", cert.to_str().unwrap()]);
        for want in [format!("IP Address:{ip}"), "IP Address:127.0.0.1".into(), format!("DNS:etcd-{i}.example.internal")] {
            assert!(sans.contains(&want), "member {i} lacks {want}: {sans}");
        }
        let subject = openssl(&["x509", "-noout", "-subject", "-in", cert.to_str().unwrap()]);
        assert!(subject.contains(&format!("example-etcd-{i}")), "{subject}");
        let mode = std::fs::metadata(etcd.join(format!("member-{i}.key"))).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "member-{i}.key");
    }
    let client = etcd.join("client.crt");
    openssl(&["verify", "-CAfile", ca.to_str().unwrap(), "-purpose", "sslclient", client.to_str().unwrap()]);
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
    for id in ["kubernetes-ca", "apiserver", "admin", "admin-kubeconfig", "kubelet-kubeconfig"] {
        assert!(out.contains(&format!("created  {id}\n")), "{id} not re-issued:\n{out}");
    }
    assert!(out.contains("kept     etcd-ca") && out.contains("kept     etcd-member-0"), "other CAs untouched:\n{out}");
    let after = snapshot(dir.path());
    assert_eq!(before["secure/etcd/ca.crt"], after["secure/etcd/ca.crt"]);
    assert_ne!(before["common/ca.crt"], after["common/ca.crt"]);
    let ca = dir.path().join("common/ca.crt");
    openssl(&["verify", "-CAfile", ca.to_str().unwrap(), dir.path().join("secure/apiserver.crt").to_str().unwrap()]);
    let bad = nodeboot(&["pki", "--env", example_env().to_str().unwrap(), "--dir", dir.path().to_str().unwrap(), "--rotate", "nope"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("--rotate nope: no such certificate"));
}

#[test]
fn kubernetes_certificates_carry_what_each_component_needs() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let ca = dir.path().join("common/ca.crt");
    let cert = |p: &str| dir.path().join(p).display().to_string();
    let apiserver = openssl(&["x509", "-noout", "-ext", "subjectAltName", "-in", &cert("secure/apiserver.crt")]);
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
    openssl(&["verify", "-CAfile", ca.to_str().unwrap(), "-purpose", "sslserver", &cert("secure/apiserver.crt")]);
    let admin = openssl(&["x509", "-noout", "-subject", "-in", &cert("ca/admin.crt")]);
    assert!(admin.contains("O = system:masters") && admin.contains("CN = kubernetes-admin"), "{admin}");
    let front = dir.path().join("secure/front-proxy-ca.crt");
    openssl(&["verify", "-CAfile", front.to_str().unwrap(), "-purpose", "sslclient", &cert("secure/front-proxy-client.crt")]);
    // Private keys of CAs stay local: not in a folder that is uploaded.
    for folder in ["common", "secure", "compute"] {
        for f in walk(&dir.path().join(folder)) {
            let name = f.display().to_string();
            assert!(!name.contains("ca.key") && !name.ends_with("-ca.key"), "{name}: a CA key in an uploaded folder");
        }
    }
    assert_eq!(std::fs::metadata(dir.path().join("secure/sa.key")).unwrap().permissions().mode() & 0o777, 0o600);
    // The admin kubeconfig: kubectl's own parser accepts it when present;
    // otherwise check its embedded client certificate against the CA.
    let kubeconfig: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("ca/admin.kubeconfig")).unwrap()).unwrap();
    assert_eq!(kubeconfig["clusters"][0]["cluster"]["server"], "https://kube-example.example.com");
    use base64::Engine;
    let embedded = base64::engine::general_purpose::STANDARD.decode(kubeconfig["users"][0]["user"]["client-certificate-data"].as_str().unwrap()).unwrap();
    let embedded_path = dir.path().join("embedded.crt");
    std::fs::write(&embedded_path, embedded).unwrap();
    openssl(&["verify", "-CAfile", ca.to_str().unwrap(), "-purpose", "sslclient", embedded_path.to_str().unwrap()]);
}

#[test]
fn the_admin_kubeconfig_stays_out_of_every_uploaded_folder_and_an_old_one_is_moved() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    for folder in ["common", "secure", "compute", "manifests"] {
        let folder = dir.path().join(folder);
        for f in if folder.exists() { walk(&folder) } else { Vec::new() } {
            assert!(!f.display().to_string().contains("admin"), "{}: the admin's credentials in an uploaded folder", f.display());
        }
    }
    // A tree an older nodeboot made: the kubeconfig in secure/, where `secrets upload` takes it from.
    let new = dir.path().join("ca/admin.kubeconfig");
    let old = dir.path().join("secure/kubeconfig_admin");
    let bytes = std::fs::read(&new).unwrap();
    std::fs::rename(&new, &old).unwrap();
    let env = example_env();
    let run = nodeboot(&["pki", "--env", env.to_str().unwrap(), "--dir", dir.path().to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    let printed = format!("{}{}", String::from_utf8_lossy(&run.stdout), stderr(&run));
    assert!(!old.exists(), "moved out of secure/");
    assert_eq!(std::fs::read(&new).unwrap(), bytes, "the same credentials, not new ones");
    assert!(printed.contains("secrets rm") && printed.contains("secure/kubeconfig_admin"), "says how to remove the bucket's copy:\n{printed}");
}
