//! The chaos actor: faults injected into a live node on purpose, in the transport's `Fault`
//! vocabulary (DESIGN.md §1.9), with the same meaning as in the simulator
//! (`flotilla::sim::chaos`).
//!
//! It runs only where chaos is enabled, as a permanent child of the node's root tree (after
//! the API), registered and exported as [`CHAOS_NAME`]. Operators reach it through the HTTP
//! API (`/chaos/v1/...`, in-process) or over the transport (`flotilla chaos`); masters and
//! operators may ask it, agents may not. A fault is carried out by the nodes that hold it
//! (`core::faults::holders`): this node carries out its own part and forwards the others to
//! their nodes' chaos actors, one hop, with the holder named, so a request never travels on.
//!
//! How each fault is carried out on a real node:
//! - link faults: the node's transport judges the frames it sends and receives
//!   (`Transport::inject_fault`);
//! - `KillActor`: the actor registered under the name is killed; its supervisor restarts it;
//! - `PauseNode`: two clogs, everything out of and into the node, healed when the pause ends
//!   (the node's own timers keep running, as in the simulator);
//! - `ClockSkew`: the node clock's skew, set back to zero on heal;
//! - `CrashNode`: the node's crash hook (`flotilla::node`): the transport ends abruptly — no
//!   goodbye, peers find out through their failure detectors — and the root supervisor
//!   restarts it and everything after it, this actor included. It happens
//!   [`CRASH_DELAY`] after the answer, so the caller hears of it;
//! - `RestartNode`: a running node has nothing to restart (a crashed real node restarts at
//!   once, by its supervisor), so it is recorded and does nothing, as in the simulator;
//! - `Heal`: every fault this node holds is healed.
//!
//! Every fault gets an id; faults with a duration heal themselves; each injection and heal is
//! logged and published as a `chaos_fault_injected` / `chaos_fault_healed` event, which the
//! HTTP API adds to `/v2/events`. The monkey draws a schedule from a seed
//! (`core::monkey::schedule`, which keeps its exclusions) and injects it through the same path.
//!
//! Time for heals and the monkey is tokio's clock from the actor's start, not the node's
//! clock: a clock-skew fault must not move its own heal.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use flotilla_supervisors::{ChildKind, ChildSpec, Node, StartError, Started, Time, TokioClock};
use flotilla_transport::core::wire::RemoteError;
use flotilla_transport::{CallError, Fault, ReplyPort, Role, Sender, Transport};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::broadcast;

use super::core::faults::{
    ChaosError, Effect, FaultTable, FaultView, Held, check_request, holders, is_instantaneous, kind, pause_clogs,
    touches,
};
use super::core::monkey::{MonkeyConfig, ScheduledFault, schedule};
use super::protocol::{CHAOS_NAME, ChaosReply, ChaosRequest, Injection, MonkeyRequest, MonkeyStatus, NodeFailure};
use crate::control_plane::CurrentTransport;

/// How long a forwarded request may take on the other node.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after answering a `CrashNode` the node crashes.
pub const CRASH_DELAY: Duration = Duration::from_millis(200);
/// How long after answering another node a link fault (or a pause) asked by it is applied:
/// the fault may cut or clog the very link the answer travels on.
pub const FORWARDED_APPLY_DELAY: Duration = Duration::from_millis(200);
/// Events buffered for slow subscribers (older ones are skipped).
const EVENT_BUFFER: usize = 1_024;

/// How a node crashes itself: end the transport abruptly and let the root restart the tree.
pub type CrashHook = Arc<dyn Fn() + Send + Sync>;

/// What a node's chaos actor is built from.
#[derive(Clone)]
pub struct ChaosPlan {
    /// The cluster's masters (the monkey never takes down more than a minority of them).
    pub masters: Vec<String>,
    pub transport: CurrentTransport,
    /// The node's clock, when it can be skewed (`None`: `ClockSkew` is refused).
    pub clock: Option<Arc<TokioClock>>,
    pub crash: CrashHook,
}

