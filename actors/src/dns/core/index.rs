//! The record index: every name the server answers for, built from a [`ClusterView`] and kept
//! up to date by [`ViewChange`]s.
//!
//! Each source of records (the masters, one agent, one framework, one task, the named VIPs)
//! keeps the list of `(name, data)` pairs it added, and the index counts references per
//! record, so removing a source removes exactly what it added even when two tasks share a
//! record (two instances on one agent give `app.marathon.mesos` the same address once). A
//! change costs work in proportion to the records of what changed; the exceptions are a
//! change of masters or leader, which re-derives every framework's records (their address is
//! the leader's), and a change in the set of named VIPs, which re-assigns VIP addresses
//! (see [`super::vip`]).
//!
//! Names are stored lowercase, without the final dot, keyed by their labels in reverse order
//! (`mesos.marathon.web`) so that a name's subtree is one contiguous key range: that tells an
//! empty non-terminal (`marathon.slave.mesos`, NOERROR without data) from a name that does
//! not exist (NXDOMAIN).

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::collections::{BTreeMap, BTreeSet};

use super::config::{DnsConfig, IpSource};
use super::labels::{agent_id_tail, domain_frag, label, task_id_hash};
use super::vip::{VipLabel, named_vip_address, parse_vip_label};
use crate::discovery::{AgentEntry, ClusterView, FrameworkEntry, MasterEntry, TaskEntry, ViewChange, ViewUpdate};

/// The zone of DC/OS's own names.
pub const DCOS_ZONE: &str = "thisdcos.directory";
/// Per-task and master names of dcos-dns.
pub const DCOS_TASK_ZONE: &str = "dcos.thisdcos.directory";
/// The mirror of every Mesos-DNS name.
pub const MESOS_MIRROR_ZONE: &str = "mesos.thisdcos.directory";
/// Named VIPs.
pub const L4LB_ZONE: &str = "l4lb.thisdcos.directory";

/// The data of one stored record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Data {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// Priority 0 and the configured weight; `target` is a full name without the final dot.
    Srv {
        port: u16,
        target: String,
    },
}

impl Data {
    fn ip(ip: IpAddr) -> Data {
        match ip {
            IpAddr::V4(v4) => Data::A(v4),
            IpAddr::V6(v6) => Data::Aaaa(v6),
        }
    }
}

/// Where a group of records came from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Static,
    Masters,
    Agent(String),
    Framework(String),
    Task(String),
    Vips,
}

/// A record as a source adds it: its name and data.
pub type NameData = (String, Data);

/// A named VIP: `(normalized name, framework label)`.
pub type NamedVip = (String, String);

/// What one task added, kept for its removal and for `/v1/enumerate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRecords {
    pub name: String,
    pub framework: String,
    /// The named VIPs of its ports, `(normalized name, framework label)`.
    pub vips: Vec<(String, String)>,
}

/// The settings the records depend on, taken from [`DnsConfig`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct Settings {
    domain: String,
    rfc952: bool,
    ip_sources: Vec<IpSource>,
    master_port: u16,
    agent_port: u16,
    framework_port: Option<u16>,
    ns_ip: Option<IpAddr>,
}

/// The records of every served name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Index {
    settings: Settings,
    revision: u64,
    /// By reversed name; each record with its reference count.
    names: BTreeMap<String, BTreeMap<Data, u32>>,
    contributions: BTreeMap<Source, Vec<(String, Data)>>,
    tasks: BTreeMap<String, TaskRecords>,
    masters: Vec<MasterEntry>,
    leader: Option<String>,
    frameworks: BTreeMap<String, FrameworkEntry>,
    /// Named VIPs with the number of task ports declaring them, and their addresses.
    vip_refs: BTreeMap<(String, String), u32>,
    vip_addresses: BTreeMap<(String, String), Ipv4Addr>,
}

/// A name's labels in reverse order, lowercase, without the final dot: the index's key.
pub fn reverse_key(name: &str) -> String {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut out = String::with_capacity(name.len());
    for (i, part) in name.rsplit('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.extend(part.chars().map(|c| c.to_ascii_lowercase()));
    }
    out
}

