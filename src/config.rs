//! `flotilla master --config FILE`: the master's TOML configuration, parsed strictly (an
//! unknown key is an error, not a typo silently ignored) and validated before anything
//! starts. Every error names the file, and for a syntax or type error the line and column.
//!
//! ```toml
//! [node]
//! id = "m1"                         # this master's node id (its certificate must name it)
//! data_dir = "/var/lib/flotilla/m1" # Raft log and hard state under data_dir/raft
//! listen = "0.0.0.0:7100"           # UDP address of the QUIC transport
//! pki_dir = "/etc/flotilla/pki"     # ca.crt, <id>.crt, <id>.key [default: data_dir/pki]
//! join = false                      # true: join a running cluster as a non-voter [default: false]
//!
//! [[masters]]                       # every master, this one included (1, 3 or 5 voters)
//! id = "m1"
//! address = "10.0.0.1:7100"
//!
//! [api]                             # optional
//! listen = "0.0.0.0:5050"           # HTTP API (/master/state, /state) [default: 0.0.0.0:5050]
//!
//! [cluster]                         # optional; the leading master's settings (Mesos defaults)
//! agent_ping_interval_secs = 15     # a ping to every agent this often
//! max_agent_ping_timeouts = 5       # this many missed pings: the agent is unreachable
//! allocation_interval_ms = 1000     # a full allocation round this often
//! offer_timeout_secs = 120          # outstanding offers are rescinded after this (0: never)
//! min_allocatable = ["cpus:0.01", "mem:32"] # an offer holds at least one of these bags
//!
//! [cluster.roles."eng/web"]         # optional, any number: a role's weight and quota
//! weight = 2.0                      # its share of the cluster counts half [default: 1.0]
//! guarantee = "cpus:10;mem:16384"   # offered first, until it holds this much [default: none]
//! limit = "cpus:40;mem:65536"       # never offered beyond this much [default: no limit]
//!
//! [dns]                             # optional; off on masters unless enabled (see
//! [l4lb]                            # `discovery_config` for both sections' keys)
//!
//! [chaos]                           # optional; off unless enabled
//! enabled = true                    # run the chaos actor: faults may be injected on purpose
//!                                   # (`/chaos/v1`, `flotilla chaos`); never in production
//!
//! [raft]                            # optional; the defaults suit a LAN
//! election_timeout_min_ms = 150
//! election_timeout_max_ms = 300
//! heartbeat_interval_ms = 50
//! ```
//!
//! # Joining a running cluster
//!
//! Without `join`, every listed master is a voter of the bootstrap configuration: list the
//! same masters on each of them when the cluster is created. To add a master later, start it
//! with `join = true` and the running masters (and itself) listed: it dials them, follows
//! their leader and catches up, but does not vote until an operator adds it
//! (`flotilla members add <id>`). The configuration in the Raft log (and its snapshots)
//! always wins over the file, so after a restart `join` and the list matter only for the
//! addresses to dial; a master with an empty log and `join = true` never elects itself.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use flotilla_actors::allocator::RoleConfig;
use flotilla_actors::election::core::RaftConfig;
use flotilla_actors::mesos::core::{Resources, UNRESERVED, parse_resources, validate_role};
use serde::Deserialize;

/// A master's configuration.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterConfig {
    pub node: NodeSection,
    pub masters: Vec<MasterEntry>,
    #[serde(default)]
    pub raft: RaftSection,
    #[serde(default)]
    pub api: ApiSection,
    #[serde(default)]
    pub cluster: ClusterSection,
    #[serde(default)]
    pub dns: crate::discovery_config::DnsSection,
    #[serde(default)]
    pub l4lb: crate::discovery_config::L4lbSection,
    #[serde(default)]
    pub chaos: ChaosSection,
}

/// `[chaos]` of a master's or an agent's file: whether the node runs the chaos actor. Off by
/// default: a node injects faults on purpose only when its operator asked for it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChaosSection {
    pub enabled: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    pub listen: SocketAddr,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection { listen: SocketAddr::from(([0, 0, 0, 0], 5050)) }
    }
}

/// The leading master's settings (see [`flotilla_actors::master::core::MasterConfig`]).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    pub agent_ping_interval_secs: u64,
    pub max_agent_ping_timeouts: u32,
    pub allocation_interval_ms: u64,
    pub offer_timeout_secs: u64,
    /// Mesos's text form, one bag per entry.
    pub min_allocatable: Vec<String>,
    pub roles: BTreeMap<String, RoleSection>,
}

