//! The mount stage's network half: the member's ENI gets its fixed address,
//! and the node's traffic to the VPC leaves from that address through the ENI.
//!
//! Why: etcd dials its peers without binding an address, and a peer checks
//! the caller's address against its certificate, which names the ENI's
//! fixed address (the only one known ahead). So a connection to a peer must
//! pick the ENI's address as its source, and a packet from that address must
//! leave through the ENI (EC2's source/destination check drops it on any
//! other interface; the same holds for the primary address on the ENI).
//!
//! The routing, from one plan (`plan`, pure):
//! - the ENI's address, without a prefix route in the main table;
//! - table 1001: the ENI's subnet and a default route via the subnet's
//!   router, both through the ENI with the ENI's address as source;
//! - rules: from the primary address → main (priority 1000), from the ENI's
//!   address → 1001 (1001), to the VPC → 1001 (1002). A connection to a peer
//!   (an unbound socket) takes the last rule: source = the ENI's address.
//!   The primary interface's own configuration is not touched.
//!
//! Applied as systemd-networkd configuration where networkd runs (Flatcar):
//! a `.network` file matched on the ENI's MAC, sorted before Flatcar's
//! `zz-default.network` (`Name=*`, DHCP), so DHCP never manages the ENI and
//! networkd itself keeps the routes and rules through lease renewals,
//! reloads and restarts (routes and rules added with `ip` are foreign to
//! networkd, which drops them when it configures the link). Elsewhere
//! (the test bed's namespaces, a host without networkd) the same plan is
//! applied with `ip`. Then verified by reading the kernel's answer back.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ipnet::Ipv4Net;
use tracing::info;

use super::{Root, StageError};
use crate::shared::fsutil;
use crate::shared::retry::{self, Attempt, Gave, Policy};

/// Routing table of the ENI's source routing: one per device index (eth1).
pub const TABLE: u32 = 1000 + super::attach::ENI_DEVICE_INDEX as u32;
/// Rule priorities: before the main table's (32766).
pub const PRIORITY_PRIMARY: u32 = 1000;
pub const PRIORITY_FROM_ENI: u32 = 1001;
pub const PRIORITY_TO_VPC: u32 = 1002;

/// Where the stage writes the ENI's networkd configuration: `/run` (state is
/// rebuilt every boot), named to sort before `zz-default.network`.
pub const NETWORK_FILE: &str = "/run/systemd/network/10-nodeboot-eni.network";
/// Exists while systemd-networkd runs (it creates it at start).
pub const NETWORKD_STATE: &str = "/run/systemd/netif";

/// What the ENI's interface must look like. Pure data, from the claim and facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EniNetwork {
    pub eni_id: String,
    pub mac: String,
    /// The ENI's address with its subnet's prefix length.
    pub address: Ipv4Net,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub primary_ip: Ipv4Addr,
    pub vpc: Ipv4Net,
}

pub fn plan(
    eni_id: &str,
    mac: &str,
    eni_ip: Ipv4Addr,
    subnet: Ipv4Net,
    primary_ip: Ipv4Addr,
    vpc: Ipv4Net,
) -> EniNetwork {
    EniNetwork {
        eni_id: eni_id.to_string(),
        mac: mac.to_lowercase(),
        address: Ipv4Net::new(eni_ip, subnet.prefix_len()).expect("a subnet's prefix length is valid"),
        subnet: subnet.trunc(),
        // The VPC router is the subnet's first host.
        gateway: Ipv4Addr::from(u32::from(subnet.network()) + 1),
        primary_ip,
        vpc: vpc.trunc(),
    }
}

impl EniNetwork {
    pub fn ip(&self) -> Ipv4Addr {
        self.address.addr()
    }

