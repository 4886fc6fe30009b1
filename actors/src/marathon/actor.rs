//! The service scheduler actor (leader-only, a framework of the master): it loads the apps,
//! instances and deployments from the registry, subscribes to the master, and feeds the pure
//! [`SchedulerCore`] with REST requests, offers, status updates and a tick. Every answer's
//! records are written to the registry before its effects leave or its reply is sent; a
//! failed write stops the actor, and its supervisor restarts it from the registry.

use std::sync::Arc;
use std::time::Duration;

use flotilla_supervisors::Node;
use flotilla_transport::{ReplyPort, Role, Sender, Transport};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::broadcast;
use tracing::{info, warn};

use super::core::rest::{self, RestRequest, RestResponse, ServerInfo};
use super::core::scheduler::{
    APPS_PREFIX, AppRecord, DEPLOYMENTS_PREFIX, DeploymentRecord, Effect, INSTANCES_PREFIX, Instance, ReadinessProbe,
    SchedulerConfig, SchedulerCore, Write,
};
use super::core::timestamp::Timestamp;
use super::protocol::{MARATHON_FRAMEWORK_ID, MARATHON_NAME, MarathonCall};
use super::readiness::ReadinessProber;
use crate::master::actor::MasterMsg;
use crate::mesos::core::UNRESERVED;
use crate::mesos::protocol::{
    DEFAULT_REFUSE_MS, FrameworkEvent, FrameworkInfo, FrameworkSink, Operation, SchedulerCall,
};
use crate::registry::actor::{RegistryMsg, list_json, local_request};
use crate::registry::core::{Command, MAX_TXN_ITEMS, Op, RequestId, Txn};
use crate::registry::protocol::RegistryRequest;

/// The name the scheduler is registered under on its node.
pub const SCHEDULER_ACTOR: &str = "marathon";

/// How long a registry read or write may take.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the scheduler looks at deployments with news (the core throttles each one, and
/// looks at everything once a second: backoff ends, unreachable instances).
const TICK: Duration = Duration::from_millis(100);
/// How many events a slow `/v2/events` reader may fall behind before it loses some.
const EVENT_BUFFER: usize = 4_096;

/// One event of `/v2/events`: its type and its JSON payload.
#[derive(Clone, Debug)]
pub struct MarathonEvent {
    pub event_type: String,
    pub json: String,
}

pub struct SchedulerArgs {
    pub transport: Transport,
    pub node: Node,
    pub registry: ActorRef<RegistryMsg>,
    pub master: ActorRef<MasterMsg>,
    /// What `/v2/info` and `/v2/leader` report.
    pub server: ServerInfo,
    pub config: SchedulerConfig,
    /// The leader term this scheduler runs for: its registry writes are fenced to it.
    pub term: u64,
}

pub enum SchedulerMsg {
    /// A REST request (from this node's HTTP server or forwarded by a follower's).
    Rest(RestRequest, RpcReplyPort<RestResponse>),
    Remote(Sender, MarathonCall, ReplyPort<RestResponse>),
    /// A receiver of the event stream.
    Events(RpcReplyPort<broadcast::Receiver<Arc<MarathonEvent>>>),
    Event(FrameworkEvent),
    Tick,
    /// A readiness probe's outcome.
    Ready {
        task_id: String,
        ready: bool,
    },
}

impl std::fmt::Debug for SchedulerMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SchedulerMsg::Rest(request, _) => write!(f, "Rest({} {})", request.method, request.path),
            SchedulerMsg::Remote(from, call, _) => {
                write!(f, "Remote({}, {} {})", from.node, call.0.method, call.0.path)
            }
            SchedulerMsg::Events(_) => write!(f, "Events"),
            SchedulerMsg::Event(event) => write!(f, "Event({event:?})"),
            SchedulerMsg::Tick => write!(f, "Tick"),
            SchedulerMsg::Ready { task_id, ready } => write!(f, "Ready({task_id}, {ready})"),
        }
    }
}

pub struct SchedulerState {
    transport: Transport,
    node: Node,
    registry: ActorRef<RegistryMsg>,
    master: ActorRef<MasterMsg>,
    server: ServerInfo,
    term: u64,
    core: SchedulerCore,
    events: broadcast::Sender<Arc<MarathonEvent>>,
    /// The last timestamp handed out: versions must be unique and increasing.
    last_now: u64,
    /// Makes the readiness probes (linked: it dies with the scheduler).
    prober: ActorRef<ReadinessProbe>,
}

