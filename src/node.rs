//! A node's role and its root supervision tree (DESIGN.md §3).
//!
//! The tree has the shape every later component plugs into: the transport first (everything
//! else talks through it), then the role's subtrees, then the API. The root is
//! `rest_for_one`, so when the transport restarts, everything started after it restarts too
//! and never runs against a stale transport.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::files::files_relay_child;
use flotilla_actors::agent::actor::AgentConfig;
use flotilla_actors::agent::agent_child;
use flotilla_actors::agent::driver::TaskDriver;
use flotilla_actors::chaos::actor::{ChaosPlan, CrashHook, chaos_child};
use flotilla_actors::control_plane::leadership::{LeaderContext, LeaderTree};
use flotilla_actors::control_plane::{ControlPlanePlan, CurrentTransport, control_plane_spec};
use flotilla_actors::discovery::feed::feed_child;
use flotilla_actors::dns::{DnsConfig, dns_child};
use flotilla_actors::election::actor::DEFAULT_TICK_INTERVAL;
use flotilla_actors::election::core::{PeerId, RaftConfig};
use flotilla_actors::l4lb::{L4lbConfig, l4lb_child};
use flotilla_actors::marathon::core::rest::ServerInfo;
use flotilla_actors::marathon::scheduler_child;
pub use flotilla_actors::master::core::MasterConfig as ClusterManagerConfig;
use flotilla_actors::master::{Framework, cluster_manager_tree};
use flotilla_actors::registry::actor::RegistryConfig;
use flotilla_actors::storage::{DiskStorage, RaftStorage, StorageError};
use flotilla_supervisors::tree;
use flotilla_supervisors::{
    ChildKind, ChildSpec, Clock, InvariantSink, Node, NodeId, StartError, Started, Strategy, Supervisor,
    SupervisorFlags, SupervisorRef, SupervisorSpec, TokioClock,
};
use flotilla_transport::{Address, Network, PeerIdentity, Transport, TransportConfig};

/// What a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Master,
    Agent,
    /// One master and one agent in one process (`flotilla dev`).
    Dev,
}

impl Role {
    fn runs_master(self) -> bool {
        matches!(self, Role::Master | Role::Dev)
    }

    fn runs_agent(self) -> bool {
        matches!(self, Role::Agent | Role::Dev)
    }
}

/// How a node joins the network: its identity, and a fresh network for every (re)start of
/// its transport endpoint.
#[derive(Clone)]
pub struct TransportPlan {
    pub identity: PeerIdentity,
    pub config: TransportConfig,
    pub network: Arc<dyn Fn() -> anyhow::Result<Network> + Send + Sync>,
    /// Peers to keep a session with (redialled whenever it is lost): the other masters.
    pub peers: Vec<(String, Address)>,
}

/// The running transport, once its endpoint has started (replaced on every restart).
pub type TransportSlot = Arc<Mutex<Option<Transport>>>;

/// The name the transport's subtree is registered under (a node crash kills it).
pub const TRANSPORT_SUBTREE: &str = "transport";

/// A one_for_one subtree with these children (later components fill the empty ones).
fn subtree(name: &str, children: Vec<ChildSpec>) -> ChildSpec {
    ChildSpec::supervisor(name, subtree_spec(children))
}

fn subtree_spec(children: Vec<ChildSpec>) -> SupervisorSpec {
    let flags = SupervisorFlags::strategy(Strategy::OneForOne).with_intensity(10, Duration::from_secs(10));
    children.into_iter().fold(SupervisorSpec::new(flags), SupervisorSpec::child)
}

/// The transport's endpoint as a supervised worker.
fn endpoint_child(plan: TransportPlan, slot: TransportSlot) -> ChildSpec {
    ChildSpec::new("endpoint", ChildKind::Worker, move |ctx| {
        let (plan, slot) = (plan.clone(), Arc::clone(&slot));
        async move {
            let network = (plan.network)().map_err(|e| StartError(format!("{e:#}")))?;
            let transport = Transport::start(&ctx.node, plan.identity, plan.config, network, Some(ctx.supervisor))
                .await
                .map_err(|e| StartError(e.to_string()))?;
            let cell = transport.actor().ok_or_else(|| StartError("the endpoint did not start".into()))?;
            for (peer, address) in &plan.peers {
                transport.connect(peer, address.clone());
            }
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(transport);
            Ok(Started::Running(cell))
        }
    })
}

