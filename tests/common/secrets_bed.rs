//! The secrets tests' share of the bed: an environment whose key and
//! buckets `nodeboot prereqs` created in its own emulator, raw S3 access
//! to tamper with objects, nodes (a root directory with node.json), and a
//! TCP proxy that can take the "AWS" endpoint away and bring it back.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nodeboot::operator::env::Environment;
use nodeboot::shared::node_config::NodeConfig;
use nodeboot::shared::role::Role;

use super::bed::{runtime, Aws, REGION};
use super::{example_with, stderr};

pub struct Platform {
    pub aws: Aws,
    pub dir: tempfile::TempDir,
    pub env_file: PathBuf,
    pub env: Environment,
    pub s3: aws_sdk_s3::Client,
    pub kms: aws_sdk_kms::Client,
    /// What the first `prereqs` printed.
    pub prereqs: String,
}

/// The environment file of `name`: its own buckets and key alias.
pub fn env_text(name: &str, extra: &[(&str, &str)]) -> String {
    let mut fields = vec![
        ("environment", format!("\"{name}\"")),
        ("aws_profile", format!("\"{name}\"")),
        ("kms_master_id", format!("\"alias/{name}-nodeboot\"")),
        ("secrets_bucket_name", format!("\"{name}-secrets\"")),
        ("terraform_bucket_name", format!("\"{name}-tfstate\"")),
    ];
    for (k, v) in extra {
        fields.retain(|(f, _)| f != k);
        fields.push((k, v.to_string()));
    }
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    example_with(&pairs)
}

impl Platform {
    /// A fresh emulator and an environment set up with `nodeboot prereqs`.
    pub fn new(name: &str) -> Platform {
        Platform::with_env(name, &[])
    }

    pub fn with_env(name: &str, extra: &[(&str, &str)]) -> Platform {
        let aws = Aws::start(0);
        let dir = tempfile::tempdir().unwrap();
        let env_file = dir.path().join(format!("{name}.tfvars"));
        std::fs::write(&env_file, env_text(name, extra)).unwrap();
        let env = nodeboot::operator::env::load(&env_file).unwrap().env;
        let config = sdk_config(&aws.server.url);
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&config)
                .force_path_style(true)
                .build(),
        );
        let kms = aws_sdk_kms::Client::new(&config);
        let mut p = Platform {
            aws,
            dir,
            env_file,
            env,
            s3,
            kms,
            prereqs: String::new(),
        };
        let out = p.nodeboot(&["prereqs", "--env"], &[]);
        assert!(out.status.success(), "prereqs: {}", stderr(&out));
        p.prereqs = String::from_utf8(out.stdout).unwrap();
        p
    }

    /// Another environment file in the same emulator (for "another environment").
    pub fn other_env_file(&self, name: &str, extra: &[(&str, &str)]) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.tfvars"));
        std::fs::write(&path, env_text(name, extra)).unwrap();
        path
    }

    /// `nodeboot ARGS... ENV_FILE MORE...` against this emulator, run in the
    /// platform's directory (so `secrets/<env>/` is its local tree).
    pub fn nodeboot(&self, args: &[&str], more: &[&str]) -> Output {
        self.nodeboot_with(args, &self.env_file, more)
    }

    pub fn nodeboot_with(&self, args: &[&str], env_file: &Path, more: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodeboot"));
        cmd.args(args)
            .arg(env_file)
            .args(more)
            .current_dir(self.dir.path())
            .envs(self.aws.env())
            .env("NODEBOOT_LOG", "info");
        cmd.env_remove("AWS_PROFILE").output().unwrap()
    }

    /// The local tree `secrets/<env>/`.
    pub fn local(&self) -> PathBuf {
        self.dir.path().join("secrets").join(&self.env.name)
    }

    pub fn write_local(&self, path: &str, bytes: &[u8]) {
        let file = self.local().join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, bytes).unwrap();
    }

    /// Writes `path` locally and uploads it; asserts success.
    pub fn upload(&self, path: &str, bytes: &[u8]) {
        self.write_local(path, bytes);
        let out = self.nodeboot(&["secrets", "upload", "--env"], &[path]);
        assert!(out.status.success(), "upload {path}: {}", stderr(&out));
    }

    pub fn remove(&self, path: &str) {
        let out = self.nodeboot(&["secrets", "rm", "--env"], &[path]);
        assert!(out.status.success(), "rm {path}: {}", stderr(&out));
    }

    pub fn bucket(&self) -> &str {
        &self.env.secrets_bucket_name
    }

    /// The stored object as it is in the bucket, with its user metadata.
    pub fn get_raw(&self, key: &str) -> (Vec<u8>, HashMap<String, String>) {
        runtime().block_on(async {
            let out = self
                .s3
                .get_object()
                .bucket(self.bucket())
                .key(key)
                .send()
                .await
                .unwrap();
            let metadata = out.metadata().cloned().unwrap_or_default();
            (out.body.collect().await.unwrap().into_bytes().to_vec(), metadata)
        })
    }

    pub fn put_raw(&self, key: &str, body: &[u8], metadata: &HashMap<String, String>) {
        runtime().block_on(async {
            self.s3
                .put_object()
                .bucket(self.bucket())
                .key(key)
                .set_metadata(Some(metadata.clone()))
                .body(body.to_vec().into())
                .send()
                .await
                .unwrap();
        });
    }

    /// A node of `role`: a root directory holding the node.json render writes.
    pub fn node(&self, role: Role) -> TestNode {
        let root = tempfile::tempdir().unwrap();
        let config = nodeboot::operator::render::node_config::node_config(&self.env, role);
        write_node_config(root.path(), &config);
        TestNode {
            root,
            endpoint: self.aws.server.url.clone(),
        }
    }
}

