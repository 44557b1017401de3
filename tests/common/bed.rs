//! The Rust side of the test bed (tests/bed/*.py, see tests/README.md): the
//! emulated AWS API, one IMDSv2 double per node, a cluster of tagged
//! volumes and ENIs, nodes (instances with their own root directory), and
//! loop devices that stand in for EBS volumes.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use nodeboot::operator::env::Environment;
use nodeboot::shared::role::Role;
use serde_json::json;

use super::repo;

pub const REGION: &str = "eu-west-1";
pub const ZONES: [&str; 3] = ["eu-west-1a", "eu-west-1b", "eu-west-1c"];

/// Root-only tests (loop devices, mounts, namespaces) run in CI, which is
/// root. Elsewhere they fail with this message unless the user opts out
/// with NODEBOOT_SKIP_ROOT_TESTS=1; then the test returns early and says
/// `skipped` on the terminal (libtest reports it `ok`: it has no "skipped").
pub fn require_root(what: &str) -> bool {
    match root_decision(nix::unistd::geteuid().is_root(), std::env::var("NODEBOOT_SKIP_ROOT_TESTS").ok().as_deref()) {
        RootDecision::Run => true,
        RootDecision::Skip => {
            say_skipped(what);
            false
        }
        RootDecision::Fail => panic!("{what} needs root (loop devices, mounts, network namespaces); run the suite as root, or set NODEBOOT_SKIP_ROOT_TESTS=1 to skip it knowingly"),
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum RootDecision {
    Run,
    Skip,
    Fail,
}

/// Only an explicit `1` skips; anything else without root fails.
pub fn root_decision(is_root: bool, opt_out: Option<&str>) -> RootDecision {
    match (is_root, opt_out) {
        (true, _) => RootDecision::Run,
        (false, Some("1")) => RootDecision::Skip,
        (false, _) => RootDecision::Fail,
    }
}

/// libtest captures `eprintln!` of a passing test and never shows it;
/// a write to the stderr handle itself is not captured, so the skip shows
/// in `cargo test`'s output beside the test's `ok`.
fn say_skipped(what: &str) {
    use std::io::Write;
    let name = std::thread::current().name().unwrap_or("?").to_string();
    let _ = writeln!(
        std::io::stderr().lock(),
        "test {name} ... skipped (NODEBOOT_SKIP_ROOT_TESTS=1: {what} needs root)"
    );
}

/// A bed server (aws_server.py or imds.py): started with stdin piped, so
/// it stops when the test drops it, even if the test panics.
pub struct Server {
    pub url: String,
    child: Child,
    _stdin: ChildStdin,
}

impl Server {
    fn start(mut cmd: Command) -> Server {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs the bed");
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("bed server said {line:?}, not READY"))
            .to_string();
        Server {
            url,
            child,
            _stdin: stdin,
        }
    }
}

pub fn start_server(cmd: Command) -> Server {
    Server::start(cmd)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Aws {
    pub server: Server,
    pub ec2: aws_sdk_ec2::Client,
    agent: ureq::Agent,
}

impl Aws {
    pub fn start(attach_delay_ms: u64) -> Aws {
        let mut cmd = Command::new("python3");
        cmd.arg(repo().join("tests/bed/aws_server.py")).args([
            "--port",
            "0",
            "--quiet",
            "--attach-delay-ms",
            &attach_delay_ms.to_string(),
        ]);
        let server = Server::start(cmd);
        let config = runtime().block_on(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new(REGION))
                .endpoint_url(&server.url)
                .http_client(nodeboot::shared::cloud::aws::http_client())
                .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                    "testing", "testing", None, None, "bed",
                ))
                .load(),
        );
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        Aws {
            ec2: aws_sdk_ec2::Client::new(&config),
            server,
            agent,
        }
    }

    /// The environment a nodeboot process needs to reach this emulator.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.server.url.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_CONFIG_FILE", "/dev/null".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
        ]
    }

    /// API calls per action since start or the last reset (throttled ones included).
    pub fn calls(&self) -> BTreeMap<String, u64> {
        let mut r = self
            .agent
            .get(format!("{}/_bed/calls", self.server.url))
            .call()
            .unwrap();
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
    }

    /// The same calls by the HTTP status they were answered with:
    /// `{"GetObject": {"200": 1, "304": 5}}`.
    pub fn answers(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        let mut r = self
            .agent
            .get(format!("{}/_bed/answers", self.server.url))
            .call()
            .unwrap();
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
    }

    pub fn total_calls(&self) -> u64 {
        self.calls().values().sum()
    }

    pub fn reset_calls(&self) {
        self.agent
            .post(format!("{}/_bed/calls/reset", self.server.url))
            .send_empty()
            .unwrap();
    }

    pub fn throttle(&self, action: &str, count: u32) {
        self.post("/_bed/throttle", json!({"action": action, "count": count}));
    }

    /// The next `count` calls of `action` fail with this AWS error code and HTTP status.
    pub fn inject_error(&self, action: &str, count: u32, code: &str, status: u16) {
        self.post(
            "/_bed/throttle",
            json!({"action": action, "count": count, "code": code, "status": status}),
        );
    }

    pub fn set_attach_delay(&self, ms: u64) {
        self.post("/_bed/config", json!({"attach_delay_ms": ms}));
    }

    /// Instances stay `shutting-down`/`stopping` this long from now on.
    pub fn set_shutdown_delay(&self, ms: u64) {
        self.post("/_bed/config", json!({"shutdown_delay_ms": ms}));
    }

    /// Every detach the bed accepted: (resource, holder, holder's state then, force).
    pub fn detaches(&self) -> Vec<(String, String, String, bool)> {
        let mut r = self
            .agent
            .get(format!("{}/_bed/detaches", self.server.url))
            .call()
            .unwrap();
        let list: Vec<serde_json::Value> = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        list.iter()
            .map(|d| {
                let s = |k: &str| d[k].as_str().unwrap().to_string();
                (
                    s("resource"),
                    s("instance"),
                    s("instance_state"),
                    d["force"].as_bool().unwrap(),
                )
            })
            .collect()
    }

    /// Describe pages hold at most `items` from now on (0: no cap).
    pub fn set_max_page(&self, items: u32) {
        self.post("/_bed/config", json!({"max_page": items}));
    }

    fn post(&self, path: &str, body: serde_json::Value) {
        let r = self
            .agent
            .post(format!("{}{path}", self.server.url))
            .header("content-type", "application/json")
            .send(body.to_string())
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The example environment under another name, with `members` etcd members.
pub fn environment(name: &str, members: u32) -> Environment {
    let mut env = nodeboot::operator::env::load(&super::example_env()).unwrap().env;
    env.name = name.to_string();
    env.etcd_count = members;
    env
}

fn tags(resource: ResourceType, pairs: &[(&str, String)]) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(
            pairs
                .iter()
                .map(|(k, v)| Tag::builder().key(*k).value(v).build())
                .collect(),
        ))
        .build()
}

