//! The narrow interfaces the stages need from the cloud, and their AWS
//! implementations. A stage sees `Metadata` and `Compute`, never the SDK.

#[cfg(feature = "aws")]
pub mod aws;
pub mod imds;
pub mod tags;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;

/// Instance metadata (IMDSv2). `Ok(None)` means the path does not exist (404).
pub trait Metadata {
    fn get(&self, path: &str) -> Result<Option<String>, imds::ImdsError>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub id: String,
    pub zone: String,
    /// `available`, `in-use`, `creating`, ...
    pub state: String,
    pub attachments: Vec<Attachment>,
    pub tags: BTreeMap<String, String>,
    /// The snapshot the volume was created from: it held data then.
    pub snapshot_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInterface {
    pub id: String,
    pub zone: String,
    pub subnet_id: String,
    pub private_ip: String,
    pub mac: String,
    /// `available`, `in-use`, `attaching`, ...
    pub status: String,
    pub attachment: Option<Attachment>,
    pub tags: BTreeMap<String, String>,
}

/// A volume's or an ENI's attachment to an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub instance_id: String,
    /// `attaching`, `attached`, `detaching`, `detached`.
    pub state: String,
    /// The ENI attachment id (detaching an ENI needs it); `None` for volumes.
    pub attachment_id: Option<String>,
    /// The device name (volumes) or device index (ENIs).
    pub device: String,
}

/// EC2's lifecycle state of an instance, as far as taking over its resources goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceState {
    Pending,
    Running,
    ShuttingDown,
    Terminated,
    Stopping,
    Stopped,
    /// DescribeInstances did not list the instance even when asked by id
    /// (EC2 is eventually consistent: a new instance may not show yet), or
    /// answered a state nodeboot does not know. It may be running.
    Unknown,
}

impl InstanceState {
    pub fn parse(s: &str) -> Self {
        match s {
            "pending" => InstanceState::Pending,
            "running" => InstanceState::Running,
            "shutting-down" => InstanceState::ShuttingDown,
            "terminated" => InstanceState::Terminated,
            "stopping" => InstanceState::Stopping,
            "stopped" => InstanceState::Stopped,
            _ => InstanceState::Unknown,
        }
    }

    /// Whether the instance's OS has stopped, so nothing writes to its
    /// attachments any more and another node may detach and take them.
    pub fn cannot_write(self) -> bool {
        matches!(self, InstanceState::Stopped | InstanceState::Terminated)
    }

    /// Whether the instance is on its way down: soon it cannot write, but
    /// its OS may still flush to its volumes now.
    pub fn is_going_down(self) -> bool {
        matches!(self, InstanceState::Stopping | InstanceState::ShuttingDown)
    }

    /// EC2's name of the state.
    pub fn name(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::Unknown => "in an unknown state",
        }
    }
}

/// What a stage filters the cluster's resources by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterFilter {
    pub environment: String,
    pub role: String,
}

/// An error from the cloud API, naming the operation and the resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudError {
    pub operation: &'static str,
    pub resource: String,
    /// The AWS error code (`VolumeInUse`, `RequestLimitExceeded`, ...).
    pub code: Option<String>,
    pub message: String,
}

impl CloudError {
    /// EC2 refused because someone else holds the resource: a lost race.
    pub fn is_conflict(&self) -> bool {
        match self.code.as_deref() {
            Some("VolumeInUse" | "IncorrectState" | "InvalidNetworkInterface.InUse") => true,
            Some("InvalidParameterValue") => self.message.contains("in use"),
            _ => false,
        }
    }

    /// The resource does not exist (any more).
    pub fn is_not_found(&self) -> bool {
        self.code.as_deref().is_some_and(|c| c.ends_with(".NotFound"))
    }
}

