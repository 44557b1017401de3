//! A small etcd v3 client for the node (the etcd stage, the backup service)
//! and for operator commands that reach the cluster. It speaks etcd's JSON
//! gRPC gateway (`POST /v3/...` on the client port, every etcd since 3.4)
//! over HTTPS with the caller's client certificate, through ureq and rustls,
//! which the binary already carries: no gRPC stack. Blocking, like the IMDS
//! client; a call takes milliseconds.
//!
//! [`Cluster`] holds the few membership operations the etcd stage plans
//! from, so its planner is tested against a fake; [`Client`] implements it
//! and adds what backups and tests need (snapshot, status, kv, leases, txn).
//! This module knows nothing of environment files: callers pass endpoints
//! and certificate paths.

pub mod client;
pub mod disruption;
pub mod lock;
pub mod served;
pub mod space;
pub mod version;
pub mod wal;

pub use client::{Client, TlsFiles};

use std::collections::BTreeSet;

use serde::Deserialize;
use tracing::info;

/// etcd's peer port (member to member).
pub const PEER_PORT: u16 = 2380;
/// etcd's client port.
pub const CLIENT_PORT: u16 = 2379;

/// The etcd member name of member `index`: the PKI's certificates and the
/// etcd stage use the same.
pub fn member_name(environment: &str, index: u32) -> String {
    format!("{environment}-etcd-{index}")
}

/// What went wrong talking to etcd. `Unreachable` is the retryable kind
/// (connection refused, timeout, TLS handshake); `Api` is etcd's own answer.
#[derive(Debug, thiserror::Error)]
pub enum EtcdClientError {
    #[error("{path}: {detail}")]
    Tls { path: String, detail: String },
    #[error("etcd at {endpoint} does not answer: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error("etcd at {endpoint}{call}: {message} (gRPC code {code})")]
    Api {
        endpoint: String,
        call: String,
        code: i64,
        message: String,
    },
    #[error("etcd at {endpoint}{call}: unexpected answer: {detail}")]
    Bad {
        endpoint: String,
        call: String,
        detail: String,
    },
    #[error("no etcd endpoint to ask")]
    NoEndpoints,
    #[error("writing the snapshot: {0}")]
    Write(std::io::Error),
}

impl EtcdClientError {
    /// etcd refused because the cluster has no leader or timed out (no
    /// quorum), or nothing answered: worth asking again later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            EtcdClientError::Unreachable { .. } | EtcdClientError::NoEndpoints => true,
            // gRPC UNAVAILABLE (14) and DEADLINE_EXCEEDED (4): "etcdserver: request timed out", "no leader".
            EtcdClientError::Api { code, .. } => *code == 14 || *code == 4,
            _ => false,
        }
    }

    /// etcd refused a write for space: a `NOSPACE` alarm holds (gRPC
    /// RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded";
    /// the gateway answers HTTP 429). Puts, transactions with a put and
    /// lease grants fail so; reads, deletes and compactions do not.
    pub fn is_no_space(&self) -> bool {
        matches!(self, EtcdClientError::Api { code: 8, message, .. } if message.contains("database space exceeded"))
    }

    /// The message etcd answered with, if it answered.
    pub fn api_message(&self) -> Option<&str> {
        match self {
            EtcdClientError::Api { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// One member as `MemberList` shows it. A member added but never started has
/// an empty name and no client URLs (etcd fills them when it first publishes).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Member {
    #[serde(rename = "ID", deserialize_with = "u64_string")]
    pub id: u64,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "peerURLs", default)]
    pub peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    pub client_urls: Vec<String>,
    #[serde(rename = "isLearner", default)]
    pub is_learner: bool,
}

impl Member {
    /// etcd has published this member's name: it has started at least once.
    pub fn started(&self) -> bool {
        !self.name.is_empty()
    }

    /// The member ID as etcdctl prints it.
    pub fn hex_id(&self) -> String {
        format!("{:x}", self.id)
    }
}

