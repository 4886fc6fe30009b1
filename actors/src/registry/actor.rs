//! The registry actor: the replicated state machine of a master, fed by its election actor,
//! and the door clients (local actors, agents, the CLI) come through.
//!
//! - **Writes** are proposed on the leader (a follower forwards them) and answered when this
//!   master applies the committed entry that carries the request's id: acknowledged only once
//!   durable on a quorum. Pending writes are re-sent to every new leader; the store's
//!   de-duplication by request id applies a re-sent write once.
//! - **Reads** are linearizable: the leader confirms its leadership with a read-index round,
//!   and the master that took the request answers once it has applied through that index (a
//!   follower asks the leader for the index and answers from its own state).
//! - **Watches** stream the changes after a revision to a local actor or to an actor on
//!   another node, from whichever master the watcher asked.
//! - **Membership**: the committed configuration follows the applied log (the bootstrap or a
//!   snapshot's voters, then each configuration entry), and `Members` reads it like a `Get`.
//!   A change is proposed on the leader (a follower forwards it) and answered by the leader
//!   once it has applied the configuration entry with the index and term it was given, or
//!   with why it was refused or discarded.
//!
//! Every request has a deadline; an unanswered one gets [`RegistryFailure::Timeout`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use flotilla_supervisors::Node;
use flotilla_supervisors::core::time::Time;
use flotilla_transport::{RemoteMonitor, ReplyPort, Role as NodeRole, Sender, Transport};
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::core::{Command, RegistryError, RequestId, Revision, Store, StoreConfig};
use super::protocol::{
    PeerMessage, REGISTRY_NAME, RegistryFailure, RegistryReply, RegistryRequest, RegistryStatus, WatchBody, WatchNotice,
};
use crate::control_plane::leadership::LeadershipMsg;
use crate::election::actor::{ELECTION_NAME, ElectionEvent, ElectionMsg, Status};
use crate::election::core::{
    Entry, EntryKind, MembershipChange, MembershipError, PeerId, ProposeError, Term, decode_voters,
};

/// How long a request may wait for a leader, a commit or a read index.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The most events in one watch notice (a revision is never split across notices).
const EVENTS_PER_NOTICE: usize = 1024;

/// Tunables of a registry.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    pub store: StoreConfig,
    pub request_timeout: Duration,
    /// How often deadlines are checked and requests without a leader are re-routed.
    pub tick_interval: Duration,
    /// A snapshot of the store is handed to the election actor (which compacts the log
    /// through it) after this many applied entries.
    pub snapshot_every: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            store: StoreConfig::default(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            tick_interval: Duration::from_millis(20),
            snapshot_every: 10_000,
        }
    }
}

/// What a registry starts from. Its election actor is found under [`ELECTION_NAME`] in the
/// node's registry, and must send its events here (see [`registry_event_sink`]).
pub struct RegistryArgs {
    pub transport: Transport,
    pub node: Node,
    pub config: RegistryConfig,
}

/// The messages of the registry actor.
pub enum RegistryMsg {
    /// A request from this node.
    Request(RegistryRequest, ReplyPort<RegistryReply>),
    /// A request from another node, with the sender its session authenticated.
    Remote(Sender, RegistryRequest, ReplyPort<RegistryReply>),
    /// Watch from a local actor: notices go to `sink`.
    WatchLocal {
        prefix: String,
        after: Revision,
        sink: ActorRef<WatchNotice>,
        reply: RpcReplyPort<RegistryReply>,
    },
    /// From the registry of another master.
    Peer(Sender, PeerMessage),
    /// From this master's election actor.
    Election(ElectionEvent),
    /// Send the current leadership status to this guard now and after every change.
    WatchLeadership(ActorRef<LeadershipMsg>),
    /// The transport lost `node`: its watches end.
    NodeDown(String),
    Tick,
}

impl std::fmt::Debug for RegistryMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryMsg::Request(request, _) | RegistryMsg::Remote(_, request, _) => {
                f.debug_tuple("Request").field(request).finish()
            }
            RegistryMsg::WatchLocal { prefix, after, .. } => write!(f, "WatchLocal({prefix:?}, {after})"),
            RegistryMsg::Peer(from, message) => write!(f, "Peer({}, {message:?})", from.node),
            RegistryMsg::Election(event) => write!(f, "Election({event:?})"),
            RegistryMsg::WatchLeadership(_) => f.write_str("WatchLeadership"),
            RegistryMsg::NodeDown(node) => write!(f, "NodeDown({node})"),
            RegistryMsg::Tick => f.write_str("Tick"),
        }
    }
}

/// The event sink an election actor needs to feed `registry`.
pub fn registry_event_sink(registry: ActorRef<RegistryMsg>) -> crate::election::actor::EventSink {
    Box::new(move |event| {
        // A stopped registry restarts the election too (rest_for_one), which replays the log.
        let _ = registry.send_message(RegistryMsg::Election(event));
    })
}

/// The registry actor (one per master).
#[derive(Debug, Default)]
pub struct Registry;

/// A read waiting for its index, then for this master to apply through it.
struct PendingRead {
    query: RegistryRequest,
    reply: ReplyPort<RegistryReply>,
    deadline: Time,
    index: Option<u64>,
}

/// A membership change a client asked this master for, waiting for its outcome.
struct PendingChange {
    change: MembershipChange,
    reply: ReplyPort<RegistryReply>,
    deadline: Time,
}