/// A VPC with one secure subnet per zone, as Terraform's network module lays it out.
pub struct Vpc {
    pub subnets: BTreeMap<String, (String, ipnet::Ipv4Net)>,
}

impl Vpc {
    pub fn create(aws: &Aws, env: &Environment) -> Vpc {
        runtime().block_on(async {
            let vpc = aws
                .ec2
                .create_vpc()
                .cidr_block(env.vpc_cidr.to_string())
                .send()
                .await
                .unwrap();
            let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
            let mut subnets = BTreeMap::new();
            for (zone, cidr) in env.availability_zones.iter().zip(&env.subnets.secure) {
                let s = aws
                    .ec2
                    .create_subnet()
                    .vpc_id(&vpc_id)
                    .cidr_block(cidr.to_string())
                    .availability_zone(zone)
                    .send()
                    .await
                    .unwrap();
                subnets.insert(
                    zone.clone(),
                    (s.subnet().unwrap().subnet_id().unwrap().to_string(), *cidr),
                );
            }
            Vpc { subnets }
        })
    }
}

/// One member's resources, as Terraform creates them.
#[derive(Debug, Clone)]
pub struct MemberResources {
    pub member: u32,
    pub zone: String,
    pub volume_id: String,
    pub eni_id: String,
    pub eni_ip: String,
    pub eni_mac: String,
}

