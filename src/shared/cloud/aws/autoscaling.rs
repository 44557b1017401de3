//! `AutoScaling` on the EC2 Auto Scaling API.

use aws_sdk_autoscaling::Client;

use super::{cloud_error, CallCount};
use crate::shared::cloud::{AutoScaling, CloudError};

pub struct Asg {
    client: Client,
    pub calls: CallCount,
}

impl Asg {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Asg {
            client: Client::new(config),
            calls: CallCount::default(),
        }
    }
}

impl AutoScaling for Asg {
    async fn set_unhealthy(&self, instance_id: &str) -> Result<(), CloudError> {
        self.calls.add();
        // The group's health check grace period is for instances still
        // booting; this one has finished booting, unsuccessfully.
        self.client
            .set_instance_health()
            .instance_id(instance_id)
            .health_status("Unhealthy")
            .should_respect_grace_period(false)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| cloud_error("SetInstanceHealth", instance_id, e))
    }
}
