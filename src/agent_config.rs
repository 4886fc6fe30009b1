//! `flotilla agent --config FILE`: the agent's TOML configuration, parsed as strictly as the
//! master's (unknown keys refused, errors with line and column), and the detection of the
//! machine's resources.
//!
//! ```toml
//! [node]
//! id = "a1"                          # this agent's node id (its certificate, role agent)
//! data_dir = "/var/lib/flotilla/a1"  # sandboxes and the task checkpoint
//! listen = "0.0.0.0:7200"            # UDP address of the QUIC transport
//! pki_dir = "/etc/flotilla/pki"      # ca.crt, <id>.crt, <id>.key [default: data_dir/pki]
//!
//! [[masters]]                        # every master (the agent registers with the leader)
//! id = "m1"
//! address = "10.0.0.1:7100"
//!
//! [agent]                            # optional; every key has a default
//! hostname = "node-1"                # [default: the system's hostname]
//! resources = "cpus:4;mem:8192;ports:[31000-32000];cpus(ads):2"
//!                                    # Mesos's text form; each named resource replaces the
//!                                    # detected one; `name(role)` reserves statically
//!                                    # [default: detected cpus, mem, disk, gpus; ports 31000-32000]
//! attributes = "rack:r1;zone:a"      # Mesos attributes, for placement constraints
//! isolation = "auto"                 # auto | isolating | plain [default: auto = isolating
//!                                    # when root with writable cgroups, else plain]
//! cgroup_root = "flotilla"           # the tasks' cgroups live under <controller>/<cgroup_root>
//! master_timeout_secs = 30           # no ping from the leader this long: look for a leader
//! status_retry_secs = 10             # first re-send of an unacknowledged status update
//! log_max_bytes = 10485760           # a task's stdout/stderr rotate at this size...
//! log_keep = 5                       # ...keeping this many old files
//! fetcher_cache_bytes = 2147483648   # the cache of URIs fetched with `cache` (under
//!                                    # data_dir/fetcher-cache), least recently used evicted
//! fetcher_stall_timeout_secs = 60    # a download without progress this long fails its task
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use flotilla_actors::agent::driver::LogRotation;
use flotilla_actors::agent::fetch::FetcherConfig;
use flotilla_actors::mesos::core::resources::{
    Ranges, Resources, RoleResources, UNRESERVED, parse_resources, to_milli,
};
use flotilla_actors::mesos::protocol::AgentInfo;
use serde::Deserialize;

use crate::config::{MasterEntry, validate_node_id};

/// An agent's configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    pub node: AgentNode,
    pub masters: Vec<MasterEntry>,
    #[serde(default)]
    pub agent: AgentSection,
    /// The node's DNS server and load balancer (on by default on agents).
    #[serde(default)]
    pub dns: crate::discovery_config::DnsSection,
    #[serde(default)]
    pub l4lb: crate::discovery_config::L4lbSection,
    /// Whether the agent runs the chaos actor (off by default; see `config::ChaosSection`).
    #[serde(default)]
    pub chaos: crate::config::ChaosSection,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentNode {
    pub id: String,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub pki_dir: Option<PathBuf>,
}

/// How tasks are isolated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IsolationMode {
    /// Isolating when root with writable cgroups, plain otherwise (and it says why).
    #[default]
    Auto,
    /// Namespaces and cgroups, or refuse to start.
    Isolating,
    /// Plain processes (no namespaces, no cgroup limits).
    Plain,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSection {
    pub hostname: Option<String>,
    pub resources: Option<String>,
    pub attributes: Option<String>,
    pub isolation: IsolationMode,
    pub cgroup_root: String,
    pub master_timeout_secs: u64,
    pub status_retry_secs: u64,
    pub log_max_bytes: u64,
    pub log_keep: u32,
    pub fetcher_cache_bytes: u64,
    pub fetcher_stall_timeout_secs: u64,
}

impl Default for AgentSection {
    fn default() -> Self {
        let logs = LogRotation::default();
        let fetcher = FetcherConfig::new(PathBuf::new());
        AgentSection {
            hostname: None,
            resources: None,
            attributes: None,
            isolation: IsolationMode::Auto,
            cgroup_root: "flotilla".to_owned(),
            master_timeout_secs: 30,
            status_retry_secs: 10,
            log_max_bytes: logs.max_bytes,
            log_keep: logs.keep,
            fetcher_cache_bytes: fetcher.cache_max_bytes,
            fetcher_stall_timeout_secs: fetcher.stall_timeout.as_secs(),
        }
    }
}

