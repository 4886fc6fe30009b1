//! Marathon app definitions: the write model (what `POST /v2/apps` accepts, with every default
//! filled in and every deprecated alias folded into its canonical field), partial updates, the
//! read model (what `GET /v2/apps/{id}` returns), a configuration fingerprint and the
//! environment Marathon gives an app's tasks.
//!
//! The pipeline mirrors Marathon's (`AppHelpers.appNormalization`):
//!
//! 1. [`app_json::parse_app`](super::app_json::parse_app) reads JSON text into an [`AppSpec`],
//!    the request as written: every top-level field optional, nested objects with their RAML
//!    defaults, deprecated fields still present. Type errors answer `Invalid JSON`.
//! 2. [`validation::validate_deprecated`](super::validation::validate_deprecated) checks how
//!    deprecated fields combine (`ports` with `portDefinitions`, `uris` with `fetch`, ...).
//! 3. [`normalize`] folds the aliases into canonical fields and fills defaults:
//!    `uris` → `fetch` (extract set for archive names), `ports` → `portDefinitions`,
//!    `ipAddress` / `container.docker.network` → `networks`, `container.docker.portMappings` →
//!    `container.portMappings`, `ipAddress.discovery.ports` → port mappings of a Mesos
//!    container; networks default to host mode; host-mode apps without ports get one port
//!    definition `{"port": 0, "protocol": "tcp", "name": "default"}` (Marathon's
//!    `Apps.DefaultPortDefinitions`; the service port 0 is replaced by a cluster-unique one when
//!    the app is stored, which is the group manager's job, not this module's); apps on a
//!    container network without port mappings get one mapping named `default`; bridge-mode
//!    mappings without a host port get host port 0; `requirePorts` is forced off off host
//!    networking; resident apps (persistent volumes) default to `upgradeStrategy` 0.5/0 and
//!    `unreachableStrategy` `disabled`, other apps to 1/1 and 0/0 seconds.
//! 4. [`validation::validate`](super::validation::validate) applies Marathon's semantic rules.
//!
//! [`AppDefinition::from_json`] runs all four. Partial updates ([`merge_partial`]) overlay the
//! fields present in an update on the current definition, one top-level field at a time, and
//! run the result through steps 2–4 again, as Marathon does.
//!
//! Where this differs from Marathon, on purpose:
//! - Marathon answers a few impossible combinations with HTTP 500 (its `NormalizationException`,
//!   e.g. `docker.portMappings` together with `container.portMappings`); here they are
//!   [`AppError::Normalization`], a 422 with Marathon's message.
//! - A partial update without `executorResources` or `resourceLimits` keeps the current values
//!   (Marathon's update conversion drops them, which reads as a bug).
//! - Fields Flotilla does not act on yet (`secrets`, `residency`, `executor`, `tty`, `check`,
//!   `linuxInfo`, volumes, ...) are accepted, validated, kept and returned unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::app_json::{self, JsonError};
use super::path::PathId;
use super::timestamp::Timestamp;
use super::validation::{self, ValidationError};

/// Defines an enum of JSON string literals with their wire spelling.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The JSON spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The variant spelled `text`, if any (exact, case-sensitive, as Marathon reads them).
            pub fn from_wire(text: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|v| v.as_str() == text)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// `container.type`.
    EngineType { Mesos => "MESOS", Docker => "DOCKER" }
);
string_enum!(
    /// Deprecated `container.docker.network`.
    DockerNetwork { Bridge => "BRIDGE", Host => "HOST", None => "NONE", User => "USER" }
);
string_enum!(
    /// `networks[].mode`.
    NetworkMode { Container => "container", ContainerBridge => "container/bridge", Host => "host" }
);
string_enum!(
    /// Protocol of a port definition or mapping.
    PortProtocol { Tcp => "tcp", Udp => "udp", UdpTcp => "udp,tcp" }
);
string_enum!(
    /// `healthChecks[].protocol`.
    HealthCheckProtocol {
        Http => "HTTP",
        Https => "HTTPS",
        Tcp => "TCP",
        Command => "COMMAND",
        MesosTcp => "MESOS_TCP",
        MesosHttp => "MESOS_HTTP",
        MesosHttps => "MESOS_HTTPS",
    }
);
string_enum!(
    /// `healthChecks[].ipProtocol`.
    IpProtocol { Ipv4 => "IPv4", Ipv6 => "IPv6" }
);
string_enum!(
    /// Scheme of readiness checks and Mesos HTTP checks.
    HttpScheme { Http => "HTTP", Https => "HTTPS" }
);
string_enum!(
    /// `killSelection`: which instances go first when scaling down (the most recently
    /// staged by default).
    KillSelection { YoungestFirst => "YOUNGEST_FIRST", OldestFirst => "OLDEST_FIRST" }
);

// The enum comes from `string_enum!`, which cannot mark one variant `#[default]`.
#[allow(clippy::derivable_impls)]
impl Default for KillSelection {
    fn default() -> KillSelection {
        KillSelection::YoungestFirst
    }
}
string_enum!(
    /// Volume mode.
    ReadMode { Ro => "RO", Rw => "RW" }
);
string_enum!(
    /// `persistent.type` of a local persistent volume.
    PersistentVolumeType { Root => "root", Path => "path", Mount => "mount" }
);
string_enum!(
    /// Deprecated `residency.taskLostBehavior`.
    TaskLostBehavior { WaitForever => "WAIT_FOREVER", RelaunchAfterTimeout => "RELAUNCH_AFTER_TIMEOUT" }
);
string_enum!(
    /// `container.linuxInfo.ipcInfo.mode`.
    IpcMode { Private => "PRIVATE", ShareParent => "SHARE_PARENT" }
);
string_enum!(
    /// Constraint operators of `constraints[][1]` (Marathon also accepts lowercase spellings).
    ConstraintOperator {
        Unique => "UNIQUE",
        Cluster => "CLUSTER",
        GroupBy => "GROUP_BY",
        Like => "LIKE",
        Unlike => "UNLIKE",
        MaxPer => "MAX_PER",
        Is => "IS",
    }
);

pub const DEFAULT_CPUS: f64 = 1.0;
pub const DEFAULT_MEM: f64 = 128.0;
pub const DEFAULT_DISK: f64 = 0.0;
pub const DEFAULT_GPUS: i32 = 0;
pub const DEFAULT_INSTANCES: i32 = 1;
pub const DEFAULT_BACKOFF_SECONDS: i32 = 1;
pub const DEFAULT_BACKOFF_FACTOR: f64 = 1.15;
/// Marathon's current default (`RunSpec.scala`); older docs say 3600.
pub const DEFAULT_MAX_LAUNCH_DELAY_SECONDS: i32 = 300;
/// The name Marathon gives the port definition or mapping it adds by default.
pub const DEFAULT_PORT_NAME: &str = "default";
/// Marathon's `--mesos_bridge_name` default, the network name that means bridge mode in `ipAddress`.
pub const DEFAULT_MESOS_BRIDGE_NAME: &str = "mesos-bridge";
/// `backoffFactor`'s lower bound and other JSON-level bounds live in `app_json`.
pub const RANDOM_PORT: i32 = 0;

/// What normalization and validation need to know about the cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct AppConfig {
    /// The role of apps that name none (`--mesos_role`, `*` by default).
    pub default_role: String,
    /// Roles an app may name: the default role and the enforced role of its group.
    pub valid_roles: BTreeSet<String>,
    /// `--default_network_name`: the name of container networks that give none.
    pub default_network_name: Option<String>,
    /// `--mesos_bridge_name`.
    pub mesos_bridge_name: String,
    /// `--enable_features secrets`: secrets and secret references are allowed.
    pub secrets_enabled: bool,
    /// `--enable_features gpu_resources`: apps may ask for GPUs.
    pub gpu_resources_enabled: bool,
    /// `--enable_features external_volumes`.
    pub external_volumes_enabled: bool,
}

impl Default for AppConfig {
    /// Flotilla's defaults: role `*`, no default network, every feature enabled (DC/OS's
    /// configuration; open-source Marathon enables none of these features by default).
    fn default() -> Self {
        AppConfig {
            default_role: "*".to_owned(),
            valid_roles: BTreeSet::from(["*".to_owned()]),
            default_network_name: None,
            mesos_bridge_name: DEFAULT_MESOS_BRIDGE_NAME.to_owned(),
            secrets_enabled: true,
            gpu_resources_enabled: true,
            external_volumes_enabled: true,
        }
    }
}

/// An environment variable's value: text, or a reference to one of the app's `secrets`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnvValue {
    Value(String),
    Secret(String),
}

/// `secrets.<name>`: where the secret store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretDef {
    pub source: String,
}

/// `fetch[]`: an artifact the Mesos fetcher downloads into the sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub uri: String,
    pub extract: bool,
    pub executable: bool,
    pub cache: bool,
    pub dest_path: Option<String>,
}

impl Artifact {
    /// An artifact from a deprecated `uris` entry: extracted when its path names an archive.
    pub fn from_uri(uri: &str) -> Artifact {
        Artifact { uri: uri.to_owned(), extract: is_archive(uri), executable: false, cache: false, dest_path: None }
    }
}