impl Index {
    /// An index with no cluster records yet (only `ns1.<domain>`).
    pub fn new(config: &DnsConfig) -> Index {
        let settings = Settings {
            domain: config.normalized_domain(),
            rfc952: config.rfc952,
            ip_sources: config.ip_sources.clone(),
            master_port: config.master_port,
            agent_port: config.agent_port,
            framework_port: config.framework_port,
            ns_ip: config.ns_ip(),
        };
        let mut index = Index {
            settings,
            revision: 0,
            names: BTreeMap::new(),
            contributions: BTreeMap::new(),
            tasks: BTreeMap::new(),
            masters: Vec::new(),
            leader: None,
            frameworks: BTreeMap::new(),
            vip_refs: BTreeMap::new(),
            vip_addresses: BTreeMap::new(),
        };
        let statics = index.settings.ns_ip.map(|ip| (index.ns_name(), Data::ip(ip))).into_iter().collect();
        index.set(Source::Static, statics);
        index
    }

    /// An index of `view`.
    pub fn from_view(config: &DnsConfig, view: &ClusterView) -> Index {
        let mut index = Index::new(config);
        index.reset(view);
        index
    }

    /// The configured domain (`mesos`).
    pub fn domain(&self) -> &str {
        &self.settings.domain
    }

    /// The registry revision of the last update applied.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// How many names have records.
    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// The tasks with records, by task id.
    pub fn tasks(&self) -> &BTreeMap<String, TaskRecords> {
        &self.tasks
    }

    /// The records a task added, `(name, data)`.
    pub fn task_records(&self, task_id: &str) -> &[(String, Data)] {
        self.contributions.get(&Source::Task(task_id.to_owned())).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The named VIPs and their addresses, by `(normalized name, framework label)`.
    pub fn named_vips(&self) -> &BTreeMap<(String, String), Ipv4Addr> {
        &self.vip_addresses
    }

    /// The frameworks of the view, by id.
    pub fn frameworks(&self) -> &BTreeMap<String, FrameworkEntry> {
        &self.frameworks
    }

    /// `ns1.<domain>`, the name server of both zones.
    pub fn ns_name(&self) -> String {
        format!("ns1.{}", self.settings.domain)
    }

    /// The records stored at `name` (any case, with or without the final dot).
    pub fn records<'s>(&'s self, name: &str) -> impl Iterator<Item = &'s Data> + use<'s> {
        self.names.get(&reverse_key(name)).into_iter().flat_map(|records| records.keys())
    }

    /// Whether `name` has records or names below it.
    pub fn name_exists(&self, name: &str) -> bool {
        let key = reverse_key(name);
        if self.names.contains_key(&key) {
            return true;
        }
        let prefix = format!("{key}.");
        self.names.range(prefix.clone()..).next().is_some_and(|(k, _)| k.starts_with(&prefix))
    }

    /// Applies one update of the feed.
    pub fn apply_update(&mut self, update: &ViewUpdate) {
        match update {
            ViewUpdate::Reset(view) => self.reset(view),
            ViewUpdate::Changes { revision, changes } => {
                for change in changes.iter() {
                    self.apply(change);
                }
                self.revision = *revision;
            }
        }
    }

    /// Replaces everything with the records of `view`.
    pub fn reset(&mut self, view: &ClusterView) {
        let sources: Vec<Source> =
            self.contributions.keys().filter(|s| !matches!(s, Source::Static)).cloned().collect();
        for source in sources {
            self.set(source, Vec::new());
        }
        self.tasks.clear();
        self.frameworks.clear();
        self.vip_refs.clear();
        self.vip_addresses.clear();
        self.set_masters(view.masters.clone(), view.leader.clone());
        for agent in view.agents.values() {
            self.agent_up(agent);
        }
        for framework in view.frameworks.values() {
            self.framework_up(framework.clone());
        }
        for task in view.tasks.values() {
            self.add_task(task);
        }
        self.refresh_vips();
        self.revision = view.revision;
    }

    /// Applies one change.
    pub fn apply(&mut self, change: &ViewChange) {
        match change {
            ViewChange::Masters { masters, leader } => self.set_masters(masters.clone(), leader.clone()),
            ViewChange::AgentUp(agent) => self.agent_up(agent),
            ViewChange::AgentGone { id } => self.set(Source::Agent(id.clone()), Vec::new()),
            ViewChange::FrameworkUp(framework) => self.framework_up(framework.clone()),
            ViewChange::FrameworkGone { id } => {
                self.frameworks.remove(id);
                self.set(Source::Framework(id.clone()), Vec::new());
            }
            ViewChange::TaskUp(task) => {
                let removed = self.remove_task(&task.id);
                let added = self.add_task(task);
                if removed || added {
                    self.refresh_vips();
                }
            }
            ViewChange::TaskGone { id } => {
                if self.remove_task(id) {
                    self.refresh_vips();
                }
            }
        }
    }