impl AgentFile {
    /// The agent of `flotilla dev`: every default, its data under `data_dir`, one master.
    pub fn dev(id: &str, data_dir: &Path, master: &str, master_addr: SocketAddr) -> AgentFile {
        AgentFile {
            node: AgentNode {
                id: id.to_owned(),
                data_dir: data_dir.to_owned(),
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                pki_dir: None,
            },
            masters: vec![MasterEntry { id: master.to_owned(), address: master_addr }],
            agent: AgentSection { cgroup_root: format!("flotilla-{id}"), ..AgentSection::default() },
            dns: crate::discovery_config::DnsSection {
                listen: Some(dev_dns_listen()),
                http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
                ..crate::discovery_config::DnsSection::default()
            },
            l4lb: crate::discovery_config::L4lbSection::default(),
            chaos: crate::config::ChaosSection::default(),
        }
    }

    pub fn load(path: &Path) -> anyhow::Result<AgentFile> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid configuration in {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<AgentFile> {
        let config: AgentFile = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        validate_node_id("node.id", &self.node.id)?;
        if self.masters.is_empty() {
            bail!("masters is empty: list every master, so the agent can find the leader");
        }
        for master in &self.masters {
            validate_node_id("masters", &master.id)?;
        }
        if self.masters.iter().any(|m| m.id == self.node.id) {
            bail!("node.id {:?} is also listed as a master; an agent needs its own node id", self.node.id);
        }
        let agent = &self.agent;
        if let Some(text) = &agent.resources {
            parse_resources(text).context("agent.resources")?;
        }
        if let Some(text) = &agent.attributes {
            parse_attributes(text).context("agent.attributes")?;
        }
        if agent.cgroup_root.is_empty() || agent.cgroup_root.contains("..") || agent.cgroup_root.starts_with('/') {
            bail!("agent.cgroup_root {:?} must be a relative path without '..'", agent.cgroup_root);
        }
        if agent.master_timeout_secs == 0 || agent.status_retry_secs == 0 || agent.fetcher_stall_timeout_secs == 0 {
            bail!(
                "agent.master_timeout_secs, agent.status_retry_secs and agent.fetcher_stall_timeout_secs must be at least 1"
            );
        }
        if agent.log_max_bytes < 4096 {
            bail!("agent.log_max_bytes must be at least 4096");
        }
        Ok(())
    }

    pub fn pki_dir(&self) -> PathBuf {
        self.node.pki_dir.clone().unwrap_or_else(|| self.node.data_dir.join("pki"))
    }

    /// What the agent offers: the detected resources, each replaced by the configured one of
    /// the same name (Mesos's rule), plus the configured reservations.
    pub fn agent_info(&self) -> anyhow::Result<AgentInfo> {
        let agent = &self.agent;
        let detected = detect_resources(&self.node.data_dir);
        let configured = agent.resources.as_deref().map(parse_resources).transpose()?.unwrap_or_default();
        let hostname = agent.hostname.clone().unwrap_or_else(system_hostname);
        let attributes = agent.attributes.as_deref().map(parse_attributes).transpose()?.unwrap_or_default();
        Ok(AgentInfo {
            id: self.node.id.clone(),
            hostname,
            resources: merge_resources(detected, configured),
            attributes,
            driver: String::new(),
            isolation_missing: Vec::new(),
        })
    }

    /// The agent actor's settings.
    pub fn agent_config(&self) -> anyhow::Result<flotilla_actors::agent::actor::AgentConfig> {
        let masters = self.masters.iter().map(|m| m.id.clone()).collect();
        let mut config =
            flotilla_actors::agent::actor::AgentConfig::new(self.agent_info()?, self.node.data_dir.clone(), masters);
        config.master_timeout = Duration::from_secs(self.agent.master_timeout_secs);
        config.status_retry = Duration::from_secs(self.agent.status_retry_secs);
        config.logs = LogRotation { max_bytes: self.agent.log_max_bytes, keep: self.agent.log_keep };
        config.fetcher.cache_max_bytes = self.agent.fetcher_cache_bytes;
        config.fetcher.stall_timeout = Duration::from_secs(self.agent.fetcher_stall_timeout_secs);
        Ok(config)
    }
}

/// `rack:r1;zone:a` → {rack: r1, zone: a}.
pub fn parse_attributes(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, value) = item.split_once(':').with_context(|| format!("`{item}` is not of the form name:value"))?;
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() || value.is_empty() {
            bail!("`{item}`: an attribute needs a name and a value");
        }
        if out.insert(name.to_owned(), value.to_owned()).is_some() {
            bail!("attribute `{name}` is given twice");
        }
    }
    Ok(out)
}

/// Detected resources replaced, name by name, by the configured unreserved ones; configured
/// reservations are added (and taken out of the unreserved part when they come from it).
pub fn merge_resources(detected: Resources, configured: RoleResources) -> RoleResources {
    let mut unreserved = Resources::new();
    let given = configured.get(UNRESERVED).cloned().unwrap_or_default();
    for (name, milli) in detected.scalars() {
        if given.scalar_milli(name) == 0 {
            unreserved.add_scalar(name, milli);
        }
    }
    for (name, ranges) in detected.all_ranges() {
        if given.ranges(name).is_empty() {
            unreserved.add_ranges(name, ranges);
        }
    }
    unreserved.add(&given);
    let mut out = RoleResources::new();
    for (role, resources) in configured.into_iter().filter(|(role, _)| role != UNRESERVED) {
        unreserved.subtract(&resources);
        out.insert(role, resources);
    }
    out.insert(UNRESERVED.to_owned(), unreserved);
    out
}

