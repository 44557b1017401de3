//! When one etcd member may be disrupted (restarted for new files,
//! rebooted, defragmented, terminated by `roll`), and when it is back: one
//! rule for every voluntary disruption, taken under the lock
//! [`super::lock::DISRUPTION`].
//!
//! Safe to disrupt member T:
//! - no learner and no member added but never started: a joining member
//!   is not yet a vote, and etcd refuses to promote it while it lags; a
//!   disruption meanwhile leaves fewer caught-up voters than it seems;
//! - every voting member other than T answers (T itself may be down: a
//!   member that is down costs no vote when it is disrupted);
//! - all that answer name one leader, a voting member;
//! - without T, the voting members caught up with the leader (a revision
//!   within [`MAX_REVISION_GAP`] of it) are still a quorum: T is not the
//!   only one caught up, nor needed for a caught-up quorum.
//!
//! Back (the disruption is done): T is listed as a voter, answers, names
//! the leader every answering member names, and is within
//! [`MAX_REVISION_GAP`] revisions of it.
//!
//! [`assess`] and [`back`] are pure; [`observe`] asks the cluster.

use std::collections::{BTreeMap, BTreeSet};

use super::{Cluster, EtcdClientError};

/// How far (in revisions) a member may trail its leader and count as
/// caught up. Statuses are asked at once but answered milliseconds apart:
/// under writes a caught-up member trails by what those milliseconds
/// wrote, a member replaying its log or a snapshot by far more.
pub const MAX_REVISION_GAP: i64 = 1000;

/// One member as the member list and its own status show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState {
    pub id: u64,
    /// Empty while added and never started.
    pub name: String,
    pub is_learner: bool,
    /// Its own status: `(leader it knows, 0 for none; its revision)`;
    /// `None` when it did not answer.
    pub answer: Option<(u64, i64)>,
}

impl MemberState {
    fn label(&self) -> String {
        if self.name.is_empty() {
            format!("member {:x} (never started)", self.id)
        } else {
            self.name.clone()
        }
    }
}

/// The members, as observed at one moment.
pub type Observed = Vec<MemberState>;

/// The leader every answering member names, or why there is none.
fn one_leader(o: &[MemberState]) -> Result<(u64, i64), String> {
    let leaders: BTreeSet<u64> = o.iter().filter_map(|m| m.answer.map(|(l, _)| l)).collect();
    if leaders.contains(&0) {
        let m = o.iter().find(|m| m.answer.is_some_and(|(l, _)| l == 0)).expect("one");
        return Err(format!("{} knows no leader", m.label()));
    }
    let leader = match leaders.len() {
        0 => return Err("no member answers".into()),
        1 => *leaders.iter().next().expect("one"),
        n => return Err(format!("the members name {n} different leaders")),
    };
    match o.iter().find(|m| m.id == leader) {
        Some(m) if m.is_learner => Err(format!("the leader {} is a learner", m.label())),
        Some(MemberState {
            answer: Some((_, revision)),
            ..
        }) => Ok((leader, *revision)),
        Some(m) => Err(format!("the leader {} does not answer", m.label())),
        None => Err(format!("the leader {leader:x} is not a listed member")),
    }
}

fn caught_up(m: &MemberState, leader_revision: i64) -> bool {
    m.answer
        .is_some_and(|(_, revision)| revision >= leader_revision - MAX_REVISION_GAP)
}

/// Pure: no learner, no member that never started, every member other
/// than `except` answers, and they name one leader (a voter that answers):
/// its id and revision.
fn settled(o: &[MemberState], except: Option<&str>) -> Result<(u64, i64), String> {
    if let Some(m) = o.iter().find(|m| m.is_learner) {
        return Err(format!("{} is a learner catching up", m.label()));
    }
    if let Some(m) = o.iter().find(|m| m.name.is_empty()) {
        return Err(format!("{} is joining", m.label()));
    }
    if let Some(m) = o.iter().find(|m| Some(m.name.as_str()) != except && m.answer.is_none()) {
        return Err(format!("{} does not answer", m.label()));
    }
    one_leader(o)
}

/// Pure: the cluster is whole (no learner, every voting member answers,
/// one leader), whoever would be disrupted; else why not.
pub fn healthy(o: &[MemberState]) -> Result<(), String> {
    settled(o, None).map(|_| ())
}

