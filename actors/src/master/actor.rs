//! The master actor (leader-only, one per term). It loads the admitted agents from the
//! registry, waits for them to re-register (reconciliation after a failover), answers agents
//! and frameworks, and runs the pure core's actions: commands to agents stamped with its term,
//! events to frameworks, agent records to the registry.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use flotilla_supervisors::Node;
use flotilla_transport::{Address, ReplyPort, Role, Sender, Transport};
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{info, warn};

use super::core::{Action, AgentRecord, MasterConfig, MasterCore};
use crate::discovery::entries::{DISCOVERY_PREFIX, registry_entry};
use crate::discovery::{MasterEntry, ViewChange};
use crate::mesos::protocol::{
    AGENT_NAME, AgentMessage, FrameworkInfo, FrameworkSink, MASTER_NAME, MasterQuery, MasterState, SchedulerCall,
    ToAgent,
};
use crate::registry::actor::{RegistryMsg, list_decoded, list_keys};
use crate::registry::core::{MAX_TXN_ITEMS, Op, Txn};
use crate::registry::protocol::{RegistryReply, RegistryRequest};

/// Where the admitted agents live in the registry.
pub const AGENTS_PREFIX: &str = "/mesos/agents/";

/// How long the new leader waits for the registry to list the admitted agents.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(10);

/// The name the master actor has in its node.
pub const MASTER_ACTOR: &str = MASTER_NAME;

pub struct MasterArgs {
    pub config: MasterConfig,
    pub term: u64,
    pub transport: Transport,
    pub node: Node,
    pub registry: ActorRef<RegistryMsg>,
    /// How often the core's timers are checked.
    pub tick: Duration,
}

pub enum MasterMsg {
    FromAgent(Sender, AgentMessage),
    Query(Sender, MasterQuery, ReplyPort<MasterState>),
    State(RpcReplyPort<MasterState>),
    Subscribe { info: FrameworkInfo, sink: FrameworkSink, reply: RpcReplyPort<String> },
    Call { framework: String, call: SchedulerCall },
    Tick,
}

impl std::fmt::Debug for MasterMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MasterMsg::FromAgent(from, m) => write!(f, "FromAgent({}, {m:?})", from.node),
            MasterMsg::Query(from, q, _) => write!(f, "Query({}, {q:?})", from.node),
            MasterMsg::State(_) => f.write_str("State"),
            MasterMsg::Subscribe { info, .. } => write!(f, "Subscribe({})", info.name),
            MasterMsg::Call { framework, call } => write!(f, "Call({framework}, {call:?})"),
            MasterMsg::Tick => f.write_str("Tick"),
        }
    }
}

pub struct MasterActorState {
    core: MasterCore,
    transport: Transport,
    node: Node,
    registry: ActorRef<RegistryMsg>,
    frameworks: BTreeMap<String, FrameworkSink>,
    ticker: JoinHandle<()>,
    discovery: DiscoveryWriter,
}

/// How the discovery entries reach the registry: rewritten whole once the new leader knows
/// what runs where, then one write at a time, each carrying every change since the last
/// (changes pile up in the core's ledger while a write is in flight).
#[derive(Default)]
struct DiscoveryWriter {
    synced: bool,
    in_flight: Option<tokio::sync::oneshot::Receiver<RegistryReply>>,
}

#[derive(Debug, Default)]
pub struct Master;

