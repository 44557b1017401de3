//! An IMDSv2 client: a session token first, then token-authenticated GETs.
//! Never falls back to IMDSv1. The endpoint is taken the way the AWS SDKs
//! take it: `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else 169.254.169.254.

use std::cell::RefCell;
use std::time::Duration;

use crate::shared::retry::{self, Attempt, Gave, Policy};

use super::Metadata;

pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
pub const ENDPOINT_VAR: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";
const TOKEN_TTL_SECONDS: &str = "21600";
/// One request may take this long; IMDS answers in milliseconds when up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Transient failures (connection refused while the network comes up,
/// timeouts, 5xx) are retried for this long; a 404 is an answer, not a failure.
pub const RETRY: Policy = Policy::new(
    Duration::from_millis(100),
    Duration::from_secs(2),
    Duration::from_secs(20),
);

#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    #[error("instance metadata at {endpoint}: {detail}")]
    Unavailable { endpoint: String, detail: String },
    #[error("instance metadata at {endpoint} refused a token (IMDSv2): HTTP {status}")]
    NoToken { endpoint: String, status: u16 },
    #[error("instance metadata {path}: {detail}")]
    Bad { path: String, detail: String },
}

pub struct Imds {
    endpoint: String,
    agent: ureq::Agent,
    token: RefCell<Option<String>>,
    policy: Policy,
}

enum Fetch {
    Found(String),
    Missing,
    Unauthorized,
}

impl Imds {
    pub fn new(endpoint: &str) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(REQUEST_TIMEOUT))
            .http_status_as_error(false)
            .proxy(None)
            .build()
            .into();
        Imds {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            agent,
            token: RefCell::new(None),
            policy: RETRY,
        }
    }

    pub fn from_env() -> Self {
        Self::new(&std::env::var(ENDPOINT_VAR).unwrap_or_else(|_| DEFAULT_ENDPOINT.to_string()))
    }

    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    fn unavailable(&self, detail: impl ToString) -> ImdsError {
        ImdsError::Unavailable {
            endpoint: self.endpoint.clone(),
            detail: detail.to_string(),
        }
    }

    fn fetch_token(&self) -> Attempt<String, ImdsError> {
        let url = format!("{}/latest/api/token", self.endpoint);
        let response = self
            .agent
            .put(&url)
            .header("X-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL_SECONDS)
            .send_empty();
        let mut response = match response {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(self.unavailable(e)),
        };
        let status = response.status().as_u16();
        match status {
            200 => match response.body_mut().read_to_string() {
                Ok(token) if !token.trim().is_empty() && token.len() < 512 => Attempt::Done(token.trim().to_string()),
                Ok(_) => Attempt::Fail(ImdsError::Bad {
                    path: "/latest/api/token".into(),
                    detail: "empty or oversized token".into(),
                }),
                Err(e) => Attempt::Retry(self.unavailable(e)),
            },
            500..=599 => Attempt::Retry(self.unavailable(format!("HTTP {status} for a token"))),
            // 400/403/404/405: IMDSv2 is off or refuses us; v1 is never tried.
            _ => Attempt::Fail(ImdsError::NoToken {
                endpoint: self.endpoint.clone(),
                status,
            }),
        }
    }

    fn token(&self) -> Result<String, ImdsError> {
        if let Some(token) = self.token.borrow().clone() {
            return Ok(token);
        }
        let token = retry::wait_blocking("an IMDSv2 token", self.policy, || self.fetch_token()).map_err(flatten)?;
        *self.token.borrow_mut() = Some(token.clone());
        Ok(token)
    }

    fn fetch(&self, path: &str, token: &str) -> Attempt<Fetch, ImdsError> {
        let url = format!("{}/latest/{}", self.endpoint, path.trim_start_matches('/'));
        let mut response = match self.agent.get(&url).header("X-aws-ec2-metadata-token", token).call() {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(self.unavailable(e)),
        };
        let status = response.status().as_u16();
        match status {
            200 => match response.body_mut().with_config().limit(64 * 1024).read_to_string() {
                Ok(body) => Attempt::Done(Fetch::Found(body)),
                Err(e) => Attempt::Fail(ImdsError::Bad {
                    path: path.into(),
                    detail: format!("unreadable answer: {e}"),
                }),
            },
            404 => Attempt::Done(Fetch::Missing),
            401 => Attempt::Done(Fetch::Unauthorized),
            500..=599 => Attempt::Retry(self.unavailable(format!("HTTP {status} for {path}"))),
            _ => Attempt::Fail(ImdsError::Bad {
                path: path.into(),
                detail: format!("HTTP {status}"),
            }),
        }
    }
}

impl Metadata for Imds {
    fn get(&self, path: &str) -> Result<Option<String>, ImdsError> {
        // A 401 means the token expired or the service restarted: fetch a
        // new one once, then trust the answer.
        for _ in 0..2 {
            let token = self.token()?;
            let what = format!("instance metadata {path}");
            match retry::wait_blocking(&what, self.policy, || self.fetch(path, &token)).map_err(flatten)? {
                Fetch::Found(body) => return Ok(Some(body)),
                Fetch::Missing => return Ok(None),
                Fetch::Unauthorized => *self.token.borrow_mut() = None,
            }
        }
        Err(ImdsError::NoToken {
            endpoint: self.endpoint.clone(),
            status: 401,
        })
    }
}

fn flatten(e: Gave<ImdsError>) -> ImdsError {
    match e {
        Gave::Failed(e) => e,
        Gave::Up { what, elapsed, last } => match last {
            ImdsError::Unavailable { endpoint, detail } => ImdsError::Unavailable {
                endpoint,
                detail: format!("gave up on {what} after {}s: {detail}", elapsed.as_secs()),
            },
            other => other,
        },
    }
}