/// An event for the event stream: its type and its JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChaosEvent {
    pub event_type: String,
    pub json: String,
}

pub const FAULT_INJECTED: &str = "chaos_fault_injected";
pub const FAULT_HEALED: &str = "chaos_fault_healed";

pub enum ChaosMsg {
    /// A request; `from` is the authenticated remote sender, `None` in-process (HTTP API).
    Request {
        from: Option<Sender>,
        request: ChaosRequest,
        reply: ReplyPort<ChaosReply>,
    },
    /// A subscription to this node's chaos events.
    Events(RpcReplyPort<broadcast::Receiver<Arc<ChaosEvent>>>),
    HealDue,
    MonkeyDue,
    Crash,
    /// Carry out held fault `id`, recorded when another node asked for it.
    Apply(u64),
}

/// The chaos actor as a permanent child of a node's root tree.
pub fn chaos_child(plan: ChaosPlan) -> ChildSpec {
    ChildSpec::new(CHAOS_NAME, ChildKind::Worker, move |ctx| {
        let plan = plan.clone();
        async move {
            let transport = (plan.transport)().ok_or_else(|| StartError("no running transport".into()))?;
            let args = (ctx.node.clone(), transport, plan);
            let (actor, _) = Actor::spawn_linked(None, ChaosActor, args, ctx.supervisor.clone()).await?;
            Ok(Started::Running(actor.get_cell()))
        }
    })
}

pub struct ChaosActor;

struct Monkey {
    seed: u64,
    started: Time,
    pending: VecDeque<ScheduledFault>,
    injected: u64,
    failed: u64,
}

pub struct ChaosState {
    node: Node,
    me: String,
    transport: Transport,
    plan: ChaosPlan,
    table: FaultTable,
    origin: tokio::time::Instant,
    events: broadcast::Sender<Arc<ChaosEvent>>,
    monkey: Option<Monkey>,
}

impl Actor for ChaosActor {
    type Msg = ChaosMsg;
    type State = ChaosState;
    type Arguments = (Node, Transport, ChaosPlan);

    async fn pre_start(
        &self,
        myself: ActorRef<ChaosMsg>,
        (node, transport, plan): Self::Arguments,
    ) -> Result<ChaosState, ActorProcessingErr> {
        node.register(CHAOS_NAME, myself.get_cell())?;
        transport.export_call_from::<ChaosRequest, ChaosMsg>(CHAOS_NAME, &myself, |from, request, reply| {
            ChaosMsg::Request { from: Some(from), request, reply }
        });
        let me = node.id().as_str().to_owned();
        tracing::warn!(node = %me, "chaos is enabled on this node: faults may be injected on purpose");
        Ok(ChaosState {
            table: FaultTable::new(me.clone()),
            me,
            node,
            transport,
            plan,
            origin: tokio::time::Instant::now(),
            events: broadcast::channel(EVENT_BUFFER).0,
            monkey: None,
        })
    }

    async fn post_stop(&self, myself: ActorRef<ChaosMsg>, state: &mut ChaosState) -> Result<(), ActorProcessingErr> {
        // Faults outlive no chaos actor: a stopped (or restarting) one leaves a healthy node.
        for held in state.table.heal_all() {
            state.undo(&held);
        }
        state.transport.unexport(CHAOS_NAME);
        state.node.unregister(CHAOS_NAME, &myself.get_cell());
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ChaosMsg>,
        msg: ChaosMsg,
        state: &mut ChaosState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ChaosMsg::Request { from, request, reply } => {
                let answer = match refusal(from.as_ref()) {
                    Some(refused) => refused,
                    None => state.request(&myself, request, from.is_some()).await,
                };
                reply.send(answer);
            }
            ChaosMsg::Events(reply) => {
                let _ = reply.send(state.events.subscribe());
            }
            ChaosMsg::HealDue => state.heal_due(&myself),
            ChaosMsg::MonkeyDue => state.monkey_due(&myself).await,
            ChaosMsg::Apply(id) => state.apply_deferred(&myself, id),
            ChaosMsg::Crash => {
                tracing::error!(node = %state.me, "chaos: crashing this node (CrashNode)");
                (state.plan.crash)();
            }
        }
        Ok(())
    }
}