/// Who asked for a membership change the leader runs: this master's client (`None`) or the
/// registry of another master, and its tag there.
#[derive(Clone, Debug)]
struct ChangeOrigin {
    node: Option<String>,
    ctx: u64,
}

/// A write waiting for the entry with its id to be applied here.
struct PendingWrite {
    command: Vec<u8>,
    replies: Vec<ReplyPort<RegistryReply>>,
    deadline: Time,
}

enum Route {
    Local(ActorRef<ElectionMsg>),
    Remote(String),
    Nowhere,
}

enum Sink {
    Local(ActorRef<WatchNotice>),
    Remote { node: String, name: String },
}

impl Sink {
    fn node(&self) -> Option<&String> {
        match self {
            Sink::Local(_) => None,
            Sink::Remote { node, .. } => Some(node),
        }
    }
}

/// The most watches one remote node may hold on one master.
const MAX_WATCHES_PER_NODE: usize = 1024;

struct Watch {
    prefix: String,
    /// Every event up to this revision has been sent.
    sent_through: Revision,
    sink: Sink,
}

pub struct RegistryState {
    node: Node,
    transport: Transport,
    config: RegistryConfig,
    store: Store,
    status: Option<Status>,
    /// This incarnation's client id, for the writes that come without a request id.
    client: u64,
    next_seq: u64,
    next_tag: u64,
    writes: BTreeMap<RequestId, PendingWrite>,
    /// Writes and reads with no leader to go to yet.
    unrouted_writes: Vec<RequestId>,
    unrouted_reads: Vec<u64>,
    reads: BTreeMap<u64, PendingRead>,
    /// Leader side: proposals and read-index rounds run for another master (tag → origin,
    /// and when to forget it if the election actor never answers).
    remote_proposals: BTreeMap<u64, (String, RequestId, Time)>,
    remote_reads: BTreeMap<u64, (String, u64, Time)>,
    /// Leader side: this master's own proposals (tag → id), for refusals.
    local_proposals: BTreeMap<u64, (RequestId, Time)>,
    watches: BTreeMap<u64, Watch>,
    leadership: Option<ActorRef<LeadershipMsg>>,
    /// Nodes holding watches here, monitored so that their watches end with them.
    monitored: BTreeMap<String, RemoteMonitor>,
    myself: ActorRef<RegistryMsg>,
    /// The applied index of the last snapshot taken or restored.
    last_snapshot: u64,
    /// The committed configuration as of the applied index, and the index it took effect at
    /// (0 for the bootstrap configuration).
    members: Option<(u64, BTreeSet<PeerId>)>,
    /// Membership changes clients asked this master for (ctx → change), and those with no
    /// leader to go to yet.
    changes: BTreeMap<u64, PendingChange>,
    unrouted_changes: Vec<u64>,
    /// Leader side: changes handed to the election actor (tag → origin, and when to forget
    /// it), then appended ones waiting to be applied (index → term, origin, deadline).
    change_proposals: BTreeMap<u64, (ChangeOrigin, Time)>,
    change_entries: BTreeMap<u64, (Term, ChangeOrigin, Time)>,
    ticker: JoinHandle<()>,
}

impl Actor for Registry {
    type Msg = RegistryMsg;
    type State = RegistryState;
    type Arguments = RegistryArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RegistryMsg>,
        args: RegistryArgs,
    ) -> Result<RegistryState, ActorProcessingErr> {
        let RegistryArgs { transport, node, config } = args;
        node.register(REGISTRY_NAME, myself.get_cell())?;
        transport.export_call_from::<RegistryRequest, RegistryMsg>(REGISTRY_NAME, &myself, RegistryMsg::Remote);
        transport.export_from::<PeerMessage, RegistryMsg>(REGISTRY_NAME, &myself, RegistryMsg::Peer);
        let ticker = myself.send_interval(config.tick_interval, || RegistryMsg::Tick);
        let client = node.random_u64();
        // Tags name reads across masters: start each incarnation somewhere else, so that a
        // late answer meant for a predecessor matches nothing here.
        let first_tag = node.random_u64() >> 1;
        Ok(RegistryState {
            client,
            store: Store::new(config.store.clone()),
            node,
            transport,
            config,
            status: None,
            next_seq: 0,
            next_tag: first_tag,
            writes: BTreeMap::new(),
            unrouted_writes: Vec::new(),
            unrouted_reads: Vec::new(),
            reads: BTreeMap::new(),
            remote_proposals: BTreeMap::new(),
            remote_reads: BTreeMap::new(),
            local_proposals: BTreeMap::new(),
            watches: BTreeMap::new(),
            leadership: None,
            monitored: BTreeMap::new(),
            myself: myself.clone(),
            last_snapshot: 0,
            members: None,
            changes: BTreeMap::new(),
            unrouted_changes: Vec::new(),
            change_proposals: BTreeMap::new(),
            change_entries: BTreeMap::new(),
            ticker,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<RegistryMsg>,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        state.ticker.abort();
        state.node.unregister(REGISTRY_NAME, &myself.get_cell());
        for (_, monitor) in std::mem::take(&mut state.monitored) {
            state.transport.demonitor(monitor);
        }
        state.transport.unexport(REGISTRY_NAME);
        for (_, write) in std::mem::take(&mut state.writes) {
            for reply in write.replies {
                reply.send(RegistryReply::Failed(RegistryFailure::Stopping));
            }
        }
        for (_, read) in std::mem::take(&mut state.reads) {
            read.reply.send(RegistryReply::Failed(RegistryFailure::Stopping));
        }
        for (_, change) in std::mem::take(&mut state.changes) {
            change.reply.send(RegistryReply::Failed(RegistryFailure::Stopping));
        }
        for (id, watch) in std::mem::take(&mut state.watches) {
            state.notify(id, &watch.sink, WatchBody::Ended);
        }
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<RegistryMsg>,
        msg: RegistryMsg,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RegistryMsg::Request(request, reply) => state.request(None, request, reply),
            RegistryMsg::Remote(sender, request, reply) => {
                if matches!(request, RegistryRequest::ChangeMembership(_)) && sender.role != NodeRole::Operator {
                    // Changing who votes is an operator's act, never an agent's.
                    let why = format!(
                        "{} ({}) may not change the membership: it needs an operator's certificate",
                        sender.node, sender.role
                    );
                    reply.send(RegistryReply::Failed(RegistryFailure::Forbidden(why)));
                } else {
                    state.request(Some(sender.node), request, reply);
                }
            }
            RegistryMsg::WatchLocal { prefix, after, sink, reply } => {
                let answer = state.watch(prefix, after, Sink::Local(sink));
                let _ = reply.send(answer);
            }
            RegistryMsg::Peer(sender, message) => {
                if sender.role == NodeRole::Master {
                    state.peer(sender.node, message);
                }
            }
            RegistryMsg::Election(event) => state.election_event(event)?,
            RegistryMsg::WatchLeadership(guard) => {
                if let Some(status) = &state.status {
                    let _ = guard.send_message(LeadershipMsg::Changed(status.clone()));
                }
                state.leadership = Some(guard);
            }
            RegistryMsg::Tick => state.tick(),
            RegistryMsg::NodeDown(node) => {
                state.watches.retain(|_, watch| watch.sink.node() != Some(&node));
                state.monitored.remove(&node);
            }
        }
        Ok(())
    }
}