/// `Maintenance/Status` of one member: answered by that member alone, with
/// or without quorum (`leader` is 0 when it knows no leader).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    pub endpoint: String,
    pub member_id: u64,
    pub cluster_id: u64,
    pub version: String,
    pub leader: u64,
    pub revision: i64,
    pub raft_term: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    pub db_size: i64,
    pub db_size_in_use: i64,
    pub is_learner: bool,
    pub errors: Vec<String>,
}

impl Status {
    pub fn has_leader(&self) -> bool {
        self.leader != 0
    }
}

/// One key and its value, as `Range` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

/// The membership operations the etcd stage and `etcd remove-member` plan
/// from. Every call goes to the first endpoint that answers, except
/// `status`, which asks exactly one member.
pub trait Cluster {
    /// The client URLs this handle asks, in order.
    fn endpoints(&self) -> Vec<String>;
    fn status(&self, endpoint: &str) -> Result<Status, EtcdClientError>;
    /// The members, linearizable: needs a leader (without one etcd answers
    /// "request timed out" after its request timeout).
    fn member_list(&self) -> Result<Vec<Member>, EtcdClientError>;
    /// The members as `endpoint` itself knows them (no leader needed; may
    /// lag the cluster).
    fn member_list_local(&self, endpoint: &str) -> Result<Vec<Member>, EtcdClientError>;
    /// Adds a member (a learner when `learner`); returns it as etcd lists it.
    fn member_add(&self, peer_urls: &[String], learner: bool) -> Result<Member, EtcdClientError>;
    fn member_remove(&self, id: u64) -> Result<(), EtcdClientError>;
    /// Makes a learner a voting member; etcd refuses while it lags the leader.
    fn member_promote(&self, id: u64) -> Result<(), EtcdClientError>;
}

/// The gateway writes 64-bit integers as JSON strings (proto3 JSON).
pub(crate) fn u64_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        S(String),
        N(u64),
    }
    match N::deserialize(d)? {
        N::S(s) => s.parse().map_err(serde::de::Error::custom),
        N::N(n) => Ok(n),
    }
}

/// The cluster as the members that answered see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct View {
    /// `MemberList` as one answering member sees it.
    pub members: Vec<Member>,
    /// The members that answered `Status` knowing a leader.
    pub healthy: BTreeSet<u64>,
    /// The cluster ID a healthy member answered with (else the first that
    /// answered): whose cluster the members are.
    pub cluster_id: u64,
}

/// Asks every endpoint for its status at once (a dead member costs one
/// connect timeout, not one each), then one that answered for the members.
pub fn observe_cluster<C: Cluster + Sync>(cluster: &C) -> Result<Option<View>, EtcdClientError> {
    let endpoints = cluster.endpoints();
    let answers: Vec<_> = std::thread::scope(|s| {
        let asks: Vec<_> = endpoints.iter().map(|e| s.spawn(move || cluster.status(e))).collect();
        asks.into_iter()
            .map(|a| a.join().expect("a status call does not panic"))
            .collect()
    });
    let mut healthy = BTreeSet::new();
    let mut answered = None;
    let mut cluster_id = 0;
    for answer in answers {
        match answer {
            Ok(status) => {
                answered.get_or_insert_with(|| status.endpoint.clone());
                if cluster_id == 0 || status.has_leader() {
                    cluster_id = status.cluster_id;
                }
                info!(
                    endpoint = status.endpoint,
                    leader = status.leader != 0,
                    "etcd member {:x} answers",
                    status.member_id
                );
                if status.has_leader() && !status.is_learner {
                    healthy.insert(status.member_id);
                }
            }
            Err(e) => info!("{e}"),
        }
    }
    let Some(answered) = answered else {
        return Ok(None);
    };
    // A linearizable MemberList needs a leader: without one etcd answers
    // "request timed out" (retryable, exit 23) and a blank member would
    // wait for ever instead of refusing (exit 22). Knowing no leader, the
    // plan can only refuse, bootstrap (a forming cluster) or resume, none
    // of which changes the membership, so a member's own view will do.
    let members = if healthy.is_empty() {
        cluster.member_list_local(&answered)?
    } else {
        cluster.member_list()?
    };
    Ok(Some(View {
        members,
        healthy,
        cluster_id,
    }))
}
