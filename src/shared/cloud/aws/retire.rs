//! `Retirement` on EC2 and Auto Scaling: `nodeboot etcd retire-member`.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};

use super::cloud_error;
use super::ec2::{all_pages, filter, Ec2, PAGE};
use crate::shared::cloud::{CloudError, NetworkInterface, Retirement, Snapshot, Volume};

pub struct Retirer {
    ec2: Ec2,
    autoscaling: aws_sdk_autoscaling::Client,
}

impl Retirer {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Retirer {
            ec2: Ec2::new(config),
            autoscaling: aws_sdk_autoscaling::Client::new(config),
        }
    }

    /// The EC2 side (instance states, one volume or ENI by id).
    pub fn ec2(&self) -> &Ec2 {
        &self.ec2
    }
}

fn tag_filters(tags: &[(&str, &str)]) -> Vec<Filter> {
    tags.iter().map(|(k, v)| filter(&format!("tag:{k}"), v)).collect()
}

fn described(tags: &[(&str, &str)]) -> String {
    tags.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn asg_error<E, R>(
    operation: &'static str,
    resource: &str,
    err: aws_sdk_autoscaling::error::SdkError<E, R>,
) -> CloudError
where
    E: aws_sdk_autoscaling::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let (code, message) = match err.as_service_error() {
        Some(service) => (
            service.code().map(str::to_string),
            service
                .message()
                .map(str::to_string)
                .unwrap_or_else(|| service.to_string()),
        ),
        None => (None, aws_sdk_autoscaling::error::DisplayErrorContext(&err).to_string()),
    };
    CloudError {
        operation,
        resource: resource.to_string(),
        code,
        message,
    }
}

impl Retirement for Retirer {
    async fn volumes_tagged(&self, tags: &[(&str, &str)]) -> Result<Vec<Volume>, CloudError> {
        self.ec2.volumes_where(tag_filters(tags), &described(tags)).await
    }

    async fn network_interfaces_tagged(&self, tags: &[(&str, &str)]) -> Result<Vec<NetworkInterface>, CloudError> {
        self.ec2
            .network_interfaces_where(tag_filters(tags), &described(tags))
            .await
    }

