//! A lock held in etcd: one holder at a time for a named disruption (one
//! etcd member or one control-plane node restarting at a time). The key
//! `/nodeboot/locks/<name>` is created only if absent, attached to a lease:
//! a holder that dies releases the lock when its lease expires (the TTL),
//! without anyone's help. A holder that is killed and runs again finds its
//! own name on the key and takes it over with a fresh lease.

use super::{Client, EtcdClientError};

pub const PREFIX: &str = "/nodeboot/locks/";
/// The lock of a voluntary disruption of one etcd member (a
/// defragmentation today; issue 21 unifies `etcd-restart` and `reboot` into it).
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

/// Takes the lock `name` for `holder` for `ttl_seconds` if nobody else
/// holds it: `Ok(None)` when someone else does (ask again later).
pub fn try_acquire(
    client: &Client,
    name: &str,
    holder_name: &str,
    ttl_seconds: i64,
) -> Result<Option<Held>, EtcdClientError> {
    let key = format!("{PREFIX}{name}");
    let lease = client.lease_grant(ttl_seconds)?;
    if client.put_if_absent(key.as_bytes(), holder_name.as_bytes(), Some(lease.id))? {
        return Ok(Some(Held { key, lease: lease.id }));
    }
    // Ours from a run that was killed: take it over under the new lease.
    if holder(client, name)?.as_deref() == Some(holder_name) {
        client.put_with_lease(key.as_bytes(), holder_name.as_bytes(), lease.id)?;
        return Ok(Some(Held { key, lease: lease.id }));
    }
    client.lease_revoke(lease.id)?;
    Ok(None)
}

/// Gives `name` back if `holder_name` holds it (after a reboot, when the
/// `Held` of the run that took it is gone with that run).
pub fn release_if_held_by(client: &Client, name: &str, holder_name: &str) -> Result<(), EtcdClientError> {
    if holder(client, name)?.as_deref() == Some(holder_name) {
        client.delete(format!("{PREFIX}{name}").as_bytes())?;
    }
    Ok(())
}

impl Held {
    /// Keeps the lock while a long step runs (call more often than the TTL).
    pub fn refresh(&self, client: &Client) -> Result<(), EtcdClientError> {
        client.lease_keepalive(self.lease).map(|_| ())
    }

    /// Gives the lock back: revoking the lease deletes the key.
    pub fn release(self, client: &Client) -> Result<(), EtcdClientError> {
        client.lease_revoke(self.lease)
    }
}
