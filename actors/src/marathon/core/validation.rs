//! Marathon's semantic rules for app definitions, with its messages and paths.
//!
//! Every broken rule is collected, not just the first, and the result renders as Marathon's 422
//! body `{"message":"Object is not valid","details":[{"path":"/upgradeStrategy/minimumHealthCapacity","errors":["got 1.2, expected between 0.0 and 1.0"]}]}`,
//! one detail per path in the order the rules found them. Paths use Marathon's form: `/` for
//! rules about the whole app, `/field/sub` for fields, `(i)` for array elements
//! (`/healthChecks(0)`, `/fetch(1)/uri`).
//!
//! Three passes, as in Marathon:
//! - [`validate_deprecated`] (Marathon's `validateOldAppAPI`) runs on the request before its
//!   deprecated fields are translated, and stops the request on its own if it fails.
//! - [`spec_violations`] are the canonical rules that need to know what the request wrote
//!   (an explicitly empty `acceptedResourceRoles`).
//! - [`validate`] (Marathon's `validateCanonicalAppAPI` and `AppDefinition.validAppDefinition`
//!   together) runs on the normalized definition.
//!
//! Rules checked: id (not the root, no reserved last segment), dependencies, `cmd`/`args`/
//! `container` exclusivity, resources (`cpus`, `mem`, `disk`, `gpus` not negative; GPUs only
//! with the Mesos containerizer), `instances`, `executor`, backoff values, networks (host and
//! bridge networks unnamed, no duplicates, one host or one bridge or 1..n container networks,
//! container networks named), port definitions (names and non-zero ports unique), port mappings
//! (names unique, network names known, host ports on multiple container networks), containers
//! (Docker needs an image; `pullConfig` only with the Mesos containerizer and only naming a
//! declared secret; volumes), health checks (port index in range, one Mesos check at most,
//! IPv6 limits, `command` exactly for `COMMAND`), readiness checks (at most one, port name
//! declared, timeout below interval), `check`, upgrade strategy (fractions in `[0, 1]`, resident
//! and single-instance apps), unreachable strategy, constraints (2 or 3 strings, a known
//! operator, the value each operator needs), `env` (names non-empty; secret references name a
//! declared secret), `secrets`, labels of the DC/OS migration API, `fetch` URIs, accepted
//! resource roles, role, resource limits.
//!
//! Where this differs from Marathon: Java's `URI` and `Pattern` parsers are approximated
//! ([`is_valid_uri`], [`is_valid_regex`]: same answers for the common mistakes — spaces and
//! other characters URIs forbid, bad `%` escapes, unbalanced groups and classes, dangling
//! quantifiers, trailing backslashes — but not a full Java grammar); health-check shapes that
//! Marathon only refuses with an internal error (a `command` on an HTTP check, `COMMAND` without
//! one, a `COMMAND` check with a path or port) are 422 violations here; provider-specific
//! external volume rules (DVDI driver options, CSI capabilities) are not checked.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Value, json};

use super::app::{
    AppDefinition, AppSpec, ConstraintOperator, Container, EngineType, EnvValue, ExternalVolumeInfo, HealthCheck,
    HealthCheckProtocol, IpProtocol, NetworkMode, RANDOM_PORT, ReadMode, ResourceLimit, UnreachableStrategy, Volume,
    java_double,
};
use super::path::{PathId, RESERVED_KEYWORDS};

/// One broken rule: where, and Marathon's words for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub message: String,
}

impl Violation {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Violation {
        Violation { path: path.into(), message: message.into() }
    }
}

/// Every rule a definition broke (never empty).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    pub violations: Vec<Violation>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Object is not valid: ")?;
        let parts: Vec<String> = self.violations.iter().map(|v| format!("{}: {}", v.path, v.message)).collect();
        f.write_str(&parts.join("; "))
    }
}

impl ValidationError {
    /// Marathon's 422 body: violations grouped by path, paths in order of first violation.
    pub fn to_json(&self) -> Value {
        let mut paths: Vec<&str> = Vec::new();
        let mut by_path: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for v in &self.violations {
            let errors = by_path.entry(&v.path).or_default();
            if errors.is_empty() {
                paths.push(&v.path);
            }
            if !errors.contains(&v.message.as_str()) {
                errors.push(&v.message);
            }
        }
        let details: Vec<Value> =
            paths.iter().map(|p| json!({ "path": p, "errors": by_path.get(p).cloned().unwrap_or_default() })).collect();
        json!({ "message": "Object is not valid", "details": details })
    }

    /// The messages reported at `path`, for tests and logs.
    pub fn messages_at(&self, path: &str) -> Vec<&str> {
        self.violations.iter().filter(|v| v.path == path).map(|v| v.message.as_str()).collect()
    }
}

/// Collects violations under a path prefix.
#[derive(Default)]
struct Report {
    violations: Vec<Violation>,
}

impl Report {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let v = Violation::new(path, message);
        if !self.violations.contains(&v) {
            self.violations.push(v);
        }
    }

    fn check(&mut self, ok: bool, path: &str, message: impl Into<String>) {
        if !ok {
            self.add(path, message);
        }
    }

    fn into_result(self) -> Result<(), ValidationError> {
        if self.violations.is_empty() { Ok(()) } else { Err(ValidationError { violations: self.violations }) }
    }
}