    /// The `.network` file (pure).
    pub fn networkd_file(&self) -> String {
        let ip = self.ip();
        let mut s = String::new();
        let _ = write!(
            s,
            "# Written by `nodeboot stage mount`: the etcd member's ENI {eni}.\n\
             # Sorts before zz-default.network, so DHCP never manages this interface;\n\
             # see src/node/stage/eni.rs for the routing.\n\
             [Match]\n\
             MACAddress={mac}\n\
             \n\
             [Link]\n\
             RequiredForOnline=no\n\
             \n\
             [Network]\n\
             DHCP=no\n\
             LinkLocalAddressing=no\n\
             IPv6AcceptRA=no\n\
             \n\
             [Address]\n\
             Address={address}\n\
             # The subnet's route lives in table {table} only: in the main table it\n\
             # would send the primary address's traffic out of the ENI.\n\
             AddPrefixRoute=no\n\
             \n\
             [Route]\n\
             Destination={subnet}\n\
             Scope=link\n\
             PreferredSource={ip}\n\
             Table={table}\n\
             \n\
             [Route]\n\
             Gateway={gateway}\n\
             GatewayOnLink=yes\n\
             PreferredSource={ip}\n\
             Table={table}\n\
             \n\
             [RoutingPolicyRule]\n\
             From={primary}/32\n\
             Table=main\n\
             Priority={p_primary}\n\
             \n\
             [RoutingPolicyRule]\n\
             From={ip}/32\n\
             Table={table}\n\
             Priority={p_from}\n\
             \n\
             [RoutingPolicyRule]\n\
             To={vpc}\n\
             Table={table}\n\
             Priority={p_to}\n",
            eni = self.eni_id,
            mac = self.mac,
            address = self.address,
            subnet = self.subnet,
            gateway = self.gateway,
            primary = self.primary_ip,
            vpc = self.vpc,
            table = TABLE,
            p_primary = PRIORITY_PRIMARY,
            p_from = PRIORITY_FROM_ENI,
            p_to = PRIORITY_TO_VPC,
        );
        s
    }

    /// The same plan as `ip` commands for `interface` (hosts without
    /// networkd). Each converges when repeated; `rules_missing` says which
    /// rule commands to run.
    pub fn ip_commands(&self, interface: &str) -> Vec<Vec<String>> {
        let (ip, table) = (self.ip().to_string(), TABLE.to_string());
        let words = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        vec![
            words(&format!("link set {interface} up")),
            words(&format!("addr replace {} dev {interface} noprefixroute", self.address)),
            words(&format!(
                "route replace {} dev {interface} scope link src {ip} table {table}",
                self.subnet
            )),
            words(&format!(
                "route replace default via {} dev {interface} onlink src {ip} table {table}",
                self.gateway
            )),
        ]
    }

    /// The rules as `ip rule` shows them (`from X lookup T`), with their `ip rule add` arguments.
    pub fn rules(&self) -> Vec<(u32, String, Vec<String>)> {
        let table = TABLE.to_string();
        let words = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        vec![
            (
                PRIORITY_PRIMARY,
                format!("from {} lookup main", self.primary_ip),
                words(&format!(
                    "rule add from {}/32 lookup main priority {PRIORITY_PRIMARY}",
                    self.primary_ip
                )),
            ),
            (
                PRIORITY_FROM_ENI,
                format!("from {} lookup {table}", self.ip()),
                words(&format!(
                    "rule add from {}/32 lookup {table} priority {PRIORITY_FROM_ENI}",
                    self.ip()
                )),
            ),
            (
                PRIORITY_TO_VPC,
                format!("from all to {} lookup {table}", self.vpc),
                words(&format!(
                    "rule add to {} lookup {table} priority {PRIORITY_TO_VPC}",
                    self.vpc
                )),
            ),
        ]
    }
}

/// Whether `ip rule show` lists `rule` at `priority` (networkd's rules end in `proto static`).
pub fn has_rule(shown: &str, priority: u32, rule: &str) -> bool {
    let want = format!("{priority}:\t{rule}");
    shown
        .lines()
        .map(str::trim_end)
        .any(|l| l == want || l.strip_prefix(want.as_str()).is_some_and(|rest| rest.starts_with(' ')))
}

/// A kernel answer that is not what the plan wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch(pub String);

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks the kernel's answers against the plan (pure): `rules` is
/// `ip rule show`, `to_vpc` is `ip -o route get <an address of the VPC>`,
/// `from_primary` is the same with `from <primary>`.
pub fn check(
    plan: &EniNetwork,
    interface: &str,
    rules: &str,
    to_vpc: &str,
    from_primary: &str,
) -> Result<(), Mismatch> {
    for (priority, rule, _) in plan.rules() {
        if !has_rule(rules, priority, &rule) {
            return Err(Mismatch(format!(
                "rule `{priority}: {rule}` is missing (ip rule show: {})",
                rules.trim().replace('\n', "; ")
            )));
        }
    }
    let field = |line: &str, name: &str| {
        let words: Vec<&str> = line.split_whitespace().collect();
        words
            .iter()
            .position(|w| *w == name)
            .and_then(|i| words.get(i + 1))
            .map(|s| s.to_string())
    };
    let ip = plan.ip().to_string();
    if field(to_vpc, "src").as_deref() != Some(ip.as_str()) || field(to_vpc, "dev").as_deref() != Some(interface) {
        return Err(Mismatch(format!(
            "traffic to the VPC would not leave {interface} from {ip}: {}",
            to_vpc.trim()
        )));
    }
    if field(from_primary, "dev").as_deref() == Some(interface) {
        return Err(Mismatch(format!(
            "the primary address's traffic would leave through the ENI: {}",
            from_primary.trim()
        )));
    }
    Ok(())
}

