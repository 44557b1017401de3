//! Whether a static pod restarted for new secrets is healthy again, and what
//! the secrets sync does about it.
//!
//! On control-plane nodes a static pod restarts under the etcd lock
//! `static-pod-<name>`, one node at a time. The lock goes back only once the
//! restarted component passes its health endpoint (`ENDPOINTS`, asked as the
//! kubelet's probes ask: no certificate check, no credentials, 200-399 is
//! success), within `READY_WAIT`. A component that stays unready stops the
//! roll: this node keeps the lock, so no other node restarts into the same
//! files, and the sync fails loudly naming the component and what to do. The
//! decision is `verdict` (pure); `wait_ready` observes.

use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{TlsConfig, TlsProvider};

use crate::shared::retry::{self, Attempt, Policy};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// Where a component says it is healthy, on the node's loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The static pod's name (its manifest's file stem, its program).
    pub component: &'static str,
    pub scheme: Scheme,
    pub port: u16,
    pub path: &'static str,
}

/// Every static pod nodeboot renders. kube-apiserver's `/readyz` fails
/// until it serves (etcd reached, informers synced, post-start hooks done),
/// the others' `/healthz` is what their liveness probes ask; kube-proxy's
/// answers once its rules are synced (its default `--healthz-bind-address`,
/// 0.0.0.0:10256, plain HTTP).
pub const ENDPOINTS: [Endpoint; 4] = [
    Endpoint {
        component: "kube-apiserver",
        scheme: Scheme::Https,
        port: 6443,
        path: "/readyz",
    },
    Endpoint {
        component: "kube-controller-manager",
        scheme: Scheme::Https,
        port: 10257,
        path: "/healthz",
    },
    Endpoint {
        component: "kube-scheduler",
        scheme: Scheme::Https,
        port: 10259,
        path: "/healthz",
    },
    Endpoint {
        component: "kube-proxy",
        scheme: Scheme::Http,
        port: 10256,
        path: "/healthz",
    },
];

/// How long a restarted component may take to pass: kubeadm's startup probe
/// gives the API server 10 s + 24 x 10 s before the kubelet restarts it, and
/// the kubelet waits up to 10 s before it starts a container that exited.
pub const READY_WAIT: Policy = Policy::every(Duration::from_secs(2), Duration::from_secs(300));

/// The kubelet's probes time out after `timeoutSeconds` (15 in the manifests).
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

pub fn endpoint(component: &str) -> Option<&'static Endpoint> {
    ENDPOINTS.iter().find(|e| e.component == component)
}

impl Endpoint {
    pub fn url(&self) -> String {
        self.url_at("127.0.0.1", self.port)
    }

    /// The same path and scheme elsewhere (a test's double).
    pub fn url_at(&self, host: &str, port: u16) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{host}:{port}{}", self.path)
    }
}

/// An HTTP client that asks as the kubelet's probes do: HTTPS without
/// checking the certificate (the controller-manager and the scheduler serve
/// a self-signed one), no credentials, no proxy, any status an answer.
pub fn prober() -> ureq::Agent {
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .disable_verification(true)
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(PROBE_TIMEOUT))
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into()
}

/// One look: `Ok` for 200-399 (the kubelet's success), else why not: the
/// status and the failing checks (`/readyz` answers 500 listing each check,
/// the failing ones as `[-]name failed: ...`), or the connection's error.
pub fn probe(agent: &ureq::Agent, url: &str) -> Result<(), String> {
    let mut response = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    if (200..400).contains(&status) {
        return Ok(());
    }
    let body = response.body_mut().read_to_string().unwrap_or_default();
    let failing: Vec<&str> = body.lines().filter(|l| l.starts_with("[-]")).collect();
    let detail = if failing.is_empty() {
        body.trim().chars().take(300).collect::<String>()
    } else {
        failing.join("; ")
    };
    Err(format!("HTTP {status}: {detail}"))
}

/// What the sync found after it stopped a static pod's processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    /// The old processes did not exit.
    NotStopped(String),
    /// No endpoint in the table: done once the old processes exited.
    Unchecked,
    Ready,
    /// Its endpoint did not pass within the bound; the last answer.
    NotReady {
        url: String,
        last: String,
    },
}

/// Waits, with the one retry policy, until `url` passes; `keep` runs before
/// every look (it keeps the lock's lease alive).
pub async fn wait_ready(url: &str, policy: Policy, mut keep: impl FnMut()) -> After {
    let agent = prober();
    let found = retry::wait(&format!("{url} to pass after the restart"), policy, || {
        keep();
        let look = probe(&agent, url);
        async move {
            match look {
                Ok(()) => Attempt::Done(()),
                Err(why) => Attempt::Retry(why),
            }
        }
    })
    .await;
    match found {
        Ok(()) => After::Ready,
        Err(gave) => After::NotReady {
            url: url.to_string(),
            last: gave.to_string(),
        },
    }
}