/// Pure: whether the member named `target` may be disrupted now; else why not.
pub fn assess(o: &[MemberState], target: &str) -> Result<(), String> {
    if !o.iter().any(|m| m.name == target) {
        return Err(format!("{target} is not a member"));
    }
    let (_, leader_revision) = settled(o, Some(target))?;
    let others = || o.iter().filter(|m| m.name != target);
    let quorum = o.len() / 2 + 1;
    let caught = others().filter(|m| caught_up(m, leader_revision)).count();
    // One member alone: no quorum to keep, it is disrupted when it must be.
    if o.len() > 1 && caught < quorum {
        let behind: Vec<String> = others()
            .filter(|m| !caught_up(m, leader_revision))
            .map(MemberState::label)
            .collect();
        return Err(format!(
            "without {target}, {caught} of {} members would be caught up with the leader, fewer than a quorum ({quorum}): {} behind",
            o.len(),
            behind.join(", ")
        ));
    }
    Ok(())
}

/// Pure: whether the member named `target` is back after its disruption;
/// else why not.
pub fn back(o: &[MemberState], target: &str) -> Result<(), String> {
    let Some(me) = o.iter().find(|m| m.name == target) else {
        return Err(format!("{target} is not a started member yet"));
    };
    if me.is_learner {
        return Err(format!("{target} is a learner"));
    }
    let Some((_, revision)) = me.answer else {
        return Err(format!("{target} does not answer"));
    };
    let (leader, leader_revision) = one_leader(o)?;
    if me.answer.is_some_and(|(l, _)| l != leader) {
        return Err(format!("{target} names another leader"));
    }
    if !caught_up(me, leader_revision) {
        return Err(format!(
            "{target} is at revision {revision}, the leader at {leader_revision}"
        ));
    }
    Ok(())
}

/// Asks the cluster: the member list (linearizable: needs a leader), then
/// every member's status at once, through the client's endpoints and the
/// client URLs the list gives (a dead member costs one connect timeout).
pub fn observe<C: Cluster + Sync>(cluster: &C) -> Result<Observed, EtcdClientError> {
    let members = cluster.member_list()?;
    let mut endpoints = cluster.endpoints();
    for url in members.iter().filter_map(|m| m.client_urls.first()) {
        if !endpoints.contains(url) {
            endpoints.push(url.clone());
        }
    }
    let answers: BTreeMap<u64, (u64, i64)> = std::thread::scope(|s| {
        let asks: Vec<_> = endpoints.iter().map(|e| s.spawn(move || cluster.status(e))).collect();
        asks.into_iter()
            .filter_map(|a| a.join().expect("a status call does not panic").ok())
            .map(|s| (s.member_id, (s.leader, s.revision)))
            .collect()
    });
    Ok(members
        .into_iter()
        .map(|m| MemberState {
            answer: answers.get(&m.id).copied(),
            id: m.id,
            name: m.name,
            is_learner: m.is_learner,
        })
        .collect())
}

/// Observes and assesses: `Ok(())` when `target` may be disrupted now.
pub fn safe_to_disrupt<C: Cluster + Sync>(cluster: &C, target: &str) -> Result<(), String> {
    let o = observe(cluster).map_err(|e| format!("the member list: {e}"))?;
    assess(&o, target)
}

/// Observes: `Ok(())` when `target` is back after its disruption.
pub fn is_back<C: Cluster + Sync>(cluster: &C, target: &str) -> Result<(), String> {
    let o = observe(cluster).map_err(|e| format!("the member list: {e}"))?;
    back(&o, target)
}

/// How one member answered its status call, for [`down_for_ended_certificates`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// It answered, knowing a leader.
    Leader,
    /// It answered, knowing none.
    NoLeader,
    /// The TLS handshake failed because the certificate it serves has
    /// ended: it runs, it is not down.
    Ended,
    /// Nothing answered, or anything else failed.
    Down,
}

/// Whether `e` is a TLS handshake refused because the peer's certificate
/// has ended (rustls' `CertificateError::Expired`/`ExpiredContext`, as
/// ureq reports it).
pub fn ended_certificate(e: &EtcdClientError) -> bool {
    match e {
        EtcdClientError::Unreachable { detail, .. } => {
            detail.contains("certificate expired") || detail.contains("peer certificate: Expired")
        }
        _ => false,
    }
}

/// How a status call's result reads for the expiry rule.
pub fn reach(result: &Result<super::Status, EtcdClientError>) -> Reach {
    match result {
        Ok(s) if s.has_leader() => Reach::Leader,
        Ok(_) => Reach::NoLeader,
        Err(e) if ended_certificate(e) => Reach::Ended,
        Err(_) => Reach::Down,
    }
}

