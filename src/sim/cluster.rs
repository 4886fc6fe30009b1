//! The simulated cluster: its builder, its nodes, and what a test does with them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use flotilla_actors::agent::actor::AgentConfig;
use flotilla_actors::agent::driver::mock::{MockBehaviour, MockDriver, MockScript};
use flotilla_actors::control_plane::ControlPlanePlan;
use flotilla_actors::election::core::RaftConfig;
use flotilla_actors::marathon::core::rest::{RestRequest, RestResponse, ServerInfo};
use flotilla_actors::marathon::protocol::{MARATHON_FRAMEWORK_ID, MARATHON_NAME, MarathonCall};
use flotilla_actors::mesos::core::{Ranges, Resources, RoleResources, UNRESERVED};
use flotilla_actors::mesos::protocol::{AgentInfo, MASTER_NAME, MasterQuery, MasterState};
use flotilla_actors::registry::client::RegistryClient;
use flotilla_actors::storage::{RaftStorage, SharedSimDisk, SimDisk, StorageError};
use flotilla_supervisors::{InvariantSink, Node, NodeId, Rng, TokioClock};
use flotilla_transport::{Address, ClusterId, Network, PeerIdentity, Role, SimNet, Transport, TransportConfig};

use super::WALL_ORIGIN_MILLIS;
use crate::node::{AgentPlan, ClusterManagerConfig, NodePlan, Role as NodeRole, RunningNode, TransportPlan};

/// How long a call from the simulation's operator to a master may take.
const CALL_DEADLINE: Duration = Duration::from_secs(5);
/// How long a node is given to stop in order.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// Distinguishes the work directories of simulations in one process.
static SIMULATIONS: AtomicU64 = AtomicU64::new(0);

/// What a simulated cluster is made of; [`SimBuilder::start`] starts it.
pub struct SimBuilder {
    seed: u64,
    masters: usize,
    agents: usize,
    latency: Duration,
    jitter: Duration,
    agent_resources: Resources,
    script: MockScript,
    cluster_manager: ClusterManagerConfig,
    raft: RaftConfig,
}

impl SimBuilder {
    /// Three masters and two agents (2 cpus, 2 GiB, ports 31000–32000 each), a lossless
    /// network without latency, tasks that run until killed. Everything random derives from
    /// `seed`.
    pub fn new(seed: u64) -> SimBuilder {
        SimBuilder {
            seed,
            masters: 3,
            agents: 2,
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            agent_resources: Resources::cpus_mem_disk(2.0, 2048.0, 10_000.0)
                .with_ranges("ports", Ranges::single(31000, 32000)),
            script: Arc::new(|_| MockBehaviour::default()),
            cluster_manager: ClusterManagerConfig {
                ping_interval_ms: 1_000,
                max_missed_pings: 3,
                reregister_timeout_ms: 10_000,
                ..ClusterManagerConfig::default()
            },
            raft: RaftConfig::default(),
        }
    }

    pub fn masters(mut self, count: usize) -> SimBuilder {
        self.masters = count;
        self
    }

    pub fn agents(mut self, count: usize) -> SimBuilder {
        self.agents = count;
        self
    }

    /// Every frame takes `base` plus up to `jitter` (drawn from the seed; FIFO per link).
    pub fn latency(mut self, base: Duration, jitter: Duration) -> SimBuilder {
        self.latency = base;
        self.jitter = jitter;
        self
    }

    /// What each agent offers, unreserved.
    pub fn agent_resources(mut self, resources: Resources) -> SimBuilder {
        self.agent_resources = resources;
        self
    }

    /// How the mock driver runs each task (exit after a while, exit code, ...).
    pub fn mock_script(mut self, script: MockScript) -> SimBuilder {
        self.script = script;
        self
    }

    /// The leading master's settings (pings, offers, allocation).
    pub fn cluster_manager(mut self, config: ClusterManagerConfig) -> SimBuilder {
        self.cluster_manager = config;
        self
    }

    pub fn raft(mut self, config: RaftConfig) -> SimBuilder {
        self.raft = config;
        self
    }