/// A role's weight and quota (Mesos's `/weights` and `/quota`, set in the file).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSection {
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Scalars in Mesos's text form.
    pub guarantee: Option<String>,
    pub limit: Option<String>,
}

fn default_weight() -> f64 {
    1.0
}

impl RoleSection {
    fn role_config(&self, role: &str) -> anyhow::Result<RoleConfig> {
        validate_role(role).map_err(|e| anyhow!("cluster.roles: {e}"))?;
        if role == UNRESERVED {
            bail!("cluster.roles: \"*\" (unreserved) takes no weight or quota");
        }
        if !self.weight.is_finite() || self.weight <= 0.0 {
            bail!("cluster.roles.\"{role}\".weight: {} must be a number above 0", self.weight);
        }
        let scalars = |key: &str, text: &Option<String>| -> anyhow::Result<Option<Resources>> {
            let Some(text) = text else { return Ok(None) };
            let bag = unreserved_bag(text).map_err(|e| anyhow!("cluster.roles.\"{role}\".{key}: {e}"))?;
            if let Some((name, _)) = bag.all_ranges().next() {
                bail!("cluster.roles.\"{role}\".{key}: {name} is a range; a quota holds scalars only");
            }
            Ok(Some(bag))
        };
        let guarantee = scalars("guarantee", &self.guarantee)?.unwrap_or_default();
        let limit = scalars("limit", &self.limit)?;
        if let Some(limit) = &limit
            && let Some((name, _)) = guarantee.scalars().find(|(name, milli)| limit.scalar_milli(name) < *milli)
        {
            bail!("cluster.roles.\"{role}\": the guarantee of {name} is above its limit");
        }
        Ok(RoleConfig { weight: self.weight, guarantee, limit })
    }
}

/// One bag of unreserved resources in Mesos's text form.
fn unreserved_bag(text: &str) -> anyhow::Result<Resources> {
    let mut by_role = parse_resources(text)?;
    let bag = by_role.remove(UNRESERVED).unwrap_or_default();
    if let Some(role) = by_role.keys().next() {
        bail!("`{text}` reserves for {role}; name unreserved resources only");
    }
    if bag.is_empty() {
        bail!("`{text}` holds no resources");
    }
    Ok(bag)
}

impl Default for ClusterSection {
    fn default() -> Self {
        let defaults = flotilla_actors::master::core::MasterConfig::default();
        ClusterSection {
            agent_ping_interval_secs: defaults.ping_interval_ms / 1000,
            max_agent_ping_timeouts: defaults.max_missed_pings,
            allocation_interval_ms: defaults.allocation_interval_ms,
            offer_timeout_secs: defaults.offer_timeout_ms / 1000,
            min_allocatable: vec!["cpus:0.01".into(), "mem:32".into()],
            roles: BTreeMap::new(),
        }
    }
}

