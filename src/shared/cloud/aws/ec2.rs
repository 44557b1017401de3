//! `Compute` on EC2.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, Tag};
use aws_sdk_ec2::Client;

use super::{cloud_error, CallCount};
use crate::shared::cloud::{
    tags, Attachment, CloudError, ClusterFilter, Compute, InstanceState, NetworkInterface, Volume,
};

pub struct Ec2 {
    pub(super) client: Client,
    pub calls: CallCount,
}

impl Ec2 {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Ec2 {
            client: Client::new(config),
            calls: CallCount::default(),
        }
    }
}

/// MaxResults per Describe page: EC2 recommends paged calls (an unpaged one
/// may be throttled or time out) and allows 5-500 volumes, 5-1000 ENIs or
/// instances per page. A page may still hold fewer, even none, with a
/// NextToken: only the last page ends a listing.
const VOLUMES_PAGE: i32 = 500;
pub(super) const PAGE: i32 = 1000;

/// Every page of a Describe call, following NextToken to the end. A failed
/// page fails the listing, so a caller never plans from part of it (half a
/// member). A token that comes back twice fails it too: the SDK's own
/// paginator would end the listing there, silently incomplete.
pub(super) async fn all_pages<T, F, Fut>(
    operation: &'static str,
    resource: &str,
    mut page: F,
) -> Result<Vec<T>, CloudError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, Option<String>), CloudError>>,
{
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let (items, next) = page(token.take()).await?;
        out.extend(items);
        match next.filter(|t| !t.is_empty()) {
            None => return Ok(out),
            Some(t) if !seen.insert(t.clone()) => {
                return Err(CloudError {
                    operation,
                    resource: resource.into(),
                    code: None,
                    message: format!("NextToken {t:?} came back twice; the listing is incomplete"),
                })
            }
            Some(t) => token = Some(t),
        }
    }
}

fn instance_states_of(
    page: &aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput,
) -> Vec<(String, InstanceState)> {
    page.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| {
            Some((
                i.instance_id()?.to_string(),
                InstanceState::parse(i.state()?.name()?.as_str()),
            ))
        })
        .collect()
}

pub(super) fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// Every zone: the plan needs the other zones' resources to name a member
/// split across zones. The cluster is small, so this costs no extra call.
fn cluster_filters(f: &ClusterFilter) -> Vec<Filter> {
    vec![
        filter(&format!("tag:{}", tags::ENVIRONMENT), &f.environment),
        filter(&format!("tag:{}", tags::ROLE), &f.role),
    ]
}

fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
        .collect()
}

fn volume(v: &aws_sdk_ec2::types::Volume) -> Volume {
    Volume {
        id: v.volume_id().unwrap_or_default().to_string(),
        zone: v.availability_zone().unwrap_or_default().to_string(),
        state: v.state().map(|s| s.as_str().to_string()).unwrap_or_default(),
        attachments: v
            .attachments()
            .iter()
            .map(|a| Attachment {
                instance_id: a.instance_id().unwrap_or_default().to_string(),
                state: a.state().map(|s| s.as_str().to_string()).unwrap_or_default(),
                attachment_id: None,
                device: a.device().unwrap_or_default().to_string(),
            })
            .collect(),
        tags: tag_map(v.tags()),
        snapshot_id: v.snapshot_id().filter(|s| !s.is_empty()).map(str::to_string),
    }
}

fn network_interface(n: &aws_sdk_ec2::types::NetworkInterface) -> NetworkInterface {
    NetworkInterface {
        id: n.network_interface_id().unwrap_or_default().to_string(),
        zone: n.availability_zone().unwrap_or_default().to_string(),
        subnet_id: n.subnet_id().unwrap_or_default().to_string(),
        private_ip: n.private_ip_address().unwrap_or_default().to_string(),
        mac: n.mac_address().unwrap_or_default().to_lowercase(),
        status: n.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
        attachment: n
            .attachment()
            .filter(|a| a.instance_id().is_some())
            .map(|a| Attachment {
                instance_id: a.instance_id().unwrap_or_default().to_string(),
                state: a.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
                attachment_id: a.attachment_id().map(str::to_string),
                device: a.device_index().map(|i| i.to_string()).unwrap_or_default(),
            }),
        tags: tag_map(n.tag_set()),
    }
}

impl Ec2 {
    /// Every volume `filters` select, all pages; `resource` names them in errors.
    pub(super) async fn volumes_where(&self, filters: Vec<Filter>, resource: &str) -> Result<Vec<Volume>, CloudError> {
        let filters = &filters;
        all_pages("DescribeVolumes", resource, |token| async move {
            self.calls.add();
            let page = self
                .client
                .describe_volumes()
                .set_filters(Some(filters.clone()))
                .max_results(VOLUMES_PAGE)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| cloud_error("DescribeVolumes", resource, e))?;
            Ok((
                page.volumes().iter().map(volume).collect(),
                page.next_token().map(str::to_string),
            ))
        })
        .await
    }

    /// Every network interface `filters` select, all pages.
    pub(super) async fn network_interfaces_where(
        &self,
        filters: Vec<Filter>,
        resource: &str,
    ) -> Result<Vec<NetworkInterface>, CloudError> {
        let filters = &filters;
        all_pages("DescribeNetworkInterfaces", resource, |token| async move {
            self.calls.add();
            let page = self
                .client
                .describe_network_interfaces()
                .set_filters(Some(filters.clone()))
                .max_results(PAGE)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| cloud_error("DescribeNetworkInterfaces", resource, e))?;
            Ok((
                page.network_interfaces().iter().map(network_interface).collect(),
                page.next_token().map(str::to_string),
            ))
        })
        .await
    }
}