impl RegistryState {
    fn now(&self) -> Time {
        self.node.now()
    }

    fn deadline(&self) -> Time {
        self.now() + self.config.request_timeout
    }

    fn next_tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    fn leads(&self) -> bool {
        self.status.as_ref().is_some_and(Status::leads)
    }

    fn leads_in(&self, term: u64) -> bool {
        self.status.as_ref().is_some_and(|status| status.leads() && status.term.0 == term)
    }

    fn leader(&self) -> Option<String> {
        let status = self.status.as_ref()?;
        status.leader.as_ref().filter(|leader| **leader != status.me).map(|leader| leader.0.clone())
    }

    fn election(&self) -> Option<ActorRef<ElectionMsg>> {
        self.node.whereis_ref(ELECTION_NAME)
    }

    // --- Requests --------------------------------------------------------------------------

    fn request(&mut self, from: Option<String>, request: RegistryRequest, reply: ReplyPort<RegistryReply>) {
        match request {
            RegistryRequest::Write(command) => self.write(command, reply),
            query @ (RegistryRequest::Get { .. } | RegistryRequest::Range { .. } | RegistryRequest::Members) => {
                self.read(query, reply)
            }
            RegistryRequest::ChangeMembership(change) => self.change_membership(change, reply),
            RegistryRequest::Watch { prefix, after, sink } => {
                let answer = match from {
                    Some(node) => self.watch(prefix, after, Sink::Remote { node, name: sink }),
                    None => RegistryReply::Failed(RegistryFailure::Rejected(RegistryError::Invalid(
                        "a local watch needs an actor: use RegistryMsg::WatchLocal".to_owned(),
                    ))),
                };
                reply.send(answer);
            }
            RegistryRequest::Unwatch { watch } => {
                // Only the node that holds a watch may end it.
                if self.watches.get(&watch).is_some_and(|held| held.sink.node() == from.as_ref()) {
                    self.watches.remove(&watch);
                }
                reply.send(RegistryReply::Unwatched);
            }
            RegistryRequest::Status => {
                reply.send(RegistryReply::Status(self.registry_status()));
            }
        }
    }

    fn registry_status(&self) -> RegistryStatus {
        let status = self.status.as_ref();
        RegistryStatus {
            node: self.node.id().as_str().to_owned(),
            leader: status.and_then(|s| s.leader.as_ref()).map(|leader| leader.0.clone()),
            term: status.map_or(0, |s| s.term.0),
            is_leader: self.leads(),
            commit: status.map_or(0, |s| s.commit.0),
            applied: self.store.applied_index(),
            revision: self.store.revision(),
            snapshot: self.last_snapshot,
            voters: status.map(|s| s.voters.iter().map(|voter| voter.0.clone()).collect()).unwrap_or_default(),
        }
    }

    fn write(&mut self, mut command: Command, reply: ReplyPort<RegistryReply>) {
        if let Err(error) = command.txn.validate() {
            reply.send(RegistryReply::Failed(RegistryFailure::Rejected(error)));
            return;
        }
        // A writer fenced to a term this master no longer leads in is refused before anything
        // is proposed (the entry's term decides again when it is applied, on every master).
        if let Some(fenced) = command.leader_term.filter(|fenced| !self.leads_in(*fenced)) {
            let term = self.status.as_ref().map_or(0, |status| status.term.0);
            reply.send(RegistryReply::Failed(RegistryFailure::Rejected(RegistryError::StaleLeader { fenced, term })));
            return;
        }
        let id = match &command.id {
            Some(id) => id.clone(),
            None => {
                self.next_seq += 1;
                let id = RequestId { client: self.client, seq: self.next_seq };
                command.id = Some(id.clone());
                id
            }
        };
        if let Some(pending) = self.writes.get_mut(&id) {
            // A retry while the first attempt is still pending: both get the one outcome.
            pending.replies.push(reply);
            return;
        }
        let pending = PendingWrite { command: command.encode(), replies: vec![reply], deadline: self.deadline() };
        self.writes.insert(id.clone(), pending);
        self.route_write(id);
    }

