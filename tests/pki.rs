//! `nodeboot pki`: certificates checked by an independent verifier
//! (`openssl verify`), their SANs, key modes, and reruns that change nothing.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;

fn pki(out: &Path) -> String {
    let run = nodeboot(&["pki", "--env", example_env().to_str().unwrap(), "--out", out.to_str().unwrap()]);
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
    let etcd = dir.path().join("etcd");
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
    assert!(first.contains("created etcd/ca"));
    let before = snapshot(dir.path());
    let second = pki(dir.path());
    assert!(!second.contains("created"), "{second}");
    assert!(second.contains("kept    etcd/member-0"));
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn a_new_ca_reissues_what_it_signs() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    std::fs::remove_file(dir.path().join("etcd/ca.key")).unwrap();
    let out = pki(dir.path());
    assert!(out.contains("created etcd/ca") && out.contains("created etcd/member-0") && out.contains("created etcd/client"), "{out}");
    let etcd = dir.path().join("etcd");
    openssl(&["verify", "-CAfile", etcd.join("ca.crt").to_str().unwrap(), etcd.join("member-2.crt").to_str().unwrap()]);
}