/// A placeholder leader-only subtree (one_for_all, empty) for a plan whose node has not
/// started yet; [`RunningNode::start_with`] replaces it with the cluster manager's.
fn empty_leader_tree() -> LeaderTree {
    Arc::new(|_: LeaderContext| {
        let flags = SupervisorFlags::strategy(Strategy::OneForAll).with_intensity(3, Duration::from_secs(30));
        SupervisorSpec::new(flags).named("leader")
    })
}

/// An agent's part of a node: its configuration and the driver that runs its tasks.
#[derive(Clone)]
pub struct AgentPlan {
    pub config: AgentConfig,
    pub driver: Arc<dyn TaskDriver>,
}

/// Everything a node runs: its transport, a master's control plane and cluster manager, an
/// agent.
#[derive(Clone, Default)]
pub struct NodePlan {
    pub transport: Option<TransportPlan>,
    pub control_plane: Option<ControlPlanePlan>,
    /// The leading master's settings (pings, allocation, offers).
    pub cluster_manager: ClusterManagerConfig,
    /// A master's HTTP API address, reported by the service scheduler (`/v2/info`,
    /// `/v2/leader`); with it the scheduler runs on the leading master.
    pub marathon: Option<ServerInfo>,
    pub agent: Option<AgentPlan>,
    /// The node's DNS server and VIP load balancer (children of its discovery subtree, after
    /// the feed); `None` or disabled: not run.
    pub dns: Option<DnsConfig>,
    pub l4lb: Option<L4lbConfig>,
    /// The node's random seed; `None`: [`entropy_seed`] (real nodes). Simulations fix it so
    /// that a run can be repeated.
    pub seed: Option<u64>,
    /// The node's clock; `None`: tokio's with the real wall time. Simulations give each node
    /// its own (virtual time, a fixed wall origin, skew as a fault).
    pub clock: Option<Arc<dyn Clock>>,
    /// Runs the chaos actor (last child of the root) when set; needs a transport.
    pub chaos: Option<ChaosSettings>,
    /// Where the node reports invariants its code sees broken, besides its log (simulations
    /// collect them as violations).
    pub invariants: Option<InvariantSink>,
}

/// What a node's chaos actor needs from its configuration.
#[derive(Clone, Debug, Default)]
pub struct ChaosSettings {
    /// The cluster's masters, for the monkey's exclusions.
    pub masters: Vec<String>,
}

/// The root supervision tree of a node with this role; the transport subtree runs the
/// endpoint when a plan is given, and a master's control plane runs when it has a plan.
pub fn root_spec(
    role: Role,
    transport: Option<(TransportPlan, TransportSlot)>,
    control_plane: Option<ControlPlanePlan>,
    agent: Option<ChildSpec>,
    discovery: Vec<ChildSpec>,
    api: Vec<ChildSpec>,
    chaos: Option<ChildSpec>,
) -> SupervisorSpec {
    let flags = SupervisorFlags::strategy(Strategy::RestForOne).with_intensity(3, Duration::from_secs(30));
    let endpoint = transport.map(|(plan, slot)| endpoint_child(plan, slot)).into_iter().collect();
    let transport = ChildSpec::supervisor("transport", subtree_spec(endpoint).named(TRANSPORT_SUBTREE));
    let mut spec = SupervisorSpec::new(flags).named("node").child(transport);
    if role.runs_master() {
        spec = spec.child(match control_plane {
            Some(plan) => ChildSpec::supervisor("control-plane", control_plane_spec(plan)),
            None => subtree("control-plane", Vec::new()),
        });
    }
    if role.runs_agent() {
        spec = spec.child(subtree("agent", agent.into_iter().collect()));
    }
    let spec = spec.child(discovery_subtree(discovery)).child(subtree("api", api));
    // Permanent (DESIGN.md §3 has it temporary): a CrashNode restarts the tree, and a node
    // started with chaos enabled keeps its chaos actor across that restart.
    chaos.into_iter().fold(spec, SupervisorSpec::child)
}

/// Discovery's subtree: the feed first, then its consumers (DNS, load balancer), which
/// subscribe to it when they start; rest_for_one, so a restarted feed restarts them and they
/// subscribe again.
fn discovery_subtree(children: Vec<ChildSpec>) -> ChildSpec {
    let flags = SupervisorFlags::strategy(Strategy::RestForOne).with_intensity(10, Duration::from_secs(10));
    let spec = children.into_iter().fold(SupervisorSpec::new(flags), SupervisorSpec::child);
    ChildSpec::supervisor("discovery", spec)
}