/// Creates every member's volume and ENI with nodeboot's tag scheme.
/// `tag_override` changes one member's tags (for the bad-tag tests).
pub fn create_members(aws: &Aws, env: &Environment, vpc: &Vpc) -> Vec<MemberResources> {
    env.etcd_members()
        .iter()
        .map(|m| create_member(aws, env, vpc, m.index, &m.zone, &m.ip.to_string(), &m.index.to_string()))
        .collect()
}

pub fn create_member(
    aws: &Aws,
    env: &Environment,
    vpc: &Vpc,
    index: u32,
    zone: &str,
    ip: &str,
    member_tag: &str,
) -> MemberResources {
    let pairs = |with_member: bool| {
        let mut t = vec![
            (nodeboot::shared::cloud::tags::ENVIRONMENT, env.name.clone()),
            (nodeboot::shared::cloud::tags::ROLE, "etcd".to_string()),
            ("Name", format!("{}-etcd-{index}", env.name)),
        ];
        if with_member {
            t.push((nodeboot::shared::cloud::tags::MEMBER, member_tag.to_string()));
        }
        t
    };
    let with_member = !member_tag.is_empty();
    runtime().block_on(async {
        let volume = aws
            .ec2
            .create_volume()
            .availability_zone(zone)
            .size(1)
            .tag_specifications(tags(ResourceType::Volume, &pairs(with_member)))
            .send()
            .await
            .unwrap();
        let (subnet_id, _) = &vpc.subnets[zone];
        let eni = aws
            .ec2
            .create_network_interface()
            .subnet_id(subnet_id)
            .private_ip_address(ip)
            .tag_specifications(tags(ResourceType::NetworkInterface, &pairs(with_member)))
            .send()
            .await
            .unwrap();
        let eni = eni.network_interface().unwrap();
        MemberResources {
            member: index,
            zone: zone.to_string(),
            volume_id: volume.volume_id().unwrap().to_string(),
            eni_id: eni.network_interface_id().unwrap().to_string(),
            eni_ip: eni.private_ip_address().unwrap().to_string(),
            eni_mac: eni.mac_address().unwrap().to_lowercase(),
        }
    })
}

/// A node: an instance in the emulator, its own root directory holding the
/// rendered node.json, and its own IMDSv2 double.
pub struct Node {
    pub instance_id: String,
    pub zone: String,
    pub root: tempfile::TempDir,
    pub identity_path: PathBuf,
    pub imds: Option<Server>,
}

impl Node {
    pub fn launch(aws: &Aws, env: &Environment, vpc: &Vpc, zone: &str) -> Node {
        Self::launch_role(aws, env, vpc, zone, Role::Etcd)
    }

    pub fn launch_role(aws: &Aws, env: &Environment, vpc: &Vpc, zone: &str, role: Role) -> Node {
        let (subnet_id, cidr) = vpc.subnets[zone].clone();
        let instance = runtime().block_on(async {
            let out = aws
                .ec2
                .run_instances()
                .image_id("ami-12c6146b")
                .min_count(1)
                .max_count(1)
                .subnet_id(&subnet_id)
                .send()
                .await
                .unwrap();
            out.instances()[0].clone()
        });
        let instance_id = instance.instance_id().unwrap().to_string();
        let primary = &instance.network_interfaces()[0];
        let root = tempfile::tempdir().unwrap();
        let config = nodeboot::operator::render::node_config::node_config(env, role);
        let config_path = root.path().join("etc/nodeboot/node.json");
        std::fs::create_dir_all(config_path.parent().unwrap()).unwrap();
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let identity_path = root.path().join("imds-identity.json");
        let identity = json!({
            "instance_id": instance_id,
            "availability_zone": zone,
            "region": REGION,
            "private_ip": instance.private_ip_address().unwrap(),
            "interfaces": [{
                "mac": primary.mac_address().unwrap().to_lowercase(),
                "device_number": 0,
                "interface_id": primary.network_interface_id().unwrap(),
                "local_ipv4s": [instance.private_ip_address().unwrap()],
                "subnet_id": subnet_id,
                "subnet_ipv4_cidr_block": cidr.to_string(),
                "vpc_id": instance.vpc_id().unwrap_or("vpc-0"),
            }],
        });
        write_json_atomic(&identity_path, &identity);
        let mut node = Node {
            instance_id,
            zone: zone.to_string(),
            root,
            identity_path,
            imds: None,
        };
        node.imds = Some(node.start_imds("127.0.0.1:0", None));
        node
    }

