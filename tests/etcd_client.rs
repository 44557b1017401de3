//! The etcd client against a real etcd 3.5 (tests/fetch-etcd), TLS from
//! `nodeboot pki`: key-value, transactions, leases, status, snapshot (read
//! back by etcdutl) and membership with a learner that is promoted.

mod common;

use std::time::Duration;

use common::etcd::*;
use nodeboot::shared::etcd::{Client, Cluster, EtcdClientError, TlsFiles};

fn one_member(dir: &std::path::Path, tls: &TlsFiles) -> Member {
    one_member_with_env(dir, tls, &Ports::free(), &[])
}

/// A member `m0` on `ports` with `ETCD_*` variables (as the etcd stage's
/// env file gives them), once it answers with a leader.
fn one_member_with_env(dir: &std::path::Path, tls: &TlsFiles, ports: &Ports, env: &[(&str, String)]) -> Member {
    let cluster = format!("m0={}", ports.peer_url());
    let m = Member::start_with_env(dir, tls, "m0", ports, &cluster, "new", env);
    let client = Client::new(vec![m.client_url.clone()], tls).unwrap();
    wait_until("etcd answers with a leader", Duration::from_secs(20), || {
        client.status(&m.client_url).is_ok_and(|s| s.has_leader())
    });
    m
}

/// The JSON log line etcd writes with `msg` (the first), parsed.
fn log_line(m: &Member, msg: &str) -> Option<serde_json::Value> {
    std::fs::read_to_string(&m.log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["msg"] == msg)
}

#[test]
fn kv_txn_leases_status_and_snapshot_over_tls_with_a_member_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let etcd_dir = pki(dir.path());
    let tls = member_tls(&etcd_dir, 0);
    let m = one_member(dir.path(), &tls);
    // A dead endpoint first: the client moves on to the one that answers.
    let dead = format!("https://127.0.0.1:{}", free_port());
    let client = Client::new(vec![dead.clone(), m.client_url.clone()], &tls).unwrap();

    let rev = client.put(b"/t/a", b"1").unwrap();
    assert!(rev > 1);
    client.put(b"/t/b", b"\x00\xffbinary").unwrap();
    client.put(b"/u/c", b"3").unwrap();
    assert_eq!(client.get(b"/t/b").unwrap().unwrap().value, b"\x00\xffbinary");
    assert_eq!(client.get(b"/nope").unwrap(), None);
    let keys: Vec<Vec<u8>> = client
        .range_prefix(b"/t/")
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, [b"/t/a".to_vec(), b"/t/b".to_vec()]);
    assert_eq!(client.count_prefix(b"/").unwrap().0, 3);

    assert!(client.put_if_absent(b"/lock", b"me", None).unwrap());
    assert!(!client.put_if_absent(b"/lock", b"you", None).unwrap());
    assert_eq!(client.get(b"/lock").unwrap().unwrap().value, b"me");
    assert_eq!(client.delete(b"/lock").unwrap(), 1);

    let lease = client.lease_grant(30).unwrap();
    assert!(lease.id != 0 && lease.ttl == 30, "{lease:?}");
    client.put_with_lease(b"/leased", b"x", lease.id).unwrap();
    assert_eq!(client.get(b"/leased").unwrap().unwrap().lease, lease.id);
    assert!(client.lease_keepalive(lease.id).unwrap() > 0);
    client.lease_revoke(lease.id).unwrap();
    assert_eq!(client.get(b"/leased").unwrap(), None, "a revoked lease takes its keys");

    let status = client.status(&m.client_url).unwrap();
    assert_eq!(status.version, "3.5.16");
    assert!(
        status.has_leader() && status.leader == status.member_id && status.db_size > 0,
        "{status:?}"
    );
    assert!(matches!(client.status(&dead), Err(EtcdClientError::Unreachable { .. })));

    // The snapshot is the file etcdctl would save: etcdutl reads it.
    let path = dir.path().join("snap.db");
    let info = client.snapshot(&mut std::fs::File::create(&path).unwrap()).unwrap();
    assert_eq!(info.bytes, std::fs::metadata(&path).unwrap().len());
    let out = std::process::Command::new(etcd_bin_dir().join("etcdutl"))
        .args(["snapshot", "status", path.to_str().unwrap(), "-w", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "etcdutl snapshot status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        st["revision"].as_i64().unwrap(),
        client.count_prefix(b"/").unwrap().1,
        "{st}"
    );
}