    /// Where requests go now: this master's election (it leads), another master's registry,
    /// or nowhere yet.
    fn route(&self) -> Route {
        if self.leads() {
            return self.election().map_or(Route::Nowhere, Route::Local);
        }
        self.leader().map_or(Route::Nowhere, Route::Remote)
    }

    /// Sends a pending write to the leader (itself included), or parks it until one is known.
    fn route_write(&mut self, id: RequestId) {
        let Some(command) = self.writes.get(&id).map(|write| write.command.clone()) else { return };
        let sent = match self.route() {
            Route::Local(election) => {
                let tag = self.next_tag();
                let deadline = self.deadline();
                self.local_proposals.insert(tag, (id.clone(), deadline));
                election.send_message(ElectionMsg::ProposeTagged(tag, command)).is_ok()
            }
            Route::Remote(leader) => {
                let message = PeerMessage::Propose { id: id.clone(), command };
                self.transport.cast(&leader, REGISTRY_NAME, &message).is_ok()
            }
            Route::Nowhere => false,
        };
        if !sent {
            self.unrouted_writes.push(id);
        }
    }

    fn read(&mut self, query: RegistryRequest, reply: ReplyPort<RegistryReply>) {
        let ctx = self.next_tag();
        self.reads.insert(ctx, PendingRead { query, reply, deadline: self.deadline(), index: None });
        self.route_read(ctx);
    }

    fn route_read(&mut self, ctx: u64) {
        let sent = match self.route() {
            Route::Local(election) => election.send_message(ElectionMsg::ReadIndex(ctx)).is_ok(),
            Route::Remote(leader) => {
                self.transport.cast(&leader, REGISTRY_NAME, &PeerMessage::ReadIndex { ctx }).is_ok()
            }
            Route::Nowhere => false,
        };
        if !sent {
            self.unrouted_reads.push(ctx);
        }
    }

