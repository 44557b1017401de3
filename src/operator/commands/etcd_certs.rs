//! The certificate part of `nodeboot etcd status`: the end of the
//! certificate each member serves (read from a TLS handshake with it, see
//! `shared::etcd::served`: a renewal in the secrets tree changes nothing
//! until the member restarts with it) and of the client certificate the
//! command used. Within `ends::STATUS_FAIL_DAYS` of an end, `etcd status`
//! fails with exit 32. `observe` asks, `assess` (pure) judges.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::operator::env::Environment;
use crate::operator::error::Error;
use crate::operator::pki::ends::{self, Due, STATUS_FAIL_DAYS};
use crate::shared::etcd::served::{self, Refusal, Served};
use crate::shared::etcd::TlsFiles;

/// How long one handshake may take (a dead member's address drops packets).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// One certificate and its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertRow {
    /// The member's client URL, or the client certificate's file.
    pub source: String,
    pub subject: String,
    /// RFC 3339, UTC; `None` when nothing was read.
    pub not_after: Option<String>,
    pub days_left: Option<i64>,
    pub due: Option<Due>,
    /// Why no certificate could be read, or why the member refused the
    /// connection once it had sent it (its certificate ended, ours did).
    pub error: Option<String>,
}

/// What `etcd status` says about certificates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertReport {
    /// The certificate each member serves, in endpoint order.
    pub members: Vec<CertRow>,
    /// The client certificate this command used.
    pub client: CertRow,
    /// A certificate that ends within `STATUS_FAIL_DAYS` (or has ended),
    /// one line each; `etcd status` fails with exit 32 when not empty.
    pub ending: Vec<String>,
}

/// What was asked: per endpoint the handshake's answer, and the client
/// certificate's end (Unix seconds) and subject.
pub struct Observed {
    pub served: Vec<(String, Result<Served, String>)>,
    pub client: (String, Result<(i64, String), String>),
}

pub fn observe(endpoints: &[String], tls: &TlsFiles) -> Observed {
    let served = endpoints
        .iter()
        .map(|e| {
            let answer = served::served_certificate(e, tls, HANDSHAKE_TIMEOUT).map_err(|e| e.to_string());
            (e.clone(), answer)
        })
        .collect();
    Observed {
        served,
        client: (tls.cert.display().to_string(), client_certificate(&tls.cert)),
    }
}

fn client_certificate(path: &Path) -> Result<(i64, String), String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).map_err(|e| format!("{}: not PEM: {e}", path.display()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("{}: not a certificate: {e}", path.display()))?;
    Ok((cert.validity().not_after.timestamp(), cert.subject().to_string()))
}

fn row(source: String, now: i64, end: Option<(i64, String)>, error: Option<String>) -> CertRow {
    let at = |unix: i64| time::OffsetDateTime::from_unix_timestamp(unix).ok();
    let days = end
        .as_ref()
        .and_then(|(e, _)| Some(ends::days_between(at(now)?, at(*e)?)));
    CertRow {
        source,
        subject: end.as_ref().map(|(_, s)| s.clone()).unwrap_or_default(),
        not_after: end
            .as_ref()
            .and_then(|(e, _)| at(*e))
            .map(crate::operator::pki::rfc3339),
        days_left: days,
        due: days.map(Due::of),
        error,
    }
}

/// Pure: the rows and what ends within `STATUS_FAIL_DAYS` of `now` (Unix seconds).
pub fn assess(now: i64, observed: Observed) -> CertReport {
    let mut ending = Vec::new();
    let mut judge = |what: String, row: &CertRow| {
        if let Some(days) = row.days_left.filter(|d| *d < STATUS_FAIL_DAYS) {
            let when = match days {
                d if d < 0 => format!("ended {}", row.not_after.as_deref().unwrap_or_default()),
                d => format!("ends in {d} days ({})", row.not_after.as_deref().unwrap_or_default()),
            };
            ending.push(format!("{what} {when}"));
        }
    };
    let mut members = Vec::new();
    for (endpoint, answer) in observed.served {
        let r = match answer {
            Ok(s) => {
                let error = s.refused.as_ref().map(Refusal::to_string);
                row(endpoint.clone(), now, Some((s.not_after, s.subject)), error)
            }
            Err(e) => row(endpoint.clone(), now, None, Some(e)),
        };
        judge(format!("the certificate {endpoint} serves ({})", r.subject), &r);
        members.push(r);
    }
    let (path, client) = observed.client;
    let client = match client {
        Ok(end) => row(path.clone(), now, Some(end), None),
        Err(e) => row(path.clone(), now, None, Some(e)),
    };
    judge(format!("the client certificate {path}"), &client);
    CertReport {
        members,
        client,
        ending,
    }
}

