//! What the leading master publishes for service discovery: an entry per running task, agent
//! and framework, written to the registry (in `discovery::entries`' format) so that every
//! node's DNS server and load balancer follow them through the registry's watch stream.
//!
//! The ledger remembers what it published and which tasks, agents and frameworks changed
//! since; a flush compares only those, so its cost follows the changes, not the cluster.

use core::net::IpAddr;
use std::collections::{BTreeMap, BTreeSet};

use crate::discovery::{AgentEntry, FrameworkEntry, PortEntry, PortProtocol, TaskEntry, ViewChange};
use crate::mesos::core::Resources;

/// Published entries and what changed since they were.
#[derive(Debug, Default)]
pub struct DiscoveryLedger {
    dirty_tasks: BTreeSet<String>,
    dirty_agents: BTreeSet<String>,
    dirty_frameworks: BTreeSet<String>,
    tasks: BTreeMap<String, TaskEntry>,
    agents: BTreeMap<String, AgentEntry>,
    frameworks: BTreeMap<String, FrameworkEntry>,
}

impl DiscoveryLedger {
    pub fn task_changed(&mut self, task_id: &str) {
        self.dirty_tasks.insert(task_id.to_owned());
    }

    pub fn agent_changed(&mut self, agent_id: &str) {
        self.dirty_agents.insert(agent_id.to_owned());
    }

    pub fn framework_changed(&mut self, framework_id: &str) {
        self.dirty_frameworks.insert(framework_id.to_owned());
    }

    /// Whether a flush has anything to compare.
    pub fn has_changes(&self) -> bool {
        !(self.dirty_tasks.is_empty() && self.dirty_agents.is_empty() && self.dirty_frameworks.is_empty())
    }

    /// The changes since the last flush: `desired_*` say what each changed item should now
    /// be (`None`: not published). Agents and frameworks come before the tasks that name them.
    pub fn flush(
        &mut self,
        desired_agent: impl Fn(&str) -> Option<AgentEntry>,
        desired_framework: impl Fn(&str) -> Option<FrameworkEntry>,
        desired_task: impl Fn(&str) -> Option<TaskEntry>,
    ) -> Vec<ViewChange> {
        let mut changes = Vec::new();
        for id in std::mem::take(&mut self.dirty_agents) {
            let desired = desired_agent(&id);
            diff(&mut self.agents, id, desired, &mut changes, ViewChange::AgentUp, |id| ViewChange::AgentGone { id });
        }
        for id in std::mem::take(&mut self.dirty_frameworks) {
            let desired = desired_framework(&id);
            let gone = |id| ViewChange::FrameworkGone { id };
            diff(&mut self.frameworks, id, desired, &mut changes, ViewChange::FrameworkUp, gone);
        }
        for id in std::mem::take(&mut self.dirty_tasks) {
            let desired = desired_task(&id);
            diff(&mut self.tasks, id, desired, &mut changes, ViewChange::TaskUp, |id| ViewChange::TaskGone { id });
        }
        changes
    }

    /// Forgets what was published and marks `agents`, `frameworks` and `tasks` changed: the
    /// next flush publishes them whole (after a new leader rewrote the registry's entries).
    pub fn republish(
        &mut self,
        agents: impl IntoIterator<Item = String>,
        frameworks: impl IntoIterator<Item = String>,
        tasks: impl IntoIterator<Item = String>,
    ) {
        *self = DiscoveryLedger::default();
        self.dirty_agents.extend(agents);
        self.dirty_frameworks.extend(frameworks);
        self.dirty_tasks.extend(tasks);
    }
}

fn diff<T: Clone + PartialEq>(
    published: &mut BTreeMap<String, T>,
    id: String,
    desired: Option<T>,
    changes: &mut Vec<ViewChange>,
    up: impl Fn(T) -> ViewChange,
    gone: impl Fn(String) -> ViewChange,
) {
    match desired {
        Some(entry) if published.get(&id) != Some(&entry) => {
            published.insert(id, entry.clone());
            changes.push(up(entry));
        }
        Some(_) => {}
        None => {
            if published.remove(&id).is_some() {
                changes.push(gone(id));
            }
        }
    }
}

/// A task's ports for discovery: its `DiscoveryInfo` ports, or else every port of its
/// `ports` resources (TCP, unnamed), as Mesos-DNS falls back to.
pub fn task_ports(discovery: Option<&[PortEntry]>, resources: &Resources) -> Vec<PortEntry> {
    if let Some(ports) = discovery {
        return ports.to_vec();
    }
    resources
        .ports()
        .iter()
        .flat_map(|(begin, end)| begin..=end)
        .filter_map(|port| u16::try_from(port).ok())
        .map(|number| PortEntry { number, protocol: PortProtocol::Tcp, name: None, labels: BTreeMap::new() })
        .collect()
}

/// An agent's address for discovery: its hostname when that is an IP address, else the
/// address its transport session comes from.
pub fn agent_ip(hostname: &str, session: Option<IpAddr>) -> Option<IpAddr> {
    hostname.parse().ok().or(session)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str) -> AgentEntry {
        AgentEntry { id: id.to_owned(), hostname: id.to_owned(), ip: "10.0.0.1".parse().unwrap() }
    }

    #[test]
    fn a_flush_publishes_only_what_changed() {
        let mut ledger = DiscoveryLedger::default();
        ledger.agent_changed("a1");
        let up = ledger.flush(|id| Some(agent(id)), |_| None, |_| None);
        assert_eq!(up, vec![ViewChange::AgentUp(agent("a1"))]);
        assert!(!ledger.has_changes());
        ledger.agent_changed("a1");
        assert!(ledger.flush(|id| Some(agent(id)), |_| None, |_| None).is_empty(), "unchanged");
        ledger.agent_changed("a1");
        ledger.task_changed("t-never-published");
        let gone = ledger.flush(|_| None, |_| None, |_| None);
        assert_eq!(gone, vec![ViewChange::AgentGone { id: "a1".to_owned() }]);
    }

    #[test]
    fn ports_fall_back_to_the_port_resources() {
        let resources = Resources::new().with_ranges("ports", crate::mesos::core::Ranges::single(31000, 31001));
        let ports = task_ports(None, &resources);
        assert_eq!(ports.iter().map(|p| p.number).collect::<Vec<_>>(), [31000, 31001]);
        assert!(task_ports(Some(&[]), &resources).is_empty());
    }
}