impl Compute for Ec2 {
    async fn volumes(&self, f: &ClusterFilter) -> Result<Vec<Volume>, CloudError> {
        self.volumes_where(cluster_filters(f), &format!("{}/{}", f.environment, f.role))
            .await
    }

    async fn network_interfaces(&self, f: &ClusterFilter) -> Result<Vec<NetworkInterface>, CloudError> {
        self.network_interfaces_where(cluster_filters(f), &format!("{}/{}", f.environment, f.role))
            .await
    }

    async fn volume(&self, id: &str) -> Result<Volume, CloudError> {
        self.calls.add();
        let out = self
            .client
            .describe_volumes()
            .volume_ids(id)
            .send()
            .await
            .map_err(|e| cloud_error("DescribeVolumes", id, e))?;
        out.volumes().first().map(volume).ok_or_else(|| CloudError {
            operation: "DescribeVolumes",
            resource: id.into(),
            code: Some("InvalidVolume.NotFound".into()),
            message: "no such volume".into(),
        })
    }

    async fn network_interface(&self, id: &str) -> Result<NetworkInterface, CloudError> {
        self.calls.add();
        let out = self
            .client
            .describe_network_interfaces()
            .network_interface_ids(id)
            .send()
            .await
            .map_err(|e| cloud_error("DescribeNetworkInterfaces", id, e))?;
        out.network_interfaces()
            .first()
            .map(network_interface)
            .ok_or_else(|| CloudError {
                operation: "DescribeNetworkInterfaces",
                resource: id.into(),
                code: Some("InvalidNetworkInterfaceID.NotFound".into()),
                message: "no such network interface".into(),
            })
    }

    async fn instance_states(&self, ids: &[String]) -> Result<BTreeMap<String, InstanceState>, CloudError> {
        let mut states: BTreeMap<String, InstanceState> =
            ids.iter().map(|id| (id.clone(), InstanceState::Unknown)).collect();
        if ids.is_empty() {
            return Ok(states);
        }
        // A filter, not InstanceIds: an unknown id must not fail the whole call.
        let resource = ids.join(",");
        let r = resource.as_str();
        let found = all_pages("DescribeInstances", r, |token| async move {
            self.calls.add();
            let page = self
                .client
                .describe_instances()
                .filters(
                    Filter::builder()
                        .name("instance-id")
                        .set_values(Some(ids.to_vec()))
                        .build(),
                )
                .max_results(PAGE)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| cloud_error("DescribeInstances", r, e))?;
            Ok((instance_states_of(&page), page.next_token().map(str::to_string)))
        })
        .await?;
        states.extend(found);
        // EC2 is eventually consistent: an instance launched a moment ago
        // may be missing from a filtered listing. Ask for each missing id
        // by name once; one still missing stays `Unknown` (alive to the plan).
        for id in ids {
            if states[id] != InstanceState::Unknown {
                continue;
            }
            self.calls.add();
            match self.client.describe_instances().instance_ids(id).send().await {
                Ok(page) => states.extend(instance_states_of(&page)),
                Err(e) => {
                    let e = cloud_error("DescribeInstances", id, e);
                    if e.code.as_deref() != Some("InvalidInstanceID.NotFound") {
                        return Err(e);
                    }
                }
            }
        }
        Ok(states)
    }

    async fn attach_volume(&self, volume_id: &str, instance_id: &str, device: &str) -> Result<(), CloudError> {
        self.calls.add();
        self.client
            .attach_volume()
            .volume_id(volume_id)
            .instance_id(instance_id)
            .device(device)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| cloud_error("AttachVolume", volume_id, e))
    }

    async fn detach_volume(&self, volume_id: &str, instance_id: &str, force: bool) -> Result<(), CloudError> {
        self.calls.add();
        self.client
            .detach_volume()
            .volume_id(volume_id)
            .instance_id(instance_id)
            .force(force)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| cloud_error("DetachVolume", volume_id, e))
    }

    async fn attach_network_interface(
        &self,
        eni_id: &str,
        instance_id: &str,
        device_index: i32,
    ) -> Result<(), CloudError> {
        self.calls.add();
        self.client
            .attach_network_interface()
            .network_interface_id(eni_id)
            .instance_id(instance_id)
            .device_index(device_index)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| cloud_error("AttachNetworkInterface", eni_id, e))
    }

    fn api_calls(&self) -> u32 {
        self.calls.get()
    }

    async fn tag_volume(&self, volume_id: &str, key: &str, value: &str) -> Result<(), CloudError> {
        self.calls.add();
        self.client
            .create_tags()
            .resources(volume_id)
            .tags(Tag::builder().key(key).value(value).build())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| cloud_error("CreateTags", volume_id, e))
    }

    async fn detach_network_interface(&self, attachment_id: &str, force: bool) -> Result<(), CloudError> {
        self.calls.add();
        self.client
            .detach_network_interface()
            .attachment_id(attachment_id)
            .force(force)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| cloud_error("DetachNetworkInterface", attachment_id, e))
    }
}

impl crate::shared::cloud::Instances for Ec2 {
    async fn terminate_instance(&self, id: &str) -> Result<(), CloudError> {
        self.calls.add();
        self.client
            .terminate_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| cloud_error("TerminateInstances", id, e))?;
        Ok(())
    }
}
