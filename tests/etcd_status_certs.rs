//! `nodeboot etcd status` and certificate ends (issue 21) against a real
//! etcd 3.5 cluster of three members: the end of the certificate each
//! member serves, read from the TLS handshake (what the member's node
//! holds, not the operator's tree; etcd reads its files again for each new
//! connection), and of the client certificate used; exit 32 within 14 days
//! of an end. The handshake reads
//! the certificate of a member whose certificate has ended and tells that
//! apart from a member that is down.

mod common;

use std::path::Path;
use std::time::Duration;

use common::etcd::*;
use common::secrets_bed::Platform;
use common::stderr;
use nodeboot::shared::etcd::served::{served_certificate, Refusal};
use nodeboot::shared::etcd::{Client, TlsFiles};

/// Member `i`'s files as its node holds them (`/run/nodeboot/secrets`): a
/// copy of the tree's, which the secrets sync replaces when the bucket's change.
fn node_tls(dir: &Path, etcd_dir: &Path, i: u32) -> TlsFiles {
    let node = dir.join(format!("node-{i}"));
    std::fs::create_dir_all(&node).unwrap();
    let tree = member_tls(etcd_dir, i);
    let files = TlsFiles {
        ca: node.join("ca.crt"),
        cert: node.join("member.crt"),
        key: node.join("member.key"),
    };
    for (from, to) in [
        (&tree.ca, &files.ca),
        (&tree.cert, &files.cert),
        (&tree.key, &files.key),
    ] {
        let tmp = to.with_extension("tmp");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
    files
}

/// Three members started from their nodes' copies.
fn start_members(dir: &Path, etcd_dir: &Path) -> Vec<Member> {
    let ports: Vec<Ports> = (0..3).map(|_| Ports::free()).collect();
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("m{i}={}", p.peer_url()))
        .collect();
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let tls = node_tls(dir, etcd_dir, i as u32);
            Member::start(dir, &tls, &format!("m{i}"), p, &initial.join(","), "new")
        })
        .collect()
}