    /// Replaces the records of `source` with `records`.
    fn set(&mut self, source: Source, records: Vec<(String, Data)>) {
        if let Some(old) = self.contributions.remove(&source) {
            for (name, data) in old {
                self.release(&name, &data);
            }
        }
        if records.is_empty() {
            return;
        }
        for (name, data) in &records {
            *self.names.entry(reverse_key(name)).or_default().entry(data.clone()).or_insert(0) += 1;
        }
        self.contributions.insert(source, records);
    }

    fn release(&mut self, name: &str, data: &Data) {
        let key = reverse_key(name);
        let Some(records) = self.names.get_mut(&key) else { return };
        if let Some(count) = records.get_mut(data) {
            *count -= 1;
            if *count == 0 {
                records.remove(data);
            }
        }
        if records.is_empty() {
            self.names.remove(&key);
        }
    }

    fn leader_ip(&self) -> Option<IpAddr> {
        let leader = self.leader.as_deref()?;
        self.masters.iter().find(|m| m.id == leader).map(|m| m.ip)
    }

    fn set_masters(&mut self, masters: Vec<MasterEntry>, leader: Option<String>) {
        self.masters = masters;
        self.leader = leader;
        let d = self.settings.domain.clone();
        let port = self.settings.master_port;
        let mut records = Vec::new();
        if let Some(ip) = self.leader_ip() {
            records.push((format!("leader.{d}"), Data::ip(ip)));
            records.push((format!("leader.{DCOS_TASK_ZONE}"), Data::ip(ip)));
            for proto in ["tcp", "udp"] {
                records.push((format!("_leader._{proto}.{d}"), Data::Srv { port, target: format!("leader.{d}") }));
            }
        }
        for (n, master) in self.masters.iter().enumerate() {
            records.push((format!("master.{d}"), Data::ip(master.ip)));
            records.push((format!("master.{DCOS_TASK_ZONE}"), Data::ip(master.ip)));
            records.push((format!("master{n}.{d}"), Data::ip(master.ip)));
            for proto in ["tcp", "udp"] {
                records.push((format!("_master._{proto}.{d}"), Data::Srv { port, target: format!("master{n}.{d}") }));
            }
        }
        self.set(Source::Masters, records);
        // A framework's address is the leader's.
        let frameworks: Vec<FrameworkEntry> = self.frameworks.values().cloned().collect();
        for framework in frameworks {
            self.framework_up(framework);
        }
    }

    fn agent_up(&mut self, agent: &AgentEntry) {
        let d = &self.settings.domain;
        let records = vec![
            (format!("slave.{d}"), Data::ip(agent.ip)),
            (format!("_slave._tcp.{d}"), Data::Srv { port: self.settings.agent_port, target: format!("slave.{d}") }),
        ];
        self.set(Source::Agent(agent.id.clone()), records);
    }

    fn framework_up(&mut self, framework: FrameworkEntry) {
        let fname = domain_frag(&framework.name, self.settings.rfc952);
        let mut records = Vec::new();
        if let (Some(ip), false) = (self.leader_ip(), fname.is_empty()) {
            let host = format!("{fname}.{}", self.settings.domain);
            records.push((host.clone(), Data::ip(ip)));
            if let Some(port) = self.settings.framework_port {
                records.push((format!("_framework._tcp.{host}"), Data::Srv { port, target: host }));
            }
        }
        let id = framework.id.clone();
        self.frameworks.insert(id.clone(), framework);
        self.set(Source::Framework(id), records);
    }

    /// Removes a task's records; whether a named VIP lost its last task.
    fn remove_task(&mut self, id: &str) -> bool {
        self.set(Source::Task(id.to_owned()), Vec::new());
        let Some(old) = self.tasks.remove(id) else { return false };
        let mut vip_gone = false;
        for vip in &old.vips {
            if let Some(count) = self.vip_refs.get_mut(vip) {
                *count -= 1;
                if *count == 0 {
                    self.vip_refs.remove(vip);
                    vip_gone = true;
                }
            }
        }
        vip_gone
    }

    /// Adds a task's records; whether it declares a named VIP no other task declares.
    fn add_task(&mut self, task: &TaskEntry) -> bool {
        let Some((records, vips)) = task_records(&self.settings, task) else { return false };
        let mut vip_new = false;
        for vip in &vips {
            let count = self.vip_refs.entry(vip.clone()).or_insert(0);
            vip_new |= *count == 0;
            *count += 1;
        }
        let entry = TaskRecords { name: task.name.clone(), framework: task.framework.clone(), vips };
        self.tasks.insert(task.id.clone(), entry);
        self.set(Source::Task(task.id.clone()), records);
        vip_new
    }