    /// Answers every read whose index this master has applied.
    fn serve_reads(&mut self) {
        let applied = self.store.applied_index();
        let ready: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, read)| read.index.is_some_and(|index| index <= applied))
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in ready {
            if let Some(read) = self.reads.remove(&ctx) {
                let answer = self.answer(&read.query);
                read.reply.send(answer);
            }
        }
    }

    fn answer(&self, query: &RegistryRequest) -> RegistryReply {
        let revision = self.store.revision();
        match query {
            RegistryRequest::Get { key } => RegistryReply::Value { revision, kv: self.store.get(key).cloned() },
            RegistryRequest::Range { prefix, limit } => {
                let limit = usize::try_from(*limit).unwrap_or(usize::MAX);
                RegistryReply::Values { revision, kvs: self.store.range(prefix, limit) }
            }
            RegistryRequest::Members => match &self.members {
                Some((_, voters)) => RegistryReply::Members { voters: names(voters) },
                None => RegistryReply::Failed(RegistryFailure::Rejected(RegistryError::Invalid(
                    "this master does not know its configuration yet".to_owned(),
                ))),
            },
            _ => RegistryReply::Failed(RegistryFailure::Rejected(RegistryError::Invalid("not a read".to_owned()))),
        }
    }

    // --- Between masters -------------------------------------------------------------------

    fn peer(&mut self, from: String, message: PeerMessage) {
        match message {
            PeerMessage::Propose { id, command } => match self.election().filter(|_| self.leads()) {
                Some(election) => {
                    let tag = self.next_tag();
                    let deadline = self.deadline();
                    self.remote_proposals.insert(tag, (from, id, deadline));
                    let _ = election.send_message(ElectionMsg::ProposeTagged(tag, command));
                }
                None => {
                    // Not the leader (any more): the origin parks the write and routes it again.
                    let message = PeerMessage::Refused { id, reason: "not the leader".to_owned(), retriable: true };
                    let _ = self.transport.cast(&from, REGISTRY_NAME, &message);
                }
            },
            PeerMessage::Refused { id, reason, retriable } => {
                if !retriable {
                    self.fail_write(&id, RegistryFailure::Refused(reason));
                } else if self.writes.contains_key(&id) && !self.unrouted_writes.contains(&id) {
                    self.unrouted_writes.push(id);
                }
            }
            PeerMessage::ReadIndex { ctx } => match self.election().filter(|_| self.leads()) {
                Some(election) => {
                    let tag = self.next_tag();
                    let deadline = self.deadline();
                    self.remote_reads.insert(tag, (from, ctx, deadline));
                    let _ = election.send_message(ElectionMsg::ReadIndex(tag));
                }
                None => {
                    let _ = self.transport.cast(&from, REGISTRY_NAME, &PeerMessage::ReadIndexed { ctx, index: None });
                }
            },
            PeerMessage::ChangeMembership { ctx, change } => {
                self.propose_change(ChangeOrigin { node: Some(from), ctx }, change);
            }
            PeerMessage::MembershipChanged { ctx, outcome, retriable } => {
                if retriable {
                    if self.changes.contains_key(&ctx) {
                        self.unrouted_changes.push(ctx);
                    }
                } else if let Some(change) = self.changes.remove(&ctx) {
                    change.reply.send(match outcome {
                        Ok(voters) => RegistryReply::Members { voters },
                        Err(failure) => RegistryReply::Failed(failure),
                    });
                }
            }
            PeerMessage::ReadIndexed { ctx, index } => match index {
                Some(index) => {
                    if let Some(read) = self.reads.get_mut(&ctx) {
                        read.index = Some(index);
                    }
                    self.serve_reads();
                }
                None => {
                    if self.reads.contains_key(&ctx) {
                        self.unrouted_reads.push(ctx);
                    }
                }
            },
        }
    }

    fn fail_write(&mut self, id: &RequestId, failure: RegistryFailure) {
        if let Some(write) = self.writes.remove(id) {
            for reply in write.replies {
                reply.send(RegistryReply::Failed(failure.clone()));
            }
        }
    }

    // --- Election events -------------------------------------------------------------------

    fn election_event(&mut self, event: ElectionEvent) -> Result<(), String> {
        match event {
            ElectionEvent::Committed(entries) => return self.apply(&entries),
            ElectionEvent::Restore { meta, voters, data } => return self.restore(meta.index.0, voters, &data),
            ElectionEvent::Bootstrap { voters } => {
                if self.members.is_none() {
                    self.members = Some((0, voters));
                }
            }
            ElectionEvent::MembershipProposed { tag, result } => self.change_proposed(tag, result),
            ElectionEvent::ReadReady(read) => match self.remote_reads.remove(&read.ctx) {
                Some((node, ctx, _)) => {
                    let message = PeerMessage::ReadIndexed { ctx, index: Some(read.index.0) };
                    let _ = self.transport.cast(&node, REGISTRY_NAME, &message);
                }
                None => {
                    if let Some(pending) = self.reads.get_mut(&read.ctx) {
                        pending.index = Some(read.index.0);
                    }
                    self.serve_reads();
                }
            },
            ElectionEvent::ReadFailed { ctx, .. } => match self.remote_reads.remove(&ctx) {
                Some((node, ctx, _)) => {
                    let _ = self.transport.cast(&node, REGISTRY_NAME, &PeerMessage::ReadIndexed { ctx, index: None });
                }
                None => {
                    if self.reads.contains_key(&ctx) {
                        self.unrouted_reads.push(ctx);
                    }
                }
            },
            ElectionEvent::Proposed { tag, result } => self.proposed(tag, result.err()),
            ElectionEvent::Leadership(status) => {
                let new_leader =
                    self.status.as_ref().map(|old| (&old.leader, old.term)) != Some((&status.leader, status.term));
                if let Some(guard) = &self.leadership {
                    let _ = guard.send_message(LeadershipMsg::Changed(status.clone()));
                }
                self.status = Some(status);
                if new_leader {
                    self.reroute_all();
                }
            }
        }
        Ok(())
    }

    /// The outcome of a proposal this master made as the leader; only refusals need an
    /// answer (an accepted proposal is answered when it is applied). Losing the leadership or
    /// too many waiting writes leave the write pending, to be routed again; only a write too
    /// large for any log fails.
    fn proposed(&mut self, tag: u64, refusal: Option<ProposeError>) {
        let retriable = !matches!(refusal, Some(ProposeError::TooLarge { .. }));
        if let Some((node, id, _)) = self.remote_proposals.remove(&tag) {
            if let Some(refusal) = refusal {
                let message = PeerMessage::Refused { id, reason: refusal.to_string(), retriable };
                let _ = self.transport.cast(&node, REGISTRY_NAME, &message);
            }
        } else if let Some((id, _)) = self.local_proposals.remove(&tag)
            && let Some(refusal) = refusal
        {
            if retriable {
                self.unrouted_writes.push(id);
            } else {
                self.fail_write(&id, RegistryFailure::Refused(refusal.to_string()));
            }
        }
    }

    /// A new leader (or term): send every pending write and unconfirmed read to it. A write
    /// the old leader had already logged may be applied from either copy; de-duplication by
    /// id applies it once.
    fn reroute_all(&mut self) {
        self.unrouted_writes.clear();
        let writes: Vec<RequestId> = self.writes.keys().cloned().collect();
        for id in writes {
            self.route_write(id);
        }
        self.unrouted_reads.clear();
        let reads: Vec<u64> = self.reads.iter().filter(|(_, read)| read.index.is_none()).map(|(ctx, _)| *ctx).collect();
        for ctx in reads {
            self.route_read(ctx);
        }
        // Changes already handed to a leader are not sent again (a change is not idempotent):
        // they wait for its answer or their deadline.
        let mut unrouted = std::mem::take(&mut self.unrouted_changes);
        unrouted.sort_unstable();
        unrouted.dedup();
        for ctx in unrouted {
            self.route_change(ctx);
        }
    }

    // --- Membership ------------------------------------------------------------------------

    fn change_membership(&mut self, change: MembershipChange, reply: ReplyPort<RegistryReply>) {
        let (MembershipChange::Add(peer) | MembershipChange::Remove(peer)) = &change;
        if !flotilla_transport::core::identity::valid_id(&peer.0) {
            let why = format!("{:?} is not a valid node id ([a-z0-9._-], 1 to 63 characters)", peer.0);
            reply.send(RegistryReply::Failed(RegistryFailure::Rejected(RegistryError::Invalid(why))));
            return;
        }
        let ctx = self.next_tag();
        self.changes.insert(ctx, PendingChange { change, reply, deadline: self.deadline() });
        self.route_change(ctx);
    }

    /// Sends a pending change to the leader (itself included), or parks it until one is known.
    fn route_change(&mut self, ctx: u64) {
        let Some(change) = self.changes.get(&ctx).map(|pending| pending.change.clone()) else { return };
        let sent = match self.route() {
            Route::Local(_) => {
                self.propose_change(ChangeOrigin { node: None, ctx }, change);
                true
            }
            Route::Remote(leader) => {
                let message = PeerMessage::ChangeMembership { ctx, change };
                self.transport.cast(&leader, REGISTRY_NAME, &message).is_ok()
            }
            Route::Nowhere => false,
        };
        if !sent {
            self.unrouted_changes.push(ctx);
        }
    }

    /// Leader side: hands a change to the election actor, or tells its origin to route it
    /// again when this master does not lead.
    fn propose_change(&mut self, origin: ChangeOrigin, change: MembershipChange) {
        match self.election().filter(|_| self.leads()) {
            Some(election) => {
                let tag = self.next_tag();
                let deadline = self.deadline();
                self.change_proposals.insert(tag, (origin.clone(), deadline));
                if election.send_message(ElectionMsg::ChangeTagged(tag, change)).is_err() {
                    self.change_proposals.remove(&tag);
                    self.finish_change(origin, Err(RegistryFailure::Stopping), true);
                }
            }
            None => self.finish_change(origin, Err(RegistryFailure::Stopping), true),
        }
    }

    /// The election actor's answer to a change this master proposed as the leader.
    fn change_proposed(&mut self, tag: u64, result: Result<(crate::election::core::Index, Term), MembershipError>) {
        let Some((origin, deadline)) = self.change_proposals.remove(&tag) else { return };
        match result {
            Ok((index, term)) => {
                self.change_entries.insert(index.0, (term, origin, deadline));
            }
            // Transient: another leader, or this one's first entry is about to commit.
            Err(MembershipError::NotLeader { .. } | MembershipError::TermNotCommitted { .. }) => {
                self.finish_change(origin, Err(RegistryFailure::Stopping), true);
            }
            Err(refusal) => self.finish_change(origin, Err(RegistryFailure::Membership(refusal)), false),
        }
    }

    /// Leader side: answers the change appended at `entry.index`, now applied here.
    fn answer_change_at(&mut self, entry: &Entry) {
        let Some((term, origin, _)) = self.change_entries.remove(&entry.index.0) else { return };
        let outcome = match (entry.kind, entry.term == term) {
            (EntryKind::Config, true) => match decode_voters(&entry.data) {
                Ok(voters) => Ok(names(&voters)),
                Err(error) => Err(RegistryFailure::OutcomeUnknown(error.to_string())),
            },
            _ => Err(RegistryFailure::Superseded { index: entry.index.0 }),
        };
        self.finish_change(origin, outcome, false);
    }

    /// Answers a change's origin: its client if it is this master's, else the registry of
    /// the master that forwarded it. A `retriable` failure is routed again by the origin.
    fn finish_change(&mut self, origin: ChangeOrigin, outcome: Result<Vec<String>, RegistryFailure>, retriable: bool) {
        match origin.node {
            Some(node) => {
                let message = PeerMessage::MembershipChanged { ctx: origin.ctx, outcome, retriable };
                let _ = self.transport.cast(&node, REGISTRY_NAME, &message);
            }
            None if retriable => {
                if self.changes.contains_key(&origin.ctx) {
                    self.unrouted_changes.push(origin.ctx);
                }
            }
            None => {
                if let Some(change) = self.changes.remove(&origin.ctx) {
                    change.reply.send(match outcome {
                        Ok(voters) => RegistryReply::Members { voters },
                        Err(failure) => RegistryReply::Failed(failure),
                    });
                }
            }
        }
    }

    /// Applies committed entries in order. A gap means this store missed entries (a snapshot
    /// it could not restore): fail, so that the supervisor rebuilds it from the log.
    fn apply(&mut self, entries: &[Entry]) -> Result<(), String> {
        for entry in entries {
            let applied = self.store.applied_index();
            if entry.index.0 <= applied {
                continue; // Replayed by a restarted election actor.
            }
            if entry.index.0 != applied + 1 {
                return Err(format!("entry {} follows applied index {applied}: entries are missing", entry.index));
            }
            match entry.kind {
                EntryKind::Noop => self.store.apply_noop(entry.index.0),
                EntryKind::Command => self.apply_command(entry),
                EntryKind::Config => {
                    self.store.apply_noop(entry.index.0);
                    // Validated by the core before it reached the log.
                    if let Ok(voters) = decode_voters(&entry.data) {
                        self.members = Some((entry.index.0, voters));
                    }
                }
            }
            self.answer_change_at(entry);
        }
        self.serve_reads();
        self.push_watches();
        self.maybe_snapshot();
        Ok(())
    }

    /// Replaces the store by a snapshot through `index` (unless the store is already there).
    /// A snapshot that does not restore is fatal: applying the entries after it to the old
    /// state would silently diverge from the other masters.
    fn restore(&mut self, index: u64, voters: BTreeSet<PeerId>, data: &[u8]) -> Result<(), String> {
        if self.members.is_none() {
            self.members = Some((index, voters.clone()));
        }
        if index <= self.store.applied_index() {
            return Ok(());
        }
        let store =
            Store::restore(data).map_err(|error| format!("the snapshot through {index} does not restore: {error}"))?;
        if store.applied_index() != index {
            return Err(format!("the snapshot through {index} ends at {}", store.applied_index()));
        }
        self.store = store;
        self.last_snapshot = index;
        self.members = Some((index, voters));
        // Changes whose entries the snapshot covers: this master cannot tell their outcome.
        let skipped: Vec<u64> = self.change_entries.range(..=index).map(|(at, _)| *at).collect();
        for at in skipped {
            if let Some((_, origin, _)) = self.change_entries.remove(&at) {
                let reason = format!("this master installed a snapshot through {index}, past the change at {at}");
                self.finish_change(origin, Err(RegistryFailure::OutcomeUnknown(reason)), false);
            }
        }
        // Writes applied inside the snapshot are answered from its record of their responses.
        let ids: Vec<RequestId> = self.writes.keys().cloned().collect();
        for id in ids {
            if let Some(response) = self.store.recorded(&id).cloned()
                && let Some(write) = self.writes.remove(&id)
            {
                for reply in write.replies {
                    reply.send(RegistryReply::Written(response.clone()));
                }
            }
        }
        self.serve_reads();
        self.push_watches();
        Ok(())
    }

    /// Hands the election actor a snapshot every `snapshot_every` applied entries.
    fn maybe_snapshot(&mut self) {
        let applied = self.store.applied_index();
        if applied.saturating_sub(self.last_snapshot) < self.config.snapshot_every {
            return;
        }
        if let Some(election) = self.election() {
            let index = crate::election::core::Index(applied);
            if election.send_message(ElectionMsg::Compact { index, data: self.store.snapshot() }).is_ok() {
                self.last_snapshot = applied;
            }
        }
    }

    fn apply_command(&mut self, entry: &Entry) {
        let id = Command::decode(&entry.data).ok().and_then(|command| command.id);
        let outcome = self.store.apply(entry.index.0, entry.term.0, &entry.data);
        let Some(write) = id.and_then(|id| self.writes.remove(&id)) else { return };
        let answer = match outcome {
            Ok(response) => RegistryReply::Written(response),
            Err(error) => RegistryReply::Failed(RegistryFailure::Rejected(error)),
        };
        for reply in write.replies {
            reply.send(answer.clone());
        }
    }

    // --- Watches ---------------------------------------------------------------------------

    fn watch(&mut self, prefix: String, after: Revision, sink: Sink) -> RegistryReply {
        if let Err(error) = self.store.events_since(after, &prefix, 0) {
            return RegistryReply::Failed(RegistryFailure::Rejected(error));
        }
        if let Sink::Remote { node, .. } = &sink {
            let count = self.watches.values().filter(|watch| watch.sink.node() == Some(node)).count();
            if count >= MAX_WATCHES_PER_NODE {
                let why = format!("node {node} already has {count} watches (the limit is {MAX_WATCHES_PER_NODE})");
                return RegistryReply::Failed(RegistryFailure::Rejected(RegistryError::Invalid(why)));
            }
            // Its watches end when the node is lost: the watcher re-watches from its last
            // revision when it reconnects.
            if !self.monitored.contains_key(node) {
                let (registry, down) = (self.myself.clone(), node.clone());
                let monitor = self.transport.monitor_node(node, move |_| {
                    let _ = registry.send_message(RegistryMsg::NodeDown(down.clone()));
                });
                self.monitored.insert(node.clone(), monitor);
            }
        }
        let id = self.next_tag();
        self.watches.insert(id, Watch { prefix, sent_through: after, sink });
        self.push_watch(id);
        RegistryReply::Watching { watch: id }
    }

    fn push_watches(&mut self) {
        let ids: Vec<u64> = self.watches.keys().copied().collect();
        for id in ids {
            self.push_watch(id);
        }
    }

    /// Sends watch `id` everything after what it was sent; ends it if the history is gone or
    /// the sink cannot take it.
    fn push_watch(&mut self, id: u64) {
        let revision = self.store.revision();
        let Some(mut watch) = self.watches.remove(&id) else { return };
        while watch.sent_through < revision {
            let body = match self.store.events_since(watch.sent_through, &watch.prefix, EVENTS_PER_NOTICE) {
                Ok(events) if events.is_empty() => break,
                Ok(events) => {
                    watch.sent_through = events.last().map_or(revision, |event| event.revision);
                    WatchBody::Events(events)
                }
                Err(RegistryError::Compacted { compacted, .. }) => WatchBody::Compacted { compacted },
                Err(_) => WatchBody::Ended,
            };
            let last = !matches!(body, WatchBody::Events(_));
            if !self.notify(id, &watch.sink, body) || last {
                return;
            }
        }
        // A watcher may have asked from a revision this master has not reached yet.
        watch.sent_through = watch.sent_through.max(revision);
        self.watches.insert(id, watch);
    }

    fn notify(&self, watch: u64, sink: &Sink, body: WatchBody) -> bool {
        let notice = WatchNotice { watch, body };
        match sink {
            Sink::Local(actor) => actor.send_message(notice).is_ok(),
            Sink::Remote { node, name } => self.transport.cast(node, name, &notice).is_ok(),
        }
    }

    // --- Timers ----------------------------------------------------------------------------

    fn tick(&mut self) {
        let now = self.now();
        let timeout_ms = u64::try_from(self.config.request_timeout.as_millis()).unwrap_or(u64::MAX);
        let expired: Vec<RequestId> =
            self.writes.iter().filter(|(_, write)| write.deadline <= now).map(|(id, _)| id.clone()).collect();
        for id in expired {
            self.fail_write(&id, RegistryFailure::Timeout { timeout_ms });
        }
        let expired: Vec<u64> =
            self.reads.iter().filter(|(_, read)| read.deadline <= now).map(|(ctx, _)| *ctx).collect();
        for ctx in expired {
            if let Some(read) = self.reads.remove(&ctx) {
                read.reply.send(RegistryReply::Failed(RegistryFailure::Timeout { timeout_ms }));
            }
        }
        let expired: Vec<u64> =
            self.changes.iter().filter(|(_, change)| change.deadline <= now).map(|(ctx, _)| *ctx).collect();
        for ctx in expired {
            if let Some(change) = self.changes.remove(&ctx) {
                change.reply.send(RegistryReply::Failed(RegistryFailure::Timeout { timeout_ms }));
            }
        }
        self.change_proposals.retain(|_, (_, deadline)| *deadline > now);
        self.change_entries.retain(|_, (_, _, deadline)| *deadline > now);
        let mut unrouted = std::mem::take(&mut self.unrouted_changes);
        unrouted.sort_unstable();
        unrouted.dedup();
        for ctx in unrouted {
            self.route_change(ctx);
        }
        // The election actor answers every tagged request unless it restarted meanwhile.
        self.remote_proposals.retain(|_, (_, _, deadline)| *deadline > now);
        self.remote_reads.retain(|_, (_, _, deadline)| *deadline > now);
        self.local_proposals.retain(|_, (_, deadline)| *deadline > now);
        let mut unrouted = std::mem::take(&mut self.unrouted_writes);
        unrouted.sort();
        unrouted.dedup();
        for id in unrouted {
            self.route_write(id);
        }
        for ctx in std::mem::take(&mut self.unrouted_reads) {
            if self.reads.contains_key(&ctx) {
                self.route_read(ctx);
            }
        }
    }
}