/// Marathon's `FetchUri.isExtract`: the URI's path ends with an archive suffix.
fn is_archive(uri: &str) -> bool {
    const SUFFIXES: [&str; 9] = [".tar", ".tar.gz", ".tar.bz2", ".tar.xz", ".gz", ".tgz", ".tbz2", ".txz", ".zip"];
    let without_fragment = uri.split('#').next().unwrap_or(uri);
    let without_query = without_fragment.split('?').next().unwrap_or(without_fragment);
    SUFFIXES.iter().any(|suffix| without_query.ends_with(suffix))
}

/// `portDefinitions[]`: a host port (and service port) of a host-networked app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortDefinition {
    pub port: i32,
    pub protocol: PortProtocol,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl PortDefinition {
    pub fn numbered(port: i32) -> PortDefinition {
        PortDefinition { port, protocol: PortProtocol::Tcp, name: None, labels: BTreeMap::new() }
    }

    /// Marathon's `Apps.DefaultPortDefinitions` element.
    pub fn default_port() -> PortDefinition {
        PortDefinition { name: Some(DEFAULT_PORT_NAME.to_owned()), ..PortDefinition::numbered(RANDOM_PORT) }
    }
}

/// `container.portMappings[]`: a container port, optionally published on a host port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub container_port: i32,
    pub host_port: Option<i32>,
    pub service_port: i32,
    pub protocol: PortProtocol,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub network_names: Vec<String>,
}

impl PortMapping {
    /// Marathon's `ContainerPortMapping()`: every field at its default.
    pub fn unnamed() -> PortMapping {
        PortMapping {
            container_port: 0,
            host_port: None,
            service_port: 0,
            protocol: PortProtocol::Tcp,
            name: None,
            labels: BTreeMap::new(),
            network_names: Vec::new(),
        }
    }

    /// Marathon's `Apps.DefaultPortMappings` element.
    pub fn default_mapping() -> PortMapping {
        PortMapping { name: Some(DEFAULT_PORT_NAME.to_owned()), ..PortMapping::unnamed() }
    }
}

/// `networks[]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub mode: NetworkMode,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl Network {
    pub fn of_mode(mode: NetworkMode) -> Network {
        Network { mode, name: None, labels: BTreeMap::new() }
    }
}

/// `container.docker.parameters[]`: a raw `docker run` flag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerParameter {
    pub key: String,
    pub value: String,
}

/// Deprecated `container.docker.credential`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerCredential {
    pub principal: String,
    pub secret: Option<String>,
}

/// `container.docker`. `network` and `port_mappings` are deprecated and only ever set in an
/// [`AppSpec`]; normalization moves them out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerContainer {
    pub image: String,
    pub force_pull_image: bool,
    pub privileged: bool,
    pub parameters: Vec<DockerParameter>,
    /// `pullConfig.secret`: a secret holding a Docker `config.json` (Mesos containerizer only).
    pub pull_config_secret: Option<String>,
    pub credential: Option<DockerCredential>,
    pub network: Option<DockerNetwork>,
    pub port_mappings: Option<Vec<PortMapping>>,
}

/// `container.linuxInfo`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinuxInfo {
    pub seccomp: Option<Seccomp>,
    pub ipc_info: Option<IpcInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seccomp {
    pub profile_name: Option<String>,
    pub unconfined: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcInfo {
    pub mode: IpcMode,
    pub shm_size: Option<i32>,
}

/// `container.volumes[]`: one of four shapes, told apart by their distinguishing field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Volume {
    Host { container_path: String, host_path: String, mode: ReadMode },
    Persistent { container_path: String, persistent: PersistentVolumeInfo, mode: ReadMode },
    External { container_path: String, external: ExternalVolumeInfo, mode: ReadMode },
    Secret { container_path: String, secret: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistentVolumeInfo {
    pub kind: Option<PersistentVolumeType>,
    /// MiB.
    pub size: i64,
    pub max_size: Option<i64>,
    pub profile_name: Option<String>,
    pub constraints: Vec<Vec<String>>,
}

/// An external volume: DVDI (`provider: "dvdi"`) or CSI (`provider: "csi"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExternalVolumeInfo {
    Dvdi {
        size: Option<i64>,
        name: Option<String>,
        provider: Option<String>,
        options: BTreeMap<String, String>,
        shared: bool,
    },
    Csi {
        name: String,
        plugin_name: String,
        access_mode: String,
        access_type: String,
        fs_type: Option<String>,
        mount_flags: Vec<String>,
        node_stage_secret: BTreeMap<String, String>,
        node_publish_secret: BTreeMap<String, String>,
        volume_context: BTreeMap<String, String>,
    },
}

/// `container`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub kind: EngineType,
    pub docker: Option<DockerContainer>,
    pub linux_info: Option<LinuxInfo>,
    pub volumes: Vec<Volume>,
    /// `None` when not given (and always for host networking once normalized).
    pub port_mappings: Option<Vec<PortMapping>>,
}

impl Container {
    /// An image-less Mesos container, as Marathon creates for `ipAddress` without a container.
    pub fn mesos() -> Container {
        Container { kind: EngineType::Mesos, docker: None, linux_info: None, volumes: Vec::new(), port_mappings: None }
    }

    pub fn has_persistent_volumes(&self) -> bool {
        self.volumes.iter().any(|v| matches!(v, Volume::Persistent { .. }))
    }

    pub fn has_external_volumes(&self) -> bool {
        self.volumes.iter().any(|v| matches!(v, Volume::External { .. }))
    }

    /// The image of a Docker-containerizer container (what `MARATHON_APP_DOCKER_IMAGE` names).
    pub fn docker_image(&self) -> Option<&str> {
        match (&self.kind, &self.docker) {
            (EngineType::Docker, Some(docker)) => Some(&docker.image),
            _ => None,
        }
    }
}

/// `healthChecks[].command`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandCheck {
    pub value: String,
}

/// `healthChecks[]` with the RAML defaults applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub protocol: HealthCheckProtocol,
    pub command: Option<CommandCheck>,
    /// Effective path is `/` when absent.
    pub path: Option<String>,
    pub port: Option<i32>,
    pub port_index: Option<i32>,
    pub grace_period_seconds: i32,
    pub interval_seconds: i32,
    pub timeout_seconds: i32,
    pub max_consecutive_failures: i32,
    pub delay_seconds: i32,
    pub ignore_http1xx: Option<bool>,
    pub ip_protocol: IpProtocol,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            protocol: HealthCheckProtocol::Http,
            command: None,
            path: None,
            port: None,
            port_index: None,
            grace_period_seconds: 300,
            interval_seconds: 60,
            timeout_seconds: 20,
            max_consecutive_failures: 3,
            delay_seconds: 15,
            ignore_http1xx: None,
            ip_protocol: IpProtocol::Ipv4,
        }
    }
}

impl HealthCheck {
    /// Checks Marathon itself runs (deprecated since 1.4) rather than the agent.
    pub fn is_marathon_check(&self) -> bool {
        matches!(self.protocol, HealthCheckProtocol::Http | HealthCheckProtocol::Https | HealthCheckProtocol::Tcp)
    }

    pub fn is_mesos_check(&self) -> bool {
        !self.is_marathon_check() || self.command.is_some()
    }
}

/// `readinessChecks[]` with defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadinessCheck {
    pub name: String,
    pub protocol: HttpScheme,
    pub path: String,
    pub port_name: String,
    pub interval_seconds: i32,
    pub timeout_seconds: i32,
    /// A set in Marathon; kept in first-seen order without duplicates. Empty only when absent
    /// from the request, and normalization then makes it `[200]`.
    pub http_status_codes_for_ready: Vec<i32>,
    pub preserve_last_response: bool,
}

impl Default for ReadinessCheck {
    fn default() -> Self {
        ReadinessCheck {
            name: "readinessCheck".to_owned(),
            protocol: HttpScheme::Http,
            path: "/".to_owned(),
            port_name: "http-api".to_owned(),
            interval_seconds: 30,
            timeout_seconds: 10,
            http_status_codes_for_ready: Vec::new(),
            preserve_last_response: false,
        }
    }
}

/// `check`: a Mesos check (status only; it never kills).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppCheck {
    pub http: Option<AppHttpCheck>,
    pub tcp: Option<AppTcpCheck>,
    pub exec: Option<MesosCommand>,
    pub interval_seconds: i32,
    pub timeout_seconds: i32,
    pub delay_seconds: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppHttpCheck {
    pub port_index: Option<i32>,
    pub port: Option<i32>,
    pub path: Option<String>,
    pub scheme: HttpScheme,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppTcpCheck {
    pub port_index: Option<i32>,
    pub port: Option<i32>,
}

/// `check.exec.command`: a shell string or an argv list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MesosCommand {
    Shell(String),
    Argv(Vec<String>),
}

/// `upgradeStrategy`: both fractions of the instance count, in `[0, 1]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpgradeStrategy {
    pub minimum_health_capacity: f64,
    pub maximum_over_capacity: f64,
}

impl UpgradeStrategy {
    /// Marathon's `UpgradeStrategy.empty`: keep every old instance until new ones are healthy.
    pub const DEFAULT: UpgradeStrategy = UpgradeStrategy { minimum_health_capacity: 1.0, maximum_over_capacity: 1.0 };
    /// Marathon's `UpgradeStrategy.forResidentTasks`: no over-capacity, since volumes pin tasks.
    pub const RESIDENT: UpgradeStrategy = UpgradeStrategy { minimum_health_capacity: 0.5, maximum_over_capacity: 0.0 };
}