    /// The addresses of the named VIPs, after their set changed.
    fn refresh_vips(&mut self) {
        self.vip_addresses =
            self.vip_refs.keys().map(|(n, f)| ((n.clone(), f.clone()), named_vip_address(n, f))).collect();
        let records = self
            .vip_addresses
            .iter()
            .map(|((name, fw), ip)| (format!("{name}.{fw}.{L4LB_ZONE}"), Data::A(*ip)))
            .collect();
        self.set(Source::Vips, records);
    }
}

/// The records of a running task (Mesos-DNS's `taskContextRecord` plus dcos-dns's task
/// names), and its named VIPs; `None` when its name or framework make no label.
fn task_records(settings: &Settings, task: &TaskEntry) -> Option<(Vec<NameData>, Vec<NamedVip>)> {
    let d = &settings.domain;
    let tname = label(&task.name, settings.rfc952);
    let fname = domain_frag(&task.framework, settings.rfc952);
    if tname.is_empty() || fname.is_empty() {
        return None;
    }
    let canonical = format!("{tname}-{}-{}", task_id_hash(&task.id), agent_id_tail(&task.agent_id));
    let task_ips = task_ips(settings, task);
    let mut records = Vec::new();
    for host in [format!("{tname}.{fname}.{d}"), format!("{canonical}.{fname}.{d}")] {
        records.extend(task_ips.iter().map(|ip| (host.clone(), Data::ip(*ip))));
    }
    for host in [format!("{tname}.{fname}.slave.{d}"), format!("{canonical}.{fname}.slave.{d}")] {
        records.push((host, Data::ip(task.agent_ip)));
    }
    for port in &task.ports {
        let proto = port.protocol.as_str();
        let number = port.number;
        let slave_target = format!("{canonical}.{fname}.slave.{d}");
        let target = format!("{canonical}.{fname}.{d}");
        records
            .push((format!("_{tname}._{proto}.{fname}.slave.{d}"), Data::Srv { port: number, target: slave_target }));
        records.push((format!("_{tname}._{proto}.{fname}.{d}"), Data::Srv { port: number, target: target.clone() }));
        let port_label = port.name.as_deref().map(|n| label(n, settings.rfc952)).unwrap_or_default();
        if !port_label.is_empty() {
            let name = format!("_{port_label}._{tname}._{proto}.{fname}.{d}");
            records.push((name, Data::Srv { port: number, target }));
        }
    }
    // dcos-dns: agentip, containerip, and autoip (the agent's address when the task maps
    // host ports, its container's otherwise).
    let dcos = |kind: &str| format!("{tname}.{fname}.{kind}.{DCOS_TASK_ZONE}");
    records.push((dcos("agentip"), Data::ip(task.agent_ip)));
    records.extend(task.container_ips.iter().map(|ip| (dcos("containerip"), Data::ip(*ip))));
    if task.ports.is_empty() && !task.container_ips.is_empty() {
        records.extend(task.container_ips.iter().map(|ip| (dcos("autoip"), Data::ip(*ip))));
    } else {
        records.push((dcos("autoip"), Data::ip(task.agent_ip)));
    }
    let vips = task_vips(task);
    Some((records, vips))
}

/// The first IPv4 and first IPv6 address of the first IP source that has any (Mesos-DNS),
/// or the agent's address.
fn task_ips(settings: &Settings, task: &TaskEntry) -> Vec<IpAddr> {
    for source in &settings.ip_sources {
        let candidates: &[IpAddr] = match source {
            IpSource::Host => std::slice::from_ref(&task.agent_ip),
            IpSource::Container => &task.container_ips,
        };
        let v4 = candidates.iter().find(|ip| ip.is_ipv4());
        let v6 = candidates.iter().find(|ip| ip.is_ipv6());
        let ips: Vec<IpAddr> = v4.into_iter().chain(v6).copied().collect();
        if !ips.is_empty() {
            return ips;
        }
    }
    vec![task.agent_ip]
}

/// The named VIPs declared on a task's ports, each once.
fn task_vips(task: &TaskEntry) -> Vec<(String, String)> {
    let fw = domain_frag(&task.framework, false);
    let mut vips = BTreeSet::new();
    for port in &task.ports {
        for (key, value) in &port.labels {
            if let Some(VipLabel::Named { name, .. }) = parse_vip_label(key, value) {
                vips.insert((super::vip::normalize_vip_name(&name), fw.clone()));
            }
        }
    }
    vips.into_iter().collect()
}