impl fmt::Display for CloudError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: ", self.operation, self.resource)?;
        if let Some(code) = &self.code {
            write!(f, "{code}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for CloudError {}

/// The EC2 operations the attach stage needs.
pub trait Compute {
    fn volumes(&self, filter: &ClusterFilter) -> impl Future<Output = Result<Vec<Volume>, CloudError>>;
    fn network_interfaces(
        &self,
        filter: &ClusterFilter,
    ) -> impl Future<Output = Result<Vec<NetworkInterface>, CloudError>>;
    fn volume(&self, id: &str) -> impl Future<Output = Result<Volume, CloudError>>;
    fn network_interface(&self, id: &str) -> impl Future<Output = Result<NetworkInterface, CloudError>>;
    /// States of the given instances, every page; an id missing from the
    /// listing is asked for once more by id, and comes back `Unknown` if
    /// still missing.
    fn instance_states(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<BTreeMap<String, InstanceState>, CloudError>>;
    fn attach_volume(
        &self,
        volume_id: &str,
        instance_id: &str,
        device: &str,
    ) -> impl Future<Output = Result<(), CloudError>>;
    fn detach_volume(
        &self,
        volume_id: &str,
        instance_id: &str,
        force: bool,
    ) -> impl Future<Output = Result<(), CloudError>>;
    fn attach_network_interface(
        &self,
        eni_id: &str,
        instance_id: &str,
        device_index: i32,
    ) -> impl Future<Output = Result<(), CloudError>>;
    fn detach_network_interface(
        &self,
        attachment_id: &str,
        force: bool,
    ) -> impl Future<Output = Result<(), CloudError>>;
    /// Adds (or overwrites) one tag on a volume.
    fn tag_volume(&self, volume_id: &str, key: &str, value: &str) -> impl Future<Output = Result<(), CloudError>>;
    /// API calls made so far (SDK retries not counted).
    fn api_calls(&self) -> u32;
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEntry {
    pub key: String,
    /// The ETag as S3 sends it (quoted); changes whenever the object is rewritten.
    pub etag: String,
    pub size: u64,
}

/// An object's body and what S3 says about how it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub body: Vec<u8>,
    pub etag: String,
    /// User metadata (`x-amz-meta-*`), keys lower-case.
    pub metadata: BTreeMap<String, String>,
    /// Server-side encryption: `aws:kms`, `AES256`, ... and the KMS key (an ARN).
    pub sse: Option<String>,
    pub sse_kms_key: Option<String>,
}

/// A conditional GET's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfChanged {
    /// The object still has the ETag asked about (S3's 304).
    NotModified,
    Missing,
    Changed(StoredObject),
}

/// The S3 object operations the secrets and the manifest sync need.
pub trait Objects {
    /// Every object under `prefix`, all pages. A page that fails fails the
    /// whole listing: a caller never sees a partial one.
    fn list(&self, bucket: &str, prefix: &str) -> impl Future<Output = Result<Vec<ObjectEntry>, CloudError>>;
    /// `Ok(None)` when there is no such key. Objects over `max_bytes` are refused.
    fn get(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: u64,
    ) -> impl Future<Output = Result<Option<StoredObject>, CloudError>>;
    /// The object unless its ETag is still `etag` (`If-None-Match`; with
    /// `None`, a plain GET). Objects over `max_bytes` are refused.
    fn get_if_changed(
        &self,
        bucket: &str,
        key: &str,
        etag: Option<&str>,
        max_bytes: u64,
    ) -> impl Future<Output = Result<IfChanged, CloudError>>;
    /// Stores `body`; returns the new ETag.
    fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        metadata: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<String, CloudError>>;
    fn delete(&self, bucket: &str, key: &str) -> impl Future<Output = Result<(), CloudError>>;
    /// Every object under `prefix` with the time the bucket stored it
    /// (`LastModified`), all pages; a failed page fails the listing.
    fn list_dated(&self, bucket: &str, prefix: &str) -> impl Future<Output = Result<Vec<DatedObject>, CloudError>>;
    /// API calls made so far (SDK retries not counted).
    fn api_calls(&self) -> u32;
}

/// An object of a listing and when the bucket stored it: the bucket's
/// clock, the same for every node, unlike a name a node's clock made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatedObject {
    pub key: String,
    pub size: u64,
    /// `LastModified`, seconds since the epoch.
    pub stored_unix: i64,
}

/// What `prereqs` finds about a bucket.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BucketState {
    pub exists: bool,
    pub versioning: bool,
    pub public_access_blocked: bool,
    /// Default encryption: algorithm and KMS key, when set.
    pub encryption: Option<(String, Option<String>)>,
}