fn pki(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nodeboot"))
        .args(["pki", "--env", common::example_env().to_str().unwrap(), "--dir"])
        .arg(dir.join("secrets"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

fn status(p: &Platform, dir: &Path, urls: &[String]) -> (Option<i32>, serde_json::Value, String) {
    let mut args: Vec<String> = urls.iter().map(|u| format!("--endpoint={u}")).collect();
    args.extend([
        format!("--dir={}", dir.join("secrets").display()),
        "--output=json".into(),
    ]);
    let more: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = p.nodeboot(&["etcd", "status", "--env"], &more);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    (out.status.code(), report, stderr(&out))
}

fn days(report: &serde_json::Value) -> Vec<i64> {
    report["certificates"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["days_left"].as_i64().unwrap())
        .collect()
}

#[test]
fn etcd_status_shows_the_served_and_client_certificate_ends_and_fails_within_14_days() {
    let p = Platform::new("st-certs");
    let dir = tempfile::tempdir().unwrap();
    let etcd_dir = common::etcd::pki(dir.path());
    let members = start_members(dir.path(), &etcd_dir);
    let urls: Vec<String> = members.iter().map(|m| m.client_url.clone()).collect();
    let client = Client::new(urls.clone(), &member_tls(&etcd_dir, 0)).unwrap();
    wait_until("a leader", Duration::from_secs(30), || client.put(b"/up", b"1").is_ok());

    let (code, report, err) = status(&p, dir.path(), &urls);
    assert_eq!(code, Some(0), "{err}");
    // Each member's own certificate, a week apart (pki staggers them).
    let served = days(&report);
    assert!(
        served[0] >= 364 && served[0] - served[1] == 7 && served[1] - served[2] == 7,
        "{served:?}"
    );
    let subject = report["certificates"]["members"][1]["subject"].as_str().unwrap();
    assert!(subject.contains("example-etcd-1"), "{subject}");
    assert!(
        report["certificates"]["client"]["days_left"].as_i64().unwrap() >= 364,
        "{report}"
    );

    // Member 1's certificate issued again in the tree, ending in 10 days:
    // nothing changes while member 1 serves the old one.
    pki(
        dir.path(),
        &["--rotate", "etcd-member-1", "--test-validity-secs", "864000"],
    );
    let (code, report, err) = status(&p, dir.path(), &urls);
    assert_eq!(code, Some(0), "read from the handshake, not the tree: {err}");
    assert_eq!(days(&report), served);

    // Its node gets the new files (as the secrets sync writes them): etcd
    // 3.5 reads its certificate files again for each new connection, so it
    // serves the new one at once, without a restart.
    node_tls(dir.path(), &etcd_dir, 1);
    let (code, report, err) = status(&p, dir.path(), &urls);
    assert_eq!(code, Some(32), "{err}");
    assert_eq!(report["healthy"], true, "the cluster itself is healthy: {report}");
    let left = days(&report)[1];
    assert!(left == 9 || left == 10, "{report}");
    assert!(
        err.contains(&format!(
            "the certificate {} serves (CN=example-etcd-1) ends in {left} days",
            urls[1]
        )) && err.contains("renew with `nodeboot up`"),
        "{err}"
    );

    // The same for the client certificate the command uses.
    pki(dir.path(), &["--renew"]);
    node_tls(dir.path(), &etcd_dir, 1);
    let (code, _, err) = status(&p, dir.path(), &urls);
    assert_eq!(code, Some(0), "renewed and served: {err}");
    pki(
        dir.path(),
        &["--rotate", "etcd-client", "--test-validity-secs", "432000"],
    );
    let (code, report, err) = status(&p, dir.path(), &urls);
    assert_eq!(code, Some(32), "{err}");
    assert!(
        err.contains("the client certificate")
            && (err.contains("client.crt ends in 4 days") || err.contains("client.crt ends in 5 days")),
        "{err}"
    );
    assert!(report["certificates"]["client"]["days_left"].as_i64().unwrap() <= 5);
    let table = p.nodeboot(
        &["etcd", "status", "--env"],
        &[
            &format!("--endpoint={}", urls[0]),
            &format!("--dir={}", dir.path().join("secrets").display()),
        ],
    );
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains(&format!("certificate: served by {} ends ", urls[0])),
        "{text}"
    );
    assert!(
        text.contains("certificate: client ") && text.contains("problem: the client certificate"),
        "{text}"
    );
}

/// A member whose certificate has ended still answers TLS: the handshake
/// reads its end and says the certificate ended; a member that is down is
/// unreachable, not ended.
#[test]
fn the_handshake_reads_an_ended_certificate_and_tells_it_from_a_member_that_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let etcd_dir = common::etcd::pki(dir.path());
    // Member 0's certificate ends 5 s after it is issued.
    pki(dir.path(), &["--rotate", "etcd-member-0", "--test-validity-secs", "5"]);
    let mut members = start_cluster(dir.path(), &etcd_dir, 1);
    let url = members[0].client_url.clone();
    let operator = TlsFiles {
        ca: etcd_dir.join("ca.crt"),
        cert: etcd_dir.join("client.crt"),
        key: etcd_dir.join("client.key"),
    };
    let end = nodeboot::operator::pki::not_after(&etcd_dir.join("member-0.crt"))
        .unwrap()
        .unix_timestamp();
    wait_until("member 0's certificate has ended", Duration::from_secs(30), || {
        matches!(
            served_certificate(&url, &operator, Duration::from_secs(2)),
            Ok(s) if s.refused == Some(Refusal::ServedExpired)
        )
    });
    let served = served_certificate(&url, &operator, Duration::from_secs(2)).unwrap();
    assert_eq!(served.not_after, end, "the end read from the refused handshake");
    members[0].kill();
    let down = served_certificate(&url, &operator, Duration::from_secs(2));
    assert!(down.is_err(), "a member that is down is not ended: {down:?}");
}