impl Actor for Master {
    type Msg = MasterMsg;
    type State = MasterActorState;
    type Arguments = MasterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MasterMsg>,
        args: MasterArgs,
    ) -> Result<MasterActorState, ActorProcessingErr> {
        let MasterArgs { config, term, transport, node, registry, tick } = args;
        let known: Vec<AgentRecord> = list_decoded(&registry, AGENTS_PREFIX, REGISTRY_TIMEOUT).await?;
        let now = node.now().since_origin().as_millis() as u64;
        let me = transport.node().to_owned();
        info!(term, agents = known.len(), "leading master starts; waiting for the admitted agents to re-register");
        let core = MasterCore::new(config, &me, term, now, node.clock().wall_millis(), known);
        node.register(MASTER_ACTOR, myself.get_cell())?;
        transport.export_from::<AgentMessage, MasterMsg>(MASTER_NAME, &myself, MasterMsg::FromAgent);
        transport.export_call_from::<MasterQuery, MasterMsg>(MASTER_NAME, &myself, MasterMsg::Query);
        let ticker = myself.send_interval(tick, || MasterMsg::Tick);
        let discovery = DiscoveryWriter::default();
        Ok(MasterActorState { core, transport, node, registry, frameworks: BTreeMap::new(), ticker, discovery })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<MasterMsg>,
        state: &mut MasterActorState,
    ) -> Result<(), ActorProcessingErr> {
        state.ticker.abort();
        state.transport.unexport(MASTER_NAME);
        state.node.unregister(MASTER_ACTOR, &myself.get_cell());
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<MasterMsg>,
        msg: MasterMsg,
        state: &mut MasterActorState,
    ) -> Result<(), ActorProcessingErr> {
        let actions = match msg {
            MasterMsg::FromAgent(from, message) => state.on_agent_message(from, message),
            MasterMsg::Query(_, MasterQuery::State, reply) => {
                reply.send(state.core.state());
                Vec::new()
            }
            MasterMsg::State(reply) => {
                let _ = reply.send(state.core.state());
                Vec::new()
            }
            MasterMsg::Subscribe { info, sink, reply } => {
                let (id, actions) = state.core.subscribe(info);
                info!(framework = %id, "framework subscribed");
                state.frameworks.insert(id.clone(), sink);
                let _ = reply.send(id);
                actions
            }
            MasterMsg::Call { framework, call } => {
                let now = state.now_ms();
                state.core.call(&framework, call, now)
            }
            MasterMsg::Tick => {
                let (now, wall, seed) = (state.now_ms(), state.node.clock().wall_millis(), state.node.random_u64());
                state.core.tick(now, wall, seed)
            }
        };
        state.carry_out(actions);
        state.publish_discovery().await;
        Ok(())
    }
}

impl MasterActorState {
    fn now_ms(&self) -> u64 {
        self.node.now().since_origin().as_millis() as u64
    }

    fn on_agent_message(&mut self, from: Sender, message: AgentMessage) -> Vec<Action> {
        if from.role != Role::Agent {
            warn!(node = %from.node, role = ?from.role, "refused an agent message from a node that is not an agent");
            return Vec::new();
        }
        match message {
            AgentMessage::Register { info, tasks, newest_term } => {
                if newest_term > self.core.term() {
                    // The agent has seen a newer leader: this one is deposed and will stop.
                    warn!(agent = %from.node, newest_term, "an agent knows a newer term than this leader");
                    return Vec::new();
                }
                info!(agent = %from.node, tasks = tasks.len(), "agent registered");
                self.core.register_agent(&from.node, info, tasks, self.node.clock().wall_millis())
            }
            AgentMessage::Update(status) => self.core.agent_update(&from.node, status),
            AgentMessage::Pong { term } => {
                self.core.pong(&from.node, term);
                Vec::new()
            }
            AgentMessage::NeverLaunched { task_ids } => {
                warn!(agent = %from.node, tasks = ?task_ids, "launches never reached the agent; their tasks are dropped");
                self.core.never_launched(&from.node, task_ids)
            }
        }
    }