/// The machine's resources as Mesos detects them: every cpu, the memory less what the system
/// needs (1 GB, or half of a small machine), the data directory's file system less 5 GB (or
/// half), gpus from `/dev/nvidia<N>`, ports 31000-32000.
pub fn detect_resources(data_dir: &Path) -> Resources {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mem_mb = meminfo_total_mb().unwrap_or(1024.0);
    let mem = mem_mb - (mem_mb / 2.0).min(1024.0);
    let disk_mb = disk_total_mb(data_dir).unwrap_or(0.0);
    let disk = disk_mb - (disk_mb / 2.0).min(5120.0);
    let mut resources = Resources::new();
    resources.add_scalar("cpus", to_milli(cpus));
    resources.add_scalar("mem", to_milli(mem.floor()));
    resources.add_scalar("disk", to_milli(disk.floor()));
    resources.add_scalar("gpus", to_milli(count_gpus() as f64));
    resources.add_ranges("ports", &Ranges::single(31000, 32000));
    resources
}

fn meminfo_total_mb() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The size of the file system holding `dir` (or its nearest existing ancestor).
fn disk_total_mb(dir: &Path) -> Option<f64> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    let stat = nix::sys::statvfs::statvfs(existing).ok()?;
    Some(stat.blocks() as f64 * stat.fragment_size() as f64 / (1024.0 * 1024.0))
}

fn count_gpus() -> usize {
    let Ok(entries) = std::fs::read_dir("/dev") else { return 0 };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.strip_prefix("nvidia").is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        })
        .count()
}

pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Where `flotilla dev` serves DNS: loopback on DC/OS's Mesos-DNS port when it is free (so
/// `dig @127.0.0.1 -p 61053` works run after run), any free port otherwise; dev prints it.
fn dev_dns_listen() -> SocketAddr {
    let preferred = SocketAddr::from(([127, 0, 0, 1], crate::discovery_config::DEFAULT_DNS_PORT));
    let free = std::net::UdpSocket::bind(preferred).is_ok() && std::net::TcpListener::bind(preferred).is_ok();
    if free { preferred } else { SocketAddr::from(([127, 0, 0, 1], 0)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
id = "a1"
data_dir = "/tmp/a1"
listen = "127.0.0.1:7201"

[[masters]]
id = "m1"
address = "127.0.0.1:7101"

[agent]
resources = "cpus:2;mem:1024;cpus(ads):1"
attributes = "rack:r1;zone:a"
"#;

    fn error_of(text: &str) -> String {
        format!("{:#}", AgentFile::parse(text).expect_err("invalid"))
    }

    #[test]
    fn a_good_config_merges_configured_resources_over_detected_ones() {
        let config = AgentFile::parse(GOOD).expect("valid");
        let info = config.agent_info().unwrap();
        let unreserved = &info.resources[UNRESERVED];
        assert_eq!(unreserved.scalar("cpus"), 1.0, "2 configured, 1 of them reserved for ads");
        assert_eq!(unreserved.scalar("mem"), 1024.0);
        assert_eq!(unreserved.ports(), Ranges::single(31000, 32000), "detected default");
        assert!(unreserved.scalar("disk") > 0.0, "detected: {unreserved}");
        assert_eq!(info.resources["ads"].scalar("cpus"), 1.0);
        assert_eq!(info.attributes["zone"], "a");
        assert_eq!(config.agent.isolation, IsolationMode::Auto);
    }

    #[test]
    fn bad_configs_are_refused_with_the_line_or_the_reason() {
        let typo = error_of(&GOOD.replace("attributes =", "atributes ="));
        assert!(typo.contains("line 13") && typo.contains("atributes"), "{typo}");
        assert!(error_of(&GOOD.replace("cpus:2", "cpus:lots")).contains("not a number"));
        assert!(error_of(&GOOD.replace("rack:r1", "rack")).contains("name:value"));
        assert!(error_of(&GOOD.replace("id = \"a1\"", "id = \"m1\"")).contains("also listed as a master"));
        let bad_isolation = error_of(&format!("{GOOD}isolation = \"chroot\"\n"));
        assert!(bad_isolation.contains("chroot") && bad_isolation.contains("line"), "{bad_isolation}");
    }

    #[test]
    fn detection_finds_this_machine() {
        let detected = detect_resources(Path::new("/tmp"));
        assert!(detected.scalar("cpus") >= 1.0);
        assert!(detected.scalar("mem") > 0.0);
        assert_eq!(detected.ports().count(), 1001);
    }
}