/// Agents may not inject faults; masters (forwarding) and operators may.
fn refusal(from: Option<&Sender>) -> Option<ChaosReply> {
    let from = from?;
    (from.role == Role::Agent)
        .then(|| ChaosReply::Refused(format!("{} is an agent; agents may not inject faults", from.node)))
}

/// Why this node could not carry out its part of a fault.
enum LocalError {
    Invalid(String),
    Refused(String),
}

impl LocalError {
    fn message(&self) -> &str {
        match self {
            LocalError::Invalid(message) | LocalError::Refused(message) => message,
        }
    }

    fn into_reply(self) -> ChaosReply {
        match self {
            LocalError::Invalid(message) => ChaosReply::Invalid(message),
            LocalError::Refused(message) => ChaosReply::Refused(message),
        }
    }
}

impl From<ChaosError> for LocalError {
    fn from(error: ChaosError) -> Self {
        match error {
            ChaosError::TooManyFaults { .. } => LocalError::Refused(error.to_string()),
            other => LocalError::Invalid(other.to_string()),
        }
    }
}

impl ChaosState {
    fn now(&self) -> Time {
        Time::from_duration(self.origin.elapsed())
    }

    /// Answers a request; `remote` when another node (or an operator's client) sent it.
    async fn request(&mut self, myself: &ActorRef<ChaosMsg>, request: ChaosRequest, remote: bool) -> ChaosReply {
        match request {
            ChaosRequest::Inject(injection) => self.inject(myself, injection, remote).await,
            ChaosRequest::List { node } => match node.filter(|node| *node != self.me) {
                Some(other) => self.forward(&other, ChaosRequest::List { node: Some(other.clone()) }).await,
                None => ChaosReply::Faults { faults: self.table.list(self.now()), failed: Vec::new() },
            },
            ChaosRequest::Heal { node, id } => match node.filter(|node| *node != self.me) {
                Some(other) => self.forward(&other, ChaosRequest::Heal { node: Some(other.clone()), id }).await,
                None => self.heal(id),
            },
            ChaosRequest::MonkeyStart(request) => self.start_monkey(myself, request),
            ChaosRequest::MonkeyStop => {
                if let Some(monkey) = self.monkey.take() {
                    tracing::info!(node = %self.me, seed = monkey.seed, "chaos monkey stopped");
                }
                ChaosReply::Monkey(self.monkey_status())
            }
            ChaosRequest::MonkeyStatus => ChaosReply::Monkey(self.monkey_status()),
        }
    }

    /// Checks an injection, carries out this node's part and forwards the others'.
    async fn inject(&mut self, myself: &ActorRef<ChaosMsg>, injection: Injection, remote: bool) -> ChaosReply {
        let Injection { fault, duration, node } = injection;
        let duration = match check_request(&fault, duration) {
            Ok(duration) => duration,
            Err(error) => return ChaosReply::Invalid(error.to_string()),
        };
        let targets = node.map_or_else(|| holders(&fault, &self.me), |node| vec![node]);
        if let [only] = targets.as_slice()
            && *only == self.me
        {
            return match self.inject_here(myself, fault, duration, remote) {
                Ok(view) => ChaosReply::Faults { faults: vec![view], failed: Vec::new() },
                Err(error) => error.into_reply(),
            };
        }
        let (mut faults, mut failed) = (Vec::new(), Vec::new());
        for target in targets {
            if target == self.me {
                match self.inject_here(myself, fault.clone(), duration, false) {
                    Ok(view) => faults.push(view),
                    Err(error) => failed.push(NodeFailure { node: target, error: error.message().to_owned() }),
                }
                continue;
            }
            let request =
                ChaosRequest::Inject(Injection { fault: fault.clone(), duration, node: Some(target.clone()) });
            match self.forward(&target, request).await {
                ChaosReply::Faults { faults: views, failed: more } => {
                    for view in &views {
                        self.publish(FAULT_INJECTED, view);
                    }
                    faults.extend(views);
                    failed.extend(more);
                }
                other => failed.push(NodeFailure { node: target, error: reply_message(&other) }),
            }
        }
        ChaosReply::Faults { faults, failed }
    }