/// Voter names, sorted.
fn names(voters: &BTreeSet<PeerId>) -> Vec<String> {
    voters.iter().map(|voter| voter.0.clone()).collect()
}

/// A request to this node's registry from another actor of the node, answered within
/// `timeout`; a refusal comes back as its message.
pub async fn local_request(
    registry: &ActorRef<RegistryMsg>,
    request: RegistryRequest,
    timeout: Duration,
) -> Result<RegistryReply, String> {
    let (port, answer) = ReplyPort::local();
    registry.send_message(RegistryMsg::Request(request, port)).map_err(|_| "the registry is gone".to_owned())?;
    match tokio::time::timeout(timeout, answer).await {
        Ok(Ok(RegistryReply::Failed(failure))) => Err(failure.to_string()),
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(_)) => Err("the registry dropped the request".to_owned()),
        Err(_) => Err(format!("the registry did not answer within {timeout:?}")),
    }
}

/// Every value under `prefix` decoded from postcard (read linearizably); a value that does
/// not decode is logged and skipped.
pub async fn list_decoded<T: serde::de::DeserializeOwned>(
    registry: &ActorRef<RegistryMsg>,
    prefix: &str,
    timeout: Duration,
) -> Result<Vec<T>, String> {
    list_with(registry, prefix, timeout, |bytes| postcard::from_bytes(bytes).map_err(|e| e.to_string())).await
}

