//! Where each etcd member lives. Terraform (`terraform/modules/etcd`) places
//! the volumes and ENIs by exactly this rule, so both sides must agree:
//! member `i` is in zone `i % zones` and its ENI has host number
//! `MEMBER_HOST_OFFSET + i / zones` of that zone's secure subnet.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fields::host;
use super::Environment;

/// AWS reserves the first four addresses of a subnet; we leave a few more
/// for appliances and start members at `.10`.
pub const MEMBER_HOST_OFFSET: u32 = 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub index: u32,
    pub zone: String,
    pub ip: Ipv4Addr,
}

/// How many members land in each zone.
pub fn members_per_zone(count: u32, zones: usize) -> Vec<u32> {
    let zones = zones as u32;
    (0..zones)
        .map(|z| count / zones + u32::from(z < count % zones))
        .collect()
}

/// The slot (0-based, within the zone) of the zone's last member, if any.
pub fn last_member_in_zone(count: u32, zones: usize, zone: usize) -> Option<u32> {
    members_per_zone(count, zones)
        .get(zone)
        .copied()
        .filter(|n| *n > 0)
        .map(|n| n - 1)
}

impl Environment {
    /// The etcd members in index order. The environment was validated, so
    /// every member has a zone and an address.
    pub fn etcd_members(&self) -> Vec<Member> {
        let zones = self.availability_zones.len() as u32;
        (0..self.etcd_count)
            .map(|index| {
                let zone = (index % zones) as usize;
                let ip = host(self.subnets.secure[zone], MEMBER_HOST_OFFSET + index / zones)
                    .expect("validated: the secure subnet holds every member");
                Member {
                    index,
                    zone: self.availability_zones[zone].clone(),
                    ip,
                }
            })
            .collect()
    }
}

/// Where the members were when Terraform last applied this environment:
/// `environments/NAME.members.json` beside `environments/NAME.tfvars`.
/// `nodeboot up` writes it after a successful apply; `validate` (and every
/// command that loads the environment) refuses a change that would move a
/// member it lists. Commit it with the environment file.
pub fn record_path(env_path: &Path) -> PathBuf {
    env_path.with_extension("members.json")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub members: Vec<Member>,
}

/// The recorded layout, if the file exists.
pub fn read_record(env_path: &Path) -> Result<Option<Record>, String> {
    let path = record_path(env_path);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes the environment's layout as the record (after an apply).
pub fn write_record(env_path: &Path, env: &Environment) -> std::io::Result<PathBuf> {
    let path = record_path(env_path);
    let mut text = serde_json::to_string_pretty(&Record {
        members: env.etcd_members(),
    })
    .expect("the layout serialises");
    text.push('\n');
    crate::shared::fsutil::write_atomic(&path, text.as_bytes(), 0o644)?;
    Ok(path)
}

/// The recorded members that `env` would put in another zone or give
/// another address: Terraform would replace their volume or ENI. Members
/// past `etcd_count` are not moves (their removal is the etcd stage's).
pub fn moved_members<'a>(recorded: &'a Record, env: &Environment) -> Vec<(&'a Member, Member)> {
    let now = env.etcd_members();
    recorded
        .members
        .iter()
        .filter_map(|old| {
            now.get(old.index as usize)
                .filter(|new| new.zone != old.zone || new.ip != old.ip)
                .map(|new| (old, new.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_spread_round_robin_over_zones() {
        assert_eq!(members_per_zone(3, 3), vec![1, 1, 1]);
        assert_eq!(members_per_zone(7, 5), vec![2, 2, 1, 1, 1]);
        assert_eq!(members_per_zone(1, 3), vec![1, 0, 0]);
        assert_eq!(last_member_in_zone(1, 3, 2), None);
    }

    fn example() -> Environment {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("environments/example.tfvars");
        crate::operator::env::from_text(&path, &std::fs::read_to_string(&path).unwrap())
            .unwrap()
            .env
    }

    #[test]
    fn appending_a_zone_moves_no_member_while_each_zone_holds_at_most_one() {
        let env = example();
        let recorded = Record {
            members: env.etcd_members(),
        };
        let mut grown = env.clone();
        grown.availability_zones.push("eu-west-1d".into());
        grown.subnets.secure.push("10.80.13.0/24".parse().unwrap());
        assert!(moved_members(&recorded, &grown).is_empty());

        let mut five = env.clone();
        five.etcd_count = 5;
        let recorded = Record {
            members: five.etcd_members(),
        };
        five.availability_zones.push("eu-west-1d".into());
        five.subnets.secure.push("10.80.13.0/24".parse().unwrap());
        let moved: Vec<u32> = moved_members(&recorded, &five)
            .iter()
            .map(|(old, _)| old.index)
            .collect();
        assert_eq!(
            moved,
            vec![3, 4],
            "member 3 went from zone a to zone d, member 4 from b to a"
        );
    }

    #[test]
    fn reordered_zones_move_members_and_fewer_members_do_not() {
        let env = example();
        let recorded = Record {
            members: env.etcd_members(),
        };
        let mut swapped = env.clone();
        swapped.availability_zones.swap(0, 1);
        assert_eq!(moved_members(&recorded, &swapped).len(), 2);
        let mut fewer = env.clone();
        fewer.etcd_count = 1;
        assert!(moved_members(&recorded, &fewer).is_empty());
    }
}
