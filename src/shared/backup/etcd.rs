//! The few etcd operations backups need, behind a small trait so the
//! service, the restore and the operator commands read without a client's
//! surface in view. [`crate::shared::etcd::Client`] (etcd's JSON gateway over
//! HTTPS, no etcdctl: Flatcar has none, etcd runs in a container)
//! implements it.

use std::io::Read;

use crate::shared::etcd::{Client, Cluster};

/// One member's view, as its maintenance Status answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStatus {
    pub endpoint: String,
    pub member_id: u64,
    pub cluster_id: u64,
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

pub trait EtcdAccess {
    /// The status of one endpoint (a member's client URL).
    fn status(&self, endpoint: &str) -> Result<EndpointStatus, String>;
    /// The members, as the first member that answers sees them.
    fn members(&self) -> Result<Vec<MemberInfo>, String>;
    /// Opens a snapshot stream: of `endpoint`'s database, or of the first
    /// member that answers. Returns the endpoint it comes from and the bytes
    /// as they arrive (a failure mid-stream is a read error), readable from
    /// another thread (the upload reads the next part while one uploads).
    fn snapshot(&self, endpoint: Option<&str>) -> Result<(String, Box<dyn Read + Send>), String>;
    /// The number of keys and the revision, read linearizably; at revision
    /// `at` when given.
    fn key_count(&self, at: Option<i64>) -> Result<(u64, i64), String>;
    /// Puts one key (tests, verify-backup).
    fn put(&self, key: &str, value: &str) -> Result<(), String>;
    /// Takes the etcd lock `name` for `holder` for `ttl_seconds`
    /// (`etcd::lock`): its lease, or `None` while another holds it.
    fn try_lock(&self, name: &str, holder: &str, ttl_seconds: i64) -> Result<Option<i64>, String>;
    /// Gives back the lock held on `lease`.
    fn unlock(&self, lease: i64) -> Result<(), String>;
    /// Gives back the lock `name` if it names `holder` (a run of the
    /// holder's that was killed): true when this call deleted it.
    fn release_own_lock(&self, name: &str, holder: &str) -> Result<bool, String>;
}

impl EtcdAccess for Client {
    fn status(&self, endpoint: &str) -> Result<EndpointStatus, String> {
        let s = Cluster::status(self, endpoint).map_err(|e| e.to_string())?;
        Ok(EndpointStatus {
            endpoint: s.endpoint,
            member_id: s.member_id,
            cluster_id: s.cluster_id,
            leader: s.leader,
            revision: s.revision,
            raft_term: s.raft_term,
            db_size: s.db_size,
            db_size_in_use: s.db_size_in_use,
            version: s.version,
            is_learner: s.is_learner,
        })
    }

    fn members(&self) -> Result<Vec<MemberInfo>, String> {
        let members = self.member_list().map_err(|e| e.to_string())?;
        Ok(members
            .into_iter()
            .map(|m| MemberInfo {
                id: m.id,
                name: m.name,
                peer_urls: m.peer_urls,
                client_urls: m.client_urls,
                is_learner: m.is_learner,
            })
            .collect())
    }

    fn snapshot(&self, endpoint: Option<&str>) -> Result<(String, Box<dyn Read + Send>), String> {
        let endpoints = match endpoint {
            Some(endpoint) => vec![endpoint.to_string()],
            None => Cluster::endpoints(self),
        };
        let mut last = String::from("no endpoints");
        for endpoint in endpoints {
            match self.snapshot_reader(&endpoint) {
                Ok(reader) => return Ok((endpoint, Box::new(reader))),
                // Nothing read yet when it could not connect: try the next member.
                Err(e) if e.is_unavailable() => last = e.to_string(),
                Err(e) => return Err(e.to_string()),
            }
        }
        Err(last)
    }

    fn key_count(&self, at: Option<i64>) -> Result<(u64, i64), String> {
        let (count, revision) = self.count_prefix_at(b"", at).map_err(|e| e.to_string())?;
        Ok((count.max(0) as u64, revision))
    }

    fn put(&self, key: &str, value: &str) -> Result<(), String> {
        Client::put(self, key.as_bytes(), value.as_bytes())
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn try_lock(&self, name: &str, holder: &str, ttl_seconds: i64) -> Result<Option<i64>, String> {
        crate::shared::etcd::lock::try_acquire(self, name, holder, ttl_seconds)
            .map(|held| held.map(|h| h.lease))
            .map_err(|e| e.to_string())
    }

    fn unlock(&self, lease: i64) -> Result<(), String> {
        self.lease_revoke(lease).map_err(|e| e.to_string())
    }

    fn release_own_lock(&self, name: &str, holder: &str) -> Result<bool, String> {
        crate::shared::etcd::lock::release_if_held_by(self, name, holder).map_err(|e| e.to_string())
    }
}