/// The bucket set-up operations of `nodeboot prereqs`.
pub trait Buckets {
    /// `Err` with code `Forbidden` when the name belongs to someone else.
    fn bucket_state(&self, bucket: &str) -> impl Future<Output = Result<BucketState, CloudError>>;
    fn create_bucket(&self, bucket: &str, region: &str) -> impl Future<Output = Result<(), CloudError>>;
    fn enable_versioning(&self, bucket: &str) -> impl Future<Output = Result<(), CloudError>>;
    fn block_public_access(&self, bucket: &str) -> impl Future<Output = Result<(), CloudError>>;
    fn encrypt_by_default(&self, bucket: &str, kms_key_arn: &str) -> impl Future<Output = Result<(), CloudError>>;
}

/// A KMS key as DescribeKey reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: String,
    pub arn: String,
    /// `Enabled`, `Disabled`, `PendingDeletion`, ...
    pub state: String,
}

/// A fresh data key: the plaintext to encrypt with, the blob to store.
#[derive(Debug)]
pub struct DataKey {
    pub plaintext: crate::shared::secret::Secret,
    pub ciphertext: Vec<u8>,
}

/// The KMS operations of the secrets: envelope encryption and `prereqs`.
pub trait Keys {
    /// A 256-bit data key under `key_id`, bound to `context`.
    fn generate_data_key(
        &self,
        key_id: &str,
        context: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<DataKey, CloudError>>;
    /// Unwraps a data key; KMS checks the key and the context.
    fn decrypt(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        context: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<crate::shared::secret::Secret, CloudError>>;
    /// `Ok(None)` when no key or alias has that name.
    fn describe_key(&self, key_id: &str) -> impl Future<Output = Result<Option<KeyInfo>, CloudError>>;
    fn create_key(
        &self,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<KeyInfo, CloudError>>;
    fn create_alias(&self, alias: &str, key_id: &str) -> impl Future<Output = Result<(), CloudError>>;
    fn api_calls(&self) -> u32;
}

/// An instance of the environment, for `nodeboot aws instances`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InstanceInfo {
    pub name: String,
    pub role: String,
    pub private_ip: String,
    pub public_ip: Option<String>,
    pub instance_id: String,
    pub state: String,
    pub zone: String,
}

/// A load balancer of the environment, for `nodeboot aws elbs`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LoadBalancerInfo {
    pub name: String,
    pub dns_name: String,
    pub scheme: String,
}

/// What an environment runs, by its `nodeboot.io/environment` tag.
pub trait Inventory {
    fn instances(&self, environment: &str) -> impl Future<Output = Result<Vec<InstanceInfo>, CloudError>>;
    fn load_balancers(&self, environment: &str) -> impl Future<Output = Result<Vec<LoadBalancerInfo>, CloudError>>;
}

/// What HEAD (or a streamed GET) says about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    pub etag: String,
    pub size: u64,
    /// User metadata (`x-amz-meta-*`), keys lower-case.
    pub metadata: BTreeMap<String, String>,
}

