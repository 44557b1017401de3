//! A lock held in etcd: one holder at a time for a named disruption. The
//! key `/nodeboot/locks/<name>` holds the holder's name, attached to a
//! lease: a holder that dies releases the lock when its lease expires (the
//! TTL), without anyone's help. A holder that is killed and runs again
//! finds its own name on the key and takes it over with a fresh lease.
//!
//! Taking and giving back are one etcd transaction each, which compares
//! the holder: there is no moment between a read and a write in which the
//! lock could change hands (a read, then a delete, could delete the lock
//! another holder took in between).

use serde_json::{json, Value};

use super::client::b64;
use super::{Client, EtcdClientError};

pub const PREFIX: &str = "/nodeboot/locks/";
/// The lock of every voluntary disruption of an etcd member: a restart for
/// new files (the secrets sync), an OS reboot (the reboot coordinator), a
/// defragmentation (the space maintenance) and `roll`'s termination. One
/// member is disrupted at a time, whoever disrupts it.
pub const DISRUPTION: &str = "disruption";

/// A held lock; `release` gives it back (or the lease expires).
#[derive(Debug)]
pub struct Held {
    pub key: String,
    pub lease: i64,
}

/// Who holds `name` now, if anyone.
pub fn holder(client: &Client, name: &str) -> Result<Option<String>, EtcdClientError> {
    Ok(client
        .get(format!("{PREFIX}{name}").as_bytes())?
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

/// Whether a transaction's answer (proto3 JSON leaves a false out) says it succeeded.
fn succeeded(v: &Value) -> bool {
    v.get("succeeded").and_then(Value::as_bool).unwrap_or(false)
}

/// Takes the lock `name` for `holder_name` for `ttl_seconds` if nobody else
/// holds it: `Ok(None)` when someone else does (ask again later). One
/// transaction: if the key is absent, put it; else if it names
/// `holder_name` (a run of ours that was killed), put it under the new lease.
pub fn try_acquire(
    client: &Client,
    name: &str,
    holder_name: &str,
    ttl_seconds: i64,
) -> Result<Option<Held>, EtcdClientError> {
    let key = format!("{PREFIX}{name}");
    let lease = client.lease_grant(ttl_seconds)?;
    let (k, me) = (b64(key.as_bytes()), b64(holder_name.as_bytes()));
    let put = json!({"request_put": {"key": k, "value": me, "lease": lease.id.to_string()}});
    let answer = client.txn(json!({
        "compare": [{"key": k, "target": "VERSION", "result": "EQUAL", "version": "0"}],
        "success": [put],
        "failure": [{"request_txn": {
            "compare": [{"key": k, "target": "VALUE", "result": "EQUAL", "value": me}],
            "success": [put],
        }}],
    }))?;
    let taken = succeeded(&answer) || succeeded(&answer["responses"][0]["response_txn"]);
    if taken {
        return Ok(Some(Held { key, lease: lease.id }));
    }
    client.lease_revoke(lease.id)?;
    Ok(None)
}

/// Gives `name` back if `holder_name` holds it (after a reboot, when the
/// `Held` of the run that took it is gone with that run): one
/// compare-and-delete. True when this call deleted it.
pub fn release_if_held_by(client: &Client, name: &str, holder_name: &str) -> Result<bool, EtcdClientError> {
    let k = b64(format!("{PREFIX}{name}").as_bytes());
    let answer = client.txn(json!({
        "compare": [{"key": k, "target": "VALUE", "result": "EQUAL", "value": b64(holder_name.as_bytes())}],
        "success": [{"request_delete_range": {"key": k}}],
    }))?;
    Ok(succeeded(&answer))
}

impl Held {
    /// Keeps the lock while a long step runs (call more often than the TTL).
    pub fn refresh(&self, client: &Client) -> Result<(), EtcdClientError> {
        client.lease_keepalive(self.lease).map(|_| ())
    }

    /// Gives the lock back: revoking the lease deletes the key if, and only
    /// if, it is still on this lease (one step in etcd: never another's).
    pub fn release(self, client: &Client) -> Result<(), EtcdClientError> {
        client.lease_revoke(self.lease)
    }
}