    fn carry_out(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::ToAgent { agent, command } => {
                    let message = ToAgent { term: self.core.term(), command };
                    if let Err(error) = self.transport.cast(&agent, AGENT_NAME, &message) {
                        warn!(%agent, %error, "cannot reach the agent");
                    }
                }
                Action::ToFramework { framework, event } => {
                    let gone = match self.frameworks.get(&framework) {
                        Some(sink) => sink(event).is_err(),
                        None => false,
                    };
                    if gone {
                        info!(%framework, "framework disconnected");
                        self.frameworks.remove(&framework);
                        self.core.disconnect(&framework);
                    }
                }
                Action::PersistAgent(record) => self.persist(&record),
            }
        }
    }

    /// Writes the discovery entries that changed, unless a write is still in flight (its
    /// successor then carries the changes made meanwhile). The first write, once recovery
    /// ended, replaces whatever an earlier leader left.
    async fn publish_discovery(&mut self) {
        if self.core.is_recovering() {
            return;
        }
        if !self.discovery.synced {
            self.discovery.synced = true;
            self.rewrite_discovery().await;
            return;
        }
        if let Some(in_flight) = &mut self.discovery.in_flight {
            match in_flight.try_recv() {
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => return,
                Ok(RegistryReply::Written(_)) => {}
                Ok(other) => {
                    warn!(answer = ?other, "a discovery write failed; rewriting every entry");
                    self.discovery.synced = false;
                }
                Err(_) => self.discovery.synced = false,
            }
            self.discovery.in_flight = None;
            if !self.discovery.synced {
                return;
            }
        }
        let changes = self.core.discovery_changes(|node| session_ip(&self.transport, node));
        let ops: Vec<Op> = changes.iter().map(entry_op).collect();
        self.write_discovery(ops);
    }

    /// Every entry as this leader sees it, and deletes of those an earlier leader wrote that
    /// are no longer true.
    async fn rewrite_discovery(&mut self) {
        let existing = match list_keys(&self.registry, DISCOVERY_PREFIX, REGISTRY_TIMEOUT).await {
            Ok(keys) => keys,
            Err(error) => {
                warn!(%error, "cannot list the discovery entries; retrying");
                self.discovery.synced = false;
                return;
            }
        };
        self.core.republish_discovery();
        let mut changes = self.core.discovery_changes(|node| session_ip(&self.transport, node));
        changes.push(self.masters_entry().await);
        let mut ops: Vec<Op> = changes.iter().map(entry_op).collect();
        let written: BTreeSet<String> = changes.iter().map(|c| registry_entry(c).0).collect();
        ops.extend(existing.into_iter().filter(|key| !written.contains(key)).map(|key| Op::Delete { key }));
        self.write_discovery(ops);
    }

    /// The masters (the voters) and this leader, with the addresses their sessions come from.
    async fn masters_entry(&self) -> ViewChange {
        let (port, answer) = ReplyPort::local();
        let _ = self.registry.send_message(RegistryMsg::Request(RegistryRequest::Status, port));
        let voters = match tokio::time::timeout(REGISTRY_TIMEOUT, answer).await {
            Ok(Ok(RegistryReply::Status(status))) => status.voters,
            _ => Vec::new(),
        };
        let me = self.transport.node().to_owned();
        // A master listening on every interface reports loopback for itself (what a
        // one-host cluster needs); other masters' addresses are where their sessions come from.
        let own_ip = self.transport.local_addr().map(|a| a.ip()).filter(|ip| !ip.is_unspecified());
        let own_ip = own_ip.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        let masters = voters
            .iter()
            .filter_map(|id| {
                let ip = if *id == me { Some(own_ip) } else { session_ip(&self.transport, id) };
                Some(MasterEntry { id: id.clone(), ip: ip? })
            })
            .collect();
        ViewChange::Masters { masters, leader: Some(me) }
    }

    /// Sends `ops` in transactions the registry accepts, in order; the last one's answer is
    /// awaited by the next [`publish_discovery`](Self::publish_discovery).
    fn write_discovery(&mut self, ops: Vec<Op>) {
        let mut chunks = ops.chunks(MAX_TXN_ITEMS).peekable();
        while let Some(chunk) = chunks.next() {
            let txn = Txn { compare: Vec::new(), success: chunk.to_vec(), failure: Vec::new() };
            let (port, answer) = ReplyPort::local();
            let request = RegistryRequest::Write(self.fenced(txn));
            if self.registry.send_message(RegistryMsg::Request(request, port)).is_err() {
                warn!("the registry is gone; discovery entries were not written");
                return;
            }
            if chunks.peek().is_none() {
                self.discovery.in_flight = Some(answer);
            }
        }
    }

    /// A registry command fenced to this master's term: refused once a newer leader exists.
    fn fenced(&self, txn: Txn) -> crate::registry::core::Command {
        crate::registry::core::Command { id: None, txn, leader_term: Some(self.core.term()) }
    }

    /// Writes the agent's record; the answer is not awaited (a lost write is redone on the
    /// agent's next registration, and the record only matters to the next leader).
    fn persist(&self, record: &AgentRecord) {
        let key = format!("{AGENTS_PREFIX}{}", record.info.id);
        let value = postcard::to_stdvec(record).expect("agent records serialize");
        let (port, _) = ReplyPort::local();
        let request = RegistryRequest::Write(self.fenced(Txn::put(key, value)));
        if self.registry.send_message(RegistryMsg::Request(request, port)).is_err() {
            warn!("the registry is gone; an agent record was not written");
        }
    }
}

/// A discovery change as a registry operation.
fn entry_op(change: &ViewChange) -> Op {
    match registry_entry(change) {
        (key, Some(value)) => Op::Put { key, value },
        (key, None) => Op::Delete { key },
    }
}

/// The address `node`'s transport session comes from (none on SimNet).
fn session_ip(transport: &Transport, node: &str) -> Option<IpAddr> {
    match transport.peer_stats(node)?.address? {
        Address::Udp(address) => Some(address.ip()),
        Address::Sim => None,
    }
}