    pub fn start_imds(&self, listen: &str, netns: Option<&str>) -> Server {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "python3"]);
                c
            }
            None => Command::new("python3"),
        };
        cmd.arg(repo().join("tests/bed/imds.py"))
            .args(["--listen", listen, "--identity"])
            .arg(&self.identity_path);
        Server::start(cmd)
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Runs `nodeboot stage --root ROOT <args>` as this node.
    pub fn stage(&self, aws: &Aws, args: &[&str]) -> Output {
        self.stage_cmd(aws, args, &[]).output().unwrap()
    }

    pub fn stage_cmd(&self, aws: &Aws, args: &[&str], extra_env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodeboot"));
        cmd.arg("stage").arg("--root").arg(self.root()).args(args);
        cmd.envs(aws.env());
        if let Some(imds) = &self.imds {
            cmd.env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.url);
        }
        cmd.env("NODEBOOT_LOG", "info").env_remove(nodeboot::shared::fault::VAR);
        // An etcd node that gives up powers itself off: here a file records it.
        let poweroff = format!("touch {}", self.poweroff_marker().display());
        cmd.env("NODEBOOT_POWEROFF_COMMAND", poweroff);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    /// The file the tests' power-off command touches (`stage_cmd`).
    pub fn poweroff_marker(&self) -> PathBuf {
        self.root().join("poweroff-requested")
    }

    /// Whether a stage asked to power this node off.
    pub fn powered_off(&self) -> bool {
        self.poweroff_marker().exists()
    }

    /// Sets node.json's `boot` bounds (`stage --retry`).
    pub fn set_boot_bounds(&self, give_up_seconds: u64, no_free_member_seconds: u64) {
        let path = self.root().join("etc/nodeboot/node.json");
        let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        config["boot"] = json!({"give_up_seconds": give_up_seconds, "no_free_member_seconds": no_free_member_seconds});
        write_json_atomic(&path, &config);
    }

    pub fn claim(&self) -> Option<serde_json::Value> {
        let path = self.root().join("run/nodeboot/claim.json");
        std::fs::read(path).ok().map(|b| serde_json::from_slice(&b).unwrap())
    }

    /// Adds a hot-plugged interface to this node's metadata, as EC2 does
    /// once an ENI is attached.
    pub fn plug_interface(&self, m: &MemberResources, cidr: &ipnet::Ipv4Net) {
        let mut identity: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&self.identity_path).unwrap()).unwrap();
        let interfaces = identity["interfaces"].as_array_mut().unwrap();
        if !interfaces.iter().any(|i| i["mac"] == m.eni_mac.as_str()) {
            interfaces.push(json!({
                "mac": m.eni_mac, "device_number": 1, "interface_id": m.eni_id,
                "local_ipv4s": [m.eni_ip], "subnet_id": "subnet-x",
                "subnet_ipv4_cidr_block": cidr.to_string(), "vpc_id": "vpc-x",
            }));
        }
        write_json_atomic(&self.identity_path, &identity);
    }

    pub fn stop(&self, aws: &Aws) {
        runtime()
            .block_on(
                aws.ec2
                    .stop_instances()
                    .instance_ids(&self.instance_id)
                    .force(true)
                    .send(),
            )
            .unwrap();
    }

    pub fn terminate(&self, aws: &Aws) {
        runtime()
            .block_on(aws.ec2.terminate_instances().instance_ids(&self.instance_id).send())
            .unwrap();
    }

    /// EC2's state name of this instance (`running`, `stopping`, ...).
    pub fn state(&self, aws: &Aws) -> String {
        runtime().block_on(async {
            let out = aws
                .ec2
                .describe_instances()
                .instance_ids(&self.instance_id)
                .send()
                .await
                .unwrap();
            out.reservations()[0].instances()[0]
                .state()
                .unwrap()
                .name()
                .unwrap()
                .as_str()
                .to_string()
        })
    }
}