    /// Carries out a fault on this node and records it. A link fault or a pause asked by
    /// another node is checked and recorded now, and carried out after the answer has left.
    fn inject_here(
        &mut self,
        myself: &ActorRef<ChaosMsg>,
        fault: Fault,
        duration: Option<Duration>,
        remote: bool,
    ) -> Result<FaultView, LocalError> {
        self.table.check_room()?;
        let defer = remote && (fault.is_link_fault() || matches!(fault, Fault::PauseNode { .. }));
        if defer && fault.is_link_fault() && !touches(&fault, &self.me) {
            return Err(ChaosError::TouchesNoLink { node: self.me.clone() }.into());
        }
        let effect = if defer && !matches!(fault, Fault::Heal) {
            Effect::Links(Vec::new())
        } else {
            self.carry_out(myself, &fault)?
        };
        let view = self.table.record(fault, effect, self.now(), duration);
        tracing::warn!(node = %self.me, id = view.id, fault = ?view.fault, heals_in_ms = ?view.heals_in_ms, "chaos: fault injected");
        self.publish(FAULT_INJECTED, &view);
        self.arm_heal_timer(myself);
        if defer && view.active {
            let id = view.id;
            myself.send_after(FORWARDED_APPLY_DELAY, move || ChaosMsg::Apply(id));
        }
        Ok(view)
    }

    /// Carries out a fault recorded earlier, unless it was healed in the meantime.
    fn apply_deferred(&mut self, myself: &ActorRef<ChaosMsg>, id: u64) {
        let Some(fault) = self.table.get(id).map(|held| held.fault.clone()) else { return };
        match self.carry_out(myself, &fault) {
            Ok(effect) => {
                self.table.set_effect(id, effect);
            }
            Err(error) => {
                tracing::warn!(node = %self.me, id, ?fault, error = error.message(), "chaos: fault could not be applied");
                if let Ok(held) = self.table.heal(id) {
                    self.healed(&held);
                }
            }
        }
    }

    fn carry_out(&mut self, myself: &ActorRef<ChaosMsg>, fault: &Fault) -> Result<Effect, LocalError> {
        match fault {
            Fault::Heal => {
                self.heal(None);
                Ok(Effect::Done)
            }
            fault if fault.is_link_fault() => {
                if !touches(fault, &self.me) {
                    return Err(ChaosError::TouchesNoLink { node: self.me.clone() }.into());
                }
                let id = self.transport.inject_fault(fault.clone()).map_err(|e| LocalError::Invalid(e.to_string()))?;
                Ok(Effect::Links(vec![id]))
            }
            Fault::KillActor { name, .. } => self.kill_actor(name),
            Fault::CrashNode { .. } => {
                myself.send_after(CRASH_DELAY, || ChaosMsg::Crash);
                Ok(Effect::Done)
            }
            Fault::RestartNode { .. } => {
                tracing::info!(node = %self.me, "chaos: RestartNode on a running node: nothing to restart");
                Ok(Effect::Done)
            }
            Fault::PauseNode { .. } => {
                let mut ids = Vec::new();
                for clog in pause_clogs(&self.me) {
                    match self.transport.inject_fault(clog) {
                        Ok(id) => ids.push(id),
                        Err(error) => {
                            ids.iter().for_each(|id| {
                                self.transport.heal_fault(*id);
                            });
                            return Err(LocalError::Refused(error.to_string()));
                        }
                    }
                }
                Ok(Effect::Links(ids))
            }
            Fault::ClockSkew { skew_nanos, .. } => {
                let clock = self.plan.clock.as_ref().ok_or_else(|| {
                    LocalError::Refused(format!(
                        "node {}'s clock was given by its embedder and cannot be skewed",
                        self.me
                    ))
                })?;
                clock.set_skew_nanos(*skew_nanos);
                Ok(Effect::Skewed)
            }
            _ => Err(LocalError::Invalid(format!("{} is not carried out by a node", kind(fault)))),
        }
    }

