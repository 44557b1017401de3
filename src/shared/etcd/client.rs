//! [`Client`]: etcd's JSON gateway over HTTPS with a client certificate.
//! Keys and values travel base64-encoded, 64-bit numbers as strings (proto3
//! JSON); both are hidden here.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};

use super::space::{Alarm, AlarmKind};
use super::{Cluster, EtcdClientError, KeyValue, Member, Status};

/// One connection attempt gives up after this long (a dead member's address
/// drops packets; its neighbours answer in milliseconds).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One unary call gives up after this long; etcd's own proposal timeout is
/// about 7 s ("etcdserver: request timed out"), so its answer comes first.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A snapshot stream may pause this long between chunks.
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// A defragmentation (or a physical compaction) answers only when done: it
/// rewrites the member's whole database file, minutes for gigabytes.
pub const MAINTENANCE_TIMEOUT: Duration = Duration::from_secs(600);
/// etcd's gauge of the quota a member runs with (`/metrics`, every 3.4+).
const QUOTA_METRIC: &str = "etcd_server_quota_backend_bytes";

/// The CA that signed the members' certificates, and the caller's own
/// certificate and key (a member's, or the operator's `etcd-client`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct Client {
    endpoints: Vec<String>,
    agent: ureq::Agent,
    stream_agent: ureq::Agent,
    maintenance_agent: ureq::Agent,
    /// The endpoint that answered last; asked first next time.
    preferred: AtomicUsize,
}

/// A lease: its ID and the TTL etcd granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    pub ttl: i64,
}

/// What a snapshot stream delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub endpoint: String,
    /// The bytes written: the bbolt database followed by etcd's SHA-256 of it,
    /// the file `etcdctl snapshot save` writes and `etcdutl snapshot restore` reads.
    pub bytes: u64,
}