/// The emulator's Auto Scaling API, for checks the node's own calls cannot make.
pub fn auto_scaling_client(aws: &Aws) -> aws_sdk_autoscaling::Client {
    let config = runtime().block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(&aws.server.url)
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "testing", "testing", None, None, "bed",
            ))
            .http_client(nodeboot::shared::cloud::aws::http_client())
            .load(),
    );
    aws_sdk_autoscaling::Client::new(&config)
}

/// Puts `node` into an auto-scaling group of its own, as Terraform's etcd group holds its instances.
pub fn join_auto_scaling_group(aws: &Aws, node: &Node, group: &str) {
    let asg = auto_scaling_client(aws);
    runtime().block_on(async {
        asg.create_launch_configuration()
            .launch_configuration_name(group)
            .image_id("ami-12c6146b")
            .instance_type("t3.small")
            .send()
            .await
            .unwrap();
        asg.create_auto_scaling_group()
            .auto_scaling_group_name(group)
            .launch_configuration_name(group)
            .min_size(0)
            .max_size(3)
            .availability_zones(&node.zone)
            .send()
            .await
            .unwrap();
        asg.attach_instances()
            .auto_scaling_group_name(group)
            .instance_ids(&node.instance_id)
            .send()
            .await
            .unwrap();
    });
}

/// The instance's health as its auto-scaling group records it (`HEALTHY`, `UNHEALTHY`).
pub fn instance_health(aws: &Aws, node: &Node) -> String {
    let asg = auto_scaling_client(aws);
    runtime().block_on(async {
        let out = asg
            .describe_auto_scaling_instances()
            .instance_ids(&node.instance_id)
            .send()
            .await
            .unwrap();
        // AWS answers HEALTHY/UNHEALTHY; moto echoes what SetInstanceHealth sent.
        out.auto_scaling_instances()[0].health_status().unwrap().to_uppercase()
    })
}

pub fn write_json_atomic(path: &Path, value: &serde_json::Value) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

/// The instance a volume is attached to, as EC2 reports it.
pub fn volume_holder(aws: &Aws, volume_id: &str) -> Option<String> {
    runtime().block_on(async {
        let out = aws.ec2.describe_volumes().volume_ids(volume_id).send().await.unwrap();
        out.volumes()[0]
            .attachments()
            .iter()
            .find(|a| a.state().map(|s| s.as_str()) != Some("detached"))
            .and_then(|a| a.instance_id().map(str::to_string))
    })
}

pub fn eni_holder(aws: &Aws, eni_id: &str) -> Option<String> {
    runtime().block_on(async {
        let out = aws
            .ec2
            .describe_network_interfaces()
            .filters(Filter::builder().name("network-interface-id").values(eni_id).build())
            .send()
            .await
            .unwrap();
        out.network_interfaces()[0]
            .attachment()
            .and_then(|a| a.instance_id().map(str::to_string))
    })
}

/// A loop device over a sparse file: the bed's EBS volume.
pub struct LoopVolume {
    pub device: String,
    _file: Option<tempfile::NamedTempFile>,
}

impl LoopVolume {
    pub fn new(size_mb: u64) -> LoopVolume {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(size_mb * 1024 * 1024).unwrap();
        let mut volume = LoopVolume::over(file.path());
        volume._file = Some(file);
        volume
    }

    /// A loop device over an existing file (kept by the caller).
    pub fn over(path: &Path) -> LoopVolume {
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        LoopVolume {
            device: String::from_utf8(out.stdout).unwrap().trim().to_string(),
            _file: None,
        }
    }

    pub fn sha256(&self) -> String {
        let out = Command::new("sha256sum").arg(&self.device).output().unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    }
}

impl Drop for LoopVolume {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["--detach", &self.device]).status();
    }
}

/// Plays the kernel's part when EC2 attaches a volume: the Nitro by-id link
/// appears in the node's /dev (here: its root directory).
pub fn plug_volume(node: &Node, volume_id: &str, loop_volume: &LoopVolume) {
    let dir = node.root().join("dev/disk/by-id");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join(format!(
        "nvme-Amazon_Elastic_Block_Store_{}",
        volume_id.replace('-', "")
    ));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&loop_volume.device, link).unwrap();
}

/// Unmounts everything under a node's root (cleanup, even after a failure).
pub fn unmount_all(root: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|p| Path::new(p).starts_with(&root))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
    }
}