pub const MSG_CMD_ARGS_CONTAINER: &str =
    "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.";
pub const MSG_PORT_INDEX: &str =
    "Health check port indices must address an element of the ports array or container port mappings.";
pub const MSG_NETWORK_NAME_REQUIRED_FOR_MULTIPLE: &str =
    "networkNames must be a single item list when hostPort is specified and more than 1 container network is defined";
pub const MSG_DOCKER_SINGLE_CONTAINER_NETWORK: &str =
    "may only specify a single container network when using the Docker container engine";
pub const MSG_IPV6: &str = "IPv6 can only be used for container type DOCKER and Mesos http/https/tcp health checks";
pub const MSG_NETWORK_NAME_MUST_BE_SPECIFIED: &str =
    "Network name must be specified when container network is selected.";
pub const MSG_CONSTRAINT_OPERATOR_INVALID: &str =
    "operator must be one of the following UNIQUE, CLUSTER, GROUP_BY, LIKE, MAX_PER, UNLIKE or IS";
pub const MSG_EXECUTOR_PATTERN: &str = "must fully match regular expression '^(//cmd)|(/?[^/]+(/[^/]+)*)|$'";
const MSG_URI: &str = "URI has invalid syntax.";
const MSG_PORT_NAMES_UNIQUE: &str = "Port names must be unique.";

// ---------------------------------------------------------------------------------------------
// Deprecated fields (before normalization)
// ---------------------------------------------------------------------------------------------

/// Marathon's `validateOldAppAPI`: how deprecated fields may combine with the rest.
pub fn validate_deprecated(spec: &AppSpec) -> Result<(), ValidationError> {
    let mut r = Report::default();
    if let Some(container) = &spec.container {
        old_container_rules(&mut r, container);
        let legacy = container.docker.as_ref().and_then(|d| d.port_mappings.as_deref()).unwrap_or_default();
        r.check(
            unique(legacy.iter().filter_map(|m| m.name.as_deref())),
            "/container/docker/portMappings",
            MSG_PORT_NAMES_UNIQUE,
        );
    }
    let docker_kind = spec.container.as_ref().is_some_and(|c| c.kind == EngineType::Docker);
    if let Some(ip) = &spec.ip_address {
        r.check(
            !(docker_kind && ip.discovery_ports.is_some()),
            "/ipAddress",
            "ipAddress/discovery is not allowed for Docker containers",
        );
    }
    if let Some(uris) = &spec.uris {
        for (i, uri) in uris.iter().enumerate() {
            r.check(is_valid_uri(uri), &format!("/uris({i})"), MSG_URI);
        }
        let fetch_given = spec.fetch.as_ref().is_some_and(|f| !f.is_empty());
        r.check(uris.is_empty() || !fetch_given, "/uris", "may not be set in conjunction with fetch");
    }
    let docker_network = spec.container.as_ref().and_then(|c| c.docker.as_ref()).is_some_and(|d| d.network.is_some());
    let networks_given = spec.networks.as_ref().is_some_and(|n| !n.is_empty());
    r.check(!(docker_network && networks_given), "/", "must not specify both container.docker.network and networks");
    r.check(!(spec.ip_address.is_some() && networks_given), "/", "must not specify both networks and ipAddress");
    let fixed_ports: Vec<i32> = spec.ports.iter().flatten().copied().filter(|p| *p != RANDOM_PORT).collect();
    r.check(unique(fixed_ports.iter()), "/", "ports must be unique");
    let any_ports = spec.ports.as_ref().is_some_and(|p| !p.is_empty())
        || spec.port_definitions.as_ref().is_some_and(|p| !p.is_empty());
    r.check(spec.ip_address.is_none() || !any_ports, "/", "cannot specify both an IP address and port");
    if let (Some(ports), Some(definitions)) = (&spec.ports, &spec.port_definitions) {
        let same = definitions.iter().map(|d| d.port).eq(ports.iter().copied());
        r.check(same, "/", "cannot specify both ports and port definitions");
    }
    r.into_result()
}

/// Credentials are gone from both containerizers; the Mesos containerizer never took Docker's
/// network, parameters or port mappings.
fn old_container_rules(r: &mut Report, container: &Container) {
    let Some(docker) = &container.docker else { return };
    r.check(docker.credential.is_none(), "/container/docker/credential", "must be empty");
    if container.kind == EngineType::Mesos {
        r.check(docker.network.is_none(), "/container/docker/network", "must be empty");
        r.check(docker.parameters.is_empty(), "/container/docker/parameters", "must be empty");
        r.check(
            docker.port_mappings.as_ref().is_none_or(Vec::is_empty),
            "/container/docker/portMappings",
            "must be empty",
        );
    }
}

/// An update naming `version` asks for a rollback and may name nothing else but `id`.
pub fn validate_update_version(update: &AppSpec) -> Result<(), ValidationError> {
    let only_id_and_version = AppSpec { id: None, version: None, ..update.clone() } == AppSpec::default();
    let mut r = Report::default();
    r.check(
        update.version.is_none() || only_id_and_version,
        "/",
        "The 'version' field may only be combined with the 'id' field.",
    );
    r.into_result()
}