fn read(path: &Path) -> Result<Vec<u8>, EtcdClientError> {
    std::fs::read(path).map_err(|e| EtcdClientError::Tls {
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}

fn tls_config(files: &TlsFiles) -> Result<TlsConfig, EtcdClientError> {
    let bad = |path: &Path, e: ureq::Error| EtcdClientError::Tls {
        path: path.display().to_string(),
        detail: e.to_string(),
    };
    let ca_pem = read(&files.ca)?;
    let roots: Vec<Certificate<'static>> = ureq::tls::parse_pem(&ca_pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&files.ca, e))?;
    if roots.is_empty() {
        return Err(EtcdClientError::Tls {
            path: files.ca.display().to_string(),
            detail: "no certificate in the file".into(),
        });
    }
    let cert = Certificate::from_pem(&read(&files.cert)?).map_err(|e| bad(&files.cert, e))?;
    let key = PrivateKey::from_pem(&read(&files.key)?).map_err(|e| bad(&files.key, e))?;
    Ok(TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .client_cert(Some(ClientCert::new_with_certs(&[cert], key)))
        .build())
}

/// The smallest key after every key that starts with `prefix` (etcd's
/// `GetPrefixRangeEnd`); `\0` means "to the end" for an empty prefix.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The first key of a prefix range: etcd refuses an empty key ("key is not
/// provided"), so every key (the empty prefix) starts at `\0`, as clientv3's
/// `WithPrefix` does.
fn range_start(prefix: &[u8]) -> &[u8] {
    if prefix.is_empty() {
        b"\0"
    } else {
        prefix
    }
}

pub(super) fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

impl Client {
    /// A client of the members at `endpoints` (`https://10.0.10.10:2379`, ...).
    pub fn new(endpoints: Vec<String>, tls: &TlsFiles) -> Result<Self, EtcdClientError> {
        Self::with_timeouts(endpoints, tls, CONNECT_TIMEOUT, CALL_TIMEOUT)
    }

    pub fn with_timeouts(
        endpoints: Vec<String>,
        tls: &TlsFiles,
        connect: Duration,
        call: Duration,
    ) -> Result<Self, EtcdClientError> {
        Ok(Self::build(endpoints, Some(tls_config(tls)?), connect, call))
    }

    /// A client of plain-HTTP endpoints: only for an etcd nodeboot started
    /// itself on this machine's loopback (`etcd verify-backup`'s scratch
    /// etcd); every member of a cluster speaks TLS.
    pub fn plain_local(endpoints: Vec<String>) -> Self {
        Self::build(endpoints, None, CONNECT_TIMEOUT, CALL_TIMEOUT)
    }

    fn build(endpoints: Vec<String>, tls: Option<TlsConfig>, connect: Duration, call: Duration) -> Self {
        let build = |global: Option<Duration>, read: Option<Duration>| -> ureq::Agent {
            let config = ureq::Agent::config_builder();
            let config = match &tls {
                Some(tls) => config.tls_config(tls.clone()),
                None => config,
            };
            config
                .timeout_connect(Some(connect))
                .timeout_global(global)
                .timeout_per_read(read)
                .http_status_as_error(false)
                .proxy(None)
                .build()
                .into()
        };
        let endpoints = endpoints
            .into_iter()
            .map(|e| e.trim_end_matches('/').to_string())
            .collect();
        Client {
            endpoints,
            agent: build(Some(call), None),
            stream_agent: build(None, Some(STREAM_READ_TIMEOUT)),
            maintenance_agent: build(Some(MAINTENANCE_TIMEOUT), None),
            preferred: AtomicUsize::new(0),
        }
    }

    /// Asks each endpoint in turn (the last one that answered first) until
    /// one answers; moves on only when an endpoint is unreachable or has
    /// no leader, so an answer from etcd (a refusal) is final.
    fn call(&self, path: &str, body: Value) -> Result<(String, Value), EtcdClientError> {
        let n = self.endpoints.len();
        let mut last = EtcdClientError::NoEndpoints;
        for i in 0..n {
            let index = (self.preferred.load(Ordering::Relaxed) + i) % n;
            let endpoint = &self.endpoints[index];
            match self.call_at(endpoint, path, &body) {
                Ok(v) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok((endpoint.clone(), v));
                }
                Err(e) if e.is_unavailable() => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// One call to one endpoint.
    pub fn call_at(&self, endpoint: &str, path: &str, body: &Value) -> Result<Value, EtcdClientError> {
        self.send(&self.agent, endpoint, path, body)
    }

    fn send(&self, agent: &ureq::Agent, endpoint: &str, path: &str, body: &Value) -> Result<Value, EtcdClientError> {
        let url = format!("{endpoint}{path}");
        let unreachable = |e: ureq::Error| EtcdClientError::Unreachable {
            endpoint: endpoint.to_string(),
            detail: e.to_string(),
        };
        let mut response = agent
            .post(&url)
            .header("content-type", "application/json")
            .send(body.to_string().as_bytes())
            .map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().map_err(unreachable)?;
        let bad = |detail: String| EtcdClientError::Bad {
            endpoint: endpoint.to_string(),
            call: path.to_string(),
            detail,
        };
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| bad(format!("HTTP {status}, not JSON ({e}): {}", snippet(&text))))?;
        if status != 200 {
            return Err(
                api_error(endpoint, path, &value).unwrap_or_else(|| bad(format!("HTTP {status}: {}", snippet(&text))))
            );
        }
        Ok(value)
    }

    /// Puts `key`; returns the revision of the write.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<i64, EtcdClientError> {
        let (_, v) = self.call("/v3/kv/put", json!({"key": b64(key), "value": b64(value)}))?;
        Ok(i64_at(&v, &["header", "revision"]))
    }

    /// Puts `key` attached to a lease (it goes when the lease expires).
    pub fn put_with_lease(&self, key: &[u8], value: &[u8], lease: i64) -> Result<i64, EtcdClientError> {
        let (_, v) = self.call(
            "/v3/kv/put",
            json!({"key": b64(key), "value": b64(value), "lease": lease.to_string()}),
        )?;
        Ok(i64_at(&v, &["header", "revision"]))
    }

    /// Puts `key` only if it does not exist (a transaction on its version);
    /// true when this call created it.
    pub fn put_if_absent(&self, key: &[u8], value: &[u8], lease: Option<i64>) -> Result<bool, EtcdClientError> {
        let mut put = json!({"key": b64(key), "value": b64(value)});
        if let Some(lease) = lease {
            put["lease"] = json!(lease.to_string());
        }
        let txn = json!({
            "compare": [{"key": b64(key), "target": "VERSION", "result": "EQUAL", "version": "0"}],
            "success": [{"request_put": put}],
        });
        let (_, v) = self.call("/v3/kv/txn", txn)?;
        Ok(v.get("succeeded").and_then(Value::as_bool).unwrap_or(false))
    }

    /// One transaction (`/v3/kv/txn`, etcd's JSON: `compare`, `success`,
    /// `failure`, keys base64 as [`b64`] makes them); etcd's answer.
    pub fn txn(&self, body: Value) -> Result<Value, EtcdClientError> {
        Ok(self.call("/v3/kv/txn", body)?.1)
    }

    /// The value of `key`, read through the leader (linearizable).
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, EtcdClientError> {
        let (endpoint, v) = self.call("/v3/kv/range", json!({"key": b64(key)}))?;
        Ok(kvs(&endpoint, &v)?.into_iter().next())
    }

    /// Every key that starts with `prefix`, in key order.
    pub fn range_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, EtcdClientError> {
        let (endpoint, v) = self.call(
            "/v3/kv/range",
            json!({"key": b64(range_start(prefix)), "range_end": b64(&prefix_end(prefix))}),
        )?;
        kvs(&endpoint, &v)
    }

    /// How many keys start with `prefix`, and the store's revision.
    pub fn count_prefix(&self, prefix: &[u8]) -> Result<(i64, i64), EtcdClientError> {
        self.count_prefix_at(prefix, None)
    }

    /// How many keys started with `prefix` at `revision` (now when `None`),
    /// and the store's revision now.
    pub fn count_prefix_at(&self, prefix: &[u8], revision: Option<i64>) -> Result<(i64, i64), EtcdClientError> {
        let mut body =
            json!({"key": b64(range_start(prefix)), "range_end": b64(&prefix_end(prefix)), "count_only": true});
        if let Some(revision) = revision {
            body["revision"] = json!(revision.to_string());
        }
        let (_, v) = self.call("/v3/kv/range", body)?;
        Ok((i64_at(&v, &["count"]), i64_at(&v, &["header", "revision"])))
    }

    /// Deletes `key`; returns how many keys went (0 or 1).
    pub fn delete(&self, key: &[u8]) -> Result<i64, EtcdClientError> {
        let (_, v) = self.call("/v3/kv/deleterange", json!({"key": b64(key)}))?;
        Ok(i64_at(&v, &["deleted"]))
    }

    pub fn lease_grant(&self, ttl_seconds: i64) -> Result<Lease, EtcdClientError> {
        let (_, v) = self.call("/v3/lease/grant", json!({"TTL": ttl_seconds.to_string()}))?;
        Ok(Lease {
            id: i64_at(&v, &["ID"]),
            ttl: i64_at(&v, &["TTL"]),
        })
    }

    /// Renews a lease once; returns its new TTL (0: the lease has expired).
    pub fn lease_keepalive(&self, id: i64) -> Result<i64, EtcdClientError> {
        let (_, v) = self.call("/v3/lease/keepalive", json!({"ID": id.to_string()}))?;
        // A bidirectional stream: the gateway answers {"result": {...}}.
        let result = v.get("result").unwrap_or(&v);
        Ok(i64_at(result, &["TTL"]))
    }

    pub fn lease_revoke(&self, id: i64) -> Result<(), EtcdClientError> {
        self.call("/v3/lease/revoke", json!({"ID": id.to_string()}))?;
        Ok(())
    }

    /// The cluster's alarms (`Maintenance/Alarm`, action GET): raised by a
    /// member, replicated to all, so any member answers for the cluster.
    pub fn alarms(&self) -> Result<Vec<Alarm>, EtcdClientError> {
        let (_, v) = self.call("/v3/maintenance/alarm", json!({"action": "GET"}))?;
        Ok(alarms(&v))
    }

    /// Disarms one alarm (action DEACTIVATE), as `etcdctl alarm disarm` does
    /// for each alarm it lists. A `NOSPACE` alarm comes back with the next
    /// write if the database is still over the quota.
    pub fn alarm_disarm(&self, alarm: &Alarm) -> Result<(), EtcdClientError> {
        self.call(
            "/v3/maintenance/alarm",
            json!({"action": "DEACTIVATE", "memberID": alarm.member_id.to_string(), "alarm": alarm.kind.to_string()}),
        )?;
        Ok(())
    }

    /// Compacts the keyspace's history up to `revision` (cluster-wide,
    /// through `endpoint`), waiting until the freed pages are free in the
    /// member's database (`physical`). `Ok(false)`: already compacted there.
    pub fn compact(&self, endpoint: &str, revision: i64) -> Result<bool, EtcdClientError> {
        let body = json!({"revision": revision.to_string(), "physical": true});
        match self.send(&self.maintenance_agent, endpoint, "/v3/kv/compaction", &body) {
            Ok(_) => Ok(true),
            // gRPC OUT_OF_RANGE: "etcdserver: mvcc: required revision has been compacted".
            Err(EtcdClientError::Api { code: 11, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Defragments the member at `endpoint`: it rewrites its database file
    /// without the free pages and serves nothing meanwhile.
    pub fn defragment(&self, endpoint: &str) -> Result<(), EtcdClientError> {
        self.send(
            &self.maintenance_agent,
            endpoint,
            "/v3/maintenance/defragment",
            &json!({}),
        )?;
        Ok(())
    }

    /// The quota the member at `endpoint` runs with, read from its metrics
    /// (etcd 3.5's `Status` does not carry it); `None` when not exported.
    pub fn quota_bytes(&self, endpoint: &str) -> Result<Option<i64>, EtcdClientError> {
        let unreachable = |e: ureq::Error| EtcdClientError::Unreachable {
            endpoint: endpoint.to_string(),
            detail: e.to_string(),
        };
        let mut response = self
            .agent
            .get(&format!("{endpoint}/metrics"))
            .call()
            .map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().map_err(unreachable)?;
        if status != 200 {
            return Err(EtcdClientError::Bad {
                endpoint: endpoint.to_string(),
                call: "/metrics".into(),
                detail: format!("HTTP {status}: {}", snippet(&text)),
            });
        }
        Ok(metric(&text, QUOTA_METRIC).map(|v| v as i64))
    }

    /// Streams a snapshot of the member that answers into `out`.
    pub fn snapshot(&self, out: &mut impl Write) -> Result<SnapshotInfo, EtcdClientError> {
        let n = self.endpoints.len();
        let mut last = EtcdClientError::NoEndpoints;
        for i in 0..n {
            let endpoint = self.endpoints[(self.preferred.load(Ordering::Relaxed) + i) % n].clone();
            match self.snapshot_from(&endpoint, out) {
                Ok(info) => return Ok(info),
                // Nothing written yet when it could not connect: try the next member.
                Err((0, e)) if e.is_unavailable() => last = e,
                Err((_, e)) => return Err(e),
            }
        }
        Err(last)
    }

    /// Streams one member's snapshot; on failure also says how many bytes
    /// were already written (the caller must discard a partial file).
    pub fn snapshot_from(&self, endpoint: &str, out: &mut impl Write) -> Result<SnapshotInfo, (u64, EtcdClientError)> {
        const CALL: &str = "/v3/maintenance/snapshot";
        let unreachable = |e: String| EtcdClientError::Unreachable {
            endpoint: endpoint.to_string(),
            detail: e,
        };
        let bad = |detail: String| EtcdClientError::Bad {
            endpoint: endpoint.to_string(),
            call: CALL.into(),
            detail,
        };
        let response = self
            .stream_agent
            .post(&format!("{endpoint}{CALL}"))
            .header("content-type", "application/json")
            .send("{}".as_bytes())
            .map_err(|e| (0, unreachable(e.to_string())))?;
        let status = response.status().as_u16();
        let mut lines = BufReader::new(response.into_body().into_reader());
        let mut written = 0u64;
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = lines
                .read_until(b'\n', &mut line)
                .map_err(|e| (written, unreachable(e.to_string())))?;
            if n == 0 {
                break;
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let v: Value = serde_json::from_slice(&line)
                .map_err(|e| (written, bad(format!("HTTP {status}, a chunk is not JSON: {e}"))))?;
            if let Some(e) = api_error(endpoint, CALL, &v) {
                return Err((written, e));
            }
            let blob = v.pointer("/result/blob").and_then(Value::as_str).unwrap_or("");
            let bytes = B64
                .decode(blob)
                .map_err(|e| (written, bad(format!("a chunk's blob is not base64: {e}"))))?;
            out.write_all(&bytes)
                .map_err(|e| (written, EtcdClientError::Write(e)))?;
            written += bytes.len() as u64;
        }
        if status != 200 || written == 0 {
            return Err((written, bad(format!("HTTP {status}, {written} bytes"))));
        }
        out.flush().map_err(|e| (written, EtcdClientError::Write(e)))?;
        Ok(SnapshotInfo {
            endpoint: endpoint.to_string(),
            bytes: written,
        })
    }
}

/// A member's snapshot as etcd streams it (the bbolt database followed by
/// etcd's SHA-256 of it), read as it arrives: the backup service seals and
/// uploads it without a copy on disk.
pub struct SnapshotReader {
    endpoint: String,
    status: u16,
    lines: BufReader<ureq::BodyReader<'static>>,
    line: Vec<u8>,
    pending: Vec<u8>,
    at: usize,
    total: u64,
    done: bool,
}

impl SnapshotReader {
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn fail(&self, detail: String) -> std::io::Error {
        std::io::Error::other(format!("{}/v3/maintenance/snapshot: {detail}", self.endpoint))
    }

    /// The next chunk's bytes into `pending`; false at the end.
    fn next_chunk(&mut self) -> std::io::Result<bool> {
        loop {
            self.line.clear();
            let n = self.lines.read_until(b'\n', &mut self.line)?;
            if n == 0 {
                if self.status != 200 || self.total == 0 {
                    return Err(self.fail(format!("HTTP {}, {} bytes", self.status, self.total)));
                }
                return Ok(false);
            }
            if self.line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let v: Value = serde_json::from_slice(&self.line)
                .map_err(|e| self.fail(format!("HTTP {}, a chunk is not JSON: {e}", self.status)))?;
            if let Some(e) = api_error(&self.endpoint, "/v3/maintenance/snapshot", &v) {
                return Err(std::io::Error::other(e.to_string()));
            }
            let blob = v.pointer("/result/blob").and_then(Value::as_str).unwrap_or("");
            self.pending.clear();
            B64.decode_vec(blob, &mut self.pending)
                .map_err(|e| self.fail(format!("a chunk's blob is not base64: {e}")))?;
            self.at = 0;
            self.total += self.pending.len() as u64;
            return Ok(true);
        }
    }
}

impl std::io::Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.pending.len() {
            if self.done || !self.next_chunk()? {
                self.done = true;
                return Ok(0);
            }
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Client {
    /// Opens one member's snapshot stream (see [`SnapshotReader`]).
    pub fn snapshot_reader(&self, endpoint: &str) -> Result<SnapshotReader, EtcdClientError> {
        let response = self
            .stream_agent
            .post(&format!("{endpoint}/v3/maintenance/snapshot"))
            .header("content-type", "application/json")
            .send("{}".as_bytes())
            .map_err(|e| EtcdClientError::Unreachable {
                endpoint: endpoint.to_string(),
                detail: e.to_string(),
            })?;
        let status = response.status().as_u16();
        Ok(SnapshotReader {
            endpoint: endpoint.to_string(),
            status,
            lines: BufReader::new(response.into_body().into_reader()),
            line: Vec::new(),
            pending: Vec::new(),
            at: 0,
            total: 0,
            done: false,
        })
    }
}

impl Cluster for Client {
    fn endpoints(&self) -> Vec<String> {
        self.endpoints.clone()
    }

    fn status(&self, endpoint: &str) -> Result<Status, EtcdClientError> {
        let v = self.call_at(endpoint, "/v3/maintenance/status", &json!({}))?;
        Ok(Status {
            endpoint: endpoint.to_string(),
            member_id: u64_at(&v, &["header", "member_id"]),
            cluster_id: u64_at(&v, &["header", "cluster_id"]),
            version: v.get("version").and_then(Value::as_str).unwrap_or_default().to_string(),
            leader: u64_at(&v, &["leader"]),
            revision: i64_at(&v, &["header", "revision"]),
            raft_term: u64_at(&v, &["raftTerm"]),
            raft_index: u64_at(&v, &["raftIndex"]),
            raft_applied_index: u64_at(&v, &["raftAppliedIndex"]),
            db_size: i64_at(&v, &["dbSize"]),
            db_size_in_use: i64_at(&v, &["dbSizeInUse"]),
            is_learner: v.get("isLearner").and_then(Value::as_bool).unwrap_or(false),
            errors: v
                .get("errors")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
                .unwrap_or_default(),
        })
    }

    fn member_list(&self) -> Result<Vec<Member>, EtcdClientError> {
        // Linearizable (3.5.13+ reads the flag; older 3.5 answer from the
        // member's own view, which the callers cross-check with `status`).
        let (endpoint, v) = self.call("/v3/cluster/member/list", json!({"linearizable": true}))?;
        members(&endpoint, "/v3/cluster/member/list", &v, "members")
    }

    fn member_list_local(&self, endpoint: &str) -> Result<Vec<Member>, EtcdClientError> {
        let v = self.call_at(endpoint, "/v3/cluster/member/list", &json!({"linearizable": false}))?;
        members(endpoint, "/v3/cluster/member/list", &v, "members")
    }

    fn member_add(&self, peer_urls: &[String], learner: bool) -> Result<Member, EtcdClientError> {
        const CALL: &str = "/v3/cluster/member/add";
        let (endpoint, v) = self.call(CALL, json!({"peerURLs": peer_urls, "isLearner": learner}))?;
        serde_json::from_value(v.get("member").cloned().unwrap_or(Value::Null)).map_err(|e| EtcdClientError::Bad {
            endpoint,
            call: CALL.into(),
            detail: format!("no member in the answer: {e}"),
        })
    }

    fn member_remove(&self, id: u64) -> Result<(), EtcdClientError> {
        self.call("/v3/cluster/member/remove", json!({"ID": id.to_string()}))?;
        Ok(())
    }

    fn member_promote(&self, id: u64) -> Result<(), EtcdClientError> {
        self.call("/v3/cluster/member/promote", json!({"ID": id.to_string()}))?;
        Ok(())
    }
}

fn snippet(text: &str) -> String {
    text.chars().take(200).collect()
}

/// `{"code": 14, "message": "..."}` (unary) or `{"error": {"grpc_code": .., "message": ..}}` (streams).
fn api_error(endpoint: &str, call: &str, v: &Value) -> Option<EtcdClientError> {
    let (code, message) = match (v.get("code"), v.get("error")) {
        (Some(code), _) => (
            code.as_i64()?,
            v.get("message").and_then(Value::as_str).unwrap_or_default(),
        ),
        (None, Some(e)) if e.is_object() => (
            e.get("grpc_code")
                .or_else(|| e.get("code"))
                .and_then(Value::as_i64)
                .unwrap_or(2),
            e.get("message").and_then(Value::as_str).unwrap_or_default(),
        ),
        _ => return None,
    };
    Some(EtcdClientError::Api {
        endpoint: endpoint.to_string(),
        call: call.to_string(),
        code,
        message: message.to_string(),
    })
}

/// `{"alarms": [{"memberID": "…", "alarm": "NOSPACE"}]}`; none listed when
/// there is no alarm (proto3 JSON leaves out the empty list).
fn alarms(v: &Value) -> Vec<Alarm> {
    let kind = |a: &Value| match a.get("alarm") {
        Some(Value::String(name)) => AlarmKind::parse(name),
        Some(n) => AlarmKind::parse(&n.to_string()),
        // NONE (0) is the default value, which proto3 JSON leaves out.
        None => AlarmKind::Other("NONE".into()),
    };
    let mut out: Vec<Alarm> = v
        .get("alarms")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|a| Alarm {
            member_id: u64_at(a, &["memberID"]),
            kind: kind(a),
        })
        .filter(|a| a.kind != AlarmKind::Other("NONE".into()))
        .collect();
    out.sort();
    out
}

/// The value of an unlabelled metric in Prometheus' text format.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

/// A proto3 JSON integer (a string, or a number); absent means 0.
fn u64_at(v: &Value, path: &[&str]) -> u64 {
    match at(v, path) {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(n) => n.as_u64().unwrap_or(0),
        None => 0,
    }
}

fn i64_at(v: &Value, path: &[&str]) -> i64 {
    match at(v, path) {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(n) => n.as_i64().unwrap_or(0),
        None => 0,
    }
}

fn members(endpoint: &str, call: &str, v: &Value, field: &str) -> Result<Vec<Member>, EtcdClientError> {
    serde_json::from_value(v.get(field).cloned().unwrap_or_else(|| json!([]))).map_err(|e| EtcdClientError::Bad {
        endpoint: endpoint.to_string(),
        call: call.to_string(),
        detail: e.to_string(),
    })
}

fn kvs(endpoint: &str, v: &Value) -> Result<Vec<KeyValue>, EtcdClientError> {
    let bad = |detail: String| EtcdClientError::Bad {
        endpoint: endpoint.to_string(),
        call: "/v3/kv/range".into(),
        detail,
    };
    let decode = |kv: &Value, field: &str| -> Result<Vec<u8>, EtcdClientError> {
        B64.decode(kv.get(field).and_then(Value::as_str).unwrap_or_default())
            .map_err(|e| bad(format!("{field} is not base64: {e}")))
    };
    let mut out = Vec::new();
    for kv in v.get("kvs").and_then(Value::as_array).into_iter().flatten() {
        out.push(KeyValue {
            key: decode(kv, "key")?,
            value: decode(kv, "value")?,
            create_revision: i64_at(kv, &["create_revision"]),
            mod_revision: i64_at(kv, &["mod_revision"]),
            version: i64_at(kv, &["version"]),
            lease: i64_at(kv, &["lease"]),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/a"), b"/b");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn gateway_errors_of_unary_calls_and_streams_are_read() {
        let unary = json!({"code": 14, "message": "etcdserver: request timed out"});
        let e = api_error("https://e", "/v3/kv/put", &unary).unwrap();
        assert!(e.is_unavailable(), "{e}");
        assert_eq!(
            e.to_string(),
            "etcd at https://e/v3/kv/put: etcdserver: request timed out (gRPC code 14)"
        );
        let stream = json!({"error": {"grpc_code": 9, "message": "too many learners"}});
        let e = api_error("https://e", "/v3/x", &stream).unwrap();
        assert!(!e.is_unavailable());
        assert_eq!(e.api_message(), Some("too many learners"));
        assert!(api_error("https://e", "/v3/x", &json!({"result": {"blob": ""}})).is_none());
    }

    #[test]
    fn alarms_and_the_quota_metric_read_as_etcd_3_5_writes_them() {
        // As etcd 3.5.16's gateway answered /v3/maintenance/alarm.
        let v: Value = serde_json::from_str(
            r#"{"header":{"revision":"57"},"alarms":[{"memberID":"13668033151171901709","alarm":"NOSPACE"},
               {"memberID":"2","alarm":"CORRUPT"}]}"#,
        )
        .unwrap();
        assert_eq!(
            alarms(&v),
            [
                Alarm {
                    member_id: 2,
                    kind: AlarmKind::Corrupt
                },
                Alarm {
                    member_id: 13668033151171901709,
                    kind: AlarmKind::NoSpace
                }
            ]
        );
        assert_eq!(alarms(&json!({"header": {}})), []);
        let text = "# HELP etcd_server_quota_backend_bytes Current backend storage quota size in bytes.\n\
                    # TYPE etcd_server_quota_backend_bytes gauge\n\
                    etcd_server_quota_backend_bytes_total 1\n\
                    etcd_server_quota_backend_bytes 1.6777216e+07\n";
        assert_eq!(metric(text, QUOTA_METRIC), Some(16_777_216.0));
        assert_eq!(metric("", QUOTA_METRIC), None);
    }

    #[test]
    fn members_read_the_gateways_json_including_unstarted_learners() {
        // As etcd 3.5.16's gateway answers /v3/cluster/member/list.
        let v: Value = serde_json::from_str(
            r#"{"header":{"cluster_id":"18356651462332683079"},"members":[
              {"ID":"14438441095318856526","peerURLs":["https://127.0.0.1:23801"],"isLearner":true},
              {"ID":"15605283837629904139","name":"m0","peerURLs":["https://127.0.0.1:23800"],"clientURLs":["https://127.0.0.1:23790"]}]}"#,
        )
        .unwrap();
        let m = members("e", "c", &v, "members").unwrap();
        assert_eq!(m[0].id, 14438441095318856526);
        assert!(m[0].is_learner && !m[0].started());
        assert_eq!(m[1].name, "m0");
        assert!(!m[1].is_learner && m[1].started());
        assert_eq!(m[1].hex_id(), "d8911af85113350b");
    }
}