/// `unreachableStrategy`: `"disabled"`, or how long an unreachable instance stays before it is
/// replaced (`inactiveAfterSeconds`) and forgotten (`expungeAfterSeconds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnreachableStrategy {
    Disabled,
    Enabled { inactive_after_seconds: i64, expunge_after_seconds: i64 },
}

impl UnreachableStrategy {
    /// Current Marathon's default (`UnreachableStrategy.scala`); older docs say 300/600.
    pub const DEFAULT: UnreachableStrategy =
        UnreachableStrategy::Enabled { inactive_after_seconds: 0, expunge_after_seconds: 0 };

    /// The default for an app: disabled for resident apps (persistent volumes).
    pub fn default_for(resident: bool) -> UnreachableStrategy {
        if resident { UnreachableStrategy::Disabled } else { UnreachableStrategy::DEFAULT }
    }
}

/// Deprecated `residency` (no effect; kept and returned).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Residency {
    pub relaunch_escalation_timeout_seconds: i64,
    pub task_lost_behavior: TaskLostBehavior,
}

impl Default for Residency {
    fn default() -> Self {
        Residency { relaunch_escalation_timeout_seconds: 3600, task_lost_behavior: TaskLostBehavior::WaitForever }
    }
}

/// `executorResources` of a custom executor.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecutorResources {
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
}

impl Default for ExecutorResources {
    fn default() -> Self {
        ExecutorResources { cpus: 0.1, mem: 32.0, disk: 10.0 }
    }
}

/// One `resourceLimits` entry: a number, or text (only `"unlimited"` is valid).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ResourceLimit {
    Number(f64),
    Text(String),
}

/// `resourceLimits`: how far above its request a task may burst.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceLimits {
    pub cpus: Option<ResourceLimit>,
    pub mem: Option<ResourceLimit>,
}

/// Deprecated `ipAddress` (IP-per-task before `networks`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpAddress {
    pub discovery_ports: Option<Vec<DiscoveryPort>>,
    pub groups: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub network_name: Option<String>,
}

/// `ipAddress.discovery.ports[]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryPort {
    pub number: i32,
    pub name: String,
    pub protocol: PortProtocol,
    pub labels: BTreeMap<String, String>,
}

/// An app as a request wrote it (Marathon's `raml.App` / `raml.AppUpdate`): every top-level
/// field optional so that presence is known (partial updates need it), deprecated fields
/// included, nested objects already carrying their RAML defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppSpec {
    pub id: Option<String>,
    pub accepted_resource_roles: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    pub backoff_factor: Option<f64>,
    pub backoff_seconds: Option<i32>,
    pub check: Option<AppCheck>,
    pub cmd: Option<String>,
    pub constraints: Option<Vec<Vec<String>>>,
    pub container: Option<Container>,
    pub cpus: Option<f64>,
    pub dependencies: Option<Vec<String>>,
    pub disk: Option<f64>,
    pub env: Option<BTreeMap<String, EnvValue>>,
    pub executor: Option<String>,
    pub executor_resources: Option<ExecutorResources>,
    pub fetch: Option<Vec<Artifact>>,
    pub gpus: Option<i32>,
    pub health_checks: Option<Vec<HealthCheck>>,
    pub instances: Option<i32>,
    pub ip_address: Option<IpAddress>,
    pub kill_selection: Option<KillSelection>,
    pub labels: Option<BTreeMap<String, String>>,
    pub max_launch_delay_seconds: Option<i32>,
    pub mem: Option<f64>,
    pub networks: Option<Vec<Network>>,
    pub port_definitions: Option<Vec<PortDefinition>>,
    pub ports: Option<Vec<i32>>,
    pub readiness_checks: Option<Vec<ReadinessCheck>>,
    pub require_ports: Option<bool>,
    pub residency: Option<Residency>,
    pub resource_limits: Option<ResourceLimits>,
    pub role: Option<String>,
    pub secrets: Option<BTreeMap<String, SecretDef>>,
    pub task_kill_grace_period_seconds: Option<i32>,
    pub tty: Option<bool>,
    pub unreachable_strategy: Option<UnreachableStrategy>,
    pub upgrade_strategy: Option<UpgradeStrategy>,
    pub uris: Option<Vec<String>>,
    pub user: Option<String>,
    /// In an update: roll back to this version (only together with `id`).
    pub version: Option<Timestamp>,
}

/// A normalized app definition: canonical fields only, every default filled in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppDefinition {
    pub id: PathId,
    pub cmd: Option<String>,
    pub args: Vec<String>,
    pub user: Option<String>,
    pub env: BTreeMap<String, EnvValue>,
    pub instances: i32,
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub gpus: i32,
    pub executor: String,
    pub executor_resources: Option<ExecutorResources>,
    pub resource_limits: Option<ResourceLimits>,
    /// A set in Marathon: first-seen order, no duplicates.
    pub constraints: Vec<Vec<String>>,
    pub fetch: Vec<Artifact>,
    /// Empty off host networking.
    pub port_definitions: Vec<PortDefinition>,
    pub require_ports: bool,
    pub backoff_seconds: i32,
    pub backoff_factor: f64,
    pub max_launch_delay_seconds: i32,
    pub container: Option<Container>,
    pub health_checks: Vec<HealthCheck>,
    pub check: Option<AppCheck>,
    pub readiness_checks: Vec<ReadinessCheck>,
    pub task_kill_grace_period_seconds: Option<i32>,
    pub dependencies: Vec<PathId>,
    pub upgrade_strategy: UpgradeStrategy,
    pub labels: BTreeMap<String, String>,
    pub accepted_resource_roles: Vec<String>,
    pub networks: Vec<Network>,
    pub secrets: BTreeMap<String, SecretDef>,
    pub unreachable_strategy: UnreachableStrategy,
    pub kill_selection: KillSelection,
    pub tty: Option<bool>,
    pub residency: Option<Residency>,
    pub role: String,
}

/// Why a request did not become an app definition. Each variant renders as Marathon's body.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum AppError {
    /// Malformed JSON or wrong types (`{"message":"Invalid JSON",...}`).
    #[error("{0}")]
    Json(#[from] JsonError),
    /// Semantic rules broken (`{"message":"Object is not valid",...}`, HTTP 422).
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    /// Deprecated and canonical fields that cannot be reconciled (`{"message":"..."}`, 422).
    #[error("{0}")]
    Normalization(String),
}

impl AppError {
    /// The HTTP status Marathon answers with (422 instead of Marathon's 500 for normalization).
    pub fn status(&self) -> u16 {
        match self {
            AppError::Json(err) => err.status(),
            AppError::Invalid(_) | AppError::Normalization(_) => 422,
        }
    }

    /// The response body.
    pub fn to_json(&self) -> Value {
        match self {
            AppError::Json(err) => err.to_json(),
            AppError::Invalid(err) => err.to_json(),
            AppError::Normalization(message) => json!({ "message": message }),
        }
    }
}

impl AppDefinition {
    /// `POST /v2/apps`: JSON text to a validated definition (relative ids resolve against the root).
    pub fn from_json(text: &str, config: &AppConfig) -> Result<AppDefinition, AppError> {
        let spec = app_json::parse_app(text)?;
        AppDefinition::from_spec(spec, &PathId::root(), config)
    }

    /// A request to a validated definition, the id resolved against `base` (its group).
    pub fn from_spec(spec: AppSpec, base: &PathId, config: &AppConfig) -> Result<AppDefinition, AppError> {
        validation::validate_deprecated(&spec)?;
        let earlier = validation::spec_violations(&spec);
        let app = normalize(spec, base, config)?;
        validation::validate_with(&app, config, earlier)?;
        Ok(app)
    }

    /// True if the app mounts local persistent volumes (which pin its tasks to agents).
    pub fn is_resident(&self) -> bool {
        self.container.as_ref().is_some_and(Container::has_persistent_volumes)
    }

    /// True if any network is not host mode.
    pub fn has_non_host_networking(&self) -> bool {
        self.networks.iter().any(|n| n.mode != NetworkMode::Host)
    }

    /// Container port mappings when the app uses them, else nothing.
    pub fn port_mappings(&self) -> &[PortMapping] {
        match self.container.as_ref().and_then(|c| c.port_mappings.as_deref()) {
            Some(mappings) if !mappings.is_empty() => mappings,
            _ => &[],
        }
    }

    /// How many ports health checks may index (`portIndex` is in `0..port_count()`).
    pub fn port_count(&self) -> usize {
        let mappings = self.port_mappings();
        if mappings.is_empty() { self.port_definitions.len() } else { mappings.len() }
    }

    /// Names of the ports (mappings if any, else definitions), for readiness checks.
    pub fn port_names(&self) -> BTreeSet<&str> {
        let mappings = self.port_mappings();
        if mappings.is_empty() {
            self.port_definitions.iter().filter_map(|p| p.name.as_deref()).collect()
        } else {
            mappings.iter().filter_map(|p| p.name.as_deref()).collect()
        }
    }