/// Canonical rules that depend on what the request wrote rather than on the defaults.
pub fn spec_violations(spec: &AppSpec) -> Vec<Violation> {
    let mut r = Report::default();
    if spec.accepted_resource_roles.as_ref().is_some_and(Vec::is_empty) {
        r.add("/acceptedResourceRoles", "must not be empty");
    }
    r.violations
}

// ---------------------------------------------------------------------------------------------
// The normalized definition
// ---------------------------------------------------------------------------------------------

/// Every canonical rule (see the module doc).
pub fn validate(app: &AppDefinition, config: &super::app::AppConfig) -> Result<(), ValidationError> {
    validate_with(app, config, Vec::new())
}

/// [`validate`], reporting `earlier` violations (from [`spec_violations`]) first.
pub fn validate_with(
    app: &AppDefinition,
    config: &super::app::AppConfig,
    earlier: Vec<Violation>,
) -> Result<(), ValidationError> {
    let mut r = Report { violations: earlier };
    id_rules(&mut r, app);
    command_rules(&mut r, app);
    resource_rules(&mut r, app, config);
    scheduling_rules(&mut r, app);
    network_rules(&mut r, app);
    port_rules(&mut r, app);
    if let Some(container) = &app.container {
        container_rules(&mut r, app, container, config);
    }
    health_check_rules(&mut r, app);
    readiness_rules(&mut r, app);
    check_rules(&mut r, app);
    constraint_rules(&mut r, app);
    secret_and_env_rules(&mut r, app, config);
    label_rules(&mut r, app);
    role_rules(&mut r, app, config);
    for (i, artifact) in app.fetch.iter().enumerate() {
        r.check(is_valid_uri(&artifact.uri), &format!("/fetch({i})/uri"), MSG_URI);
    }
    r.into_result()
}

fn id_rules(r: &mut Report, app: &AppDefinition) {
    if app.id.is_root() {
        r.add("/id", "Path must contain at least one path element");
        r.add("/", "must not be root");
    }
    r.check(!ends_with_reserved_keyword(&app.id), "/id", reserved_keyword_message());
    for (i, dependency) in app.dependencies.iter().enumerate() {
        r.check(!ends_with_reserved_keyword(dependency), &format!("/dependencies({i})"), reserved_keyword_message());
    }
}

fn ends_with_reserved_keyword(id: &PathId) -> bool {
    id.name().is_some_and(|last| RESERVED_KEYWORDS.contains(&last))
}

fn reserved_keyword_message() -> String {
    format!("must not end with any of the following reserved keywords: {}", RESERVED_KEYWORDS.join(", "))
}

fn command_rules(r: &mut Report, app: &AppDefinition) {
    let cmd = app.cmd.is_some();
    let args = !app.args.is_empty();
    let container = app.container.as_ref().is_some_and(|c| c.docker.is_some() || c.kind == EngineType::Mesos);
    r.check((cmd ^ args) || (!(cmd && args) && container), "/", MSG_CMD_ARGS_CONTAINER);
    // Marathon's check really is "longer than one character".
    r.check(app.cmd.as_ref().is_none_or(|c| c.chars().count() > 1), "/", "must not be an empty string");
    r.check(is_valid_executor(&app.executor), "/executor", MSG_EXECUTOR_PATTERN);
}

/// `^(//cmd)|(/?[^/]+(/[^/]+)*)|$`, matched against the whole string as Java's `matches` does.
fn is_valid_executor(executor: &str) -> bool {
    if executor.is_empty() || executor == "//cmd" {
        return true;
    }
    let rest = executor.strip_prefix('/').unwrap_or(executor);
    rest.split('/').all(|segment| !segment.is_empty())
}

fn resource_rules(r: &mut Report, app: &AppDefinition, config: &super::app::AppConfig) {
    r.check(app.instances >= 0, "/instances", format!("got {}, expected 0 or more", app.instances));
    for (name, value) in [("cpus", app.cpus), ("mem", app.mem), ("disk", app.disk)] {
        r.check(value >= 0.0, &format!("/{name}"), format!("got {}, expected 0.0 or more", java_double(value)));
    }
    r.check(app.gpus >= 0, "/gpus", format!("got {}, expected 0 or more", app.gpus));
    if app.gpus > 0 {
        let docker = app.container.as_ref().is_some_and(|c| c.kind == EngineType::Docker);
        r.check(!docker, "/", "GPU resources only work with the Mesos containerizer");
        r.check(config.gpu_resources_enabled, "/", feature_message("gpu_resources"));
    }
    if let Some(limits) = &app.resource_limits {
        for (name, limit, requested) in [("cpus", &limits.cpus, app.cpus), ("mem", &limits.mem, app.mem)] {
            let path = format!("/resourceLimits/{name}");
            match limit {
                Some(ResourceLimit::Text(text)) if text != "unlimited" => {
                    r.add(path, format!("'{text}' is an invalid resource limit. It must be 'unlimited' or a number"));
                }
                Some(ResourceLimit::Number(n)) if *n < requested => r.add(
                    path,
                    format!(
                        "resource limit must be greater than or equal to requested resource ({})",
                        java_double(requested)
                    ),
                ),
                _ => {}
            }
        }
    }
}

fn feature_message(feature: &str) -> String {
    format!("Feature {feature} is not enabled. Enable with --enable_features {feature})")
}