    /// Starts every node (masters `m1..`, agents `a1..`) and an operator endpoint (`ops`).
    pub async fn start(self) -> anyhow::Result<SimCluster> {
        let net = SimNet::with_latency(self.seed, self.latency, self.jitter);
        let number = SIMULATIONS.fetch_add(1, Ordering::Relaxed);
        let work = std::env::temp_dir().join(format!("flotilla-sim-{}-{number}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        let master_ids: Vec<String> = (1..=self.masters).map(|i| format!("m{i}")).collect();
        let masters = master_ids.iter().map(|id| self.master_slot(&net, id, &master_ids)).collect();
        let agents = (1..=self.agents).map(|i| self.agent_slot(&net, i, &work, &master_ids)).collect();
        let (operator_node, operator) = operator(&net, self.seed).await?;
        for id in &master_ids {
            operator.connect(id, Address::Sim);
        }
        let invariants = BrokenInvariants::new();
        let mut cluster =
            SimCluster { seed: self.seed, net, masters, agents, operator, operator_node, work, invariants };
        let sink = cluster.invariants.sink();
        for slot in cluster.masters.iter_mut().chain(cluster.agents.iter_mut()) {
            slot.plan.invariants = Some(Arc::clone(&sink));
        }
        for slot in cluster.masters.iter().chain(cluster.agents.iter()) {
            slot.start(cluster.seed).await?;
        }
        Ok(cluster)
    }

    fn master_slot(&self, net: &SimNet, id: &str, all: &[String]) -> NodeSlot {
        let disk = SharedSimDisk::new(SimDisk::new(Rng::seeded(self.seed ^ seed_of(id))));
        let peers: Vec<String> = all.iter().filter(|peer| *peer != id).cloned().collect();
        let storage_disk = disk.clone();
        let storage =
            move || -> Result<Box<dyn RaftStorage + Send>, StorageError> { Ok(Box::new(storage_disk.clone())) };
        let control_plane = ControlPlanePlan {
            storage: Arc::new(storage),
            ..crate::node::master_plan(id, &peers, false, self.raft.clone(), PathBuf::new())
        };
        let server = ServerInfo {
            leader: format!("{id}:8080"),
            framework_id: MARATHON_FRAMEWORK_ID.to_owned(),
            http_port: 8080,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let plan = NodePlan {
            transport: Some(transport_plan(net, id, Role::Master, &peers)),
            control_plane: Some(control_plane),
            cluster_manager: self.cluster_manager.clone(),
            marathon: Some(server),
            ..NodePlan::default()
        };
        NodeSlot::new(id, NodeRole::Master, plan, Some(disk), None)
    }

    fn agent_slot(&self, net: &SimNet, number: usize, work: &std::path::Path, masters: &[String]) -> NodeSlot {
        let id = format!("a{number}");
        let mut resources = RoleResources::new();
        resources.insert(UNRESERVED.to_owned(), self.agent_resources.clone());
        let info = AgentInfo {
            id: id.clone(),
            // An address as hostname: discovery publishes it (SimNet sessions have none).
            hostname: format!("10.0.0.{number}"),
            resources,
            attributes: BTreeMap::new(),
            driver: String::new(),
            isolation_missing: Vec::new(),
        };
        let mut config = AgentConfig::new(info, work.join(&id), masters.to_vec());
        config.master_timeout = Duration::from_secs(5);
        config.status_retry = Duration::from_secs(2);
        let driver = MockDriver::new(Arc::clone(&self.script));
        let plan = NodePlan {
            transport: Some(transport_plan(net, &id, Role::Agent, masters)),
            agent: Some(AgentPlan { config, driver: driver.clone() }),
            ..NodePlan::default()
        };
        NodeSlot::new(&id, NodeRole::Agent, plan, None, Some(driver))
    }
}

/// A stable number per node id, mixed into the seed.
fn seed_of(id: &str) -> u64 {
    // FNV-1a: stable across runs and platforms, unlike std's hasher.
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

fn transport_plan(net: &SimNet, id: &str, role: Role, peers: &[String]) -> TransportPlan {
    let net = net.clone();
    TransportPlan {
        identity: PeerIdentity { cluster: sim_cluster_id(), node: id.to_owned(), role },
        config: sim_transport_config(),
        network: Arc::new(move || Ok(Network::Sim(net.clone()))),
        peers: peers.iter().map(|peer| (peer.clone(), Address::Sim)).collect(),
    }
}

fn sim_cluster_id() -> ClusterId {
    ClusterId::new("sim").expect("a valid cluster id")
}

/// SimNet loses a handshake cut by a partition for good, where QUIC would retransmit it as
/// soon as the path heals; a 1 s handshake timeout stands in for that retransmission.
fn sim_transport_config() -> TransportConfig {
    TransportConfig { handshake_timeout: Duration::from_secs(1), ..TransportConfig::default() }
}

async fn operator(net: &SimNet, seed: u64) -> anyhow::Result<(Node, Transport)> {
    let clock = Arc::new(TokioClock::with_wall_origin(WALL_ORIGIN_MILLIS));
    let node = Node::builder(NodeId::new("ops")?).seed(seed ^ seed_of("ops")).clock(clock).start().await?;
    let identity = PeerIdentity { cluster: sim_cluster_id(), node: "ops".to_owned(), role: Role::Operator };
    let transport = Transport::start(&node, identity, sim_transport_config(), Network::Sim(net.clone()), None).await?;
    Ok((node, transport))
}

/// One node of the simulation, running or crashed, with what outlives its crashes: its
/// plan, its disk (masters) and its host's processes (agents' mock driver).
struct NodeSlot {
    id: String,
    role: NodeRole,
    plan: NodePlan,
    disk: Option<SharedSimDisk>,
    driver: Option<Arc<MockDriver>>,
    clock: Arc<TokioClock>,
    /// The running node; `None` while crashed. Never locked across an `.await`.
    running: Mutex<Option<RunningNode>>,
    /// Set while a start is under way, so two restarts of one node cannot overlap.
    starting: AtomicBool,
    /// How many times it has started (each start draws a different seed).
    starts: AtomicU64,
}

impl NodeSlot {
    fn new(
        id: &str,
        role: NodeRole,
        plan: NodePlan,
        disk: Option<SharedSimDisk>,
        driver: Option<Arc<MockDriver>>,
    ) -> NodeSlot {
        NodeSlot {
            id: id.to_owned(),
            role,
            plan,
            disk,
            driver,
            clock: Arc::new(TokioClock::with_wall_origin(WALL_ORIGIN_MILLIS)),
            running: Mutex::new(None),
            starting: AtomicBool::new(false),
            starts: AtomicU64::new(0),
        }
    }

    fn running(&self) -> MutexGuard<'_, Option<RunningNode>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_running(&self) -> bool {
        self.running().is_some()
    }

    async fn start(&self, seed: u64) -> anyhow::Result<()> {
        anyhow::ensure!(!self.is_running(), "{} is already running", self.id);
        anyhow::ensure!(!self.starting.swap(true, Ordering::SeqCst), "{} is already starting", self.id);
        let starts = self.starts.fetch_add(1, Ordering::SeqCst);
        let mut plan = self.plan.clone();
        plan.seed = Some(seed ^ seed_of(&self.id) ^ starts.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        plan.clock = Some(self.clock.clone());
        let started = match NodeId::new(self.id.clone()) {
            Ok(id) => {
                RunningNode::start_with(id, self.role, plan).await.with_context(|| format!("starting {}", self.id))
            }
            Err(error) => Err(error.into()),
        };
        self.starting.store(false, Ordering::SeqCst);
        *self.running() = Some(started?);
        Ok(())
    }

    /// Stops the node abruptly: its links go silent, its actors die without cleanup, and a
    /// master's disk keeps only what was synced.
    fn crash(&self) {
        let Some(node) = self.running().take() else { return };
        if let Some(transport) = node.transport() {
            transport.abort();
        }
        node.root.cell().kill();
        node.node.shutdown();
        if let Some(disk) = &self.disk {
            disk.0.lock().unwrap_or_else(|e| e.into_inner()).crash();
        }
    }
}

/// A running simulated cluster. Dropping it crashes every node and removes its files.
pub struct SimCluster {
    seed: u64,
    net: SimNet,
    masters: Vec<NodeSlot>,
    agents: Vec<NodeSlot>,
    operator: Transport,
    operator_node: Node,
    work: PathBuf,
    invariants: BrokenInvariants,
}

/// The invariants nodes reported broken ([`Node::invariant_broken`]), in order, each with its
/// node and the simulated time since the cluster started.
struct BrokenInvariants {
    reports: Arc<Mutex<Vec<String>>>,
    start: tokio::time::Instant,
}

impl BrokenInvariants {
    fn new() -> BrokenInvariants {
        BrokenInvariants { reports: Arc::default(), start: tokio::time::Instant::now() }
    }

    fn sink(&self) -> InvariantSink {
        let (reports, start) = (Arc::clone(&self.reports), self.start);
        Arc::new(move |node, what| {
            let at = start.elapsed().as_secs_f64();
            let report = format!("{node} at {at:.3} s: {what}");
            reports.lock().unwrap_or_else(|e| e.into_inner()).push(report);
        })
    }
}

impl SimCluster {
    /// Every invariant a node reported broken so far (each a bug: the battery counts them as
    /// violations).
    pub fn broken_invariants(&self) -> Vec<String> {
        self.invariants.reports.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The digest of every frame delivered so far: equal for two runs of one scenario with
    /// one seed.
    pub fn trace(&self) -> flotilla_transport::Trace {
        self.net.trace()
    }

    /// The network, for faults ([`SimNet::inject`]: partitions, drops, delays, clogs).
    pub fn net(&self) -> &SimNet {
        &self.net
    }

    pub fn master_ids(&self) -> Vec<String> {
        self.masters.iter().map(|slot| slot.id.clone()).collect()
    }

    pub fn agent_ids(&self) -> Vec<String> {
        self.agents.iter().map(|slot| slot.id.clone()).collect()
    }

    /// The operator's endpoint on the network (node `ops`), connected to every master.
    pub fn operator(&self) -> &Transport {
        &self.operator
    }

    /// A registry client (the operator's), for reads, writes and watches.
    pub fn registry(&self) -> RegistryClient {
        RegistryClient::new(self.operator.clone(), self.master_ids(), self.operator_node.random_u64())
    }

    /// A running master's or agent's node context (its actors' names, clock, RNG).
    pub fn node(&self, id: &str) -> Option<Node> {
        self.slot(id).and_then(|slot| slot.running().as_ref().map(|running| running.node.clone()))
    }

    pub fn is_running(&self, id: &str) -> bool {
        self.slot(id).is_some_and(NodeSlot::is_running)
    }

    /// The leading master's state, from the first master whose master actor answers (only
    /// the leader runs one).
    pub async fn master_state(&self) -> Option<MasterState> {
        for slot in self.masters.iter().filter(|slot| slot.is_running()) {
            let asked = self.operator.call(&slot.id, MASTER_NAME, &MasterQuery::State, CALL_DEADLINE).await;
            if let Ok(state) = asked {
                return Some(state);
            }
        }
        None
    }

    /// The leader's id, once a master has been elected and finished recovering.
    pub async fn leader(&self) -> Option<String> {
        self.master_state().await.filter(|state| !state.recovering).map(|state| state.leader)
    }

    /// A Marathon API request (`/v2/...`, with an optional query after `?`) answered by the
    /// leader's scheduler, as the HTTP API would pass it; `None` while no leader answers.
    pub async fn marathon(&self, method: &str, path: &str, body: serde_json::Value) -> Option<RestResponse> {
        let leader = self.master_state().await?.leader;
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let body = if body.is_null() { Vec::new() } else { serde_json::to_vec(&body).ok()? };
        let request = RestRequest { method: method.to_owned(), path: path.to_owned(), query: query.to_owned(), body };
        self.operator.call(&leader, MARATHON_NAME, &MarathonCall(request), CALL_DEADLINE).await.ok()
    }

    /// The mock driver of an agent: the tasks its host runs, across the agent's restarts.
    pub fn driver(&self, agent: &str) -> Option<&Arc<MockDriver>> {
        self.agents.iter().find(|slot| slot.id == agent).and_then(|slot| slot.driver.as_ref())
    }

    /// Every task running on any agent's host.
    pub fn running_tasks(&self) -> Vec<String> {
        self.agents.iter().filter_map(|slot| slot.driver.as_ref()).flat_map(|driver| driver.running()).collect()
    }

    /// Crashes a node (master or agent): see [`Self::restart`] to bring it back.
    pub fn crash(&self, id: &str) -> anyhow::Result<()> {
        self.slot(id).with_context(|| format!("no node {id}"))?.crash();
        Ok(())
    }

    /// Starts a crashed node again under the same identity, with its disk and work directory.
    pub async fn restart(&self, id: &str) -> anyhow::Result<()> {
        self.slot(id).with_context(|| format!("no node {id}"))?.start(self.seed).await
    }

    /// Shifts a node's clock by `nanos` (positive: ahead); it keeps the skew across restarts.
    pub fn skew_clock(&self, id: &str, nanos: i64) -> anyhow::Result<()> {
        let slot = self.slot(id).with_context(|| format!("no node {id}"))?;
        slot.clock.set_skew_nanos(nanos);
        Ok(())
    }

    /// A master's simulated disk (storage faults: failing writes, a full disk, torn writes).
    pub fn disk(&self, master: &str) -> Option<&SharedSimDisk> {
        self.masters.iter().find(|slot| slot.id == master).and_then(|slot| slot.disk.as_ref())
    }

    /// Stops every node in order (agents first), then the operator's endpoint.
    pub async fn shutdown(self) {
        for slot in self.agents.iter().chain(self.masters.iter()) {
            let running = slot.running().take();
            if let Some(node) = running {
                let _ = node.shutdown(STOP_DEADLINE).await;
            }
        }
    }

    fn slot(&self, id: &str) -> Option<&NodeSlot> {
        self.masters.iter().chain(self.agents.iter()).find(|slot| slot.id == id)
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        for slot in self.agents.iter().chain(self.masters.iter()) {
            slot.crash();
        }
        self.operator.abort();
        self.operator_node.shutdown();
        let _ = std::fs::remove_dir_all(&self.work);
    }
}