/// Observes and judges for `etcd status`, with the operator's client
/// certificate (the same files as its etcd client).
pub fn status(env: &Environment, dir: Option<&Path>, endpoints: &[String]) -> CertReport {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assess(now, observe(endpoints, &super::etcd::operator_tls(env, dir)))
}

/// `etcd status --output json`: the report with `certificates` added.
pub fn json(report: &impl Serialize, certificates: &CertReport) -> String {
    #[derive(Serialize)]
    struct With<'a, T: Serialize> {
        #[serde(flatten)]
        report: &'a T,
        certificates: &'a CertReport,
    }
    serde_json::to_string_pretty(&With { report, certificates }).expect("serialises")
}

/// `etcd status`'s table with the certificate lines under it.
pub fn with_lines(table: String, certificates: &CertReport) -> String {
    let mut all = vec![table];
    all.extend(lines(certificates));
    all.join("\n")
}

/// The failure (exit 32) of a healthy cluster with a certificate that ends soon.
pub fn failure(environment: &str, r: &CertReport) -> Error {
    Error::CertificatesEnding(format!(
        "etcd of {environment}: {}; renew with `nodeboot up` (or `nodeboot pki --renew` and `nodeboot secrets upload`)",
        r.ending.join("; ")
    ))
}

/// The lines `etcd status` prints under its table.
pub fn lines(r: &CertReport) -> Vec<String> {
    let show = |what: &str, c: &CertRow| {
        let end = match (&c.not_after, c.days_left) {
            (Some(at), Some(days)) => format!("ends {at} ({days} days)"),
            _ => "end unknown".into(),
        };
        let error = c.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        format!("certificate: {what} {} {end}{error}", c.source)
    };
    let mut out: Vec<String> = r.members.iter().map(|c| show("served by", c)).collect();
    out.push(show("client", &r.client));
    out.extend(r.ending.iter().map(|e| {
        format!("problem: {e}: renew with `nodeboot up` (or `nodeboot pki --renew` and `nodeboot secrets upload`)")
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    fn served(days: i64, refused: Option<Refusal>) -> Result<Served, String> {
        Ok(Served {
            not_after: NOW + days * DAY + 60,
            subject: "CN=e-etcd-0".into(),
            refused,
        })
    }

    fn observed(members: Vec<Result<Served, String>>, client_days: i64) -> Observed {
        Observed {
            served: members
                .into_iter()
                .enumerate()
                .map(|(i, a)| (format!("https://m{i}"), a))
                .collect(),
            client: (
                "client.crt".into(),
                Ok((NOW + client_days * DAY + 60, "CN=e-etcd-client".into())),
            ),
        }
    }

    #[test]
    fn fourteen_days_before_an_end_is_a_problem_naming_the_certificate() {
        let r = assess(NOW, observed(vec![served(365, None), served(358, None)], 365));
        assert_eq!(r.ending, Vec::<String>::new());
        assert_eq!(r.members[1].days_left, Some(358));
        assert_eq!(r.members[1].due, Some(Due::Ok));

        let r = assess(NOW, observed(vec![served(14, None), served(13, None)], 20));
        assert_eq!(r.ending.len(), 1, "{:?}", r.ending);
        assert!(
            r.ending[0].starts_with("the certificate https://m1 serves (CN=e-etcd-0) ends in 13 days ("),
            "{:?}",
            r.ending
        );
        assert_eq!(r.client.due, Some(Due::Renew));

        let r = assess(NOW, observed(vec![served(200, None)], 3));
        assert!(
            r.ending == ["the client certificate client.crt ends in 3 days (2027-01-18T08:01:00Z)"],
            "{:?}",
            r.ending
        );
    }

    #[test]
    fn an_ended_certificate_is_read_from_the_refused_handshake() {
        let r = assess(
            NOW,
            observed(
                vec![
                    served(-2, Some(Refusal::ServedExpired)),
                    Err("connection refused".into()),
                ],
                365,
            ),
        );
        assert_eq!(r.members[0].due, Some(Due::Ended));
        assert_eq!(
            r.members[0].error.as_deref(),
            Some("the member's certificate has ended")
        );
        assert!(r.ending[0].contains("ended 2027-01-13"), "{:?}", r.ending);
        // A member that does not answer has no end to judge (etcd status
        // already fails for it); its row says why.
        assert_eq!(r.members[1].days_left, None);
        assert_eq!(r.ending.len(), 1);
        let text = lines(&r).join("\n");
        assert!(
            text.contains("served by https://m1 end unknown: connection refused"),
            "{text}"
        );
        assert!(text.contains("problem: the certificate https://m0 serves"), "{text}");
    }
}