/// Every value under `prefix` decoded from JSON, as [`list_decoded`] does from postcard.
pub async fn list_json<T: serde::de::DeserializeOwned>(
    registry: &ActorRef<RegistryMsg>,
    prefix: &str,
    timeout: Duration,
) -> Result<Vec<T>, String> {
    list_with(registry, prefix, timeout, |bytes| serde_json::from_slice(bytes).map_err(|e| e.to_string())).await
}

/// Every value under `prefix`, decoded by `decode` (read linearizably); a value that does not
/// decode is logged and skipped.
pub async fn list_with<T>(
    registry: &ActorRef<RegistryMsg>,
    prefix: &str,
    timeout: Duration,
    decode: impl Fn(&[u8]) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let request = RegistryRequest::Range { prefix: prefix.to_owned(), limit: u32::MAX };
    let RegistryReply::Values { kvs, .. } = local_request(registry, request, timeout).await? else {
        return Err(format!("the registry answered the listing of {prefix} with something else"));
    };
    let mut values = Vec::with_capacity(kvs.len());
    for kv in kvs {
        match decode(&kv.value) {
            Ok(value) => values.push(value),
            Err(error) => tracing::warn!(key = %kv.key, %error, "skipping an unreadable record"),
        }
    }
    Ok(values)
}

/// The keys under `prefix` (read linearizably).
pub async fn list_keys(
    registry: &ActorRef<RegistryMsg>,
    prefix: &str,
    timeout: Duration,
) -> Result<Vec<String>, String> {
    let request = RegistryRequest::Range { prefix: prefix.to_owned(), limit: u32::MAX };
    let RegistryReply::Values { kvs, .. } = local_request(registry, request, timeout).await? else {
        return Err(format!("the registry answered the listing of {prefix} with something else"));
    };
    Ok(kvs.into_iter().map(|kv| kv.key).collect())
}