#[derive(Debug, Default)]
pub struct Scheduler;

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = SchedulerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SchedulerMsg>,
        args: SchedulerArgs,
    ) -> Result<SchedulerState, ActorProcessingErr> {
        let SchedulerArgs { transport, node, registry, master, server, config, term } = args;
        let apps: Vec<AppRecord> = list_json(&registry, &format!("{APPS_PREFIX}/"), REGISTRY_TIMEOUT).await?;
        let instances: Vec<Instance> = list_json(&registry, INSTANCES_PREFIX, REGISTRY_TIMEOUT).await?;
        let deployments: Vec<DeploymentRecord> = list_json(&registry, DEPLOYMENTS_PREFIX, REGISTRY_TIMEOUT).await?;
        let now = Timestamp::from_millis(node.clock().wall_millis());
        let counts = (apps.len(), instances.len(), deployments.len());
        let (core, effects) = SchedulerCore::recover(config, apps, instances, deployments, now, node.random_u64());
        let relay = myself.clone();
        let sink: FrameworkSink = Arc::new(move |event| relay.send_message(SchedulerMsg::Event(event)).map_err(|_| ()));
        let info = FrameworkInfo {
            id: Some(MARATHON_FRAMEWORK_ID.to_owned()),
            name: "marathon".to_owned(),
            roles: vec![UNRESERVED.to_owned()],
            partition_aware: true,
        };
        ractor::call_t!(master, |reply| MasterMsg::Subscribe { info, sink, reply }, 10_000)?;
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (prober, _) = Actor::spawn_linked(None, ReadinessProber, myself.clone(), myself.get_cell()).await?;
        let last_now = now.millis();
        let mut state =
            SchedulerState { transport, node, registry, master, server, term, core, events, last_now, prober };
        state.flush(effects).await?;
        state.node.register(SCHEDULER_ACTOR, myself.get_cell())?;
        state.transport.export_call_from::<MarathonCall, SchedulerMsg>(MARATHON_NAME, &myself, SchedulerMsg::Remote);
        myself.send_interval(TICK, || SchedulerMsg::Tick);
        info!(apps = counts.0, instances = counts.1, deployments = counts.2, "marathon scheduler subscribed");
        Ok(state)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        state.transport.unexport(MARATHON_NAME);
        state.node.unregister(SCHEDULER_ACTOR, &myself.get_cell());
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<SchedulerMsg>,
        msg: SchedulerMsg,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SchedulerMsg::Rest(request, reply) => {
                let response = state.rest(&request).await?;
                let _ = reply.send(response);
            }
            SchedulerMsg::Remote(from, MarathonCall(request), reply) => {
                if !matches!(from.role, Role::Master | Role::Operator) {
                    reply.send(RestResponse::message(403, "Not Authorized to perform this action!"));
                    return Ok(());
                }
                let response = state.rest(&request).await?;
                reply.send(response);
            }
            SchedulerMsg::Events(reply) => {
                let _ = reply.send(state.events.subscribe());
            }
            SchedulerMsg::Event(FrameworkEvent::Offers(offers)) => {
                let now = state.now();
                state.core.note_agents(&offers);
                let effects = state.core.offers(offers, now);
                state.flush(effects).await?;
            }
            SchedulerMsg::Event(FrameworkEvent::Update(status)) => {
                if let Some(uuid) = status.uuid {
                    let (agent_id, task_id) = (status.agent_id.clone(), status.task_id.clone());
                    state.call(SchedulerCall::Acknowledge { agent_id, task_id, uuid });
                }
                let now = state.now();
                let effects = state.core.status(&status, now);
                state.flush(effects).await?;
            }
            SchedulerMsg::Event(FrameworkEvent::Error(message)) => warn!(%message, "the master refused a call"),
            SchedulerMsg::Event(_) => {}
            SchedulerMsg::Tick => {
                let now = state.now();
                let effects = state.core.tick(now);
                for probe in state.core.readiness_due(now) {
                    state.prober.send_message(probe)?;
                }
                state.flush(effects).await?;
            }
            SchedulerMsg::Ready { task_id, ready } => {
                let now = state.now();
                let effects = state.core.readiness_result(&task_id, ready, now);
                state.flush(effects).await?;
            }
        }
        Ok(())
    }
}

