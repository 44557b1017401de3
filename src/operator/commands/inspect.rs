//! Operator commands that look at a running environment: `aws instances`,
//! `aws elbs` (the seed's `aws-instances` / `aws-elbs`) and `ssh-config`.

use std::path::Path;

use comfy_table::{presets, Table};

use super::load_env;
use crate::operator::error::Error;
use crate::shared::cloud::aws::inventory::AwsInventory;
use crate::shared::cloud::{InstanceInfo, Inventory, LoadBalancerInfo};

pub use super::Output;

fn inventory<T>(
    env_path: &Path,
    f: impl AsyncFnOnce(&AwsInventory, &str) -> Result<T, crate::shared::cloud::CloudError>,
) -> Result<T, Error> {
    let env = load_env(env_path)?.env;
    super::operator_runtime(&env, async |sdk| {
        f(&AwsInventory::new(sdk), &env.name).await.map_err(Error::Cloud)
    })
}

fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(presets::ASCII_FULL_CONDENSED).set_header(header.to_vec());
    for row in rows {
        t.add_row(row);
    }
    t.to_string()
}

pub fn render_instances(instances: &[InstanceInfo], output: Output) -> String {
    match output {
        Output::Json => serde_json::to_string_pretty(instances).expect("serialises"),
        Output::Table => table(
            &["Name", "PrivateIp", "PublicIp", "InstanceId", "State", "Zone"],
            instances.iter().map(|i| {
                vec![
                    i.name.clone(),
                    i.private_ip.clone(),
                    i.public_ip.clone().unwrap_or_else(|| "None".into()),
                    i.instance_id.clone(),
                    i.state.clone(),
                    i.zone.clone(),
                ]
            }),
        ),
    }
}

pub fn render_load_balancers(lbs: &[LoadBalancerInfo], output: Output) -> String {
    match output {
        Output::Json => serde_json::to_string_pretty(lbs).expect("serialises"),
        Output::Table => table(
            &["Name", "DNSName", "Scheme"],
            lbs.iter()
                .map(|l| vec![l.name.clone(), l.dns_name.clone(), l.scheme.clone()]),
        ),
    }
}

pub fn instances(env_path: &Path, output: Output) -> Result<String, Error> {
    let found = inventory(env_path, async |inv, env| inv.instances(env).await)?;
    Ok(render_instances(&found, output))
}

pub fn load_balancers(env_path: &Path, output: Output) -> Result<String, Error> {
    let found = inventory(env_path, async |inv, env| inv.load_balancers(env).await)?;
    Ok(render_load_balancers(&found, output))
}

/// An OpenSSH client config: the bastion by its public address, every
/// other node (all on private subnets) by name and private IP through
/// `ProxyJump` via the bastion.
pub fn ssh_config_text(environment: &str, instances: &[InstanceInfo]) -> String {
    let bastion = format!("{environment}-bastion");
    let mut out = format!("# nodeboot ssh-config for {environment}: ssh -F THIS_FILE <host>\n");
    let running = instances.iter().filter(|i| i.state == "running");
    let bastion_ip = running
        .clone()
        .find(|i| i.role == "bastion" || i.name == bastion)
        .and_then(|i| i.public_ip.clone());
    match &bastion_ip {
        Some(ip) => out.push_str(&format!("\nHost {bastion}\n  HostName {ip}\n  User core\n")),
        None => out.push_str(&format!(
            "\n# no running bastion with a public address was found for {environment}\n"
        )),
    }
    for i in running.filter(|i| i.role != "bastion" && i.name != bastion) {
        let alias = format!("{}-{}", i.name, i.instance_id);
        out.push_str(&format!(
            "\nHost {alias} {}\n  HostName {}\n  User core\n",
            i.private_ip, i.private_ip
        ));
        if bastion_ip.is_some() {
            out.push_str(&format!("  ProxyJump {bastion}\n"));
        }
    }
    out
}

pub fn ssh_config(env_path: &Path) -> Result<String, Error> {
    let env = load_env(env_path)?.env;
    let found = inventory(env_path, async |inv, env| inv.instances(env).await)?;
    Ok(ssh_config_text(&env.name, &found))
}