impl ClusterSection {
    /// The master actor's settings; agents have ping interval × timeouts to re-register
    /// after a failover, as in Mesos.
    pub fn manager_config(&self) -> anyhow::Result<flotilla_actors::master::core::MasterConfig> {
        if self.agent_ping_interval_secs == 0 || self.max_agent_ping_timeouts == 0 || self.allocation_interval_ms == 0 {
            bail!(
                "cluster: agent_ping_interval_secs, max_agent_ping_timeouts and allocation_interval_ms must be at least 1"
            );
        }
        let ping_interval_ms = self.agent_ping_interval_secs * 1000;
        let min_allocatable = self
            .min_allocatable
            .iter()
            .map(|text| unreserved_bag(text).map_err(|e| anyhow!("cluster.min_allocatable: {e}")))
            .collect::<anyhow::Result<_>>()?;
        let roles = self
            .roles
            .iter()
            .map(|(role, section)| Ok((role.clone(), section.role_config(role)?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(flotilla_actors::master::core::MasterConfig {
            ping_interval_ms,
            max_missed_pings: self.max_agent_ping_timeouts,
            allocation_interval_ms: self.allocation_interval_ms,
            offer_timeout_ms: self.offer_timeout_secs * 1000,
            reregister_timeout_ms: ping_interval_ms * u64::from(self.max_agent_ping_timeouts),
            roles,
            min_allocatable,
            ..flotilla_actors::master::core::MasterConfig::default()
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    pub id: String,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub pki_dir: Option<PathBuf>,
    /// Start outside the configuration, to be added to a running cluster.
    #[serde(default)]
    pub join: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterEntry {
    pub id: String,
    pub address: SocketAddr,
}

/// Raft timing, in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSection {
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub heartbeat_interval_ms: u64,
}

impl Default for RaftSection {
    fn default() -> Self {
        let raft = RaftConfig::default();
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        RaftSection {
            election_timeout_min_ms: millis(raft.election_timeout_min),
            election_timeout_max_ms: millis(raft.election_timeout_max),
            heartbeat_interval_ms: millis(raft.heartbeat_interval),
        }
    }
}

/// Refuses an invalid node id, naming the key it came from.
pub fn validate_node_id(key: &str, id: &str) -> anyhow::Result<()> {
    if !flotilla_transport::core::identity::valid_id(id) {
        bail!("{key}: {id:?} is not a valid node id ([a-z0-9._-], 1 to 63 characters)");
    }
    Ok(())
}

/// The most masters a cluster may have.
const MAX_MASTERS: usize = 7;

impl MasterConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> anyhow::Result<MasterConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid configuration in {}", path.display()))
    }

    /// Parses and validates a configuration's text.
    pub fn parse(text: &str) -> anyhow::Result<MasterConfig> {
        let config: MasterConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        validate_node_id("node.id", &self.node.id)?;
        if self.masters.is_empty() || self.masters.len() > MAX_MASTERS {
            bail!(
                "masters lists {} masters; a cluster has 1 to {MAX_MASTERS} (3 or 5 tolerate failures)",
                self.masters.len()
            );
        }
        let mut ids = BTreeSet::new();
        for master in &self.masters {
            if !flotilla_transport::core::identity::valid_id(&master.id) {
                bail!("masters: {:?} is not a valid node id", master.id);
            }
            if !ids.insert(master.id.as_str()) {
                bail!("masters: {:?} is listed twice", master.id);
            }
        }
        if !ids.contains(self.node.id.as_str()) {
            bail!(
                "masters does not list this node ({:?}); every master, this one included, must be listed",
                self.node.id
            );
        }
        if self.node.join && self.masters.len() < 2 {
            bail!("node.join = true needs the running masters listed in masters, besides this node");
        }
        self.raft_config()?;
        self.cluster.manager_config()?;
        Ok(())
    }

    /// The Raft configuration, checked by the same rules `Raft::new` applies.
    pub fn raft_config(&self) -> anyhow::Result<RaftConfig> {
        let raft = &self.raft;
        let config = RaftConfig {
            election_timeout_min: Duration::from_millis(raft.election_timeout_min_ms),
            election_timeout_max: Duration::from_millis(raft.election_timeout_max_ms),
            heartbeat_interval: Duration::from_millis(raft.heartbeat_interval_ms),
            retransmit_timeout: Duration::from_millis(raft.heartbeat_interval_ms.saturating_mul(2).max(1)),
            ..RaftConfig::default()
        };
        config.validate().map_err(|error| anyhow::anyhow!("raft: {error}"))?;
        Ok(config)
    }

    pub fn pki_dir(&self) -> PathBuf {
        self.node.pki_dir.clone().unwrap_or_else(|| self.node.data_dir.join("pki"))
    }

    /// The other masters, with their addresses.
    pub fn peers(&self) -> Vec<&MasterEntry> {
        self.masters.iter().filter(|master| master.id != self.node.id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
id = "m1"
data_dir = "/tmp/m1"
listen = "127.0.0.1:7101"

[[masters]]
id = "m1"
address = "127.0.0.1:7101"

[[masters]]
id = "m2"
address = "127.0.0.1:7102"
"#;

    #[test]
    fn a_good_config_parses_with_defaults() {
        let config = MasterConfig::parse(GOOD).expect("valid");
        assert_eq!(config.peers().len(), 1);
        assert_eq!(config.pki_dir(), PathBuf::from("/tmp/m1/pki"));
        assert_eq!(config.raft_config().unwrap().election_timeout_min, Duration::from_millis(150));
    }

    fn error_of(text: &str) -> String {
        format!("{:#}", MasterConfig::parse(text).expect_err("invalid"))
    }

    #[test]
    fn a_typo_is_refused_with_its_line() {
        let error = error_of(&GOOD.replace("listen =", "lisen ="));
        assert!(error.contains("line 5"), "{error}");
        assert!(error.contains("lisen"), "{error}");
    }

    #[test]
    fn a_bad_value_is_refused_with_its_line() {
        let error = error_of(&GOOD.replace("\"127.0.0.1:7102\"", "\"nowhere\""));
        assert!(error.contains("line 13"), "{error}");
        assert!(error.contains("invalid socket address"), "{error}");
    }

    #[test]
    fn join_is_optional_and_needs_other_masters() {
        assert!(!MasterConfig::parse(GOOD).expect("valid").node.join);
        let joining = GOOD.replace("listen = \"127.0.0.1:7101\"", "listen = \"127.0.0.1:7101\"\njoin = true");
        assert!(MasterConfig::parse(&joining).expect("valid").node.join);
        let alone = joining.replace("[[masters]]\nid = \"m2\"\naddress = \"127.0.0.1:7102\"\n", "");
        assert!(error_of(&alone).contains("join = true needs the running masters"), "{}", error_of(&alone));
        assert!(error_of(&GOOD.replace("listen =", "join = \"yes\"\nlisten =")).contains("join"));
    }

    #[test]
    fn inconsistent_masters_are_refused_with_the_reason() {
        assert!(error_of(&GOOD.replace("id = \"m2\"", "id = \"m1\"")).contains("listed twice"));
        assert!(
            error_of(&GOOD.replace("id = \"m1\"\ndata_dir", "id = \"m9\"\ndata_dir"))
                .contains("does not list this node")
        );
        let bad_timing = format!("{GOOD}\n[raft]\nheartbeat_interval_ms = 500\n");
        assert!(error_of(&bad_timing).contains("heartbeat_interval"), "{}", error_of(&bad_timing));
    }

    fn with_cluster(section: &str) -> String {
        format!("{GOOD}\n[cluster]\n{section}\n")
    }

    #[test]
    fn roles_get_their_weights_and_quotas() {
        let text = with_cluster(
            "min_allocatable = [\"cpus:1\"]\n[cluster.roles.\"eng/web\"]\nweight = 2.5\nguarantee = \"cpus:4;mem:512\"\n\
             limit = \"cpus:8;mem:1024;gpus:1\"\n[cluster.roles.ads]\nlimit = \"cpus:2\"\n",
        );
        let manager = MasterConfig::parse(&text).expect("valid").cluster.manager_config().expect("valid");
        let web = &manager.roles["eng/web"];
        assert_eq!(web.weight, 2.5);
        assert_eq!(web.guarantee, Resources::cpus_mem_disk(4.0, 512.0, 0.0));
        assert_eq!(web.limit.as_ref().map(|l| l.scalar_milli("gpus")), Some(1000));
        assert_eq!(manager.roles["ads"].weight, 1.0, "the default weight");
        assert!(manager.roles["ads"].guarantee.is_empty());
        assert_eq!(manager.min_allocatable, [Resources::new().with_scalar("cpus", 1.0)]);
        let defaults = MasterConfig::parse(GOOD).unwrap().cluster.manager_config().unwrap();
        assert_eq!(defaults.min_allocatable.len(), 2, "DC/OS's cpus:0.01 or mem:32");
    }

    #[test]
    fn bad_roles_are_refused_with_the_reason() {
        let role = |body: &str| error_of(&with_cluster(&format!("[cluster.roles.eng]\n{body}")));
        assert!(role("weight = 0").contains("weight: 0 must be a number above 0"), "{}", role("weight = 0"));
        assert!(role("weight = -1.5").contains("above 0"));
        assert!(
            role("guarantee = \"cpus:4\"\nlimit = \"cpus:2\"").contains("the guarantee of cpus is above its limit")
        );
        assert!(role("guarantee = \"ports:[1-2]\"").contains("a quota holds scalars only"));
        assert!(role("guarantee = \"cpus(x):1\"").contains("reserves for x"), "{}", role("guarantee = \"cpus(x):1\""));
        assert!(
            role("limit = \"cpus:lots\"").contains("cluster.roles.\"eng\".limit"),
            "{}",
            role("limit = \"cpus:lots\"")
        );
        assert!(role("wieght = 2").contains("wieght"), "an unknown key");
        let star = error_of(&with_cluster("[cluster.roles.\"*\"]\nweight = 2"));
        assert!(star.contains("takes no weight or quota"), "{star}");
        let bad_name = error_of(&with_cluster("[cluster.roles.\"-eng\"]\nweight = 2"));
        assert!(bad_name.contains("cluster.roles"), "{bad_name}");
        let empty = error_of(&with_cluster("min_allocatable = [\"\"]"));
        assert!(empty.contains("cluster.min_allocatable") && empty.contains("holds no resources"), "{empty}");
    }
}