fn scheduling_rules(r: &mut Report, app: &AppDefinition) {
    r.check(app.backoff_seconds >= 0, "/backoffSeconds", format!("got {}, expected 0 or more", app.backoff_seconds));
    r.check(
        app.backoff_factor >= 1.0,
        "/backoffFactor",
        format!("got {}, expected 1.0 or more", java_double(app.backoff_factor)),
    );
    r.check(
        app.max_launch_delay_seconds >= 0,
        "/maxLaunchDelaySeconds",
        format!("got {}, expected 0 or more", app.max_launch_delay_seconds),
    );
    if let Some(grace) = app.task_kill_grace_period_seconds {
        r.check(grace >= 0, "/taskKillGracePeriodSeconds", format!("got {grace}, expected 0 or more"));
    }
    let strategy = app.upgrade_strategy;
    for (name, value) in [
        ("minimumHealthCapacity", strategy.minimum_health_capacity),
        ("maximumOverCapacity", strategy.maximum_over_capacity),
    ] {
        r.check(
            (0.0..=1.0).contains(&value),
            &format!("/upgradeStrategy/{name}"),
            format!("got {}, expected between 0.0 and 1.0", java_double(value)),
        );
    }
    let single_instance = app.labels.get("MARATHON_SINGLE_INSTANCE_APP").is_some_and(|v| v == "true");
    if single_instance {
        r.check(app.instances <= 1, "/", "Single instance app may only have one instance");
        must_be_zero(r, "/upgradeStrategy/minimumHealthCapacity", strategy.minimum_health_capacity);
        must_be_zero(r, "/upgradeStrategy/maximumOverCapacity", strategy.maximum_over_capacity);
    }
    if app.residency.is_some() {
        must_be_zero(r, "/upgradeStrategy/maximumOverCapacity", strategy.maximum_over_capacity);
        r.check(
            app.unreachable_strategy == UnreachableStrategy::Disabled,
            "/",
            "unreachableStrategy must be disabled for resident tasks",
        );
    }
    if let UnreachableStrategy::Enabled { inactive_after_seconds: inactive, expunge_after_seconds: expunge } =
        app.unreachable_strategy
    {
        let path = "/unreachableStrategy/inactiveAfterSeconds";
        if inactive < 0 {
            r.add(path, format!("inactiveAfterSeconds ({inactive}) must be greater than or equal to 0"));
        } else if inactive > expunge {
            r.add(
                path,
                format!(
                    "inactiveAfterSeconds ({inactive}) must be less or equal to expungeAfterSeconds, which is {expunge}"
                ),
            );
        }
    }
}

fn must_be_zero(r: &mut Report, path: &str, value: f64) {
    r.check(value == 0.0, path, format!("got {}, expected 0.0", java_double(value)));
}

fn network_rules(r: &mut Report, app: &AppDefinition) {
    let nets = &app.networks;
    let count = |mode: NetworkMode| nets.iter().filter(|n| n.mode == mode).count();
    let (host, bridge, container) =
        (count(NetworkMode::Host), count(NetworkMode::ContainerBridge), count(NetworkMode::Container));
    r.check(
        !nets.iter().any(|n| n.mode == NetworkMode::Container && n.name.is_none()),
        "/networks",
        MSG_NETWORK_NAME_MUST_BE_SPECIFIED,
    );
    r.check(
        !nets.iter().any(|n| n.mode == NetworkMode::Host && (n.name.is_some() || !n.labels.is_empty())),
        "/networks",
        "Host networks may not have names or labels",
    );
    r.check(
        !nets.iter().any(|n| n.mode == NetworkMode::ContainerBridge && n.name.is_some()),
        "/networks",
        "Bridge networks may not have names",
    );
    r.check(unique(nets.iter().filter_map(|n| n.name.as_deref())), "/networks", "Duplicate networks are not allowed");
    let shape_ok = (host == 1 && bridge == 0 && container == 0)
        || (host == 0 && bridge == 1 && container == 0)
        || (host == 0 && bridge == 0 && container > 0);
    r.check(
        shape_ok,
        "/networks",
        "May specify a single host network, single bridge network, or else 1-to-n container networks",
    );
    let docker = app.container.as_ref().is_some_and(|c| c.kind == EngineType::Docker);
    r.check(!(docker && container > 1), "/", MSG_DOCKER_SINGLE_CONTAINER_NETWORK);
    let host_networking = nets.iter().any(|n| n.mode == NetworkMode::Host);
    let has_mappings = app.container.as_ref().and_then(|c| c.port_mappings.as_ref()).is_some_and(|m| !m.is_empty());
    r.check(!(host_networking && has_mappings), "/", "portMappings are not allowed with host-networking");
    r.check(
        !app.has_non_host_networking() || app.port_definitions.is_empty(),
        "/",
        "portDefinitions are only allowed with host-networking",
    );
}

fn port_rules(r: &mut Report, app: &AppDefinition) {
    let defs = &app.port_definitions;
    r.check(unique(defs.iter().filter_map(|p| p.name.as_deref())), "/portDefinitions", MSG_PORT_NAMES_UNIQUE);
    r.check(
        unique(defs.iter().map(|p| p.port).filter(|p| *p != RANDOM_PORT)),
        "/portDefinitions",
        "Ports must be unique.",
    );
    for (i, p) in defs.iter().enumerate() {
        r.check(p.port >= 0, &format!("/portDefinitions({i})/port"), format!("got {}, expected 0 or more", p.port));
    }
}