    fn kill_actor(&self, name: &str) -> Result<Effect, LocalError> {
        if name == "node" || name == CHAOS_NAME {
            let why = format!(
                "{name} may not be killed: {}",
                if name == "node" {
                    "the root supervisor has no supervisor to restart it (use CrashNode)"
                } else {
                    "the chaos actor would lose its own faults"
                }
            );
            return Err(LocalError::Invalid(why));
        }
        let Some(actor) = self.node.whereis(name) else {
            let registered = self.node.registered().join(", ");
            return Err(LocalError::Refused(format!(
                "no actor is registered as {name} on node {} (registered: {registered})",
                self.me
            )));
        };
        tracing::warn!(node = %self.me, name, "chaos: killing actor");
        actor.kill();
        Ok(Effect::Done)
    }

    /// Heals one fault or all of them.
    fn heal(&mut self, id: Option<u64>) -> ChaosReply {
        let healed = match id {
            Some(id) => match self.table.heal(id) {
                Ok(held) => vec![held],
                Err(error) => return ChaosReply::NotFound(error.to_string()),
            },
            None => self.table.heal_all(),
        };
        let faults = healed.iter().map(|held| self.healed(held)).collect();
        ChaosReply::Faults { faults, failed: Vec::new() }
    }

    /// Undoes a removed fault, logs and publishes its healing.
    fn healed(&self, held: &Held) -> FaultView {
        self.undo(held);
        let view = self.table.view(held, self.now(), false);
        tracing::warn!(node = %self.me, id = held.id, fault = ?held.fault, "chaos: fault healed");
        self.publish(FAULT_HEALED, &view);
        view
    }

    fn undo(&self, held: &Held) {
        match &held.effect {
            Effect::Links(ids) => {
                for id in ids {
                    self.transport.heal_fault(*id);
                }
            }
            Effect::Skewed => {
                if let Some(clock) = &self.plan.clock {
                    clock.set_skew_nanos(0);
                }
            }
            Effect::Done => {}
        }
    }

    fn heal_due(&mut self, myself: &ActorRef<ChaosMsg>) {
        for held in self.table.take_due(self.now()) {
            self.healed(&held);
        }
        self.arm_heal_timer(myself);
    }

    /// Wakes the actor when the next fault heals itself (an early or extra wake-up is harmless).
    fn arm_heal_timer(&self, myself: &ActorRef<ChaosMsg>) {
        if let Some(at) = self.table.next_heal() {
            myself.send_after(at.saturating_since(self.now()), || ChaosMsg::HealDue);
        }
    }

    fn publish(&self, event_type: &str, view: &FaultView) {
        let json = serde_json::json!({
            "eventType": event_type,
            "timestamp": crate::marathon::core::timestamp::Timestamp::from_millis(self.node.clock().wall_millis()).to_string(),
            "node": view.node,
            "id": view.id,
            "kind": kind(&view.fault),
            "fault": view.fault,
            "healsInMs": view.heals_in_ms,
        });
        let event = ChaosEvent { event_type: event_type.to_owned(), json: json.to_string() };
        // No subscriber is fine: the event is in the log already.
        let _ = self.events.send(Arc::new(event));
    }

    /// Sends a request to the chaos actor on `node` and returns its answer (or why none came).
    async fn forward(&self, node: &str, request: ChaosRequest) -> ChaosReply {
        match self.transport.call(node, CHAOS_NAME, &request, FORWARD_TIMEOUT).await {
            Ok(reply) => reply,
            Err(CallError::Remote(RemoteError::UnknownActor { .. })) => {
                ChaosReply::Refused(format!("chaos is not enabled on node {node}"))
            }
            Err(error) => ChaosReply::Refused(format!("node {node} did not answer: {error}")),
        }
    }