/// What the sync does after a static pod's restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Back and healthy (or nothing to ask): give the lock back, record the
    /// new fingerprint.
    Done,
    /// Stop the roll: keep the lock (the next node must not restart into the
    /// same files), record nothing (the next pass restarts it again), fail
    /// with this message.
    Halt(String),
}

/// Pure: the decision after `component`'s restart, holding `lock` (the etcd
/// lock's name on control-plane nodes, `None` elsewhere).
pub fn verdict(component: &str, lock: Option<&str>, after: &After) -> Verdict {
    let problem = match after {
        After::Ready | After::Unchecked => return Verdict::Done,
        After::NotStopped(why) => {
            format!("{component} did not stop for its restart with new secrets ({why})")
        }
        After::NotReady { url, last } => {
            format!("{component} is not healthy after its restart with new secrets ({url}: {last})")
        }
    };
    let held = match lock {
        Some(lock) => format!(
            "; this node keeps the lock {lock}, so no other control-plane node restarts {component} into the same files"
        ),
        None => String::new(),
    };
    Verdict::Halt(format!(
        "{problem}{held}. Look at the container (crictl ps -a --name {component}; crictl logs <id>) and at the \
         secrets it reads, then fix or restore them in the bucket (nodeboot pki, nodeboot secrets upload): \
         every sync pass restarts {component} again until it is healthy"
    ))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    use super::*;

    /// A double of a component's health endpoint. It answers as
    /// kube-apiserver's `/readyz` is documented to
    /// (https://kubernetes.io/docs/reference/using-api/health-checks/):
    /// 200 `ok` when ready, 500 with one line per check (`[+]name ok`,
    /// `[-]name failed: reason withheld`) and `readyz check failed`
    /// otherwise. It serves HTTPS with a self-signed certificate for
    /// `localhost` (never 127.0.0.1, which the prober dials), as the
    /// controller-manager's and scheduler's are self-signed, or plain HTTP
    /// like kube-proxy's. `answers` are given in order, the last repeated.
    struct Double {
        port: u16,
        requests: Arc<Mutex<Vec<String>>>,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    const UNREADY: (u16, &str) = (
        500,
        "[+]ping ok\n[+]log ok\n[-]etcd failed: reason withheld\n[+]informer-sync ok\nreadyz check failed\n",
    );
    const READY: (u16, &str) = (200, "ok");

    impl Double {
        fn start(tls: bool, answers: Vec<(u16, &'static str)>) -> Double {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let requests = Arc::new(Mutex::new(Vec::new()));
            let stop = Arc::new(AtomicBool::new(false));
            let config = tls.then(server_config);
            let (seen, stopping) = (requests.clone(), stop.clone());
            let thread = std::thread::spawn(move || {
                for (n, stream) in listener.incoming().enumerate() {
                    if stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let answer = answers[n.min(answers.len() - 1)];
                    let request = match &config {
                        Some(config) => {
                            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                            answer_on(rustls::StreamOwned::new(conn, stream), answer)
                        }
                        None => answer_on(stream, answer),
                    };
                    seen.lock().unwrap().push(request);
                }
            });
            Double {
                port,
                requests,
                stop,
                thread: Some(thread),
            }
        }

        fn requests(&self) -> Vec<String> {
            self.requests.lock().unwrap().clone()
        }
    }

    /// Stops the server however the test ends.
    impl Drop for Double {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(("127.0.0.1", self.port));
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    fn server_config() -> Arc<rustls::ServerConfig> {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        Arc::new(config)
    }

    /// Reads one request's head, answers, returns the head ("" if the
    /// client gave up, e.g. on the certificate).
    fn answer_on(mut stream: impl Read + Write, (status, body): (u16, &str)) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return String::new(),
            }
        }
        let reason = if status == 200 { "OK" } else { "Internal Server Error" };
        let _ = write!(
            stream,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.flush();
        String::from_utf8_lossy(&head).into_owned()
    }

    fn quick() -> Policy {
        Policy::every(Duration::from_millis(10), Duration::from_secs(5))
    }

    #[tokio::test]
    async fn the_api_server_passes_once_readyz_answers_ok_and_not_before() {
        let double = Double::start(true, vec![UNREADY, UNREADY, READY]);
        let url = endpoint("kube-apiserver").unwrap().url_at("127.0.0.1", double.port);
        let mut kept = 0;
        let after = wait_ready(&url, quick(), || kept += 1).await;
        assert_eq!(after, After::Ready);
        let requests = double.requests();
        assert_eq!(requests.len(), 3, "two 500s, then 200: {requests:?}");
        assert_eq!(kept, 3, "the lock's lease is kept before every look");
        for request in &requests {
            assert!(request.starts_with("GET /readyz HTTP/1.1\r\n"), "{request}");
            assert!(
                !request.to_ascii_lowercase().contains("authorization:"),
                "a probe carries no credentials: {request}"
            );
        }
    }

    #[tokio::test]
    async fn a_component_that_stays_unready_is_reported_with_its_failing_checks() {
        let double = Double::start(true, vec![UNREADY]);
        let url = endpoint("kube-apiserver").unwrap().url_at("127.0.0.1", double.port);
        let policy = Policy::every(Duration::from_millis(10), Duration::from_millis(300));
        let after = wait_ready(&url, policy, || {}).await;
        let After::NotReady { url: at, last } = after else {
            panic!("{after:?}")
        };
        assert_eq!(at, url);
        assert!(
            last.contains("HTTP 500: [-]etcd failed: reason withheld") && !last.contains("[+]ping"),
            "{last}"
        );
        assert!(double.requests().len() >= 2, "asked again until the bound");
    }

    #[tokio::test]
    async fn nothing_listening_is_not_ready() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let url = endpoint("kube-scheduler").unwrap().url_at("127.0.0.1", port);
        let policy = Policy::every(Duration::from_millis(10), Duration::from_millis(50));
        assert!(matches!(wait_ready(&url, policy, || {}).await, After::NotReady { .. }));
    }

    /// kube-proxy's endpoint is plain HTTP; a 503 (not synced) is no pass.
    #[tokio::test]
    async fn kube_proxy_is_asked_over_plain_http() {
        let double = Double::start(false, vec![(503, "not synced"), (200, "{}")]);
        let proxy = endpoint("kube-proxy").unwrap();
        assert_eq!(proxy.url(), "http://127.0.0.1:10256/healthz");
        let after = wait_ready(&proxy.url_at("127.0.0.1", double.port), quick(), || {}).await;
        assert_eq!(after, After::Ready);
        assert_eq!(double.requests().len(), 2);
    }

    #[test]
    fn the_table_names_each_components_endpoint() {
        let urls: Vec<(&str, String)> = ENDPOINTS.iter().map(|e| (e.component, e.url())).collect();
        assert_eq!(
            urls,
            [
                ("kube-apiserver", "https://127.0.0.1:6443/readyz".to_string()),
                ("kube-controller-manager", "https://127.0.0.1:10257/healthz".to_string()),
                ("kube-scheduler", "https://127.0.0.1:10259/healthz".to_string()),
                ("kube-proxy", "http://127.0.0.1:10256/healthz".to_string()),
            ]
        );
        assert!(endpoint("kube-apiserverx").is_none());
    }

    #[test]
    fn the_lock_goes_back_only_when_the_restarted_component_is_healthy() {
        let lock = Some("static-pod-kube-apiserver");
        let not_ready = After::NotReady {
            url: "https://127.0.0.1:6443/readyz".into(),
            last: "HTTP 500: [-]etcd failed".into(),
        };
        let not_stopped = After::NotStopped("[4242] still run".into());
        // (lock held, what was found, done?, words the failure must carry)
        let table: [(Option<&str>, &After, bool, &[&str]); 8] = [
            (lock, &After::Ready, true, &[]),
            (None, &After::Ready, true, &[]),
            (lock, &After::Unchecked, true, &[]),
            (None, &After::Unchecked, true, &[]),
            (
                lock,
                &not_ready,
                false,
                &[
                    "kube-apiserver is not healthy",
                    "https://127.0.0.1:6443/readyz",
                    "[-]etcd failed",
                    "keeps the lock static-pod-kube-apiserver",
                    "crictl logs",
                    "nodeboot secrets upload",
                ],
            ),
            (
                None,
                &not_ready,
                false,
                &["kube-apiserver is not healthy", "[-]etcd failed"],
            ),
            (
                lock,
                &not_stopped,
                false,
                &[
                    "did not stop",
                    "[4242] still run",
                    "keeps the lock static-pod-kube-apiserver",
                ],
            ),
            (None, &not_stopped, false, &["did not stop"]),
        ];
        for (lock, after, done, words) in table {
            match verdict("kube-apiserver", lock, after) {
                Verdict::Done => assert!(done, "{lock:?} {after:?}: done"),
                Verdict::Halt(message) => {
                    assert!(!done, "{lock:?} {after:?}: halted: {message}");
                    for word in words {
                        assert!(message.contains(word), "{lock:?} {after:?}: {message} lacks {word:?}");
                    }
                    assert_eq!(message.contains("keeps the lock"), lock.is_some(), "{message}");
                }
            }
        }
    }
}