#[test]
fn a_client_with_another_ca_or_no_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let etcd_dir = pki(dir.path());
    let tls = member_tls(&etcd_dir, 0);
    let m = one_member(dir.path(), &tls);
    // Another environment's PKI: its CA does not know the server, nor the server its certificate.
    let other = tempfile::tempdir().unwrap();
    let other_dir = pki(other.path());
    let client = Client::new(vec![m.client_url.clone()], &member_tls(&other_dir, 0)).unwrap();
    let err = client.put(b"k", b"v").unwrap_err();
    assert!(matches!(err, EtcdClientError::Unreachable { .. }), "{err}");
    let bad = Client::new(
        vec![m.client_url.clone()],
        &TlsFiles {
            cert: dir.path().join("missing.crt"),
            ..tls.clone()
        },
    );
    assert!(bad.err().unwrap().to_string().contains("missing.crt"));
}

#[test]
fn a_learner_is_added_refused_promotion_until_it_runs_then_promoted_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let etcd_dir = pki(dir.path());
    let tls0 = member_tls(&etcd_dir, 0);
    let m0 = one_member(dir.path(), &tls0);
    let client = Client::new(vec![m0.client_url.clone()], &tls0).unwrap();
    for i in 0..100 {
        client.put(format!("/k/{i}").as_bytes(), b"v").unwrap();
    }

    let ports = Ports::free();
    let added = client.member_add(&[ports.peer_url()], true).unwrap();
    assert!(added.is_learner && !added.started(), "{added:?}");
    let listed = client.member_list().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed
        .iter()
        .any(|m| m.id == added.id && m.is_learner && m.name.is_empty()));
    // One learner at a time: etcd 3.5 refuses a second.
    let second = client.member_add(&[Ports::free().peer_url()], true).unwrap_err();
    assert!(
        second.api_message().is_some_and(|m| m.contains("too many learner")),
        "{second}"
    );
    // Not running, so not in sync: etcd refuses to promote it.
    let early = client.member_promote(added.id).unwrap_err();
    assert!(early.api_message().is_some_and(|m| m.contains("learner")), "{early}");

    let cluster = format!("m0={},m1={}", m0.peer_url, ports.peer_url());
    let m1 = Member::start(
        dir.path(),
        &member_tls(&etcd_dir, 1),
        "m1",
        &ports,
        &cluster,
        "existing",
    );
    wait_until(
        "the learner catches up and is promoted",
        Duration::from_secs(30),
        || client.member_promote(added.id).is_ok(),
    );
    let listed = client.member_list().unwrap();
    assert!(
        listed.iter().all(|m| !m.is_learner && m.started()),
        "{listed:?}\n{}",
        m1.log_tail()
    );
    let c1 = Client::new(vec![m1.client_url.clone()], &tls0).unwrap();
    assert_eq!(
        c1.count_prefix(b"/k/").unwrap().0,
        100,
        "the promoted member serves every key"
    );

    // etcd refuses to remove a voting member until the others have been
    // connected for 5 s ("unhealthy cluster"): a retryable answer.
    let mut removed = false;
    wait_until("the member is removed", Duration::from_secs(20), || {
        match client.member_remove(added.id) {
            Ok(()) => removed = true,
            Err(e) => assert!(e.is_unavailable(), "{e}"),
        }
        removed
    });
    assert_eq!(client.member_list().unwrap().len(), 1);
    let gone = client.member_remove(added.id).unwrap_err();
    assert!(
        gone.api_message().is_some_and(|m| m.contains("member not found")),
        "{gone}"
    );
}