    fn start_monkey(&mut self, myself: &ActorRef<ChaosMsg>, request: MonkeyRequest) -> ChaosReply {
        if request.mean_interval.is_zero() {
            return ChaosReply::Invalid("the monkey's mean interval must be more than zero".into());
        }
        let masters = self.plan.masters.clone();
        let mut agents: Vec<String> =
            self.transport.connected().into_iter().filter(|node| !masters.contains(node)).collect();
        if !masters.contains(&self.me) && !agents.contains(&self.me) {
            agents.push(self.me.clone());
        }
        let mut config = MonkeyConfig::new(masters, agents);
        config.mean_interval = request.mean_interval;
        config.actors = request.actors;
        let pending: VecDeque<ScheduledFault> = schedule(&config, request.seed, request.span).into();
        tracing::warn!(node = %self.me, seed = request.seed, faults = pending.len(), "chaos monkey started");
        for fault in &pending {
            tracing::info!(node = %self.me, "chaos monkey schedule: {fault}");
        }
        self.monkey = Some(Monkey { seed: request.seed, started: self.now(), pending, injected: 0, failed: 0 });
        self.arm_monkey_timer(myself);
        ChaosReply::Monkey(self.monkey_status())
    }

    fn monkey_status(&self) -> MonkeyStatus {
        match &self.monkey {
            Some(monkey) => MonkeyStatus {
                running: !monkey.pending.is_empty(),
                seed: Some(monkey.seed),
                injected: monkey.injected,
                failed: monkey.failed,
                remaining: monkey.pending.len(),
            },
            None => MonkeyStatus::default(),
        }
    }

    fn arm_monkey_timer(&self, myself: &ActorRef<ChaosMsg>) {
        if let Some(monkey) = &self.monkey
            && let Some(next) = monkey.pending.front()
        {
            let at = monkey.started + next.at;
            myself.send_after(at.saturating_since(self.now()), || ChaosMsg::MonkeyDue);
        }
    }

    /// Injects the monkey's faults that are due, through the same path as an operator's.
    async fn monkey_due(&mut self, myself: &ActorRef<ChaosMsg>) {
        let Some(monkey) = &mut self.monkey else { return };
        let elapsed = self.origin.elapsed().saturating_sub(monkey.started.since_origin());
        let mut due = Vec::new();
        while monkey.pending.front().is_some_and(|next| next.at <= elapsed) {
            due.extend(monkey.pending.pop_front());
        }
        for scheduled in due {
            let duration = monkey_duration(&scheduled);
            let injection = Injection { fault: scheduled.fault.clone(), duration, node: None };
            let ok = match self.inject(myself, injection, false).await {
                ChaosReply::Faults { failed, .. } if failed.is_empty() => true,
                other => {
                    tracing::warn!(node = %self.me, fault = ?scheduled.fault, outcome = reply_message(&other), "chaos monkey: fault not injected");
                    false
                }
            };
            if let Some(monkey) = &mut self.monkey {
                if ok { monkey.injected += 1 } else { monkey.failed += 1 }
            }
        }
        self.arm_monkey_timer(myself);
    }
}

/// How long a scheduled fault lasts when injected: until its heal time, except for the
/// instantaneous ones and a pause (which carries its own length).
fn monkey_duration(scheduled: &ScheduledFault) -> Option<Duration> {
    if is_instantaneous(&scheduled.fault) || matches!(scheduled.fault, Fault::PauseNode { .. }) {
        return None;
    }
    scheduled.heal_at.map(|heal_at| heal_at.saturating_sub(scheduled.at)).filter(|d| !d.is_zero())
}

/// What a reply says, for a failure list or a log line.
pub fn reply_message(reply: &ChaosReply) -> String {
    match reply {
        ChaosReply::Invalid(message) | ChaosReply::Refused(message) | ChaosReply::NotFound(message) => message.clone(),
        ChaosReply::Faults { failed, .. } => {
            failed.iter().map(|f| format!("{}: {}", f.node, f.error)).collect::<Vec<_>>().join("; ")
        }
        ChaosReply::Monkey(_) => "unexpected monkey status".to_owned(),
    }
}