/// A master's control plane, its Raft log kept in `raft_dir` (created if missing): `peers` and
/// this master are the bootstrap voters, or with `joining` this master starts outside the
/// configuration of `peers` (to be added by an operator). The transport is filled in by
/// [`RunningNode::start_with`].
pub fn master_plan(me: &str, peers: &[String], joining: bool, raft: RaftConfig, raft_dir: PathBuf) -> ControlPlanePlan {
    let storage =
        move || -> Result<Box<dyn RaftStorage + Send>, StorageError> { Ok(Box::new(DiskStorage::open(&raft_dir)?)) };
    ControlPlanePlan {
        me: PeerId::from(me),
        peers: peers.iter().map(|peer| PeerId::from(peer.as_str())).collect(),
        joining,
        raft,
        registry: RegistryConfig::default(),
        tick_interval: DEFAULT_TICK_INTERVAL,
        storage: Arc::new(storage),
        transport: Arc::new(|| None),
        leader_tree: empty_leader_tree(),
    }
}

/// A seed no other process shares: the OS-seeded hasher keys of std's `RandomState`, mixed
/// with the wall clock and the process id. A real node must not run on the default seed (0):
/// every master would draw the same election timeouts, every client the same client id.
pub fn entropy_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// A started node: its context and root supervisor.
pub struct RunningNode {
    pub node: Node,
    pub root: SupervisorRef,
    transport: TransportSlot,
}

impl RunningNode {
    /// A node without a network (its transport subtree is empty).
    pub async fn start(id: NodeId, role: Role) -> anyhow::Result<Self> {
        Self::start_with(id, role, NodePlan::default()).await
    }

    /// A node with what its plan holds. The control plane's transport and leader-only subtree
    /// (the cluster manager) and the agent are wired to the node's own transport slot.
    pub async fn start_with(id: NodeId, role: Role, plan: NodePlan) -> anyhow::Result<Self> {
        let mut builder = Node::builder(id).seed(plan.seed.unwrap_or_else(entropy_seed));
        if let Some(sink) = plan.invariants.clone() {
            builder = builder.invariants(sink);
        }
        // A node whose clock is ours can have it skewed by the chaos actor.
        let mut skewable = None;
        match plan.clock.clone() {
            Some(clock) => builder = builder.clock(clock),
            None => {
                let clock = Arc::new(TokioClock::new());
                builder = builder.clock(Arc::clone(&clock) as Arc<dyn Clock>);
                skewable = Some(clock);
            }
        }
        let node = builder.start().await?;
        let slot = TransportSlot::default();
        let current: CurrentTransport = {
            let slot = Arc::clone(&slot);
            Arc::new(move || slot.lock().unwrap_or_else(|e| e.into_inner()).clone())
        };
        let manager = plan.cluster_manager.clone();
        let frameworks: Vec<Framework> =
            plan.marathon.iter().map(|server| scheduler_child(Arc::clone(&current), server.clone())).collect();
        let control_plane = plan.control_plane.map(|control| ControlPlanePlan {
            transport: Arc::clone(&current),
            leader_tree: cluster_manager_tree(manager, Arc::clone(&current), frameworks),
            ..control
        });
        // A master's feed reads its own registry; an agent's asks the masters it registers with.
        let masters = plan.agent.as_ref().map(|agent| agent.config.masters.clone()).unwrap_or_default();
        let mut discovery = Vec::new();
        if plan.transport.is_some() {
            discovery.push(feed_child(Arc::clone(&current), masters));
            discovery.extend(plan.dns.clone().filter(|dns| dns.enabled).map(dns_child));
            discovery.extend(plan.l4lb.clone().filter(|l4lb| l4lb.enabled).map(l4lb_child));
        }
        let agent = plan.agent.map(|agent| agent_child(agent.config, agent.driver, Arc::clone(&current)));
        // A master relays operators' reads of sandbox files to the agents.
        let api = match (role.runs_master(), &plan.transport) {
            (true, Some(_)) => vec![files_relay_child(Arc::clone(&current))],
            _ => Vec::new(),
        };
        let chaos = match (plan.chaos, &plan.transport) {
            (Some(settings), Some(_)) => Some(chaos_child(ChaosPlan {
                masters: settings.masters,
                transport: Arc::clone(&current),
                clock: skewable,
                crash: crash_hook(&node, &slot),
            })),
            _ => None,
        };
        let transport = plan.transport.map(|plan| (plan, Arc::clone(&slot)));
        let spec = root_spec(role, transport, control_plane, agent, discovery, api, chaos);
        let root = Supervisor::spawn(node.clone(), spec, None).await?;
        Ok(RunningNode { node, root, transport: slot })
    }