impl SchedulerState {
    /// Wall-clock time, strictly increasing across calls (versions are timestamps).
    fn now(&mut self) -> Timestamp {
        self.last_now = self.node.clock().wall_millis().max(self.last_now + 1);
        Timestamp::from_millis(self.last_now)
    }

    async fn rest(&mut self, request: &RestRequest) -> Result<RestResponse, ActorProcessingErr> {
        let now = self.now();
        let (response, effects) = rest::handle(&mut self.core, request, &self.server, now);
        self.flush(effects).await?;
        Ok(response)
    }

    /// Writes the core's records, then sends its effects and events. A failed write leaves
    /// the core ahead of the registry: the actor stops and restarts from the registry.
    async fn flush(&mut self, effects: Vec<Effect>) -> Result<(), ActorProcessingErr> {
        let writes = self.core.take_writes();
        self.write(writes).await.map_err(|error| format!("cannot store the scheduler's records: {error}"))?;
        let lazy = self.core.take_lazy_writes();
        self.write_lazily(lazy);
        for effect in effects {
            self.send(effect);
        }
        for event in self.core.take_events() {
            let event_type = event.get("eventType").and_then(|t| t.as_str()).unwrap_or("unknown").to_owned();
            let _ = self.events.send(Arc::new(MarathonEvent { event_type, json: event.to_string() }));
        }
        Ok(())
    }

    async fn write(&self, writes: Vec<Write>) -> Result<(), String> {
        for command in self.commands(writes) {
            local_request(&self.registry, RegistryRequest::Write(command), REGISTRY_TIMEOUT).await?;
        }
        Ok(())
    }

    /// Sends writes without waiting for them (a lost one is corrected by reconciliation).
    fn write_lazily(&self, writes: Vec<Write>) {
        for command in self.commands(writes) {
            let (port, _answer) = ReplyPort::local();
            let _ = self.registry.send_message(RegistryMsg::Request(RegistryRequest::Write(command), port));
        }
    }

    /// Registry commands for these writes, at most a transaction's worth each.
    fn commands(&self, writes: Vec<Write>) -> Vec<Command> {
        let ops: Vec<Op> = writes
            .into_iter()
            .map(|(key, value)| match value {
                Some(value) => Op::Put { key, value },
                None => Op::Delete { key },
            })
            .collect();
        ops.chunks(MAX_TXN_ITEMS)
            .map(|chunk| {
                let txn = Txn { compare: Vec::new(), success: chunk.to_vec(), failure: Vec::new() };
                let id = Some(RequestId { client: self.node.random_u64(), seq: 1 });
                Command { id, txn, leader_term: Some(self.term) }
            })
            .collect()
    }

    fn send(&self, effect: Effect) {
        let call = match effect {
            // What a launch leaves of an offer goes back to the allocator unfiltered: more
            // instances may be waiting for it (Marathon filters declines only).
            Effect::Launch { offer_id, tasks } => SchedulerCall::Accept {
                offer_ids: vec![offer_id],
                operations: vec![Operation::Launch(tasks)],
                refuse_ms: 0,
            },
            // A decline, not an empty accept: an accept must name offers of one agent, all
            // still outstanding, and a refused one would leave every offer held until it
            // expires, starving the instances that arrive meanwhile.
            Effect::Decline(offer_ids) => SchedulerCall::Decline { offer_ids, refuse_ms: DEFAULT_REFUSE_MS },
            Effect::Kill { task_id } => SchedulerCall::Kill { task_id },
            Effect::Revive => SchedulerCall::Revive { roles: Vec::new() },
            Effect::Suppress => SchedulerCall::Suppress { roles: Vec::new() },
            Effect::Reconcile(task_ids) => SchedulerCall::Reconcile { task_ids },
        };
        self.call(call);
    }

    fn call(&self, call: SchedulerCall) {
        let _ = self.master.send_message(MasterMsg::Call { framework: MARATHON_FRAMEWORK_ID.to_owned(), call });
    }
}
