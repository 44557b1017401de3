//! `Inventory` on EC2 and ELBv2: what an environment runs, for operators.

use aws_sdk_ec2::types::Filter;

use super::cloud_error;
use crate::shared::cloud::{tags, CloudError, InstanceInfo, Inventory, LoadBalancerInfo};

pub struct AwsInventory {
    ec2: aws_sdk_ec2::Client,
    elb: aws_sdk_elasticloadbalancingv2::Client,
}

impl AwsInventory {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        AwsInventory {
            ec2: aws_sdk_ec2::Client::new(config),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(config),
        }
    }
}

impl Inventory for AwsInventory {
    async fn instances(&self, environment: &str) -> Result<Vec<InstanceInfo>, CloudError> {
        let mut pages = self
            .ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name(format!("tag:{}", tags::ENVIRONMENT))
                    .values(environment)
                    .build(),
            )
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| cloud_error("DescribeInstances", environment, e))?;
            for i in page.reservations().iter().flat_map(|r| r.instances()) {
                let tag = |key: &str| {
                    i.tags()
                        .iter()
                        .find(|t| t.key() == Some(key))
                        .and_then(|t| t.value())
                        .unwrap_or_default()
                        .to_string()
                };
                out.push(InstanceInfo {
                    name: tag("Name"),
                    role: tag(tags::ROLE),
                    private_ip: i.private_ip_address().unwrap_or_default().to_string(),
                    public_ip: i.public_ip_address().map(str::to_string),
                    instance_id: i.instance_id().unwrap_or_default().to_string(),
                    state: i
                        .state()
                        .and_then(|s| s.name())
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    zone: i
                        .placement()
                        .and_then(|p| p.availability_zone())
                        .unwrap_or_default()
                        .to_string(),
                });
            }
        }
        out.sort_by(|a, b| (&a.name, &a.zone, &a.instance_id).cmp(&(&b.name, &b.zone, &b.instance_id)));
        Ok(out)
    }

    async fn load_balancers(&self, environment: &str) -> Result<Vec<LoadBalancerInfo>, CloudError> {
        let mut pages = self.elb.describe_load_balancers().into_paginator().send();
        let mut all = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| cloud_error("DescribeLoadBalancers", environment, e))?;
            all.extend(page.load_balancers().iter().cloned());
        }
        let mut out = Vec::new();
        // DescribeTags takes at most 20 ARNs per call.
        for chunk in all.chunks(20) {
            let arns: Vec<String> = chunk
                .iter()
                .filter_map(|lb| lb.load_balancer_arn().map(str::to_string))
                .collect();
            let described = self
                .elb
                .describe_tags()
                .set_resource_arns(Some(arns))
                .send()
                .await
                .map_err(|e| cloud_error("DescribeTags", environment, e))?;
            for lb in chunk {
                let arn = lb.load_balancer_arn().unwrap_or_default();
                let ours = described.tag_descriptions().iter().any(|d| {
                    d.resource_arn() == Some(arn)
                        && d.tags()
                            .iter()
                            .any(|t| t.key() == Some(tags::ENVIRONMENT) && t.value() == Some(environment))
                });
                if ours {
                    out.push(LoadBalancerInfo {
                        name: lb.load_balancer_name().unwrap_or_default().to_string(),
                        dns_name: lb.dns_name().unwrap_or_default().to_string(),
                        scheme: lb.scheme().map(|s| s.as_str().to_string()).unwrap_or_default(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