    async fn snapshots_tagged(&self, tags: &[(&str, &str)]) -> Result<Vec<Snapshot>, CloudError> {
        let r = described(tags);
        let r = r.as_str();
        all_pages("DescribeSnapshots", r, |token| async move {
            self.ec2.calls.add();
            let page = self
                .ec2
                .client
                .describe_snapshots()
                .owner_ids("self")
                .set_filters(Some(tag_filters(tags)))
                .max_results(PAGE)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| cloud_error("DescribeSnapshots", r, e))?;
            Ok((
                page.snapshots()
                    .iter()
                    .map(|s| Snapshot {
                        id: s.snapshot_id().unwrap_or_default().to_string(),
                        volume_id: s.volume_id().unwrap_or_default().to_string(),
                        state: s.state().map(|s| s.as_str().to_string()).unwrap_or_default(),
                    })
                    .collect(),
                page.next_token().map(str::to_string),
            ))
        })
        .await
    }

    async fn create_snapshot(
        &self,
        volume_id: &str,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, CloudError> {
        self.ec2.calls.add();
        let spec = TagSpecification::builder()
            .resource_type(ResourceType::Snapshot)
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| Tag::builder().key(k).value(v).build())
                    .collect(),
            ))
            .build();
        let out = self
            .ec2
            .client
            .create_snapshot()
            .volume_id(volume_id)
            .description(description)
            .tag_specifications(spec)
            .send()
            .await
            .map_err(|e| cloud_error("CreateSnapshot", volume_id, e))?;
        Ok(out.snapshot_id().unwrap_or_default().to_string())
    }

    async fn retag(
        &self,
        resource_id: &str,
        remove: &[&str],
        add: &BTreeMap<String, String>,
    ) -> Result<(), CloudError> {
        self.ec2.calls.add();
        self.ec2
            .client
            .delete_tags()
            .resources(resource_id)
            .set_tags(Some(remove.iter().map(|k| Tag::builder().key(*k).build()).collect()))
            .send()
            .await
            .map_err(|e| cloud_error("DeleteTags", resource_id, e))?;
        self.ec2.calls.add();
        self.ec2
            .client
            .create_tags()
            .resources(resource_id)
            .set_tags(Some(
                add.iter()
                    .map(|(k, v)| Tag::builder().key(k).value(v).build())
                    .collect(),
            ))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| cloud_error("CreateTags", resource_id, e))
    }

    async fn delete_volume(&self, id: &str) -> Result<(), CloudError> {
        self.ec2.calls.add();
        self.ec2
            .client
            .delete_volume()
            .volume_id(id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| cloud_error("DeleteVolume", id, e))
    }

    async fn delete_network_interface(&self, id: &str) -> Result<(), CloudError> {
        self.ec2.calls.add();
        self.ec2
            .client
            .delete_network_interface()
            .network_interface_id(id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| cloud_error("DeleteNetworkInterface", id, e))
    }

    async fn cidr_reservations(&self, subnet_id: &str) -> Result<Vec<(String, String)>, CloudError> {
        self.ec2.calls.add();
        let out = self
            .ec2
            .client
            .get_subnet_cidr_reservations()
            .subnet_id(subnet_id)
            .send()
            .await
            .map_err(|e| cloud_error("GetSubnetCidrReservations", subnet_id, e))?;
        Ok(out
            .subnet_ipv4_cidr_reservations()
            .iter()
            .map(|r| {
                (
                    r.subnet_cidr_reservation_id().unwrap_or_default().to_string(),
                    r.cidr().unwrap_or_default().to_string(),
                )
            })
            .collect())
    }

    async fn delete_cidr_reservation(&self, id: &str) -> Result<(), CloudError> {
        self.ec2.calls.add();
        self.ec2
            .client
            .delete_subnet_cidr_reservation()
            .subnet_cidr_reservation_id(id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| cloud_error("DeleteSubnetCidrReservation", id, e))
    }

    async fn terminate_with_its_group(&self, instance_id: &str) -> Result<Option<String>, CloudError> {
        let held = self
            .autoscaling
            .describe_auto_scaling_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| asg_error("DescribeAutoScalingInstances", instance_id, e))?;
        let Some(group) = held
            .auto_scaling_instances()
            .first()
            .and_then(|i| i.auto_scaling_group_name())
            .map(str::to_string)
        else {
            self.ec2.calls.add();
            self.ec2
                .client
                .terminate_instances()
                .instance_ids(instance_id)
                .send()
                .await
                .map_err(|e| cloud_error("TerminateInstances", instance_id, e))?;
            return Ok(None);
        };
        let groups = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&group)
            .send()
            .await
            .map_err(|e| asg_error("DescribeAutoScalingGroups", &group, e))?;
        if let Some(g) = groups.auto_scaling_groups().first() {
            let desired = g.desired_capacity().unwrap_or(0);
            if g.min_size().unwrap_or(0) > desired - 1 {
                self.autoscaling
                    .update_auto_scaling_group()
                    .auto_scaling_group_name(&group)
                    .min_size((desired - 1).max(0))
                    .send()
                    .await
                    .map_err(|e| asg_error("UpdateAutoScalingGroup", &group, e))?;
            }
        }
        self.autoscaling
            .terminate_instance_in_auto_scaling_group()
            .instance_id(instance_id)
            .should_decrement_desired_capacity(true)
            .send()
            .await
            .map_err(|e| asg_error("TerminateInstanceInAutoScalingGroup", instance_id, e))?;
        Ok(Some(group))
    }
}

/// Whether an error says the resource is gone already (a rerun).
pub fn gone(e: &CloudError) -> bool {
    e.is_not_found() || e.code.as_deref() == Some("InvalidSubnetCidrReservationID.NotFound")
}