fn container_rules(r: &mut Report, app: &AppDefinition, container: &Container, config: &super::app::AppConfig) {
    let mappings = container.port_mappings.as_deref().unwrap_or_default();
    r.check(
        unique(mappings.iter().filter_map(|m| m.name.as_deref())),
        "/container/portMappings",
        MSG_PORT_NAMES_UNIQUE,
    );
    let all_network_names: Vec<&str> = app.networks.iter().filter_map(|n| n.name.as_deref()).collect();
    let many_container_networks = app.networks.iter().filter(|n| n.mode == NetworkMode::Container).count() > 1;
    for (i, mapping) in mappings.iter().enumerate() {
        let path = format!("/container/portMappings({i})");
        if many_container_networks {
            r.check(
                mapping.host_port.is_none() || mapping.network_names.len() == 1,
                &path,
                MSG_NETWORK_NAME_REQUIRED_FOR_MULTIPLE,
            );
        }
        for (j, name) in mapping.network_names.iter().enumerate() {
            r.check(
                all_network_names.contains(&name.as_str()),
                &format!("{path}/networkNames({j})"),
                format!("is not one of ({})", all_network_names.join(",")),
            );
        }
    }
    volume_rules(r, app, container, config);
    match (container.kind, &container.docker) {
        (EngineType::Docker, None) => r.add("/container/docker", "not defined"),
        (EngineType::Docker, Some(docker)) => {
            r.check(!docker.image.is_empty(), "/container/docker/image", "must not be empty");
            r.check(
                docker.pull_config_secret.is_none(),
                "/container/docker/pullConfig",
                "pullConfig is not supported with Docker containerizer",
            );
        }
        (EngineType::Mesos, Some(docker)) => {
            r.check(!docker.image.is_empty(), "/container/docker/image", "must not be empty");
            if let Some(secret) = &docker.pull_config_secret {
                r.check(config.secrets_enabled, "/container/docker/pullConfig", feature_message("secrets"));
                r.check(
                    app.secrets.contains_key(secret),
                    "/container/docker/pullConfig",
                    "pullConfig.secret must refer to an existing secret",
                );
            }
        }
        (EngineType::Mesos, None) => {}
    }
}

