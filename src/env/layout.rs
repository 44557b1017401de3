//! Where each etcd member lives. Terraform (`terraform/modules/etcd`) places
//! the volumes and ENIs by exactly this rule, so both sides must agree:
//! member `i` is in zone `i % zones` and its ENI has host number
//! `MEMBER_HOST_OFFSET + i / zones` of that zone's secure subnet.

use std::net::Ipv4Addr;

use serde::Serialize;

use super::fields::host;
use super::Environment;

/// AWS reserves the first four addresses of a subnet; we leave a few more
/// for appliances and start members at `.10`.
pub const MEMBER_HOST_OFFSET: u32 = 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub index: u32,
    pub zone: String,
    pub ip: Ipv4Addr,
}

/// How many members land in each zone.
pub fn members_per_zone(count: u32, zones: usize) -> Vec<u32> {
    let zones = zones as u32;
    (0..zones).map(|z| count / zones + u32::from(z < count % zones)).collect()
}

/// The slot (0-based, within the zone) of the zone's last member, if any.
pub fn last_member_in_zone(count: u32, zones: usize, zone: usize) -> Option<u32> {
    members_per_zone(count, zones).get(zone).copied().filter(|n| *n > 0).map(|n| n - 1)
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
                Member { index, zone: self.availability_zones[zone].clone(), ip }
            })
            .collect()
    }
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
}
