//! A control-plane component whose certificate has ended gets its static pod
//! restarted with the renewed one (issue 21), through the secrets sync's own
//! steps: the readers' fingerprints (`readers::fingerprints`), the plan
//! (`consumers::plan`: restart it, and only it) and the static pod's restart
//! under the lock `static-pod-<name>` in a real etcd 3.5, gated on its
//! health endpoint (`readers::restart_pod`).
//!
//! No kube-apiserver runs here: the component is `openssl s_server` serving
//! the node's copy of `apiserver.crt` over HTTPS (its program named as the
//! pod, as the kubelet's container runs it), and a thread plays the kubelet
//! that starts the container again when it exits. What the component serves
//! is read from TLS handshakes: the ended certificate before the renewal,
//! the new one after it.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::etcd::*;
use common::stderr;
use nodeboot::node::readers::consumers::{plan, Consumer, Step};
use nodeboot::node::readers::{fingerprints, restart_pod, PodRestart};
use nodeboot::node::root::Root;
use nodeboot::shared::etcd::served::{served_certificate, Refusal};
use nodeboot::shared::etcd::{lock, TlsFiles};
use nodeboot::shared::retry::Policy;

/// The kubelet's part: runs `name` (openssl s_server on `port` with the
/// node's certificate) and starts it again whenever it exits, until dropped.
struct Kubelet {
    stop: Arc<AtomicBool>,
    child: Arc<Mutex<Option<std::process::Child>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Kubelet {
    fn run(name: &str, port: u16, secrets: &Path) -> Kubelet {
        let (stop, child) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(None)));
        let (stopping, running) = (stop.clone(), child.clone());
        let (name, secrets) = (name.to_string(), secrets.to_path_buf());
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                let spawned = std::process::Command::new("openssl")
                    .arg0(&name)
                    .args(["s_server", "-quiet", "-www", "-accept", &port.to_string()])
                    .arg("-cert")
                    .arg(secrets.join("apiserver.crt"))
                    .arg("-key")
                    .arg(secrets.join("apiserver.key"))
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap();
                *running.lock().unwrap() = Some(spawned);
                // Wait for it to exit, looking at the stop flag meanwhile.
                loop {
                    let mut guard = running.lock().unwrap();
                    let exited = guard.as_mut().map(|c| c.try_wait().unwrap().is_some()).unwrap_or(true);
                    drop(guard);
                    if exited || stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        Kubelet {
            stop,
            child,
            thread: Some(thread),
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn nodeboot_pki(tree: &Path, args: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nodeboot"))
        .args(["pki", "--env", common::example_env().to_str().unwrap(), "--dir"])
        .arg(tree)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// What the secrets sync writes: the tree's files at the node's paths.
fn place(tree: &Path, secrets: &Path) {
    std::fs::create_dir_all(secrets).unwrap();
    for (from, to) in [
        ("secure/apiserver.crt", "apiserver.crt"),
        ("secure/apiserver.key", "apiserver.key"),
        ("common/ca.crt", "ca.crt"),
    ] {
        let tmp = secrets.join(format!("{to}.tmp"));
        std::fs::copy(tree.join(from), &tmp).unwrap();
        std::fs::rename(&tmp, secrets.join(to)).unwrap();
    }
}

#[tokio::test]
async fn a_control_plane_component_whose_certificate_ended_restarts_with_the_renewed_one() {
    let dir = tempfile::tempdir().unwrap();
    // The lock lives in etcd, whose own certificates are valid.
    let (_member, client) = one_member(dir.path());

    // The control plane's tree: its certificates end 4 s after they are issued.
    let tree = dir.path().join("tree");
    nodeboot_pki(&tree, &["--test-validity-secs", "4"]);
    let root = Root(dir.path().join("node"));
    let secrets = root.path("/run/nodeboot/secrets");
    place(&tree, &secrets);
    let name = format!("kube-apiserver-{}", std::process::id());
    let manifests = root.path("/etc/kubernetes/manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let manifest: PathBuf = manifests.join(format!("{name}.yaml"));
    std::fs::write(
        &manifest,
        "    - --tls-cert-file=/run/nodeboot/secrets/apiserver.crt\n    - --tls-private-key-file=/run/nodeboot/secrets/apiserver.key\n",
    )
    .unwrap();
    let pod = Consumer::StaticPod(name.clone());
    let inputs = BTreeMap::from([(pod.clone(), vec![manifest.clone()])]);
    // The component started with these files: the sync adopts it.
    let record = fingerprints(&root, &inputs);

    let port = free_port();
    let _kubelet = Kubelet::run(&name, port, &secrets);
    let url = format!("https://127.0.0.1:{port}");
    let probe = TlsFiles {
        ca: secrets.join("ca.crt"),
        cert: tree.join("ca/admin.crt"),
        key: tree.join("ca/admin.key"),
    };
    let ended = nodeboot::operator::pki::not_after(&tree.join("secure/apiserver.crt"))
        .unwrap()
        .unix_timestamp();
    wait_until(
        "the component serves its ended certificate",
        Duration::from_secs(30),
        || {
            matches!(
                served_certificate(&url, &probe, Duration::from_secs(2)),
                Ok(s) if s.refused == Some(Refusal::ServedExpired) && s.not_after == ended
            )
        },
    );

    // Renewed by the operator (`pki --renew`, `secrets upload`), written by the sync.
    nodeboot_pki(&tree, &["--renew"]);
    place(&tree, &secrets);
    let renewed = nodeboot::operator::pki::not_after(&tree.join("secure/apiserver.crt"))
        .unwrap()
        .unix_timestamp();
    assert!(renewed > ended + 300 * 86_400);
    let current = fingerprints(&root, &inputs);
    assert_eq!(
        plan(&record, &current),
        vec![Step::Restart(pod)],
        "it restarts, only it"
    );

    let restarted = restart_pod(PodRestart {
        name: &name,
        proc_dir: Path::new("/proc"),
        lock: Some((&client, "node-a")),
        health: Some(format!("{url}/readyz")),
        exit_wait: Policy::every(Duration::from_millis(50), Duration::from_secs(10)),
        ready_wait: Policy::every(Duration::from_millis(100), Duration::from_secs(20)),
    })
    .await;
    assert_eq!(restarted, Ok(true));
    let served = served_certificate(&url, &probe, Duration::from_secs(2)).unwrap();
    assert_eq!(served.not_after, renewed, "it serves the renewed certificate");
    assert_ne!(served.refused, Some(Refusal::ServedExpired));
    assert_eq!(
        lock::holder(&client, &format!("static-pod-{name}")).unwrap(),
        None,
        "healthy: the lock went back"
    );
}
