//! What service discovery knows of the cluster: the masters and the leader, the agents, the
//! frameworks and every live task with its ports. The DNS server and the load balancer on
//! every node read these entries; the feed keeps them up to date from the registry's watch
//! stream as [`ViewChange`]s, so a change costs work in proportion to its size, not to the
//! size of the cluster.
//!
//! Names are kept as the cluster knows them (a Marathon task's name is its app's path
//! segments reversed and joined by dots, as Marathon names Mesos tasks: `/shop/web` →
//! `web.shop`); turning them into DNS labels is the DNS server's job.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// A master node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterEntry {
    /// Its node id.
    pub id: String,
    pub ip: IpAddr,
}

/// An agent node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentEntry {
    /// Its Mesos agent id (the node id).
    pub id: String,
    pub hostname: String,
    pub ip: IpAddr,
}

/// A framework (scheduler). Frameworks run on the leading master, so their address is the
/// leader's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameworkEntry {
    pub id: String,
    /// `marathon`, `metronome`, `flotilla-launcher`, ...
    pub name: String,
}

/// The transport protocol of a task's port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PortProtocol {
    Tcp,
    Udp,
}

impl PortProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        }
    }
}

/// One port a task serves (Mesos's `DiscoveryInfo.ports[]`, or one of its `ports` resources
/// when the task declares no discovery info). A port with two protocols (`udp,tcp`) is two
/// entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortEntry {
    /// The port on the agent's address (a host port).
    pub number: u16,
    pub protocol: PortProtocol,
    /// The port's name (`http`), if it has one.
    pub name: Option<String>,
    /// The port's labels: `VIP_0: /myapp:80` declares a load-balanced virtual IP.
    pub labels: BTreeMap<String, String>,
}

/// A task that has reached `TASK_RUNNING` and has not ended. A task leaves the view when it
/// ends or becomes unreachable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEntry {
    pub id: String,
    /// The Mesos task name (`web.shop` for Marathon's `/shop/web`).
    pub name: String,
    pub framework_id: String,
    /// The name of its framework (`marathon`): the second label of Mesos-DNS names.
    pub framework: String,
    pub agent_id: String,
    /// The address of the agent it runs on.
    pub agent_ip: IpAddr,
    /// The task's own addresses on a container network; empty on the host's network.
    pub container_ips: Vec<IpAddr>,
    /// The verdict of its health check: `None` without a check or before the first verdict.
    pub healthy: Option<bool>,
    pub ports: Vec<PortEntry>,
    pub labels: BTreeMap<String, String>,
}

impl TaskEntry {
    /// Whether the load balancer may send it connections: unhealthy tasks are left out at once.
    pub fn serves(&self) -> bool {
        self.healthy != Some(false)
    }
}

/// Everything discovery knows, at one registry revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The registry revision this view reflects.
    pub revision: u64,
    /// The leading master's node id, if there is one.
    pub leader: Option<String>,
    /// Sorted by id.
    pub masters: Vec<MasterEntry>,
    /// By agent id.
    pub agents: BTreeMap<String, AgentEntry>,
    /// By framework id.
    pub frameworks: BTreeMap<String, FrameworkEntry>,
    /// By task id.
    pub tasks: BTreeMap<String, TaskEntry>,
}

/// One change to the view, in registry order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ViewChange {
    /// The masters, or who leads them, changed.
    Masters {
        masters: Vec<MasterEntry>,
        leader: Option<String>,
    },
    AgentUp(AgentEntry),
    AgentGone {
        id: String,
    },
    FrameworkUp(FrameworkEntry),
    FrameworkGone {
        id: String,
    },
    /// A task started running, or changed (its health).
    TaskUp(TaskEntry),
    /// A task ended, or its agent became unreachable.
    TaskGone {
        id: String,
    },
}

/// What a discovery consumer receives: the whole view once when it subscribes (and again if
/// it fell behind), then batches of changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewUpdate {
    Reset(std::sync::Arc<ClusterView>),
    Changes { revision: u64, changes: std::sync::Arc<Vec<ViewChange>> },
}

impl ClusterView {
    /// Applies one change.
    pub fn apply(&mut self, change: &ViewChange) {
        match change {
            ViewChange::Masters { masters, leader } => {
                self.masters = masters.clone();
                self.leader = leader.clone();
            }
            ViewChange::AgentUp(agent) => {
                self.agents.insert(agent.id.clone(), agent.clone());
            }
            ViewChange::AgentGone { id } => {
                self.agents.remove(id);
            }
            ViewChange::FrameworkUp(framework) => {
                self.frameworks.insert(framework.id.clone(), framework.clone());
            }
            ViewChange::FrameworkGone { id } => {
                self.frameworks.remove(id);
            }
            ViewChange::TaskUp(task) => {
                self.tasks.insert(task.id.clone(), task.clone());
            }
            ViewChange::TaskGone { id } => {
                self.tasks.remove(id);
            }
        }
    }

    /// The leading master's entry.
    pub fn leader_entry(&self) -> Option<&MasterEntry> {
        let leader = self.leader.as_deref()?;
        self.masters.iter().find(|m| m.id == leader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, healthy: Option<bool>) -> TaskEntry {
        TaskEntry {
            id: id.to_owned(),
            name: "web.shop".to_owned(),
            framework_id: "fw".to_owned(),
            framework: "marathon".to_owned(),
            agent_id: "a1".to_owned(),
            agent_ip: "10.0.0.1".parse().unwrap(),
            container_ips: Vec::new(),
            healthy,
            ports: vec![PortEntry {
                number: 31000,
                protocol: PortProtocol::Tcp,
                name: Some("http".to_owned()),
                labels: BTreeMap::from([("VIP_0".to_owned(), "/shop/web:80".to_owned())]),
            }],
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn changes_apply_in_order() {
        let mut view = ClusterView::default();
        view.apply(&ViewChange::TaskUp(task("t1", None)));
        view.apply(&ViewChange::TaskUp(task("t1", Some(false))));
        assert!(!view.tasks["t1"].serves());
        view.apply(&ViewChange::TaskGone { id: "t1".to_owned() });
        assert!(view.tasks.is_empty());
        let m = MasterEntry { id: "m1".to_owned(), ip: "10.0.0.9".parse().unwrap() };
        view.apply(&ViewChange::Masters { masters: vec![m.clone()], leader: Some("m1".to_owned()) });
        assert_eq!(view.leader_entry(), Some(&m));
    }
}