/// The restart lock against a real etcd: one holder; the same holder
/// takes it over after a kill; a dead holder's lock goes with its lease.
#[test]
fn the_lock_has_one_holder_survives_its_holders_rerun_and_expires_with_its_lease() {
    use nodeboot::shared::etcd::lock;
    let dir = tempfile::tempdir().unwrap();
    let etcd_dir = pki(dir.path());
    let tls = member_tls(&etcd_dir, 0);
    let m = one_member(dir.path(), &tls);
    let client = Client::new(vec![m.client_url.clone()], &tls).unwrap();

    let held = lock::try_acquire(&client, "etcd-restart", "member-0", 30)
        .unwrap()
        .expect("free: taken");
    assert!(
        lock::try_acquire(&client, "etcd-restart", "member-1", 30)
            .unwrap()
            .is_none(),
        "a second holder is refused"
    );
    assert_eq!(
        lock::holder(&client, "etcd-restart").unwrap().as_deref(),
        Some("member-0")
    );
    // member-0 killed and run again: it takes its own lock over.
    let again = lock::try_acquire(&client, "etcd-restart", "member-0", 30)
        .unwrap()
        .expect("its own lock");
    again.refresh(&client).unwrap();
    again.release(&client).unwrap();
    assert_eq!(lock::holder(&client, "etcd-restart").unwrap(), None, "released");
    drop(held);

    // Released by name after a reboot: only by its holder.
    let _after_reboot = lock::try_acquire(&client, "reboot", "member-3", 30)
        .unwrap()
        .expect("free");
    lock::release_if_held_by(&client, "reboot", "member-4").unwrap();
    assert_eq!(
        lock::holder(&client, "reboot").unwrap().as_deref(),
        Some("member-3"),
        "not member-4's to release"
    );
    lock::release_if_held_by(&client, "reboot", "member-3").unwrap();
    assert_eq!(lock::holder(&client, "reboot").unwrap(), None);

    // A holder that dies without releasing: the lock goes with its lease.
    let _dead = lock::try_acquire(&client, "etcd-restart", "member-2", 2)
        .unwrap()
        .expect("free again");
    assert!(lock::try_acquire(&client, "etcd-restart", "member-1", 30)
        .unwrap()
        .is_none());
    wait_until("the dead holder's lease expires", Duration::from_secs(15), || {
        lock::holder(&client, "etcd-restart").unwrap().is_none()
    });
    assert!(lock::try_acquire(&client, "etcd-restart", "member-1", 30)
        .unwrap()
        .is_some());
}

/// The etcd stage's space settings (`space_env`) are what etcd 3.5 runs
/// with: every variable recognised (an unknown `ETCD_*` name is only warned
/// about, so the effective configuration is read back from etcd's own log),
/// the quota exported in its metrics, and the initial corruption check run
/// when the member restarts on its data (it is skipped on a first start).
/// The lock is taken and given back by its holder in one transaction each:
/// a release by name never deletes a lock another holder took between a
/// read and a delete, and a holder's takeover never overwrites another's.
/// Three threads race on one lock: `a` takes and gives back as "m-a",
/// `r` gives "m-a"'s lock back by name (a coordinator after its reboot),
/// `b` takes it as "m-b" and checks that it is still its own while held.
/// With a read, then a delete, `r` deleted `b`'s lock (failed before).
#[test]
fn the_lock_is_taken_and_released_by_its_holder_in_one_transaction_each() {
    use nodeboot::shared::etcd::lock;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let etcd_dir = pki(dir.path());
    let tls = member_tls(&etcd_dir, 0);
    let m = one_member(dir.path(), &tls);
    let client = || Client::new(vec![m.client_url.clone()], &tls).unwrap();
    let done = AtomicBool::new(false);
    let stolen = std::thread::scope(|s| {
        let done = &done;
        let a = s.spawn(move || {
            let c = client();
            for _ in 0..400 {
                if let Some(held) = lock::try_acquire(&c, "race", "m-a", 30).unwrap() {
                    held.release(&c).unwrap();
                }
            }
        });
        let r = s.spawn(move || {
            let c = client();
            while !done.load(Ordering::Relaxed) {
                lock::release_if_held_by(&c, "race", "m-a").unwrap();
            }
        });
        let b = s.spawn(move || {
            let c = client();
            let mut stolen = 0;
            for _ in 0..400 {
                if let Some(held) = lock::try_acquire(&c, "race", "m-b", 30).unwrap() {
                    for _ in 0..3 {
                        if lock::holder(&c, "race").unwrap().as_deref() != Some("m-b") {
                            stolen += 1;
                            break;
                        }
                    }
                    held.release(&c).unwrap();
                }
            }
            stolen
        });
        a.join().unwrap();
        let stolen = b.join().unwrap();
        done.store(true, Ordering::Relaxed);
        r.join().unwrap();
        stolen
    });
    assert_eq!(stolen, 0, "m-b's lock was deleted by a release of m-a's");
    // Given back by name: only by its holder, and says whether it did.
    let c = client();
    let _held = lock::try_acquire(&c, "by-name", "m-3", 30).unwrap().expect("free");
    assert!(!lock::release_if_held_by(&c, "by-name", "m-4").unwrap());
    assert_eq!(lock::holder(&c, "by-name").unwrap().as_deref(), Some("m-3"));
    assert!(lock::release_if_held_by(&c, "by-name", "m-3").unwrap());
    assert!(!lock::release_if_held_by(&c, "by-name", "m-3").unwrap(), "already free");
}

