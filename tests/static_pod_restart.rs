//! A static pod's restart for new secrets (`nodeboot sync secrets`) gated
//! on its health, with the lock `static-pod-<name>` in a real etcd 3.5: a
//! component that stays unhealthy keeps the lock (no other control-plane
//! node restarts into the same files) and fails naming it; one that passes
//! gives the lock back. The component is a process of its name (as the
//! kubelet's container runs it), its health endpoint a double that answers
//! as kube-apiserver's `/readyz` is documented to
//! (https://kubernetes.io/docs/reference/using-api/health-checks/): 200
//! `ok` when ready, 500 listing the checks (`[-]etcd failed: ...`) when not.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::etcd::*;
use nodeboot::node::readers::{restart_pod, PodRestart};
use nodeboot::shared::etcd::{lock, Client};
use nodeboot::shared::retry::Policy;

const UNREADY: &str = "[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n";

/// A health endpoint on plain HTTP that fails its first `unready` looks
/// (500), then answers 200 `ok`; stopped however the test ends.
struct Endpoint {
    port: u16,
    looks: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Endpoint {
    fn start(unready: usize) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (looks, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (counted, stopping) = (looks.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let n = counted.fetch_add(1, Ordering::SeqCst);
                let (status, body) = if n < unready {
                    ("500 Internal Server Error", UNREADY)
                } else {
                    ("200 OK", "ok")
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Endpoint {
            port,
            looks,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/readyz", self.port)
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A process whose program is `name` (a symlink to sleep), killed and
/// reaped however the test ends.
struct Component(std::process::Child);

impl Component {
    fn start(dir: &Path, name: &str) -> Component {
        let program = dir.join(name);
        if !program.exists() {
            std::os::unix::fs::symlink("/bin/sleep", &program).unwrap();
        }
        let child = std::process::Command::new(&program).arg("300").spawn().unwrap();
        // Right after the spawn /proc may still show the parent's command line.
        wait_until("the component shows its name", Duration::from_secs(5), || {
            nodeboot::node::readers::processes_named(Path::new("/proc"), name).contains(&(child.id() as i32))
        });
        Component(child)
    }

    /// Whether it was stopped by a signal (reaps it).
    fn was_signalled(&mut self) -> bool {
        use std::os::unix::process::ExitStatusExt;
        self.0.wait().unwrap().signal().is_some()
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn restart<'a>(name: &'a str, client: &'a Client, node: &'a str, url: String) -> PodRestart<'a> {
    PodRestart {
        name,
        proc_dir: Path::new("/proc"),
        lock: Some((client, node)),
        health: Some(url),
        exit_wait: Policy::every(Duration::from_millis(20), Duration::from_secs(10)),
        ready_wait: Policy::every(Duration::from_millis(20), Duration::from_millis(400)),
    }
}

#[tokio::test]
async fn an_unhealthy_restart_keeps_the_lock_and_a_healthy_one_gives_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_member, client) = one_member(dir.path());
    let name = format!("kube-gate-{}", std::process::id());
    let lock_name = format!("static-pod-{name}");

    // Restarted into files that leave it unready: the lock stays with node-a.
    let never = Endpoint::start(usize::MAX);
    let mut first = Component::start(dir.path(), &name);
    let failed = restart_pod(restart(&name, &client, "node-a", never.url())).await;
    let message = failed.expect_err("an unready component is no success");
    assert!(first.was_signalled(), "its old process was stopped");
    for words in [
        name.as_str(),
        &never.url(),
        "[-]etcd failed",
        "keeps the lock",
        "crictl logs",
    ] {
        assert!(message.contains(words), "{message} lacks {words:?}");
    }
    assert!(never.looks.load(Ordering::SeqCst) >= 2, "asked until the bound");
    assert_eq!(
        lock::holder(&client, &lock_name).unwrap().as_deref(),
        Some("node-a"),
        "the lock is kept"
    );
    let next = restart_pod(restart(&name, &client, "node-b", never.url())).await;
    assert_eq!(next, Ok(false), "the next node does not restart into the same files");

    // node-a's next pass: restarted again, healthy after two looks.
    let later = Endpoint::start(2);
    let mut second = Component::start(dir.path(), &name);
    let done = restart_pod(restart(&name, &client, "node-a", later.url())).await;
    assert_eq!(done, Ok(true));
    assert!(second.was_signalled());
    assert_eq!(later.looks.load(Ordering::SeqCst), 3, "two 500s, then 200");
    assert_eq!(lock::holder(&client, &lock_name).unwrap(), None, "given back");
}
