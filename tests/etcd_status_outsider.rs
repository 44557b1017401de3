//! `nodeboot etcd status` names a member whose etcd answers on its client
//! URL but is not part of the cluster (issue 20 item 5): real etcd 3.5, a
//! cluster of three whose member m2 is replaced, on the same addresses, by
//! a cluster of its own (the data of another cluster: etcd logs "ID
//! mismatch" when such a member meets its old peers).

mod common;

use std::path::Path;
use std::time::Duration;

use common::etcd::*;
use common::secrets_bed::Platform;
use common::stderr;
use nodeboot::shared::etcd::{Client, Cluster};

fn ports_of(m: &Member) -> Ports {
    let port = |url: &str| url.rsplit(':').next().unwrap().parse().unwrap();
    Ports {
        client: port(&m.client_url),
        peer: port(&m.peer_url),
    }
}

fn status(p: &Platform, dir: &Path, urls: &[String], output: &str) -> (Option<i32>, String, String) {
    let mut args: Vec<String> = urls.iter().map(|u| format!("--endpoint={u}")).collect();
    args.extend([
        format!("--dir={}", dir.join("secrets").display()),
        format!("--output={output}"),
    ]);
    let more: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = p.nodeboot(&["etcd", "status", "--env"], &more);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr(&out),
    )
}

#[test]
fn etcd_status_names_a_member_that_runs_another_clusters_data() {
    let p = Platform::new("st-outsider");
    let dir = tempfile::tempdir().unwrap();
    let etcd_dir = pki(dir.path());
    let mut members = start_cluster(dir.path(), &etcd_dir, 3);
    let urls: Vec<String> = members.iter().map(|m| m.client_url.clone()).collect();
    let client = Client::new(urls[..2].to_vec(), &member_tls(&etcd_dir, 0)).unwrap();
    wait_until("a leader", Duration::from_secs(30), || client.put(b"/up", b"1").is_ok());
    let (code, _, err) = status(&p, dir.path(), &urls, "table");
    assert_eq!(code, Some(0), "{err}");

    // m2's node comes back with another cluster's data: a cluster of one,
    // same name, same addresses, same token.
    let ports = ports_of(&members[2]);
    members[2].kill();
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let _outsider = Member::start(
        &other,
        &member_tls(&etcd_dir, 2),
        "m2",
        &ports,
        &format!("m2={}", ports.peer_url()),
        "new",
    );
    let alone = Client::new(vec![urls[2].clone()], &member_tls(&etcd_dir, 2)).unwrap();
    wait_until("the outsider answers", Duration::from_secs(30), || {
        alone.status(&urls[2]).is_ok_and(|s| s.has_leader())
    });
    let theirs = alone.status(&urls[2]).unwrap();

    // The outsider first: the member list is the cluster's, not the first
    // endpoint's.
    let order = vec![urls[2].clone(), urls[0].clone(), urls[1].clone()];
    let (code, out, err) = status(&p, dir.path(), &order, "table");
    assert_eq!(code, Some(30), "{out}{err}");
    let line = out
        .lines()
        .chain(err.lines())
        .find(|l| l.contains(&urls[2]) && l.contains("ID mismatch"))
        .unwrap_or_else(|| panic!("no line names the outsider:\n{out}{err}"));
    assert!(
        line.contains(&format!("runs as member {:x}", theirs.member_id))
            && line.contains(&format!("of cluster {:x}", theirs.cluster_id))
            && line.contains("not in this cluster")
            && line.contains("nodeboot etcd restore"),
        "{line}"
    );
    let (code, out, _) = status(&p, dir.path(), &order, "json");
    assert_eq!(code, Some(30));
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let row = report["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["endpoint"] == urls[2].as_str())
        .unwrap();
    assert!(
        row["outside"].as_str().is_some_and(|r| r.contains("ID mismatch")),
        "{row}"
    );
    let healthy: Vec<&serde_json::Value> = report["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["outside"].is_null())
        .collect();
    assert_eq!(healthy.len(), 2, "{report}");
}