#[test]
fn the_stages_space_settings_are_what_etcd_3_5_runs_with() {
    use nodeboot::node::stage::etcd::space_env;
    let dir = tempfile::tempdir().unwrap();
    let etcd_dir = pki(dir.path());
    let tls = member_tls(&etcd_dir, 0);
    let ports = Ports::free();
    let quota: u64 = 300 << 20;
    let env = space_env(quota);
    let mut m = one_member_with_env(dir.path(), &tls, &ports, &env);
    let log = std::fs::read_to_string(&m.log).unwrap();
    assert!(log_line(&m, "unrecognized environment variable").is_none(), "{log}");
    let used: Vec<(String, String)> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["msg"] == "recognized and used environment variable")
        .map(|v| (v["variable-name"].to_string(), v["variable-value"].to_string()))
        .collect();
    for (name, value) in &env {
        assert!(
            used.contains(&(format!("{name:?}"), format!("{value:?}"))),
            "etcd did not take {name}={value}: {used:?}"
        );
    }
    let started = log_line(&m, "starting an etcd server").expect("etcd logs its configuration");
    assert_eq!(started["quota-backend-bytes"], quota, "{started}");
    assert_eq!(started["initial-corrupt-check"], true, "{started}");
    assert_eq!(started["compact-check-time-enabled"], true, "{started}");
    assert_eq!(started["auto-compaction-mode"], "periodic", "{started}");
    assert_eq!(started["auto-compaction-retention"], "1h0m0s", "{started}");
    let client = Client::new(vec![m.client_url.clone()], &tls).unwrap();
    assert_eq!(client.quota_bytes(&m.client_url).unwrap(), Some(quota as i64));
    assert_eq!(client.alarms().unwrap(), []);

    client.put(b"/k", b"v").unwrap();
    m.kill();
    let m = one_member_with_env(dir.path(), &tls, &ports, &env);
    assert!(
        log_line(&m, "starting initial corruption check").is_some(),
        "a restarted member checks its data first:\n{}",
        m.log_tail()
    );
    assert_eq!(client.get(b"/k").unwrap().unwrap().value, b"v");
}

/// Space through the client, against a real etcd 3.5 with a 16 MiB quota:
/// overwriting one key fills the file until etcd refuses writes (and lease
/// grants, so no lock can be taken) with a `NOSPACE` alarm naming the
/// member; a physical compaction frees the pages, a defragmentation gives
/// them back, a disarm lets writes in again.
#[test]
fn nospace_is_raised_compacted_defragmented_and_disarmed_through_the_client() {
    use nodeboot::shared::etcd::lock;
    use nodeboot::shared::etcd::space::{Alarm, AlarmKind};
    let dir = tempfile::tempdir().unwrap();
    let etcd_dir = pki(dir.path());
    let tls = member_tls(&etcd_dir, 0);
    let env = [("ETCD_QUOTA_BACKEND_BYTES", (16u64 << 20).to_string())];
    let m = one_member_with_env(dir.path(), &tls, &Ports::free(), &env);
    let client = Client::new(vec![m.client_url.clone()], &tls).unwrap();
    let me = client.status(&m.client_url).unwrap().member_id;

    let value = vec![b'x'; 512 * 1024];
    let refused = (0..200)
        .find_map(|_| client.put(b"/fill", &value).err())
        .expect("200 writes of 512 KiB do not fit in 16 MiB");
    assert!(refused.is_no_space(), "{refused}");
    let nospace = Alarm {
        member_id: me,
        kind: AlarmKind::NoSpace,
    };
    assert_eq!(client.alarms().unwrap(), std::slice::from_ref(&nospace));
    let lease = lock::try_acquire(&client, lock::DISRUPTION, "m0", 30).unwrap_err();
    assert!(lease.is_no_space(), "no lease, so no lock, under NOSPACE: {lease}");

    let full = client.status(&m.client_url).unwrap();
    assert!(client.compact(&m.client_url, full.revision).unwrap());
    assert!(
        !client.compact(&m.client_url, full.revision).unwrap(),
        "already compacted"
    );
    let compacted = client.status(&m.client_url).unwrap();
    assert!(
        compacted.db_size >= full.db_size && compacted.db_size_in_use < 2 << 20,
        "the pages are free, the file no smaller: {full:?} -> {compacted:?}"
    );
    client.defragment(&m.client_url).unwrap();
    let defragmented = client.status(&m.client_url).unwrap();
    assert!(defragmented.db_size < 2 << 20, "{defragmented:?}");
    assert!(
        client.put(b"/after", b"1").unwrap_err().is_no_space(),
        "the alarm holds until disarmed"
    );

    client.alarm_disarm(&nospace).unwrap();
    assert_eq!(client.alarms().unwrap(), []);
    client.put(b"/after", b"1").unwrap();
}