fn volume_rules(r: &mut Report, app: &AppDefinition, container: &Container, config: &super::app::AppConfig) {
    let external_names: Vec<&str> = container
        .volumes
        .iter()
        .filter_map(|v| match v {
            Volume::External { external: ExternalVolumeInfo::Dvdi { name, .. }, .. } => name.as_deref(),
            Volume::External { external: ExternalVolumeInfo::Csi { name, .. }, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    r.check(unique(external_names.iter()), "/container/volumes", "Volume names must be unique");
    for (i, volume) in container.volumes.iter().enumerate() {
        let path = format!("/container/volumes({i})");
        match volume {
            Volume::Host { container_path, host_path, .. } => {
                r.check(!container_path.is_empty(), &format!("{path}/containerPath"), "must not be empty");
                r.check(!host_path.is_empty(), &format!("{path}/hostPath"), "must not be empty");
            }
            Volume::Persistent { container_path, persistent, mode } => {
                let cp = format!("{path}/containerPath");
                r.check(!container_path.is_empty(), &cp, "must not be empty");
                r.check(container_path != "." && container_path != "..", &cp, "can not be one of (.,..)");
                r.check(!container_path.contains('/'), &cp, "value must not contain \"/\"");
                r.check(*mode == ReadMode::Rw, &format!("{path}/mode"), format!("got {mode}, expected RW"));
                let pp = format!("{path}/persistent");
                r.check(
                    persistent.size > 0,
                    &format!("{pp}/size"),
                    format!("got {}, expected more than 0", persistent.size),
                );
                let is_root = persistent.kind.is_none_or(|k| k == super::app::PersistentVolumeType::Root);
                let is_mount = persistent.kind == Some(super::app::PersistentVolumeType::Mount);
                r.check(
                    !is_root || persistent.constraints.is_empty(),
                    &pp,
                    "Constraints on root volumes are not supported",
                );
                r.check(is_mount || persistent.max_size.is_none(), &pp, "Only mount volumes can have maxSize");
                r.check(
                    persistent.max_size.is_none_or(|m| m > persistent.size),
                    &pp,
                    "Max size must be larger than size",
                );
                for (j, c) in persistent.constraints.iter().enumerate() {
                    if let Some(message) = volume_constraint_problem(c) {
                        r.add(format!("{pp}/constraints({j})"), message);
                    }
                }
            }
            Volume::External { container_path, external, .. } => {
                r.check(!container_path.is_empty(), &format!("{path}/containerPath"), "must not be empty");
                r.check(config.external_volumes_enabled, &path, feature_message("external_volumes"));
                if let ExternalVolumeInfo::Dvdi { name, provider, .. } = external {
                    r.check(
                        name.as_ref().is_some_and(|n| !n.is_empty()),
                        &format!("{path}/external/name"),
                        "must not be empty",
                    );
                    r.check(provider.is_some(), &format!("{path}/external/provider"), "not defined");
                }
            }
            Volume::Secret { secret, .. } => {
                r.check(config.secrets_enabled, "/", feature_message("secrets"));
                r.check(app.secrets.contains_key(secret), &path, "volume.secret must refer to an existing secret");
            }
        }
    }
}

/// Persistent volume constraints: only `["path", "LIKE"|"UNLIKE", regex]`.
fn volume_constraint_problem(c: &[String]) -> Option<String> {
    match c {
        [] | [_] => Some("Missing field and operator".to_owned()),
        [field, op, value] if field == "path" => match op.as_str() {
            "LIKE" | "UNLIKE" if is_valid_regex(value) => None,
            "LIKE" | "UNLIKE" => Some("Invalid regular expression".to_owned()),
            _ if ConstraintOperator::from_wire(op).is_some() => Some("Operator must be one of LIKE, UNLIKE".to_owned()),
            _ => Some(format!("unknown constraint operator {op}")),
        },
        _ => Some(format!("Unsupported constraint {}", c.join(","))),
    }
}

fn health_check_rules(r: &mut Report, app: &AppDefinition) {
    let port_count = app.port_count();
    let docker = app.container.as_ref().is_some_and(|c| c.kind == EngineType::Docker);
    for (i, check) in app.health_checks.iter().enumerate() {
        let path = format!("/healthChecks({i})");
        r.check(port_index_valid(check, port_count), &path, MSG_PORT_INDEX);
        let mesos_network_check = matches!(
            check.protocol,
            HealthCheckProtocol::MesosHttp | HealthCheckProtocol::MesosHttps | HealthCheckProtocol::MesosTcp
        );
        r.check(check.ip_protocol == IpProtocol::Ipv4 || (mesos_network_check && docker), &path, MSG_IPV6);
        match (&check.command, check.protocol) {
            (Some(_), HealthCheckProtocol::Command) => {
                r.check(
                    check.path.is_none() && check.port.is_none(),
                    &path,
                    "Invalid combination of HealthCheck parameters",
                );
            }
            (Some(_), protocol) => r.add(&path, format!("illegal protocol {protocol} specified with command")),
            (None, HealthCheckProtocol::Command) => {
                r.add(&path, "illegal protocol COMMAND for non-command health check");
            }
            (None, _) => {}
        }
    }
    let command_checks = app.health_checks.iter().filter(|c| c.command.is_some()).count();
    let mesos_checks = app.health_checks.iter().filter(|c| c.is_mesos_check()).count();
    r.check(mesos_checks - command_checks <= 1, "/", "AppDefinition can contain at most one Mesos health check");
}

/// A Marathon-run check (HTTP, HTTPS, TCP) must name an existing port, or be the only way to
/// reach the app's only port.
fn port_index_valid(check: &HealthCheck, port_count: usize) -> bool {
    if check.command.is_some() || !check.is_marathon_check() {
        return true;
    }
    match check.port_index {
        Some(index) => usize::try_from(index).is_ok_and(|i| i < port_count),
        None => check.port.is_some() || port_count == 1,
    }
}

fn readiness_rules(r: &mut Report, app: &AppDefinition) {
    let count = app.readiness_checks.len();
    r.check(count <= 1, "/readinessChecks", format!("has size {count}, expected 1 or less"));
    let names = app.port_names();
    for (i, check) in app.readiness_checks.iter().enumerate() {
        let path = format!("/readinessChecks({i})");
        r.check(!check.name.is_empty(), &format!("{path}/name"), "must not be empty");
        r.check(!check.path.is_empty(), &format!("{path}/path"), "must not be empty");
        r.check(
            names.contains(check.port_name.as_str()),
            &format!("{path}/portName"),
            format!("No port definition reference for portName {}", check.port_name),
        );
        r.check(
            check.timeout_seconds < check.interval_seconds,
            &format!("{path}/timeoutSeconds"),
            format!("got {}, expected less than {}", check.timeout_seconds, check.interval_seconds),
        );
        r.check(
            check.timeout_seconds > 0,
            &format!("{path}/timeoutSeconds"),
            format!("got {}, expected more than 0", check.timeout_seconds),
        );
        r.check(
            !check.http_status_codes_for_ready.is_empty(),
            &format!("{path}/httpStatusCodesForReady"),
            "must not be empty",
        );
    }
}

fn check_rules(r: &mut Report, app: &AppDefinition) {
    let Some(check) = &app.check else { return };
    let docker = app.container.as_ref().is_some_and(|c| c.kind == EngineType::Docker);
    r.check(!docker, "/", "AppDefinition must not use 'checks' if using docker");
    let port_count = app.port_count();
    let index =
        check.http.as_ref().map(|h| (h.port_index, h.port)).or(check.tcp.as_ref().map(|t| (t.port_index, t.port)));
    if let Some((port_index, port)) = index {
        let ok = match port_index {
            Some(i) => usize::try_from(i).is_ok_and(|i| i < port_count),
            None => port.is_some() || port_count == 1,
        };
        r.check(
            ok,
            "/check",
            "check port index must address an element of the ports array or container port mappings.",
        );
    }
}

fn constraint_rules(r: &mut Report, app: &AppDefinition) {
    for (i, constraint) in app.constraints.iter().enumerate() {
        if let Some(message) = constraint_problem(constraint) {
            r.add(format!("/constraints({i})"), message);
        }
    }
}

/// Marathon's `complyWithAppConstraintRules`: the shape, the operator, and the value each
/// operator needs. (Whether agents satisfy it is the constraint matcher's business.)
pub fn constraint_problem(c: &[String]) -> Option<&'static str> {
    if !(2..=3).contains(&c.len()) {
        return Some("Each constraint must have either 2 or 3 fields");
    }
    let (field, op, value) = (&c[0], &c[1], c.get(2));
    if field.is_empty() {
        return Some("illegal constraint specification");
    }
    let Some(operator) = ConstraintOperator::from_wire(&op.to_uppercase()) else {
        return Some(MSG_CONSTRAINT_OPERATOR_INVALID);
    };
    let is_int = |v: &String| v.parse::<i32>().is_ok();
    match operator {
        ConstraintOperator::Unique => value.map(|_| "UNIQUE does not accept a value"),
        ConstraintOperator::Cluster => None,
        ConstraintOperator::GroupBy => {
            (!value.is_none_or(is_int)).then_some("GROUP BY must define an integer value or else no value at all")
        }
        ConstraintOperator::MaxPer => (!value.is_some_and(is_int)).then_some("MAX_PER requires an integer value"),
        ConstraintOperator::Like | ConstraintOperator::Unlike => match value {
            None => Some("LIKE and UNLIKE require a non-empty, regular expression value"),
            Some(pattern) if !is_valid_regex(pattern) => Some("is not a valid regular expression"),
            Some(_) => None,
        },
        ConstraintOperator::Is => {
            let text = value.map_or("", String::as_str);
            let literal = text.chars().all(|ch| ch.is_ascii_alphanumeric() || "_/.-".contains(ch));
            (!literal).then_some(
                "IS only supports Mesos text and float values (see http://mesos.apache.org/documentation/latest/attributes-resources/)",
            )
        }
    }
}

fn secret_and_env_rules(r: &mut Report, app: &AppDefinition, config: &super::app::AppConfig) {
    if !app.secrets.is_empty() {
        r.check(config.secrets_enabled, "/secrets", feature_message("secrets"));
    }
    for (i, (name, secret)) in app.secrets.iter().enumerate() {
        r.check(!name.is_empty(), &format!("/secrets/keys({i})"), "must not be empty");
        r.check(!secret.source.is_empty(), &format!("/secrets/{name}/source"), "must not be empty");
    }
    for (i, name) in app.env.keys().enumerate() {
        r.check(!name.is_empty(), &format!("/env/keys({i})"), "must not be empty");
    }
    let uses_secret_refs = app.env.values().any(|v| matches!(v, EnvValue::Secret(_)));
    r.check(
        config.secrets_enabled || !uses_secret_refs,
        "/env",
        "use of secret-references in the environment requires the secrets feature to be enabled",
    );
    for (name, value) in &app.env {
        if let EnvValue::Secret(secret) = value {
            r.check(app.secrets.contains_key(secret), &format!("/env/{name}/secret"), "references an undefined secret");
        }
    }
}

fn label_rules(r: &mut Report, app: &AppDefinition) {
    let label = |key: &str| app.labels.get(key).filter(|v| !v.is_empty());
    if label("DCOS_MIGRATION_API_VERSION").is_some() {
        let complies = app.labels.get("DCOS_MIGRATION_API_VERSION").is_some_and(|v| v == "v1")
            && label("DCOS_PACKAGE_FRAMEWORK_NAME").is_some()
            && label("DCOS_MIGRATION_API_PATH").is_some();
        r.check(
            complies,
            "/",
            "DCOS_PACKAGE_FRAMEWORK_NAME and DCOS_MIGRATION_API_PATH must be defined when using DCOS_MIGRATION_API_VERSION",
        );
    }
}

fn role_rules(r: &mut Report, app: &AppDefinition, config: &super::app::AppConfig) {
    if !config.valid_roles.contains(&app.role) {
        let valid: Vec<&str> = config.valid_roles.iter().map(String::as_str).collect();
        r.add("/role", format!("got {}, expected one of: [{}]", app.role, valid.join(", ")));
    }
    let roles = &app.accepted_resource_roles;
    if roles.is_empty() {
        return;
    }
    for (i, role) in roles.iter().enumerate() {
        if let Some(problem) = resource_role_problem(role) {
            r.add(format!("/acceptedResourceRoles({i})"), problem);
        }
    }
    if app.is_resident() {
        r.check(
            roles.len() == 1 && roles[0] == "*",
            "/acceptedResourceRoles",
            "A resident app must have `acceptedResourceRoles = [\"*\"]`.",
        );
    }
    let allowed: BTreeSet<&str> = ["*", app.role.as_str()].into_iter().collect();
    r.check(
        roles.len() <= 2 && roles.iter().all(|role| allowed.contains(role.as_str())),
        "/acceptedResourceRoles",
        format!("acceptedResourceRoles can only contain {}", allowed.into_iter().collect::<Vec<_>>().join(" and ")),
    );
}

/// Mesos role names: not empty, `.` or `..`, no leading `-`, no whitespace, `/` or DEL.
fn resource_role_problem(role: &str) -> Option<String> {
    match role {
        "" => return Some("A role name must not be \"\".".to_owned()),
        "." => return Some("A role name must not be \".\".".to_owned()),
        ".." => return Some("A role name must not be \"..\".".to_owned()),
        _ => {}
    }
    if role.starts_with('-') {
        return Some("A role name must not start with a '-'.".to_owned());
    }
    const FORBIDDEN: [(char, &str); 8] = [
        ('\u{09}', "horizontal tab (\\x09)"),
        ('\u{0a}', "line feed (\\x0a)"),
        ('\u{0b}', "vertical tab (\\x0b)"),
        ('\u{0c}', "form feed (\\x0c)"),
        ('\u{0d}', "carriage return (\\x0d)"),
        (' ', "space (\\x20)"),
        ('/', "slash (\\x2f)"),
        ('\u{7f}', "backspace (\\x7f)"),
    ];
    FORBIDDEN
        .iter()
        .find(|(ch, _)| role.contains(*ch))
        .map(|(_, name)| format!("A role name must not include a {name} character."))
}

fn unique<T: Ord>(items: impl IntoIterator<Item = T>) -> bool {
    let mut seen = BTreeSet::new();
    items.into_iter().all(|item| seen.insert(item))
}

// ---------------------------------------------------------------------------------------------
// Approximations of Java's URI and regex parsers
// ---------------------------------------------------------------------------------------------

/// Whether Java's `new URI(text)` would accept `text`: no characters URIs forbid (space,
/// controls, `"<>\^`{|}` and non-ASCII are refused — Java accepts some non-ASCII "other"
/// characters, which are rare in fetch URIs), `%` followed by two hex digits, a scheme that
/// starts with a letter, and no empty scheme.
pub fn is_valid_uri(text: &str) -> bool {
    const FORBIDDEN: &str = " \"<>\\^`{|}";
    let bytes = text.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if b.is_ascii_control() || !b.is_ascii() || FORBIDDEN.contains(*b as char) {
            return false;
        }
        if *b == b'%' {
            let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
        }
    }
    if text.starts_with(':') {
        return false;
    }
    let before_path = text.split(['/', '?', '#']).next().unwrap_or("");
    match before_path.split_once(':') {
        Some((scheme, _)) => {
            scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }
        None => true,
    }
}

/// Whether Java's `Pattern.compile` would accept `pattern`, approximately: balanced groups and
/// classes, no quantifier without something to repeat, no trailing backslash, well-formed
/// `{n,m}` counts.
pub fn is_valid_regex(pattern: &str) -> bool {
    let chars: Vec<char> = pattern.chars().collect();
    let mut depth = 0usize;
    let mut i = 0;
    // Whether the previous token can be repeated by a quantifier.
    let mut repeatable = false;
    while let Some(&ch) = chars.get(i) {
        match ch {
            '\\' => {
                if chars.get(i + 1).is_none() {
                    return false;
                }
                i += 2;
                repeatable = true;
                continue;
            }
            '[' => match class_end(&chars, i) {
                Some(end) => {
                    i = end + 1;
                    repeatable = true;
                    continue;
                }
                None => return false,
            },
            '(' => {
                depth += 1;
                repeatable = false;
                if chars.get(i + 1) == Some(&'?') {
                    i += 2;
                    continue;
                }
            }
            ')' => {
                if depth == 0 {
                    return false;
                }
                depth -= 1;
                repeatable = true;
            }
            '|' => repeatable = false,
            '*' | '+' | '?' => {
                if !repeatable {
                    return false;
                }
                // A lazy or possessive suffix belongs to this quantifier.
                if matches!(chars.get(i + 1), Some('?') | Some('+')) {
                    i += 1;
                }
                repeatable = false;
            }
            '{' => match count_end(&chars, i) {
                Some(end) if repeatable => {
                    i = end + 1;
                    repeatable = false;
                    continue;
                }
                _ => return false,
            },
            _ => repeatable = true,
        }
        i += 1;
    }
    depth == 0
}

/// The index of the `]` closing the class opened at `start`, if any.
fn class_end(chars: &[char], start: usize) -> Option<usize> {
    let mut i = start + 1;
    if chars.get(i) == Some(&'^') {
        i += 1;
    }
    // A `]` right after the opening is a literal.
    if chars.get(i) == Some(&']') {
        i += 1;
    }
    let mut nested = 0usize;
    while let Some(&ch) = chars.get(i) {
        match ch {
            '\\' => i += 1,
            '[' => nested += 1,
            ']' if nested == 0 => return Some(i),
            ']' => nested -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// The index of the `}` of a well-formed `{n}`, `{n,}` or `{n,m}` (n <= m) at `start`.
fn count_end(chars: &[char], start: usize) -> Option<usize> {
    let close = chars.iter().skip(start).position(|c| *c == '}')? + start;
    let inner: String = chars.get(start + 1..close)?.iter().collect();
    let (low, high) = match inner.split_once(',') {
        Some((low, high)) => (low, Some(high)),
        None => (inner.as_str(), None),
    };
    let low: u32 = low.parse().ok()?;
    match high {
        Some("") | None => Some(close),
        Some(high) => (high.parse::<u32>().ok()? >= low).then_some(close),
    }
}