    /// The node's transport as it is now and after restarts, for servers that outlive them.
    pub fn current_transport(&self) -> CurrentTransport {
        let slot = Arc::clone(&self.transport);
        Arc::new(move || slot.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// The node's transport, if it runs one.
    pub fn transport(&self) -> Option<Transport> {
        self.transport.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The live tree, one child per line.
    pub async fn render_tree(&self) -> String {
        tree::render(&self.root, &format!("node {} (rest_for_one)", self.node.id())).await
    }

    /// Stops the tree in reverse start order, then the node's runtime.
    pub async fn shutdown(self, timeout: Duration) -> anyhow::Result<()> {
        self.root.shutdown(timeout).await?;
        self.node.shutdown();
        Ok(())
    }
}

/// How a real node crashes in place (the chaos actor's `CrashNode`): the transport ends
/// abruptly — no goodbye, nothing drained, peers find out through their failure detectors —
/// and its subtree is killed, so the root (`rest_for_one`) restarts the transport and every
/// subtree after it: every actor's volatile state is lost, disks keep what they synced. The
/// process, its HTTP API and the OS's buffers survive; for a crash of the process, kill -9 it.
fn crash_hook(node: &Node, slot: &TransportSlot) -> CrashHook {
    let (node, slot) = (node.clone(), Arc::clone(slot));
    Arc::new(move || {
        if let Some(transport) = slot.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            transport.abort();
        }
        if let Some(subtree) = node.whereis(TRANSPORT_SUBTREE) {
            subtree.kill();
        }
    })
}

/// The task driver an agent's configuration asks for: `auto` picks the isolating driver when
/// this process can isolate (root, writable cgroups) and the plain one otherwise (it logs
/// why); `isolating` refuses to start without isolation.
pub fn task_driver(file: &crate::agent_config::AgentFile) -> anyhow::Result<Arc<dyn TaskDriver>> {
    use crate::agent_config::IsolationMode;
    use flotilla_actors::agent::driver::isolation::{IsolatingDriver, IsolationConfig, PlainDriver, detect};
    let config =
        IsolationConfig { cgroup_root: file.agent.cgroup_root.clone(), ..IsolationConfig::for_flotilla_binary() };
    Ok(match file.agent.isolation {
        IsolationMode::Auto => detect(config),
        IsolationMode::Isolating => Arc::new(
            IsolatingDriver::new(config)
                .map_err(|why| anyhow::anyhow!("agent.isolation = \"isolating\", but {why}"))?,
        ),
        IsolationMode::Plain => Arc::new(PlainDriver::new(config, "agent.isolation = \"plain\"")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child_ids(role: Role) -> Vec<String> {
        root_spec(role, None, None, None, Vec::new(), Vec::new(), None)
            .children
            .iter()
            .map(|c| c.id.to_string())
            .collect()
    }

    #[test]
    fn each_role_gets_its_subtrees_after_the_transport() {
        assert_eq!(child_ids(Role::Dev), ["transport", "control-plane", "agent", "discovery", "api"]);
        assert_eq!(child_ids(Role::Master), ["transport", "control-plane", "discovery", "api"]);
        assert_eq!(child_ids(Role::Agent), ["transport", "agent", "discovery", "api"]);
    }

    #[tokio::test]
    async fn a_dev_node_starts_renders_its_tree_and_stops() {
        let node = RunningNode::start(NodeId::new("dev").unwrap(), Role::Dev).await.unwrap();
        let tree = node.render_tree().await;
        assert!(tree.starts_with("node dev (rest_for_one)\n"), "{tree}");
        assert!(tree.contains("  control-plane (supervisor, running)"), "{tree}");
        assert_eq!(node.node.whereis("node").map(|c| c.get_id()), Some(node.root.cell().get_id()));
        node.shutdown(Duration::from_secs(5)).await.unwrap();
    }
}