    /// The definition as a request that normalizes back to it (the base of partial updates).
    pub fn to_spec(&self) -> AppSpec {
        let host_only = !self.has_non_host_networking();
        let container = self.container.clone().map(|mut c| {
            if host_only {
                c.port_mappings = None;
            }
            c
        });
        AppSpec {
            id: Some(self.id.to_string()),
            accepted_resource_roles: (!self.accepted_resource_roles.is_empty())
                .then(|| self.accepted_resource_roles.clone()),
            args: Some(self.args.clone()),
            backoff_factor: Some(self.backoff_factor),
            backoff_seconds: Some(self.backoff_seconds),
            check: self.check.clone(),
            cmd: self.cmd.clone(),
            constraints: Some(self.constraints.clone()),
            container,
            cpus: Some(self.cpus),
            dependencies: Some(self.dependencies.iter().map(ToString::to_string).collect()),
            disk: Some(self.disk),
            env: Some(self.env.clone()),
            executor: Some(self.executor.clone()),
            executor_resources: self.executor_resources,
            fetch: Some(self.fetch.clone()),
            gpus: Some(self.gpus),
            health_checks: Some(self.health_checks.clone()),
            instances: Some(self.instances),
            ip_address: None,
            kill_selection: Some(self.kill_selection),
            labels: Some(self.labels.clone()),
            max_launch_delay_seconds: Some(self.max_launch_delay_seconds),
            mem: Some(self.mem),
            networks: Some(self.networks.clone()),
            port_definitions: host_only.then(|| self.port_definitions.clone()),
            ports: None,
            readiness_checks: Some(self.readiness_checks.clone()),
            require_ports: Some(self.require_ports),
            residency: self.residency,
            resource_limits: self.resource_limits.clone(),
            role: Some(self.role.clone()),
            secrets: Some(self.secrets.clone()),
            task_kill_grace_period_seconds: self.task_kill_grace_period_seconds,
            tty: self.tty,
            unreachable_strategy: Some(self.unreachable_strategy),
            upgrade_strategy: Some(self.upgrade_strategy),
            uris: None,
            user: self.user.clone(),
            version: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Normalization
// ---------------------------------------------------------------------------------------------

/// Folds deprecated fields into canonical ones and fills every default (steps 3 of the module
/// doc). Run [`validation::validate_deprecated`] first and [`validation::validate`] after:
/// this function does not judge the result, it only refuses what cannot be translated.
pub fn normalize(spec: AppSpec, base: &PathId, config: &AppConfig) -> Result<AppDefinition, AppError> {
    let id_text = spec.id.clone().unwrap_or_default();
    let id = PathId::parse_relative_to(&id_text, base).map_err(|e| AppError::Normalization(e.to_string()))?;
    let dependencies = spec
        .dependencies
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|d| PathId::parse_relative_to(d, base).map_err(|e| AppError::Normalization(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let fetch = migrate_fetch(spec.uris.as_deref(), spec.fetch.clone())?;
    let docker_network = spec.container.as_ref().and_then(|c| c.docker.as_ref()).and_then(|d| d.network);
    let explicit_networks = spec.networks.clone().filter(|n| !n.is_empty());
    let translated = translate_networks(spec.ip_address.as_ref(), docker_network, explicit_networks, config)?;
    let networks = name_container_networks(translated.unwrap_or_default(), config);
    let migrated_port_definitions = spec
        .port_definitions
        .clone()
        .or_else(|| spec.ports.as_ref().map(|ports| ports.iter().copied().map(PortDefinition::numbered).collect()));
    let any_non_host = networks.iter().any(|n| n.mode != NetworkMode::Host);
    let port_definitions = if any_non_host {
        Vec::new()
    } else {
        migrated_port_definitions.clone().unwrap_or_else(|| vec![PortDefinition::default_port()])
    };
    let container = spec.container.clone().or_else(|| spec.ip_address.as_ref().map(|_| Container::mesos()));
    let container = container
        .map(|c| normalize_container(c, spec.ip_address.as_ref(), &networks, migrated_port_definitions.as_deref()))
        .transpose()?;
    let has_ports_somewhere = spec.port_definitions.as_ref().is_some_and(|p| !p.is_empty())
        || container.as_ref().and_then(|c| c.port_mappings.as_ref()).is_some_and(|m| !m.is_empty());
    let health_checks = spec
        .health_checks
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|check| if has_ports_somewhere { with_default_port_index(check) } else { check })
        .map(with_default_ignore_http1xx)
        .map(without_path_on_tcp)
        .collect();
    let readiness_checks =
        spec.readiness_checks.clone().unwrap_or_default().into_iter().map(with_default_codes).collect();
    let networks = if networks.is_empty() { vec![Network::of_mode(NetworkMode::Host)] } else { networks };
    let any_non_host = networks.iter().any(|n| n.mode != NetworkMode::Host);
    let container = container.or_else(|| any_non_host.then(default_network_container));
    let container = container.map(|c| default_bridge_host_ports(c, &networks));
    let resident = container.as_ref().is_some_and(Container::has_persistent_volumes);
    let external = container.as_ref().is_some_and(Container::has_external_volumes);
    let residency = if resident { spec.residency.or_else(|| Some(Residency::default())) } else { spec.residency };
    let upgrade_strategy = spec.upgrade_strategy.unwrap_or(if resident || external {
        UpgradeStrategy::RESIDENT
    } else {
        UpgradeStrategy::DEFAULT
    });
    Ok(AppDefinition {
        id,
        cmd: spec.cmd,
        args: spec.args.unwrap_or_default(),
        user: spec.user,
        env: spec.env.unwrap_or_default(),
        instances: spec.instances.unwrap_or(DEFAULT_INSTANCES),
        cpus: spec.cpus.unwrap_or(DEFAULT_CPUS),
        mem: spec.mem.unwrap_or(DEFAULT_MEM),
        disk: spec.disk.unwrap_or(DEFAULT_DISK),
        gpus: spec.gpus.unwrap_or(DEFAULT_GPUS),
        executor: spec.executor.unwrap_or_default(),
        executor_resources: spec.executor_resources,
        resource_limits: spec.resource_limits,
        constraints: dedup(spec.constraints.unwrap_or_default()),
        fetch,
        port_definitions,
        require_ports: spec.require_ports.unwrap_or(false) && !any_non_host,
        backoff_seconds: spec.backoff_seconds.unwrap_or(DEFAULT_BACKOFF_SECONDS),
        backoff_factor: spec.backoff_factor.unwrap_or(DEFAULT_BACKOFF_FACTOR),
        max_launch_delay_seconds: spec.max_launch_delay_seconds.unwrap_or(DEFAULT_MAX_LAUNCH_DELAY_SECONDS),
        container,
        health_checks,
        check: spec.check,
        readiness_checks,
        task_kill_grace_period_seconds: spec.task_kill_grace_period_seconds,
        dependencies: dedup(dependencies),
        upgrade_strategy,
        labels: spec.labels.unwrap_or_default(),
        accepted_resource_roles: dedup(spec.accepted_resource_roles.unwrap_or_default()),
        networks,
        secrets: spec.secrets.unwrap_or_default(),
        unreachable_strategy: spec.unreachable_strategy.unwrap_or(UnreachableStrategy::default_for(resident)),
        kill_selection: spec.kill_selection.unwrap_or_default(),
        tty: spec.tty,
        residency,
        role: spec.role.unwrap_or_else(|| config.default_role.clone()),
    })
}

/// Marathon reads `uniqueItems` arrays into sets: duplicates vanish, first occurrence wins.
fn dedup<T: PartialEq>(items: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// `uris` → `fetch` when only `uris` has entries.
fn migrate_fetch(uris: Option<&[String]>, fetch: Option<Vec<Artifact>>) -> Result<Vec<Artifact>, AppError> {
    let fetch = fetch.unwrap_or_default();
    match uris {
        Some(uris) if !uris.is_empty() && !fetch.is_empty() => {
            Err(AppError::Normalization("cannot specify both uris and fetch fields".to_owned()))
        }
        Some(uris) if !uris.is_empty() => Ok(uris.iter().map(|uri| Artifact::from_uri(uri)).collect()),
        _ => Ok(fetch),
    }
}

/// Marathon's `NetworkTranslation`: the deprecated `ipAddress` and `docker.network` become
/// `networks`; mixing them with `networks` is refused.
fn translate_networks(
    ip_address: Option<&IpAddress>,
    docker_network: Option<DockerNetwork>,
    networks: Option<Vec<Network>>,
    config: &AppConfig,
) -> Result<Option<Vec<Network>>, AppError> {
    let unsupported = |net: DockerNetwork| AppError::Normalization(format!("unsupported docker network type {net}"));
    let with_labels = |mode: NetworkMode, name: Option<String>, labels: &BTreeMap<String, String>| Network {
        mode,
        name,
        labels: labels.clone(),
    };
    match (ip_address, docker_network, networks) {
        (Some(ip), Some(net), None) => match net {
            DockerNetwork::Host => Ok(Some(vec![Network::of_mode(NetworkMode::Host)])),
            DockerNetwork::User => {
                Ok(Some(vec![with_labels(NetworkMode::Container, ip.network_name.clone(), &ip.labels)]))
            }
            DockerNetwork::Bridge => Ok(Some(vec![with_labels(NetworkMode::ContainerBridge, None, &ip.labels)])),
            DockerNetwork::None => Err(unsupported(net)),
        },
        (Some(ip), None, None) => match &ip.network_name {
            Some(name) if *name == config.mesos_bridge_name => {
                Ok(Some(vec![with_labels(NetworkMode::ContainerBridge, None, &ip.labels)]))
            }
            name => Ok(Some(vec![with_labels(NetworkMode::Container, name.clone(), &ip.labels)])),
        },
        (None, Some(net), None) => match net {
            DockerNetwork::Host => Ok(Some(vec![Network::of_mode(NetworkMode::Host)])),
            DockerNetwork::User => Ok(Some(vec![Network::of_mode(NetworkMode::Container)])),
            DockerNetwork::Bridge => Ok(Some(vec![Network::of_mode(NetworkMode::ContainerBridge)])),
            DockerNetwork::None => Err(unsupported(net)),
        },
        (None, None, networks) => Ok(networks),
        _ => Err(AppError::Normalization("cannot mix deprecated and canonical network APIs".to_owned())),
    }
}

/// Unnamed container networks take `--default_network_name` (when there is one).
fn name_container_networks(networks: Vec<Network>, config: &AppConfig) -> Vec<Network> {
    networks
        .into_iter()
        .map(|mut n| {
            if n.mode == NetworkMode::Container && n.name.is_none() {
                n.name = config.default_network_name.clone();
            }
            n
        })
        .collect()
}

/// The container steps of Marathon's `forDeprecated`, in its order: move `docker.portMappings`,
/// turn `ipAddress.discovery.ports` into mappings, drop `docker.network`, drop mappings on host
/// networking, add the default mapping on container networks, and add unnamed mappings until
/// there are as many as the app declared port definitions.
fn normalize_container(
    container: Container,
    ip_address: Option<&IpAddress>,
    networks: &[Network],
    port_definitions: Option<&[PortDefinition]>,
) -> Result<Container, AppError> {
    let mut c = migrate_docker_port_mappings(container)?;
    c = migrate_ip_discovery(c, ip_address)?;
    if let Some(docker) = c.docker.as_mut() {
        docker.network = None;
    }
    let host_networking = networks.is_empty() || networks.iter().any(|n| n.mode == NetworkMode::Host);
    if host_networking {
        c.port_mappings = None;
    } else if c.port_mappings.is_none() {
        c.port_mappings = Some(vec![PortMapping::default_mapping()]);
    }
    if networks.iter().any(|n| n.mode != NetworkMode::Host) {
        let mappings = c.port_mappings.get_or_insert_with(Vec::new);
        let wanted = port_definitions.map_or(0, <[PortDefinition]>::len);
        while mappings.len() < wanted {
            mappings.push(PortMapping::unnamed());
        }
    }
    Ok(c)
}

fn migrate_docker_port_mappings(mut c: Container) -> Result<Container, AppError> {
    let Some(legacy) = c.docker.as_mut().and_then(|d| d.port_mappings.take()) else {
        return Ok(c);
    };
    let canonical_given = c.port_mappings.as_ref().is_some_and(|m| !m.is_empty());
    if canonical_given && !legacy.is_empty() {
        return Err(AppError::Normalization("cannot specify both portMappings and docker.portMappings".to_owned()));
    }
    if !canonical_given {
        c.port_mappings = Some(legacy);
    }
    Ok(c)
}

fn migrate_ip_discovery(mut c: Container, ip_address: Option<&IpAddress>) -> Result<Container, AppError> {
    let Some(ports) = ip_address.and_then(|ip| ip.discovery_ports.as_ref()).filter(|p| !p.is_empty()) else {
        return Ok(c);
    };
    if c.kind != EngineType::Mesos {
        return Err(AppError::Normalization(format!(
            "ipAddress.discovery.ports do not apply for container type {}",
            c.kind
        )));
    }
    if c.port_mappings.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(AppError::Normalization(
            "container.portMappings and ipAddress.discovery.ports must not both be set".to_owned(),
        ));
    }
    c.port_mappings = Some(
        ports
            .iter()
            .map(|p| PortMapping {
                container_port: p.number,
                name: Some(p.name.clone()),
                protocol: p.protocol,
                labels: p.labels.clone(),
                ..PortMapping::unnamed()
            })
            .collect(),
    );
    Ok(c)
}

/// The Mesos container Marathon creates for an app on a container network that gave none.
fn default_network_container() -> Container {
    Container { port_mappings: Some(vec![PortMapping::default_mapping()]), ..Container::mesos() }
}

/// In bridge mode a mapping without a host port gets host port 0 (a random one), for
/// compatibility with Marathon before container networks.
fn default_bridge_host_ports(mut c: Container, networks: &[Network]) -> Container {
    if networks.iter().any(|n| n.mode == NetworkMode::ContainerBridge) {
        for mapping in c.port_mappings.iter_mut().flatten() {
            mapping.host_port.get_or_insert(0);
        }
    }
    c
}

/// Health checks that need a port and name none use the first one (Marathon's backwards
/// compatibility with the old mandatory `portIndex: 0`).
fn with_default_port_index(mut check: HealthCheck) -> HealthCheck {
    if check.protocol != HealthCheckProtocol::Command && check.port.is_none() && check.port_index.is_none() {
        check.port_index = Some(0);
    }
    check
}

/// Marathon's HTTP(S) checks always carry `ignoreHttp1xx`; other kinds never do.
fn with_default_ignore_http1xx(mut check: HealthCheck) -> HealthCheck {
    check.ignore_http1xx = match check.protocol {
        HealthCheckProtocol::Http | HealthCheckProtocol::Https if check.command.is_none() => {
            Some(check.ignore_http1xx.unwrap_or(false))
        }
        _ => None,
    };
    check
}

/// TCP checks have no path; Marathon's model has nowhere to keep one, so it is dropped.
fn without_path_on_tcp(mut check: HealthCheck) -> HealthCheck {
    if matches!(check.protocol, HealthCheckProtocol::Tcp | HealthCheckProtocol::MesosTcp) {
        check.path = None;
    }
    check
}

fn with_default_codes(mut check: ReadinessCheck) -> ReadinessCheck {
    if check.http_status_codes_for_ready.is_empty() {
        check.http_status_codes_for_ready = vec![200];
    }
    check
}

// ---------------------------------------------------------------------------------------------
// Partial updates
// ---------------------------------------------------------------------------------------------

/// `PATCH /v2/apps/{id}` (and `PUT ?partialUpdate=true`): the fields present in `update`
/// replace the current ones, whole (a new `container` replaces the old container, a new `env`
/// the whole environment); absent fields keep their current value; the id never changes. The
/// update's deprecated fields are translated first, and the merged app is validated again.
///
/// An update naming a `version` asks for a rollback, which needs the stored versions: callers
/// check [`AppSpec::version`] first; here it is refused if combined with other fields and
/// otherwise ignored.
pub fn merge_partial(current: &AppDefinition, update: AppSpec, config: &AppConfig) -> Result<AppDefinition, AppError> {
    validation::validate_update_version(&update)?;
    let update = translate_update(update, config)?;
    let base = current.to_spec();
    let merged = AppSpec {
        id: base.id,
        accepted_resource_roles: update.accepted_resource_roles.or(base.accepted_resource_roles),
        args: update.args.or(base.args),
        backoff_factor: update.backoff_factor.or(base.backoff_factor),
        backoff_seconds: update.backoff_seconds.or(base.backoff_seconds),
        check: update.check.or(base.check),
        cmd: update.cmd.or(base.cmd),
        constraints: update.constraints.or(base.constraints),
        container: update.container.or(base.container),
        cpus: update.cpus.or(base.cpus),
        dependencies: update.dependencies.or(base.dependencies),
        disk: update.disk.or(base.disk),
        env: update.env.or(base.env),
        executor: update.executor.or(base.executor),
        executor_resources: update.executor_resources.or(base.executor_resources),
        fetch: update.fetch.or(base.fetch),
        gpus: update.gpus.or(base.gpus),
        health_checks: update.health_checks.or(base.health_checks),
        instances: update.instances.or(base.instances),
        ip_address: None,
        kill_selection: update.kill_selection.or(base.kill_selection),
        labels: update.labels.or(base.labels),
        max_launch_delay_seconds: update.max_launch_delay_seconds.or(base.max_launch_delay_seconds),
        mem: update.mem.or(base.mem),
        networks: update.networks.or(base.networks),
        port_definitions: update.port_definitions.or(base.port_definitions),
        ports: None,
        readiness_checks: update.readiness_checks.or(base.readiness_checks),
        require_ports: update.require_ports.or(base.require_ports),
        residency: update.residency.or(base.residency),
        resource_limits: update.resource_limits.or(base.resource_limits),
        role: update.role.or(base.role),
        secrets: update.secrets.or(base.secrets),
        task_kill_grace_period_seconds: update.task_kill_grace_period_seconds.or(base.task_kill_grace_period_seconds),
        tty: update.tty.or(base.tty),
        unreachable_strategy: update.unreachable_strategy.or(base.unreachable_strategy),
        upgrade_strategy: update.upgrade_strategy.or(base.upgrade_strategy),
        uris: None,
        user: update.user.or(base.user),
        version: None,
    };
    AppDefinition::from_spec(merged, &PathId::root(), config)
}

/// `PUT /v2/apps/{id}?partialUpdate=false` (and `PUT` of an app that does not exist): the body
/// replaces the app entirely, under the id of the URL.
pub fn replace(app_id: &PathId, update: AppSpec, config: &AppConfig) -> Result<AppDefinition, AppError> {
    validation::validate_update_version(&update)?;
    let spec = AppSpec { id: Some(app_id.to_string()), version: None, ..update };
    AppDefinition::from_spec(spec, &PathId::root(), config)
}

/// Marathon's `forDeprecatedUpdates`: the deprecated fields of an update in canonical form,
/// without defaults (those come from the app it is merged into).
fn translate_update(update: AppSpec, config: &AppConfig) -> Result<AppSpec, AppError> {
    let fetch = match (&update.uris, update.fetch.clone()) {
        (Some(uris), fetch) if !uris.is_empty() => Some(migrate_fetch(Some(uris), fetch)?),
        (_, fetch) => fetch,
    };
    let docker_network = update.container.as_ref().and_then(|c| c.docker.as_ref()).and_then(|d| d.network);
    let networks = translate_networks(update.ip_address.as_ref(), docker_network, update.networks.clone(), config)?;
    let container = update.container.clone().or_else(|| update.ip_address.as_ref().map(|_| Container::mesos()));
    let container = container
        .map(|c| {
            let mut c = migrate_ip_discovery(migrate_docker_port_mappings(c)?, update.ip_address.as_ref())?;
            if let Some(docker) = c.docker.as_mut() {
                docker.network = None;
            }
            Ok::<_, AppError>(c)
        })
        .transpose()?;
    let port_definitions = update
        .port_definitions
        .clone()
        .or_else(|| update.ports.as_ref().map(|ports| ports.iter().copied().map(PortDefinition::numbered).collect()));
    Ok(AppSpec { fetch, uris: None, networks, ip_address: None, container, port_definitions, ports: None, ..update })
}

// ---------------------------------------------------------------------------------------------
// Versions and the read model
// ---------------------------------------------------------------------------------------------

/// `version` and `versionInfo` of a stored app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: Timestamp,
    pub last_scaling_at: Timestamp,
    pub last_config_change_at: Timestamp,
}

impl VersionInfo {
    /// A new app: every timestamp is its creation.
    pub fn created(at: Timestamp) -> VersionInfo {
        VersionInfo { version: at, last_scaling_at: at, last_config_change_at: at }
    }

    /// The version info after `previous_app` became `next_app` at `now`: unchanged if nothing
    /// changed, a scaling change if only `instances` changed, else a configuration change.
    pub fn after_change(self, previous_app: &AppDefinition, next_app: &AppDefinition, now: Timestamp) -> VersionInfo {
        if previous_app == next_app {
            self
        } else if previous_app.same_config(next_app) {
            VersionInfo { version: now, last_scaling_at: now, last_config_change_at: self.last_config_change_at }
        } else {
            VersionInfo::created(now)
        }
    }
}

/// A digest of everything in a definition except `instances` (FNV-1a over the canonical JSON
/// with sorted keys, so it is stable across processes and releases).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConfigFingerprint(pub u64);

impl fmt::Display for ConfigFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl AppDefinition {
    /// The configuration digest (see [`ConfigFingerprint`]).
    pub fn config_fingerprint(&self) -> ConfigFingerprint {
        ConfigFingerprint(fnv1a(self.config_json().to_string().as_bytes()))
    }

    /// True if the two definitions differ at most in `instances` (a scaling change).
    pub fn same_config(&self, other: &AppDefinition) -> bool {
        self.config_json() == other.config_json()
    }

    /// The read model without `instances`, `version` and `versionInfo`.
    fn config_json(&self) -> Value {
        let mut body = self.body_json();
        body.remove("instances");
        Value::Object(body)
    }

    /// The app as `GET /v2/apps/{id}` returns it (without the task counts and embeds the API
    /// layer adds): every field with its value or default, deprecated fields omitted, empty
    /// optional collections omitted as Marathon's serializer does.
    pub fn to_json(&self, version_info: &VersionInfo) -> Value {
        let mut body = self.body_json();
        body.insert("version".into(), json!(version_info.version.to_string()));
        body.insert(
            "versionInfo".into(),
            json!({
                "lastScalingAt": version_info.last_scaling_at.to_string(),
                "lastConfigChangeAt": version_info.last_config_change_at.to_string(),
            }),
        );
        Value::Object(body)
    }

    fn body_json(&self) -> Map<String, Value> {
        let mut o = Map::new();
        o.insert("id".into(), json!(self.id.to_string()));
        if !self.accepted_resource_roles.is_empty() {
            o.insert("acceptedResourceRoles".into(), json!(self.accepted_resource_roles));
        }
        insert_non_empty(&mut o, "args", json!(self.args));
        o.insert("backoffFactor".into(), json!(self.backoff_factor));
        o.insert("backoffSeconds".into(), json!(self.backoff_seconds));
        if let Some(check) = &self.check {
            o.insert("check".into(), app_check_json(check));
        }
        if let Some(cmd) = &self.cmd {
            o.insert("cmd".into(), json!(cmd));
        }
        insert_non_empty(&mut o, "constraints", json!(self.constraints));
        if let Some(container) = &self.container {
            o.insert("container".into(), container_json(container, self.has_non_host_networking()));
        }
        o.insert("cpus".into(), json!(self.cpus));
        insert_non_empty(
            &mut o,
            "dependencies",
            json!(self.dependencies.iter().map(ToString::to_string).collect::<Vec<_>>()),
        );
        o.insert("disk".into(), json!(self.disk));
        insert_non_empty(&mut o, "env", env_json(&self.env));
        o.insert("executor".into(), json!(self.executor));
        if let Some(r) = &self.executor_resources {
            o.insert("executorResources".into(), json!({ "cpus": r.cpus, "mem": r.mem, "disk": r.disk }));
        }
        insert_non_empty(&mut o, "fetch", Value::Array(self.fetch.iter().map(artifact_json).collect()));
        o.insert("gpus".into(), json!(self.gpus));
        insert_non_empty(
            &mut o,
            "healthChecks",
            Value::Array(self.health_checks.iter().map(health_check_json).collect()),
        );
        o.insert("instances".into(), json!(self.instances));
        o.insert("killSelection".into(), json!(self.kill_selection.as_str()));
        o.insert("labels".into(), json!(self.labels));
        o.insert("maxLaunchDelaySeconds".into(), json!(self.max_launch_delay_seconds));
        o.insert("mem".into(), json!(self.mem));
        o.insert("networks".into(), Value::Array(self.networks.iter().map(network_json).collect()));
        if !self.has_non_host_networking() {
            o.insert(
                "portDefinitions".into(),
                Value::Array(self.port_definitions.iter().map(port_definition_json).collect()),
            );
        }
        insert_non_empty(
            &mut o,
            "readinessChecks",
            Value::Array(self.readiness_checks.iter().map(readiness_check_json).collect()),
        );
        o.insert("requirePorts".into(), json!(self.require_ports));
        if let Some(residency) = self.residency.filter(|_| self.is_resident()) {
            o.insert(
                "residency".into(),
                json!({
                    "relaunchEscalationTimeoutSeconds": residency.relaunch_escalation_timeout_seconds,
                    "taskLostBehavior": residency.task_lost_behavior.as_str(),
                }),
            );
        }
        if let Some(limits) = &self.resource_limits {
            let mut l = Map::new();
            for (name, limit) in [("cpus", &limits.cpus), ("mem", &limits.mem)] {
                match limit {
                    Some(ResourceLimit::Number(n)) => l.insert(name.into(), json!(n)),
                    Some(ResourceLimit::Text(t)) => l.insert(name.into(), json!(t)),
                    None => None,
                };
            }
            o.insert("resourceLimits".into(), Value::Object(l));
        }
        o.insert("role".into(), json!(self.role));
        insert_non_empty(
            &mut o,
            "secrets",
            Value::Object(self.secrets.iter().map(|(k, v)| (k.clone(), json!({ "source": v.source }))).collect()),
        );
        if let Some(grace) = self.task_kill_grace_period_seconds {
            o.insert("taskKillGracePeriodSeconds".into(), json!(grace));
        }
        if let Some(tty) = self.tty {
            o.insert("tty".into(), json!(tty));
        }
        o.insert("unreachableStrategy".into(), unreachable_json(self.unreachable_strategy));
        o.insert(
            "upgradeStrategy".into(),
            json!({
                "maximumOverCapacity": self.upgrade_strategy.maximum_over_capacity,
                "minimumHealthCapacity": self.upgrade_strategy.minimum_health_capacity,
            }),
        );
        if let Some(user) = &self.user {
            o.insert("user".into(), json!(user));
        }
        o
    }
}

/// Marathon's serializer skips `omitEmpty` collections that are empty.
fn insert_non_empty(o: &mut Map<String, Value>, key: &str, value: Value) {
    let empty = match &value {
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    };
    if !empty {
        o.insert(key.into(), value);
    }
}

fn labels_into(o: &mut Map<String, Value>, labels: &BTreeMap<String, String>) {
    insert_non_empty(o, "labels", json!(labels));
}

fn env_json(env: &BTreeMap<String, EnvValue>) -> Value {
    Value::Object(
        env.iter()
            .map(|(k, v)| {
                let value = match v {
                    EnvValue::Value(text) => json!(text),
                    EnvValue::Secret(name) => json!({ "secret": name }),
                };
                (k.clone(), value)
            })
            .collect(),
    )
}

fn artifact_json(a: &Artifact) -> Value {
    let mut o = Map::new();
    o.insert("uri".into(), json!(a.uri));
    o.insert("extract".into(), json!(a.extract));
    o.insert("executable".into(), json!(a.executable));
    o.insert("cache".into(), json!(a.cache));
    if let Some(dest) = &a.dest_path {
        o.insert("destPath".into(), json!(dest));
    }
    Value::Object(o)
}

fn port_definition_json(p: &PortDefinition) -> Value {
    let mut o = Map::new();
    o.insert("port".into(), json!(p.port));
    o.insert("protocol".into(), json!(p.protocol.as_str()));
    if let Some(name) = &p.name {
        o.insert("name".into(), json!(name));
    }
    labels_into(&mut o, &p.labels);
    Value::Object(o)
}

fn port_mapping_json(p: &PortMapping) -> Value {
    let mut o = Map::new();
    o.insert("containerPort".into(), json!(p.container_port));
    if let Some(host_port) = p.host_port {
        o.insert("hostPort".into(), json!(host_port));
    }
    o.insert("labels".into(), json!(p.labels));
    if let Some(name) = &p.name {
        o.insert("name".into(), json!(name));
    }
    o.insert("protocol".into(), json!(p.protocol.as_str()));
    o.insert("servicePort".into(), json!(p.service_port));
    insert_non_empty(&mut o, "networkNames", json!(p.network_names));
    Value::Object(o)
}

fn network_json(n: &Network) -> Value {
    let mut o = Map::new();
    if let Some(name) = &n.name {
        o.insert("name".into(), json!(name));
    }
    o.insert("mode".into(), json!(n.mode.as_str()));
    labels_into(&mut o, &n.labels);
    Value::Object(o)
}

fn container_json(c: &Container, non_host_networking: bool) -> Value {
    let mut o = Map::new();
    o.insert("type".into(), json!(c.kind.as_str()));
    if let Some(d) = &c.docker {
        let mut docker = Map::new();
        docker.insert("image".into(), json!(d.image));
        docker.insert("forcePullImage".into(), json!(d.force_pull_image));
        docker.insert("privileged".into(), json!(d.privileged));
        docker.insert(
            "parameters".into(),
            Value::Array(d.parameters.iter().map(|p| json!({ "key": p.key, "value": p.value })).collect()),
        );
        if c.kind == EngineType::Mesos {
            if let Some(secret) = &d.pull_config_secret {
                docker.insert("pullConfig".into(), json!({ "secret": secret }));
            }
            if let Some(credential) = &d.credential {
                let mut cred = Map::new();
                cred.insert("principal".into(), json!(credential.principal));
                if let Some(secret) = &credential.secret {
                    cred.insert("secret".into(), json!(secret));
                }
                docker.insert("credential".into(), Value::Object(cred));
            }
        }
        o.insert("docker".into(), Value::Object(docker));
    }
    if let (EngineType::Mesos, Some(linux)) = (c.kind, &c.linux_info) {
        o.insert("linuxInfo".into(), linux_info_json(linux));
    }
    o.insert("volumes".into(), Value::Array(c.volumes.iter().map(volume_json).collect()));
    if non_host_networking {
        let mappings = c.port_mappings.as_deref().unwrap_or_default();
        o.insert("portMappings".into(), Value::Array(mappings.iter().map(port_mapping_json).collect()));
    }
    Value::Object(o)
}

fn linux_info_json(linux: &LinuxInfo) -> Value {
    let mut o = Map::new();
    if let Some(seccomp) = &linux.seccomp {
        let mut s = Map::new();
        if let Some(profile) = &seccomp.profile_name {
            s.insert("profileName".into(), json!(profile));
        }
        s.insert("unconfined".into(), json!(seccomp.unconfined));
        o.insert("seccomp".into(), Value::Object(s));
    }
    if let Some(ipc) = &linux.ipc_info {
        let mut i = Map::new();
        i.insert("mode".into(), json!(ipc.mode.as_str()));
        if let Some(size) = ipc.shm_size {
            i.insert("shmSize".into(), json!(size));
        }
        o.insert("ipcInfo".into(), Value::Object(i));
    }
    Value::Object(o)
}

fn volume_json(v: &Volume) -> Value {
    match v {
        Volume::Host { container_path, host_path, mode } => {
            json!({ "containerPath": container_path, "hostPath": host_path, "mode": mode.as_str() })
        }
        Volume::Secret { container_path, secret } => json!({ "containerPath": container_path, "secret": secret }),
        Volume::Persistent { container_path, persistent, mode } => {
            let mut p = Map::new();
            p.insert("type".into(), json!(persistent.kind.unwrap_or(PersistentVolumeType::Root).as_str()));
            p.insert("size".into(), json!(persistent.size));
            if let Some(max) = persistent.max_size {
                p.insert("maxSize".into(), json!(max));
            }
            if let Some(profile) = &persistent.profile_name {
                p.insert("profileName".into(), json!(profile));
            }
            p.insert("constraints".into(), json!(persistent.constraints));
            json!({ "containerPath": container_path, "persistent": p, "mode": mode.as_str() })
        }
        Volume::External { container_path, external, mode } => {
            json!({ "containerPath": container_path, "external": external_json(external), "mode": mode.as_str() })
        }
    }
}

fn external_json(e: &ExternalVolumeInfo) -> Value {
    let mut o = Map::new();
    match e {
        ExternalVolumeInfo::Dvdi { size, name, provider, options, shared } => {
            if let Some(size) = size {
                o.insert("size".into(), json!(size));
            }
            if let Some(name) = name {
                o.insert("name".into(), json!(name));
            }
            if let Some(provider) = provider {
                o.insert("provider".into(), json!(provider));
            }
            insert_non_empty(&mut o, "options", json!(options));
            o.insert("shared".into(), json!(shared));
        }
        ExternalVolumeInfo::Csi {
            name,
            plugin_name,
            access_mode,
            access_type,
            fs_type,
            mount_flags,
            node_stage_secret,
            node_publish_secret,
            volume_context,
        } => {
            let mut capability = Map::new();
            capability.insert("accessMode".into(), json!(access_mode));
            capability.insert("accessType".into(), json!(access_type));
            if let Some(fs) = fs_type {
                capability.insert("fsType".into(), json!(fs));
            }
            insert_non_empty(&mut capability, "mountFlags", json!(mount_flags));
            let mut options = Map::new();
            options.insert("pluginName".into(), json!(plugin_name));
            options.insert("capability".into(), Value::Object(capability));
            insert_non_empty(&mut options, "nodeStageSecret", json!(node_stage_secret));
            insert_non_empty(&mut options, "nodePublishSecret", json!(node_publish_secret));
            insert_non_empty(&mut options, "volumeContext", json!(volume_context));
            o.insert("name".into(), json!(name));
            o.insert("provider".into(), json!("csi"));
            o.insert("options".into(), Value::Object(options));
        }
    }
    Value::Object(o)
}

fn health_check_json(h: &HealthCheck) -> Value {
    let mut o = Map::new();
    if let Some(command) = &h.command {
        o.insert("command".into(), json!({ "value": command.value }));
    }
    o.insert("delaySeconds".into(), json!(h.delay_seconds));
    o.insert("gracePeriodSeconds".into(), json!(h.grace_period_seconds));
    if let Some(ignore) = h.ignore_http1xx {
        o.insert("ignoreHttp1xx".into(), json!(ignore));
    }
    o.insert("intervalSeconds".into(), json!(h.interval_seconds));
    o.insert("ipProtocol".into(), json!(h.ip_protocol.as_str()));
    o.insert("maxConsecutiveFailures".into(), json!(h.max_consecutive_failures));
    if let Some(path) = &h.path {
        o.insert("path".into(), json!(path));
    }
    if let Some(port) = h.port {
        o.insert("port".into(), json!(port));
    }
    if let Some(index) = h.port_index {
        o.insert("portIndex".into(), json!(index));
    }
    o.insert("protocol".into(), json!(h.protocol.as_str()));
    o.insert("timeoutSeconds".into(), json!(h.timeout_seconds));
    Value::Object(o)
}

fn readiness_check_json(r: &ReadinessCheck) -> Value {
    json!({
        "name": r.name,
        "protocol": r.protocol.as_str(),
        "path": r.path,
        "portName": r.port_name,
        "intervalSeconds": r.interval_seconds,
        "timeoutSeconds": r.timeout_seconds,
        "httpStatusCodesForReady": r.http_status_codes_for_ready,
        "preserveLastResponse": r.preserve_last_response,
    })
}

fn app_check_json(c: &AppCheck) -> Value {
    let mut o = Map::new();
    if let Some(http) = &c.http {
        let mut h = Map::new();
        if let Some(index) = http.port_index {
            h.insert("portIndex".into(), json!(index));
        }
        if let Some(port) = http.port {
            h.insert("port".into(), json!(port));
        }
        if let Some(path) = &http.path {
            h.insert("path".into(), json!(path));
        }
        h.insert("scheme".into(), json!(http.scheme.as_str()));
        o.insert("http".into(), Value::Object(h));
    }
    if let Some(tcp) = &c.tcp {
        let mut t = Map::new();
        if let Some(index) = tcp.port_index {
            t.insert("portIndex".into(), json!(index));
        }
        if let Some(port) = tcp.port {
            t.insert("port".into(), json!(port));
        }
        o.insert("tcp".into(), Value::Object(t));
    }
    if let Some(exec) = &c.exec {
        let command = match exec {
            MesosCommand::Shell(shell) => json!({ "shell": shell }),
            MesosCommand::Argv(argv) => json!({ "argv": argv }),
        };
        o.insert("exec".into(), json!({ "command": command }));
    }
    o.insert("intervalSeconds".into(), json!(c.interval_seconds));
    o.insert("timeoutSeconds".into(), json!(c.timeout_seconds));
    o.insert("delaySeconds".into(), json!(c.delay_seconds));
    Value::Object(o)
}

fn unreachable_json(u: UnreachableStrategy) -> Value {
    match u {
        UnreachableStrategy::Disabled => json!("disabled"),
        UnreachableStrategy::Enabled { inactive_after_seconds, expunge_after_seconds } => json!({
            "inactiveAfterSeconds": inactive_after_seconds,
            "expungeAfterSeconds": expunge_after_seconds,
        }),
    }
}

/// 64-bit FNV-1a: simple, fixed forever, good enough to tell configurations apart.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

// ---------------------------------------------------------------------------------------------
// Task environment
// ---------------------------------------------------------------------------------------------

/// Environment variables of all lengths above this are left out (Mesos's limit in Marathon).
pub const MAX_ENV_VAR_LENGTH: usize = 512;
const LABEL_PREFIX: &str = "MARATHON_APP_LABEL_";
/// The lowest port picked for container-port-only mappings that ask for port 0.
const FIRST_GENERATED_PORT: u32 = 1025;

/// What a task's environment depends on beyond its app.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskEnvInput<'a> {
    /// The app version the task runs.
    pub version: Timestamp,
    /// The host port assigned to each declared port (mapping or definition), in order; `None`
    /// for a mapping without a host port.
    pub host_ports: &'a [Option<u32>],
    /// The agent's hostname (`HOST`).
    pub host: Option<&'a str>,
    /// The task id (`MESOS_TASK_ID`).
    pub task_id: Option<&'a str>,
    /// `--env_vars_prefix`, prepended to the port variables and `HOST`.
    pub prefix: Option<&'a str>,
}

/// The environment Marathon gives a task of `app` (`TaskBuilder.commandInfo`): the app's
/// context (`MARATHON_APP_ID`, `MARATHON_APP_VERSION`, `MARATHON_APP_DOCKER_IMAGE`,
/// `MARATHON_APP_RESOURCE_{CPUS,MEM,DISK,GPUS}`), its labels (`MARATHON_APP_LABELS` lists the
/// escaped names; each label whose name is under 493 characters and value under 512 becomes
/// `MARATHON_APP_LABEL_<NAME>`, the name upper-cased with runs of other characters than
/// letters, digits and `_` replaced by `_`), the ports (`PORT<n>`, `PORT_<port>`,
/// `PORT_<NAME>`, `PORT`, `PORTS`) and `HOST`, then the app's own `env` (plain values only;
/// secrets are resolved elsewhere), which overrides the rest.
///
/// Marathon picks a random free port for a container-port-only mapping that asks for port 0;
/// this function picks the lowest port from 1025 up that no other variable uses, so that the
/// result is a pure function of its inputs.
pub fn task_environment(app: &AppDefinition, input: &TaskEnvInput<'_>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    if let Some(task_id) = input.task_id {
        env.insert("MESOS_TASK_ID".to_owned(), task_id.to_owned());
    }
    env.insert("MARATHON_APP_ID".to_owned(), app.id.to_string());
    env.insert("MARATHON_APP_VERSION".to_owned(), input.version.to_string());
    if let Some(image) = app.container.as_ref().and_then(Container::docker_image) {
        env.insert("MARATHON_APP_DOCKER_IMAGE".to_owned(), image.to_owned());
    }
    env.insert("MARATHON_APP_RESOURCE_CPUS".to_owned(), java_double(app.cpus));
    env.insert("MARATHON_APP_RESOURCE_MEM".to_owned(), java_double(app.mem));
    env.insert("MARATHON_APP_RESOURCE_DISK".to_owned(), java_double(app.disk));
    env.insert("MARATHON_APP_RESOURCE_GPUS".to_owned(), app.gpus.to_string());
    env.extend(label_env(&app.labels));
    let prefix = input.prefix.unwrap_or("");
    for (key, value) in port_env(&declared_ports(app), input.host_ports) {
        env.insert(format!("{prefix}{key}"), value);
    }
    if let Some(host) = input.host {
        env.insert(format!("{prefix}HOST"), host.to_owned());
    }
    for (key, value) in &app.env {
        if let EnvValue::Value(text) = value {
            env.insert(key.clone(), text.clone());
        }
    }
    env
}

/// `MARATHON_APP_LABELS` and `MARATHON_APP_LABEL_<NAME>` (Marathon's `labelsToEnvVars`).
pub fn label_env(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let max_name = MAX_ENV_VAR_LENGTH - LABEL_PREFIX.len();
    let valid: BTreeMap<String, &String> = labels
        .iter()
        .filter(|(key, value)| key.chars().count() < max_name && value.chars().count() < MAX_ENV_VAR_LENGTH)
        .map(|(key, value)| (escape_label_name(key), value))
        .collect();
    let mut env = BTreeMap::new();
    env.insert("MARATHON_APP_LABELS".to_owned(), valid.keys().cloned().collect::<Vec<_>>().join(" "));
    for (name, value) in valid {
        env.insert(format!("{LABEL_PREFIX}{name}"), value.clone());
    }
    env
}

/// Runs of characters outside `[a-zA-Z0-9_]` become one `_`; the result is upper-cased.
fn escape_label_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_run = false;
    for ch in name.chars() {
        if ch.is_ascii_alphanumeric() || ch == '_' {
            out.push(ch.to_ascii_uppercase());
            in_run = false;
        } else if !in_run {
            out.push('_');
            in_run = true;
        }
    }
    out
}

