//! The few etcd operations backups need, behind a small trait so the
//! service, the restore and the operator commands read without a client's
//! surface in view.
//!
//! `Etcdctl` implements it with etcd's own `etcdctl` (v3 API, JSON output):
//! it is on every machine that has etcd (Debian's `etcd-client`, the etcd
//! release tarball, the `quay.io/coreos/etcd` image). A native client can
//! replace it without touching the callers.

use std::path::{Path, PathBuf};

use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

/// One member's view, as its maintenance Status answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStatus {
    pub endpoint: String,
    pub member_id: u64,
    pub leader: u64,
    pub revision: i64,
    pub raft_term: u64,
    pub db_size: i64,
    pub db_size_in_use: i64,
    pub version: String,
    pub is_learner: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// The client's TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub trait EtcdAccess {
    /// The status of one endpoint (a member's client URL).
    fn status(&self, endpoint: &str) -> Result<EndpointStatus, String>;
    /// The members, as any answering endpoint of `endpoints` sees them.
    fn members(&self, endpoints: &[String]) -> Result<Vec<MemberInfo>, String>;
    /// Streams a snapshot of `endpoint`'s database into `to`.
    fn snapshot(&self, endpoint: &str, to: &Path) -> Result<(), String>;
    /// The number of keys and the revision, read (linearizably) through
    /// `endpoints`; at revision `at` when given.
    fn key_count(&self, endpoints: &[String], at: Option<i64>) -> Result<(u64, i64), String>;
    /// Puts one key (tests, verify-backup).
    fn put(&self, endpoints: &[String], key: &str, value: &str) -> Result<(), String>;
}

/// `etcdctl` as the client.
#[derive(Debug, Clone)]
pub struct Etcdctl {
    /// The program and its leading arguments, e.g. `["etcdctl"]` or a
    /// `docker run ... etcdctl` prefix (run without a shell).
    pub command: Vec<String>,
    pub tls: Option<ClientTls>,
    pub timeout: Duration,
}

impl Etcdctl {
    fn run(&self, endpoints: &[String], args: &[&str]) -> Result<Vec<u8>, String> {
        let (program, lead) = self.command.split_first().ok_or("no etcdctl command configured")?;
        let mut cmd = Command::new(program);
        cmd.args(lead).env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .arg("--dial-timeout=2s")
            .arg(format!("--command-timeout={}s", self.timeout.as_secs().max(1)));
        if let Some(tls) = &self.tls {
            cmd.arg(format!("--cacert={}", tls.ca.display()))
                .arg(format!("--cert={}", tls.cert.display()))
                .arg(format!("--key={}", tls.key.display()));
        }
        cmd.args(args);
        let out = cmd.output().map_err(|e| format!("cannot run {program}: {e}"))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "etcdctl {} at {}: {}",
                args.first().copied().unwrap_or_default(),
                endpoints.join(","),
                stderr.lines().filter(|l| !l.trim().is_empty()).last().unwrap_or("failed").trim()
            ));
        }
        Ok(out.stdout)
    }
}

#[derive(Deserialize)]
struct StatusEntry {
    #[serde(rename = "Endpoint")]
    endpoint: String,
    #[serde(rename = "Status")]
    status: StatusBody,
}

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    member_id: u64,
    #[serde(default)]
    revision: i64,
    #[serde(default)]
    raft_term: u64,
}

#[derive(Deserialize)]
struct StatusBody {
    header: Header,
    #[serde(default)]
    version: String,
    #[serde(rename = "dbSize", default)]
    db_size: i64,
    #[serde(rename = "dbSizeInUse", default)]
    db_size_in_use: i64,
    #[serde(default)]
    leader: u64,
    #[serde(rename = "isLearner", default)]
    is_learner: bool,
}

#[derive(Deserialize)]
struct MemberList {
    #[serde(default)]
    members: Vec<MemberEntry>,
}

#[derive(Deserialize)]
struct MemberEntry {
    #[serde(rename = "ID")]
    id: u64,
    #[serde(default)]
    name: String,
    #[serde(rename = "peerURLs", default)]
    peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    client_urls: Vec<String>,
    #[serde(rename = "isLearner", default)]
    is_learner: bool,
}