/// Pure: after a renewal that came too late, whether this node restarts
/// its member with the new certificates without the lock and without the
/// rule: the members' certificates have ended, so they refuse each other
/// and the cluster is down anyway (no member answers with a leader), and
/// at least one member (this node's own included) is refused for its
/// certificate's end, not down; a restart with the new files is what
/// brings it back, and every member does it. `Ok(why)`: restart now.
pub fn down_for_ended_certificates(reaches: &[(String, Reach)]) -> Result<String, String> {
    if let Some((name, _)) = reaches.iter().find(|(_, r)| *r == Reach::Leader) {
        return Err(format!("{name} answers with a leader: the cluster is not down"));
    }
    let ended: Vec<&str> = reaches
        .iter()
        .filter(|(_, r)| *r == Reach::Ended)
        .map(|(n, _)| n.as_str())
        .collect();
    if ended.is_empty() {
        return Err("no member serves an ended certificate: the members are down, not refused".into());
    }
    Ok(format!(
        "no etcd member answers with a leader and {} serve(s) an ended certificate: the members refuse each other",
        ended.join(", ")
    ))
}

/// Asks every endpoint of `client` (a node's: every member's client URL)
/// for its status at once: how each answered, by endpoint.
pub fn reaches<C: Cluster + Sync>(cluster: &C) -> Vec<(String, Reach)> {
    let endpoints = cluster.endpoints();
    std::thread::scope(|s| {
        let asks: Vec<_> = endpoints
            .iter()
            .map(|e| s.spawn(move || (e.clone(), reach(&cluster.status(e)))))
            .collect();
        asks.into_iter()
            .map(|a| a.join().expect("a status call does not panic"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `m(i, answer)`: member `m<i>`, id `i + 1`, a voter.
    fn m(i: u64, answer: Option<(u64, i64)>) -> MemberState {
        MemberState {
            id: i + 1,
            name: format!("m{i}"),
            is_learner: false,
            answer,
        }
    }

    fn learner(mut s: MemberState) -> MemberState {
        s.is_learner = true;
        s
    }

    const L: u64 = 1; // m0 leads
    const R: i64 = 100_000;

    #[test]
    fn a_healthy_caught_up_cluster_may_lose_any_one_member() {
        let o = vec![m(0, Some((L, R))), m(1, Some((L, R - 5))), m(2, Some((L, R - 999)))];
        for t in ["m0", "m1", "m2"] {
            assert_eq!(assess(&o, t), Ok(()), "{t}");
        }
    }

    /// Each row: the members, the target, the reason's words (None: safe).
    #[test]
    fn the_rule_over_its_cases() {
        let rows: Vec<(&str, Observed, &str, Option<&str>)> = vec![
            (
                "a learner anywhere (a blank member catching up)",
                vec![m(0, Some((L, R))), m(1, Some((L, R))), learner(m(2, Some((L, 10))))],
                "m1",
                Some("m2 is a learner"),
            ),
            (
                "a learner caught up is still a learner",
                vec![m(0, Some((L, R))), m(1, Some((L, R))), learner(m(2, Some((L, R))))],
                "m0",
                Some("learner"),
            ),
            (
                "added, never started",
                vec![
                    m(0, Some((L, R))),
                    m(1, Some((L, R))),
                    MemberState {
                        id: 9,
                        name: String::new(),
                        is_learner: false,
                        answer: None,
                    },
                ],
                "m1",
                Some("never started"),
            ),
            (
                "another voter does not answer",
                vec![m(0, Some((L, R))), m(1, None), m(2, Some((L, R)))],
                "m2",
                Some("m1 does not answer"),
            ),
            (
                "the target itself down: no vote lost",
                vec![m(0, Some((L, R))), m(1, Some((L, R))), m(2, None)],
                "m2",
                None,
            ),
            (
                "a member knows no leader",
                vec![m(0, Some((L, R))), m(1, Some((0, R))), m(2, Some((L, R)))],
                "m2",
                Some("m1 knows no leader"),
            ),
            (
                "two leaders named",
                vec![m(0, Some((L, R))), m(1, Some((2, R))), m(2, Some((L, R)))],
                "m2",
                Some("2 different leaders"),
            ),
            (
                "the only other caught-up member is needed (3 members, one behind)",
                vec![m(0, Some((L, R))), m(1, Some((L, R - 5000))), m(2, Some((L, R)))],
                "m2",
                Some("m1 behind"),
            ),
            (
                "the member behind may go itself",
                vec![m(0, Some((L, R))), m(1, Some((L, R - 5000))), m(2, Some((L, R)))],
                "m1",
                None,
            ),
            (
                "5 members, one behind: three others caught up are a quorum",
                vec![
                    m(0, Some((L, R))),
                    m(1, Some((L, R - 5000))),
                    m(2, Some((L, R))),
                    m(3, Some((L, R))),
                    m(4, Some((L, R))),
                ],
                "m4",
                None,
            ),
            (
                "5 members, two behind: not without the target",
                vec![
                    m(0, Some((L, R))),
                    m(1, Some((L, R - 5000))),
                    m(2, Some((L, 0))),
                    m(3, Some((L, R))),
                    m(4, Some((L, R))),
                ],
                "m4",
                Some("fewer than a quorum (3)"),
            ),
            ("one member alone", vec![m(0, Some((L, R)))], "m0", None),
            (
                "not a member",
                vec![m(0, Some((L, R))), m(1, Some((L, R))), m(2, Some((L, R)))],
                "m7",
                Some("not a member"),
            ),
            (
                "the leader does not answer (the others still name it)",
                vec![m(0, None), m(1, Some((L, R))), m(2, Some((L, R)))],
                "m0",
                Some("the leader m0 does not answer"),
            ),
        ];
        for (case, o, target, want) in rows {
            let got = assess(&o, target);
            match want {
                None => assert_eq!(got, Ok(()), "{case}"),
                Some(words) => assert!(
                    got.as_ref().is_err_and(|e| e.contains(words)),
                    "{case}: {got:?}, want an error with {words:?}"
                ),
            }
        }
    }

    /// The words rustls 0.23 and ureq 3 give an ended certificate, as the
    /// client carries them (`Unreachable`'s detail).
    #[test]
    fn an_ended_certificate_is_told_apart_from_a_member_that_is_down() {
        let ended = |e: rustls::CertificateError| EtcdClientError::Unreachable {
            endpoint: "https://10.0.10.10:2379".into(),
            detail: ureq::Error::Rustls(rustls::Error::InvalidCertificate(e)).to_string(),
        };
        let context = rustls::CertificateError::ExpiredContext {
            time: rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(2_000)),
            not_after: rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_000)),
        };
        assert!(ended_certificate(&ended(context)));
        assert!(ended_certificate(&ended(rustls::CertificateError::Expired)));
        assert!(!ended_certificate(&ended(rustls::CertificateError::UnknownIssuer)));
        let refused = EtcdClientError::Unreachable {
            endpoint: "https://10.0.10.10:2379".into(),
            detail: "io: Connection refused (os error 111)".into(),
        };
        assert!(!ended_certificate(&refused));
        assert_eq!(reach(&Err(refused)), Reach::Down);
    }

    #[test]
    fn members_restart_together_only_when_down_for_ended_certificates() {
        use Reach::*;
        let r = |v: &[Reach]| -> Vec<(String, Reach)> {
            v.iter().enumerate().map(|(i, r)| (format!("m{i}"), *r)).collect()
        };
        // Every certificate ended: every node restarts its member.
        assert!(down_for_ended_certificates(&r(&[Ended, Ended, Ended])).is_ok());
        // One restarted already (serves a new one, no quorum yet): the rest follow.
        assert!(down_for_ended_certificates(&r(&[NoLeader, Ended, Ended])).is_ok());
        // One down as well: the cluster is down anyway, the restart is what helps.
        assert!(down_for_ended_certificates(&r(&[Down, Ended, Ended])).is_ok());
        // A leader somewhere: the one-at-a-time rule holds.
        assert!(down_for_ended_certificates(&r(&[Leader, Ended, Ended])).is_err());
        // Down, not refused: a restart would not help.
        assert!(down_for_ended_certificates(&r(&[Down, Down, NoLeader])).is_err());
        assert!(down_for_ended_certificates(&[]).is_err());
    }

    #[test]
    fn back_means_a_voter_that_answers_the_leader_within_the_gap() {
        let rows: Vec<(&str, Observed, Option<&str>)> = vec![
            (
                "caught up",
                vec![m(0, Some((L, R))), m(1, Some((L, R))), m(2, Some((L, R - 10)))],
                None,
            ),
            (
                "answers with a leader but far behind (replaying)",
                vec![m(0, Some((L, R))), m(1, Some((L, R))), m(2, Some((L, R - 50_000)))],
                Some("is at revision 50000"),
            ),
            (
                "down",
                vec![m(0, Some((L, R))), m(1, Some((L, R))), m(2, None)],
                Some("does not answer"),
            ),
            (
                "no leader yet",
                vec![m(0, Some((L, R))), m(1, Some((L, R))), m(2, Some((0, R)))],
                Some("knows no leader"),
            ),
            (
                "a learner (a blank replacement not promoted)",
                vec![m(0, Some((L, R))), m(1, Some((L, R))), learner(m(2, Some((L, R))))],
                Some("is a learner"),
            ),
            (
                "not listed yet",
                vec![m(0, Some((L, R))), m(1, Some((L, R)))],
                Some("not a started member"),
            ),
        ];
        for (case, o, want) in rows {
            let got = back(&o, "m2");
            match want {
                None => assert_eq!(got, Ok(()), "{case}"),
                Some(words) => assert!(
                    got.as_ref().is_err_and(|e| e.contains(words)),
                    "{case}: {got:?}, want an error with {words:?}"
                ),
            }
        }
    }
}