/// The declared ports: container ports of the mappings if any, else the port definitions.
fn declared_ports(app: &AppDefinition) -> Vec<(Option<&str>, u32)> {
    let mappings = app.port_mappings();
    if mappings.is_empty() {
        app.port_definitions.iter().map(|p| (p.name.as_deref(), p.port.max(0) as u32)).collect()
    } else {
        mappings.iter().map(|p| (p.name.as_deref(), p.container_port.max(0) as u32)).collect()
    }
}

/// Marathon's `EnvironmentHelper.portsEnv`.
fn port_env(requested: &[(Option<&str>, u32)], host_ports: &[Option<u32>]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    if host_ports.is_empty() {
        return env;
    }
    let mut consumed: BTreeSet<u32> = requested.iter().map(|(_, port)| *port).collect();
    consumed.extend(host_ports.iter().flatten());
    // The effective port of each index: the host port, else the requested container port, else
    // a generated one.
    let mut effective: Vec<Option<u32>> = Vec::with_capacity(host_ports.len());
    let mut generated: Vec<u32> = Vec::new();
    for (index, host_port) in host_ports.iter().enumerate() {
        let port = match (host_port, requested.get(index)) {
            (Some(host), _) => Some(*host),
            (None, Some((_, 0))) => {
                let port = next_free_port(&consumed);
                consumed.insert(port);
                generated.push(port);
                Some(port)
            }
            (None, Some((_, container))) => Some(*container),
            (None, None) => None,
        };
        if let Some(port) = port {
            env.insert(format!("PORT{index}"), port.to_string());
        }
        effective.push(port);
    }
    for ((name, requested_port), (host_port, port)) in requested.iter().zip(host_ports.iter().zip(&effective)) {
        let Some(port) = port else { continue };
        let key_port = if *requested_port != 0 && host_port.is_some() { *requested_port } else { *port };
        env.insert(format!("PORT_{key_port}"), port.to_string());
        if let Some(name) = name {
            env.insert(format!("PORT_{}", name.to_uppercase()), port.to_string());
        }
    }
    let assigned: Vec<u32> = host_ports.iter().flatten().copied().chain(generated).collect();
    if let Some(first) = assigned.first() {
        env.insert("PORT".to_owned(), first.to_string());
    }
    env.insert("PORTS".to_owned(), assigned.iter().map(ToString::to_string).collect::<Vec<_>>().join(","));
    env
}

fn next_free_port(consumed: &BTreeSet<u32>) -> u32 {
    (FIRST_GENERATED_PORT..).find(|p| !consumed.contains(p)).unwrap_or(FIRST_GENERATED_PORT)
}

/// A double as Java's `Double.toString` writes it (`1.0`, `0.1`, `1.0E-4`), which is what
/// Marathon's resource variables and validation messages show.
pub fn java_double(value: f64) -> String {
    if !value.is_finite() {
        return if value.is_nan() {
            "NaN".to_owned()
        } else if value > 0.0 {
            "Infinity".to_owned()
        } else {
            "-Infinity".to_owned()
        };
    }
    let magnitude = value.abs();
    if magnitude == 0.0 || (1e-3..1e7).contains(&magnitude) {
        let text = format!("{value}");
        return if text.contains('.') { text } else { format!("{text}.0") };
    }
    let text = format!("{value:e}");
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    let mantissa = if mantissa.contains('.') { mantissa.to_owned() } else { format!("{mantissa}.0") };
    format!("{mantissa}E{exponent}")
}