/// What can go wrong bringing up the member's ENI address.
#[derive(Debug, thiserror::Error)]
pub enum EniError {
    #[error("{command} failed: {detail}")]
    Command { command: String, detail: String },
    #[error("the routing of ENI {eni} did not take effect within {seconds}s: {detail}")]
    Network { eni: String, detail: String, seconds: u64 },
    #[error(transparent)]
    Stage(#[from] StageError),
}

fn ip(args: &[String]) -> Result<String, EniError> {
    let out = Command::new("ip").args(args).output().map_err(|e| EniError::Command {
        command: format!("ip {}", args.join(" ")),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(EniError::Command {
            command: format!("ip {}", args.join(" ")),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip_words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// How the plan is applied on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applier {
    Networkd { file: PathBuf },
    Ip,
}

impl Applier {
    pub fn detect(root: &Root) -> Applier {
        if root.path(NETWORKD_STATE).is_dir() {
            Applier::Networkd {
                file: root.path(NETWORK_FILE),
            }
        } else {
            Applier::Ip
        }
    }
}

/// Applies the plan, then waits (bounded) until the kernel shows it.
pub fn apply(applier: &Applier, plan: &EniNetwork, interface: &str, wait: Duration) -> Result<(), EniError> {
    match applier {
        Applier::Networkd { file } => {
            let text = plan.networkd_file();
            if std::fs::read_to_string(file).ok().as_deref() != Some(text.as_str()) {
                let dir = file.parent().expect("the file lives in a directory");
                std::fs::create_dir_all(dir).map_err(|e| StageError::io(dir, e))?;
                fsutil::write_atomic(file, text.as_bytes(), 0o644).map_err(|e| StageError::io(file, e))?;
                crate::shared::fault::point("mount:after-network-file");
            }
            // Every time, also when the file was already there: networkd may
            // have started after it was written, or the link appeared since.
            let out = Command::new("networkctl")
                .arg("reload")
                .output()
                .map_err(|e| EniError::Command {
                    command: "networkctl reload".into(),
                    detail: e.to_string(),
                })?;
            if !out.status.success() {
                return Err(EniError::Command {
                    command: "networkctl reload".into(),
                    detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
        }
        Applier::Ip => {
            for args in plan.ip_commands(interface) {
                ip(&args)?;
            }
            crate::shared::fault::point("mount:after-address");
            let shown = ip(&ip_words("rule show"))?;
            for (priority, rule, add) in plan.rules() {
                if !has_rule(&shown, priority, &rule) {
                    ip(&add)?;
                }
            }
        }
    }
    verify(plan, interface, wait)
}

/// An address of the VPC outside the ENI's subnet: what a peer in another zone looks like.
fn probe_address(plan: &EniNetwork) -> Ipv4Addr {
    let candidate = Ipv4Addr::from(u32::from(plan.vpc.network()) + 1);
    if plan.subnet.contains(&candidate) {
        plan.vpc.hosts().find(|a| !plan.subnet.contains(a)).unwrap_or(candidate)
    } else {
        candidate
    }
}

fn verify(plan: &EniNetwork, interface: &str, wait: Duration) -> Result<(), EniError> {
    let probe = probe_address(plan).to_string();
    let policy = Policy::new(Duration::from_millis(100), Duration::from_secs(1), wait);
    let what = format!("the routing of ENI {} on {interface}", plan.eni_id);
    retry::wait_blocking(&what, policy, || {
        let answers = ip(&ip_words("rule show")).and_then(|rules| {
            let to_vpc = ip(&ip_words(&format!("-o -4 route get {probe}")))?;
            let from_primary = ip(&ip_words(&format!("-o -4 route get {probe} from {}", plan.primary_ip)))?;
            Ok((rules, to_vpc, from_primary))
        });
        match answers {
            Ok((rules, to_vpc, from_primary)) => match check(plan, interface, &rules, &to_vpc, &from_primary) {
                Ok(()) => Attempt::Done(()),
                Err(m) => Attempt::Retry(m.to_string()),
            },
            // `route get` fails while the routes are not there yet.
            Err(e) => Attempt::Retry(e.to_string()),
        }
    })
    .map_err(|e| match e {
        Gave::Up { last, .. } | Gave::Failed(last) => EniError::Network {
            eni: plan.eni_id.clone(),
            detail: last,
            seconds: wait.as_secs(),
        },
    })?;
    info!(interface, address = %plan.address, table = TABLE, "ENI {} up: traffic to {} leaves from {}", plan.eni_id, plan.vpc, plan.ip());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> EniNetwork {
        plan(
            "eni-1",
            "02:AA:BB:CC:DD:01",
            "10.80.10.10".parse().unwrap(),
            "10.80.10.0/24".parse().unwrap(),
            "10.80.10.4".parse().unwrap(),
            "10.80.0.0/16".parse().unwrap(),
        )
    }

    #[test]
    fn the_plan_names_the_router_and_the_address_with_its_prefix() {
        let p = example();
        assert_eq!(p.gateway, "10.80.10.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!(p.address.to_string(), "10.80.10.10/24");
        assert_eq!(p.mac, "02:aa:bb:cc:dd:01");
    }

    #[test]
    fn the_network_file_matches_the_mac_and_keeps_dhcp_off() {
        let text = example().networkd_file();
        let lines: Vec<&str> = text.lines().collect();
        for want in [
            "MACAddress=02:aa:bb:cc:dd:01",
            "DHCP=no",
            "Address=10.80.10.10/24",
            "AddPrefixRoute=no",
            "Destination=10.80.10.0/24",
            "Gateway=10.80.10.1",
            "PreferredSource=10.80.10.10",
            "From=10.80.10.4/32",
            "From=10.80.10.10/32",
            "To=10.80.0.0/16",
            "Table=1001",
        ] {
            assert!(lines.contains(&want), "{want} in\n{text}");
        }
        assert!(NETWORK_FILE.rsplit('/').next().unwrap() < "zz-default.network");
    }

    #[test]
    fn check_accepts_the_kernels_answer_for_the_plan() {
        let p = example();
        let rules = "0:\tfrom all lookup local\n1000:\tfrom 10.80.10.4 lookup main proto static\n1001:\tfrom 10.80.10.10 lookup 1001 proto static\n1002:\tfrom all to 10.80.0.0/16 lookup 1001 proto static\n32766:\tfrom all lookup main\n";
        let to_vpc = "10.80.0.1 via 10.80.10.1 dev eth1 table 1001 src 10.80.10.10 uid 0 \\    cache ";
        let from_primary = "10.80.0.1 from 10.80.10.4 via 10.80.10.1 dev eth0 uid 0 \\    cache ";
        assert_eq!(check(&p, "eth1", rules, to_vpc, from_primary), Ok(()));
        // The old raw setup: a source on the main table's routes, no rule to the VPC.
        let old_rules =
            "0:\tfrom all lookup local\n1001:\tfrom 10.80.10.10 lookup 1001\n32766:\tfrom all lookup main\n";
        assert!(check(&p, "eth1", old_rules, to_vpc, from_primary).is_err());
        // After a DHCP renewal put the primary source back.
        let renewed = "10.80.0.1 via 10.80.10.1 dev eth0 src 10.80.10.4 uid 0";
        assert!(check(&p, "eth1", rules, renewed, from_primary)
            .unwrap_err()
            .0
            .contains("would not leave eth1 from 10.80.10.10"));
        let leaking = "10.80.0.1 from 10.80.10.4 via 10.80.10.1 dev eth1 table 1001";
        assert!(check(&p, "eth1", rules, to_vpc, leaking).is_err());
    }

    #[test]
    fn a_rule_is_found_with_or_without_its_protocol_and_never_by_prefix() {
        assert!(has_rule(
            "1001:\tfrom 10.80.10.10 lookup 1001\n",
            1001,
            "from 10.80.10.10 lookup 1001"
        ));
        assert!(has_rule(
            "1001:\tfrom 10.80.10.10 lookup 1001 proto static\n",
            1001,
            "from 10.80.10.10 lookup 1001"
        ));
        assert!(!has_rule(
            "1001:\tfrom 10.80.10.10 lookup 10010\n",
            1001,
            "from 10.80.10.10 lookup 1001"
        ));
        assert!(!has_rule(
            "1002:\tfrom 10.80.10.10 lookup 1001\n",
            1001,
            "from 10.80.10.10 lookup 1001"
        ));
    }

    #[test]
    fn the_probe_address_lies_outside_the_enis_subnet() {
        let p = example();
        assert!(!p.subnet.contains(&probe_address(&p)));
        assert!(p.vpc.contains(&probe_address(&p)));
        let first = plan(
            "eni-1",
            "02:00:00:00:00:01",
            "10.80.0.10".parse().unwrap(),
            "10.80.0.0/24".parse().unwrap(),
            "10.80.0.4".parse().unwrap(),
            "10.80.0.0/16".parse().unwrap(),
        );
        assert!(!first.subnet.contains(&probe_address(&first)));
    }
}