/// Objects too large to hold in memory (etcd backups): uploaded in parts as
/// they are made, read as their body arrives.
pub trait ObjectFiles {
    /// What [`ObjectFiles::get_body`] reads from.
    type Body: ObjectBody;
    /// Starts a multipart upload; returns its id. Parts are at least 5 MiB
    /// but the last, at most 10,000 (S3's rules).
    fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        metadata: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<String, CloudError>>;
    /// Uploads part `number` (from 1); returns its ETag.
    fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<String, CloudError>>;
    /// Makes the object of the parts (number, ETag) in order: only now does
    /// the key exist.
    fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> impl Future<Output = Result<String, CloudError>>;
    /// Drops an upload's parts (after a failure).
    fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> impl Future<Output = Result<(), CloudError>>;
    /// The object's body as it arrives; `Ok(None)` when there is no such key.
    fn get_body(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<(ObjectHead, Self::Body)>, CloudError>>;
    /// `Ok(None)` when there is no such key.
    fn head(&self, bucket: &str, key: &str) -> impl Future<Output = Result<Option<ObjectHead>, CloudError>>;
}

/// An object's body, read piece by piece.
pub trait ObjectBody {
    /// The next piece; `Ok(None)` at the end (an error when the body ended
    /// before its announced length).
    fn next_bytes(&mut self) -> impl Future<Output = Result<Option<Vec<u8>>, CloudError>>;
}

/// What `nodeboot roll` does to an instance: terminate it (its autoscaling
/// group launches the replacement).
pub trait Instances {
    fn terminate_instance(&self, id: &str) -> impl Future<Output = Result<(), CloudError>>;
}

/// An EBS snapshot as DescribeSnapshots lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub id: String,
    pub volume_id: String,
    /// `pending`, `completed`, `error`, ...
    pub state: String,
}

/// What `nodeboot etcd retire-member` does to a retired member's resources
/// (an operator command: the nodes' roles may do none of it).
pub trait Retirement {
    /// Volumes that carry every tag of `tags`, all pages.
    fn volumes_tagged(&self, tags: &[(&str, &str)]) -> impl Future<Output = Result<Vec<Volume>, CloudError>>;
    /// ENIs that carry every tag of `tags`, all pages.
    fn network_interfaces_tagged(
        &self,
        tags: &[(&str, &str)],
    ) -> impl Future<Output = Result<Vec<NetworkInterface>, CloudError>>;
    /// This account's snapshots that carry every tag of `tags`.
    fn snapshots_tagged(&self, tags: &[(&str, &str)]) -> impl Future<Output = Result<Vec<Snapshot>, CloudError>>;
    /// Starts a snapshot of `volume_id` with `tags`; returns its id.
    fn create_snapshot(
        &self,
        volume_id: &str,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<String, CloudError>>;
    /// Deletes the tag keys `remove` from a resource, then adds `add`.
    fn retag(
        &self,
        resource_id: &str,
        remove: &[&str],
        add: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<(), CloudError>>;
    fn delete_volume(&self, id: &str) -> impl Future<Output = Result<(), CloudError>>;
    fn delete_network_interface(&self, id: &str) -> impl Future<Output = Result<(), CloudError>>;
    /// The subnet's CIDR reservations: (id, CIDR).
    fn cidr_reservations(&self, subnet_id: &str) -> impl Future<Output = Result<Vec<(String, String)>, CloudError>>;
    fn delete_cidr_reservation(&self, id: &str) -> impl Future<Output = Result<(), CloudError>>;
    /// Terminates an instance; when an autoscaling group holds it, through
    /// the group with one fewer desired (its minimum lowered to allow it),
    /// so the group launches no replacement and Terraform's lower size
    /// later terminates no other member's node. Returns the group's name.
    fn terminate_with_its_group(&self, instance_id: &str) -> impl Future<Output = Result<Option<String>, CloudError>>;
}

/// `eu-west-1`, `us-gov-west-1`, `ap-southeast-2`.
pub fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok()
}

/// A region followed by one letter: `eu-west-1a`.
pub fn is_region_like_zone(s: &str) -> bool {
    let Some(last) = s.chars().last() else { return false };
    last.is_ascii_lowercase() && is_region(&s[..s.len() - 1])
}