pub fn write_node_config(root: &Path, config: &NodeConfig) {
    let path = root.join("etc/nodeboot/node.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
}

pub fn sdk_config(url: &str) -> aws_config::SdkConfig {
    runtime().block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(url)
            .http_client(nodeboot::shared::cloud::aws::http_client())
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "bed",
            ))
            .load(),
    )
}

pub struct TestNode {
    pub root: tempfile::TempDir,
    /// Where the node's AWS calls go (the emulator, or a proxy in front of it).
    pub endpoint: String,
}

impl TestNode {
    pub fn path(&self, absolute: &str) -> PathBuf {
        self.root.path().join(absolute.trim_start_matches('/'))
    }

    pub fn config(&self) -> NodeConfig {
        serde_json::from_slice(&std::fs::read(self.path("/etc/nodeboot/node.json")).unwrap()).unwrap()
    }

    pub fn set_config(&self, config: &NodeConfig) {
        write_node_config(self.root.path(), config);
    }

    /// What `stage attach` records on an etcd node: this node holds `member`.
    pub fn claim(&self, member: u32) {
        let claim = nodeboot::node::stage::attach::Claim {
            member,
            instance_id: "i-0123456789abcdef0".into(),
            zone: "eu-west-1a".into(),
            volume_id: format!("vol-{member}"),
            device_name: "/dev/xvdf".into(),
            eni_id: format!("eni-{member}"),
            eni_ip: format!("10.80.10.{}", 10 + member),
            eni_mac: "02:00:00:00:00:01".into(),
        };
        let path = self.path("/run/nodeboot/claim.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, serde_json::to_vec(&claim).unwrap()).unwrap();
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodeboot"));
        cmd.args(args.iter().take(1))
            .arg("--root")
            .arg(self.root.path())
            .args(args.iter().skip(1));
        cmd.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("NODEBOOT_LOG", "info")
            .env_remove(nodeboot::shared::fault::VAR);
        cmd
    }

    /// `nodeboot stage --root ROOT secrets ARGS`.
    pub fn stage_secrets(&self, args: &[&str]) -> Output {
        let mut all = vec!["stage", "secrets"];
        all.extend_from_slice(args);
        self.command(&all).output().unwrap()
    }

    /// One pass of `nodeboot sync --root ROOT manifests --once`.
    pub fn sync_once(&self) -> Output {
        self.command(&["sync", "manifests", "--once"]).output().unwrap()
    }

    pub fn manifests_dir(&self) -> PathBuf {
        self.path("/etc/kubernetes/manifests")
    }

    pub fn secrets_dir(&self) -> PathBuf {
        self.path(nodeboot::shared::node_config::SECRETS_DIR)
    }

    /// The running sync (`--interval`), its stderr read line by line.
    pub fn start_sync(&self, interval: &str) -> SyncProcess {
        let mut child = self
            .command(&["sync", "manifests", "--interval", interval])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        SyncProcess { child, lines, rx }
    }
}

pub struct SyncProcess {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
    rx: mpsc::Receiver<String>,
}

impl SyncProcess {
    /// Waits for a log line containing `needle` (at most `limit`, so a broken
    /// sync fails the test instead of hanging it).
    pub fn wait_for_line(&self, needle: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let left = limit
                .checked_sub(start.elapsed())
                .unwrap_or_else(|| panic!("no log line with {needle:?}; log:\n{}", self.log()));
            match self.rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line with {needle:?}; log:\n{}", self.log()),
            }
        }
    }

    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

impl Drop for SyncProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `done` holds (at most `limit`, then panics with `what`).
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "gave up waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP proxy in front of the emulator: `stop` refuses new connections
/// and cuts the open ones, as if AWS were unreachable; `start` serves
/// again on the same port.
pub struct Proxy {
    pub url: String,
    port: u16,
    upstream: String,
    running: Option<Serving>,
}

struct Serving {
    stop: Arc<AtomicBool>,
    accepter: thread::JoinHandle<()>,
    /// Both ends of every connection, to cut them on `stop`.
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn new(upstream_url: &str) -> Proxy {
        let upstream = upstream_url.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut proxy = Proxy {
            url: format!("http://127.0.0.1:{port}"),
            port,
            upstream,
            running: None,
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (flag, conns, upstream) = (stop.clone(), open.clone(), self.upstream.clone());
        let handle = thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(&upstream) else {
                            continue;
                        };
                        conns
                            .lock()
                            .unwrap()
                            .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                        pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                        pipe(server, client);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        self.running = Some(Serving {
            stop,
            accepter: handle,
            open,
        });
    }

    pub fn stop(&mut self) {
        if let Some(serving) = self.running.take() {
            serving.stop.store(true, Ordering::SeqCst);
            serving.accepter.join().unwrap();
            for c in serving.open.lock().unwrap().drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }

    pub fn start(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        self.serve(listener);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}