/// `(Count, Revision)` from etcdctl's `-w fields` output.
fn parse_count(text: &str) -> Option<(u64, i64)> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(" : ")?;
            (k.trim().trim_matches('"') == name).then(|| v.trim().to_string())
        })
    };
    Some((field("Count").map_or(Some(0), |v| v.parse().ok())?, field("Revision")?.parse().ok()?))
}

fn json<'a, T: Deserialize<'a>>(what: &str, bytes: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("etcdctl {what}: unreadable answer: {e}"))
}

impl EtcdAccess for Etcdctl {
    fn status(&self, endpoint: &str) -> Result<EndpointStatus, String> {
        let out = self.run(&[endpoint.to_string()], &["endpoint", "status", "-w", "json"])?;
        let mut entries: Vec<StatusEntry> = json("endpoint status", &out)?;
        let e = entries.pop().ok_or_else(|| format!("etcdctl endpoint status at {endpoint}: no answer"))?;
        Ok(EndpointStatus {
            endpoint: e.endpoint,
            member_id: e.status.header.member_id,
            leader: e.status.leader,
            revision: e.status.header.revision,
            raft_term: e.status.header.raft_term,
            db_size: e.status.db_size,
            db_size_in_use: e.status.db_size_in_use,
            version: e.status.version,
            is_learner: e.status.is_learner,
        })
    }

    fn members(&self, endpoints: &[String]) -> Result<Vec<MemberInfo>, String> {
        let out = self.run(endpoints, &["member", "list", "-w", "json"])?;
        let list: MemberList = json("member list", &out)?;
        Ok(list
            .members
            .into_iter()
            .map(|m| MemberInfo { id: m.id, name: m.name, peer_urls: m.peer_urls, client_urls: m.client_urls, is_learner: m.is_learner })
            .collect())
    }

    fn snapshot(&self, endpoint: &str, to: &Path) -> Result<(), String> {
        let path = to.to_str().ok_or_else(|| format!("{}: not UTF-8", to.display()))?;
        self.run(&[endpoint.to_string()], &["snapshot", "save", path]).map(drop)
    }

    fn key_count(&self, endpoints: &[String], at: Option<i64>) -> Result<(u64, i64), String> {
        // etcdctl 3.5 prints --count-only only as `-w fields`: `"Count" : 10` lines.
        let rev = format!("--rev={}", at.unwrap_or(0));
        let out = self.run(endpoints, &["get", "", "--prefix", "--count-only", &rev, "-w", "fields"])?;
        parse_count(&String::from_utf8_lossy(&out)).ok_or_else(|| "etcdctl get --count-only: no Count and Revision in its answer".to_string())
    }

    fn put(&self, endpoints: &[String], key: &str, value: &str) -> Result<(), String> {
        self.run(endpoints, &["put", key, value]).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_etcdctl_json_with_ids_above_2_pow_53() {
        let status = br#"[{"Endpoint":"https://10.80.10.10:2379","Status":{"header":{"cluster_id":17237436991929493444,"member_id":9372538179322589801,"revision":42,"raft_term":3},"version":"3.5.17","dbSize":20480,"leader":9372538179322589801,"raftIndex":50,"raftTerm":3,"raftAppliedIndex":50,"dbSizeInUse":16384}}]"#;
        let entries: Vec<StatusEntry> = json("x", status).unwrap();
        assert_eq!(entries[0].status.header.member_id, 9372538179322589801);
        assert_eq!(entries[0].status.leader, 9372538179322589801);
        assert_eq!(entries[0].status.db_size_in_use, 16384);
        let members = br#"{"header":{"cluster_id":1,"member_id":2,"raft_term":3},"members":[{"ID":9372538179322589801,"name":"e-etcd-0","peerURLs":["https://10.80.10.10:2380"],"clientURLs":["https://10.80.10.10:2379"]}]}"#;
        let list: MemberList = json("x", members).unwrap();
        assert_eq!(list.members[0].name, "e-etcd-0");
        assert!(!list.members[0].is_learner);
        let fields = "\"ClusterID\" : 1\n\"MemberID\" : 2\n\"Revision\" : 12\n\"RaftTerm\" : 2\n\"More\" : false\n\"Count\" : 10\n";
        assert_eq!(parse_count(fields), Some((10, 12)));
    }
}
