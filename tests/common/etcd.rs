//! Real etcd 3.5 members on 127.0.0.1 for the client's tests: TLS from
//! `nodeboot pki` (every member certificate names 127.0.0.1), free ports,
//! each member killed when the test drops it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nodeboot::shared::etcd::TlsFiles;

/// The directory of etcd, etcdctl and etcdutl 3.5: `$NODEBOOT_ETCD_BIN`,
/// else what `tests/fetch-etcd` prints (its cache; tests/setup fills it).
pub fn etcd_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("NODEBOOT_ETCD_BIN") {
        return PathBuf::from(dir);
    }
    let out = Command::new(super::repo().join("tests/fetch-etcd"))
        .output()
        .expect("tests/fetch-etcd runs");
    assert!(
        out.status.success(),
        "no etcd 3.5 for the test (run tests/setup): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The example environment's certificates, issued by `nodeboot pki` into `dir`.
pub fn pki(dir: &Path) -> PathBuf {
    let secrets = dir.join("secrets");
    let out = Command::new(env!("CARGO_BIN_EXE_nodeboot"))
        .args([
            "pki",
            "--env",
            super::example_env().to_str().unwrap(),
            "--dir",
            secrets.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nodeboot pki: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    secrets.join("secure/etcd")
}

pub fn member_tls(etcd_dir: &Path, member: u32) -> TlsFiles {
    TlsFiles {
        ca: etcd_dir.join("ca.crt"),
        cert: etcd_dir.join(format!("member-{member}.crt")),
        key: etcd_dir.join(format!("member-{member}.key")),
    }
}

/// One etcd process; killed on drop.
pub struct Member {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Child,
}

pub struct Ports {
    pub client: u16,
    pub peer: u16,
}

impl Ports {
    pub fn free() -> Ports {
        Ports {
            client: free_port(),
            peer: free_port(),
        }
    }
    pub fn client_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.client)
    }
    pub fn peer_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.peer)
    }
}

impl Member {
    /// Starts `name` with `initial_cluster` (`name=peer,...`) in state `state`.
    pub fn start(dir: &Path, tls: &TlsFiles, name: &str, ports: &Ports, initial_cluster: &str, state: &str) -> Member {
        Member::start_with_env(dir, tls, name, ports, initial_cluster, state, &[])
    }

    /// [`Member::start`] with `ETCD_*` variables in its environment (as
    /// etcd-member.service passes the etcd stage's env file).
    pub fn start_with_env(
        dir: &Path,
        tls: &TlsFiles,
        name: &str,
        ports: &Ports,
        initial_cluster: &str,
        state: &str,
        env: &[(&str, String)],
    ) -> Member {
        let data_dir = dir.join(format!("{name}.data"));
        let log = dir.join(format!("{name}.log"));
        let tls_args = |prefix: &str| {
            vec![
                format!("--{prefix}cert-file={}", tls.cert.display()),
                format!("--{prefix}key-file={}", tls.key.display()),
                format!("--{prefix}trusted-ca-file={}", tls.ca.display()),
                format!("--{prefix}client-cert-auth"),
            ]
        };
        let child = Command::new(etcd_bin_dir().join("etcd"))
            .args([
                format!("--name={name}"),
                format!("--data-dir={}", data_dir.display()),
                format!("--listen-client-urls={}", ports.client_url()),
                format!("--advertise-client-urls={}", ports.client_url()),
                format!("--listen-peer-urls={}", ports.peer_url()),
                format!("--initial-advertise-peer-urls={}", ports.peer_url()),
                format!("--initial-cluster={initial_cluster}"),
                format!("--initial-cluster-state={state}"),
                "--initial-cluster-token=client-test".into(),
                // The default 100 ms / 1 s, made quicker for the tests.
                "--heartbeat-interval=50".into(),
                "--election-timeout=500".into(),
            ])
            .args(tls_args(""))
            .args(tls_args("peer-"))
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .expect("etcd starts");
        Member {
            name: name.into(),
            client_url: ports.client_url(),
            peer_url: ports.peer_url(),
            data_dir,
            log,
            child,
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a new cluster of `n` members `m0`.. with TLS from `etcd_dir`
/// (`pki`); does not wait for a leader.
pub fn start_cluster(dir: &Path, etcd_dir: &Path, n: u32) -> Vec<Member> {
    start_cluster_with_env(dir, etcd_dir, n, &[])
}

/// [`start_cluster`] with `ETCD_*` variables given to every member.
pub fn start_cluster_with_env(dir: &Path, etcd_dir: &Path, n: u32, env: &[(&str, String)]) -> Vec<Member> {
    let ports: Vec<Ports> = (0..n).map(|_| Ports::free()).collect();
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("m{i}={}", p.peer_url()))
        .collect();
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Member::start_with_env(
                dir,
                &member_tls(etcd_dir, i as u32),
                &format!("m{i}"),
                p,
                &initial.join(","),
                "new",
                env,
            )
        })
        .collect()
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One member `m0` of a new cluster with TLS from a new `pki` under `dir`,
/// once it answers with a leader: the member (killed when dropped) and a
/// client of it.
pub fn one_member(dir: &Path) -> (Member, nodeboot::shared::etcd::Client) {
    use nodeboot::shared::etcd::{Client, Cluster};
    let tls = member_tls(&pki(dir), 0);
    let ports = Ports::free();
    let member = Member::start(dir, &tls, "m0", &ports, &format!("m0={}", ports.peer_url()), "new");
    let client = Client::new(vec![ports.client_url()], &tls).unwrap();
    wait_until("etcd answers with a leader", Duration::from_secs(20), || {
        client.status(&ports.client_url()).is_ok_and(|s| s.has_leader())
    });
    (member, client)
}

/// Polls `check` every 50 ms until it holds or `timeout` passes.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "{what}: not after {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
