//! The election actor: the shell that drives one master's [`Raft`] core with a tick timer,
//! messages from the transport, proposals and reads, and carries out each [`Ready`] in the
//! order of its contract: persist (through a [`RaftStorage`]), then send (with
//! [`Transport::cast`]), then hand committed entries, confirmed reads and leadership changes
//! to its owner as [`ElectionEvent`]s (the registry is the owner on a master).
//!
//! A Raft message is accepted only from a master whose transport session authenticated it
//! under the name of a voter (the certificate's node id and role over QUIC); a name written in
//! the message itself is never trusted.
//!
//! Snapshots: the owner hands in a snapshot of its state machine ([`ElectionMsg::Compact`]);
//! the actor stores it durably and compacts the log. A follower that needs compacted entries
//! gets that snapshot streamed on the transport's bulk channel [`SNAPSHOT_CHANNEL`] (in the
//! background: the actor never waits for a transfer), and installs it before anything else
//! of its `Ready`; the owner restores from it ([`ElectionEvent::Restore`]).
//!
//! A storage error stops the actor with a failure: its supervisor restarts it, and the new
//! instance reloads the snapshot, hard state and log from the (new) storage it is given. A
//! restarted actor first hands the owner the stored snapshot, then re-delivers the committed
//! entries after it: the owner must skip indexes it has already applied.
//!
//! Membership: [`ElectionMsg::ChangeMembership`] (a whole voter set) and
//! [`ElectionMsg::ChangeTagged`] (one voter added or removed) propose a configuration on the
//! leader; it is in effect once appended and done once its [`EntryKind::Config`] entry is
//! committed (handed to the owner like any entry). A master started with
//! [`ElectionArgs::joining`] is not a voter until such an entry lists it. Addresses are not in
//! the log: a joining master dials every master it is configured with, and the others reach
//! it over the session it opened (one connection per pair), so the leader's casts and
//! snapshot transfers to it need no address of their own.
//!
//! [`EntryKind::Config`]: super::core::EntryKind::Config

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use flotilla_supervisors::{Node, Rng};
use flotilla_transport::{BulkTransfer, RemoteMessage, Role as NodeRole, Sender, Transport};
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

use super::core::{
    Entry, Index, MembershipChange, MembershipError, Message, PeerId, ProposeError, Raft, RaftConfig, ReadError,
    ReadState, Role, SnapshotMeta, Term,
};
use crate::storage::{RaftStorage, StoredSnapshot};

/// The name the election actor is exported under on every master.
pub const ELECTION_NAME: &str = "election";

/// The bulk channel snapshots are streamed on.
pub const SNAPSHOT_CHANNEL: &str = "raft-snapshot";

/// A snapshot as it travels on the bulk channel: the leader's term, where it ends, the
/// configuration there, its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SnapshotTransfer {
    term: Term,
    meta: SnapshotMeta,
    voters: BTreeSet<PeerId>,
    data: Vec<u8>,
}

/// A snapshot this node holds: stored, or received and waiting to be installed.
#[derive(Clone, Debug)]
struct HeldSnapshot {
    meta: SnapshotMeta,
    voters: BTreeSet<PeerId>,
    data: Arc<Vec<u8>>,
}

/// How often the core's timers are advanced unless the arguments say otherwise.
pub const DEFAULT_TICK_INTERVAL: Duration = Duration::from_millis(10);

/// A Raft message between masters, as it travels on the transport. The sender is the
/// session's authenticated peer, not a field of the message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftEnvelope {
    pub message: Message,
}

impl RemoteMessage for RaftEnvelope {
    const TAG: u32 = 0x5241_4654; // "RAFT"
}

/// What this node's core reports about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub me: PeerId,
    pub role: Role,
    pub term: Term,
    pub leader: Option<PeerId>,
    pub commit: Index,
    /// The configuration in effect here: the latest in this node's log, committed or not.
    pub voters: BTreeSet<PeerId>,
}

impl Status {
    /// Whether this node leads in its term.
    pub fn leads(&self) -> bool {
        self.role == Role::Leader
    }
}

/// What the election actor hands its owner, in the order it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElectionEvent {
    /// Committed entries, in log order with no gap (no-ops included). After a restart of the
    /// election actor they start again from index 1.
    Committed(Vec<Entry>),
    /// A read queued with [`ElectionMsg::ReadIndex`] may be answered once the owner has
    /// applied through `index`.
    ReadReady(ReadState),
    /// A read could not be confirmed here: this node does not (or no longer) lead.
    ReadFailed { ctx: u64, leader_hint: Option<PeerId> },
    /// The role, term or known leader changed.
    Leadership(Status),
    /// The outcome of an [`ElectionMsg::ProposeTagged`]: the entry's index and term, or why
    /// it was refused. Only an entry applied with that index and term is committed.
    Proposed { tag: u64, result: Result<(Index, Term), ProposeError> },
    /// Replace the state machine by this snapshot (stored on start, or received from the
    /// leader); the entries after `meta.index` follow as `Committed`. `voters` is the
    /// configuration in effect at `meta.index`.
    Restore { meta: SnapshotMeta, voters: BTreeSet<PeerId>, data: Arc<Vec<u8>> },
    /// Sent once on start when there is no stored snapshot: the configuration in effect
    /// before the log's first entry (the bootstrap voters); configuration entries in
    /// `Committed` change it from there.
    Bootstrap { voters: BTreeSet<PeerId> },
    /// The outcome of an [`ElectionMsg::ChangeTagged`]: the configuration entry's index and
    /// term, or why the change was refused. Only an entry applied with that index and term
    /// made the change.
    MembershipProposed { tag: u64, result: Result<(Index, Term), MembershipError> },
}

/// Where the election actor sends its events.
pub type EventSink = Box<dyn FnMut(ElectionEvent) + Send>;

/// The messages of the election actor.
#[derive(Debug)]
pub enum ElectionMsg {
    /// Advance the core's timers (sent by the actor's own interval timer).
    Tick,
    /// A message from a peer, with the sender its session authenticated.
    Inbound(Sender, RaftEnvelope),
    /// Propose a command; answers the index and term of its entry, or why it was refused. The
    /// command is committed only if an entry with that index *and term* is committed.
    Propose(Vec<u8>, RpcReplyPort<Result<(Index, Term), ProposeError>>),
    /// Propose a command without waiting: the outcome comes back as
    /// [`ElectionEvent::Proposed`] with this tag.
    ProposeTagged(u64, Vec<u8>),
    /// Queue a linearizable read tagged `ctx`; the outcome comes back as an event.
    ReadIndex(u64),
    Status(RpcReplyPort<Status>),
    /// Propose the configuration `voters` (one voter more or fewer than the one in effect);
    /// answers the configuration entry's index and term, or why it was refused.
    ChangeMembership(BTreeSet<PeerId>, RpcReplyPort<Result<(Index, Term), MembershipError>>),
    /// Propose adding or removing one voter without waiting: the outcome comes back as
    /// [`ElectionEvent::MembershipProposed`] with this tag.
    ChangeTagged(u64, MembershipChange),
    /// The owner's snapshot of its state machine after applying `index`: store it and compact
    /// the log through `index`.
    Compact {
        index: Index,
        data: Vec<u8>,
    },
    /// A snapshot streamed by the leader.
    SnapshotArrived(BulkTransfer),
    /// Carry out what the messages handled since the last flush produced (sent by the actor
    /// to itself, so that it queues behind the messages already waiting: a burst of proposals
    /// or appends becomes one `Ready`, one fsync).
    Flush,
}

/// What an election actor starts from.
pub struct ElectionArgs {
    pub transport: Transport,
    pub me: PeerId,
    /// The other voters of the bootstrap configuration (the cluster's masters when joining).
    pub peers: BTreeSet<PeerId>,
    /// Start outside the configuration: follow the leader of `peers` and vote only once a
    /// configuration entry lists this node ([`Raft::new_joining`]). Without it, `peers` and
    /// this node are the bootstrap voters. Either way, configurations in the stored log and
    /// snapshot take precedence.
    pub joining: bool,
    pub config: RaftConfig,
    pub storage: Box<dyn RaftStorage + Send>,
    /// The clock and the seed of the core's RNG.
    pub node: Node,
    pub events: EventSink,
    pub tick_interval: Duration,
}

/// The election actor (one per master).
#[derive(Debug, Default)]
pub struct Election;

pub struct ElectionState {
    raft: Raft,
    rng: Rng,
    node: Node,
    transport: Transport,
    storage: Box<dyn RaftStorage + Send>,
    events: EventSink,
    reported: Option<Status>,
    flush_scheduled: bool,
    /// The latest stored snapshot, sent to followers that need it.
    snapshot: Option<HeldSnapshot>,
    /// A snapshot received from the leader, until the core says to install it.
    received: Option<HeldSnapshot>,
    ticker: JoinHandle<()>,
}

impl Actor for Election {
    type Msg = ElectionMsg;
    type State = ElectionState;
    type Arguments = ElectionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ElectionMsg>,
        args: ElectionArgs,
    ) -> Result<ElectionState, ActorProcessingErr> {
        let ElectionArgs { transport, me, peers, joining, config, mut storage, node, events, tick_interval } = args;
        let persisted = storage.load()?;
        let stored = storage.snapshot()?;
        let mut rng = node.fork_rng();
        let raft = if joining {
            Raft::new_joining(me, peers, config, persisted, node.now(), &mut rng)?
        } else {
            Raft::new(me, peers, config, persisted, node.now(), &mut rng)?
        };
        // The core resolves the configuration of a snapshot stored without one (the bootstrap
        // voters).
        let snapshot = stored.map(|StoredSnapshot { meta, data, .. }| HeldSnapshot {
            meta,
            voters: raft.snapshot_voters().clone(),
            data: Arc::new(data),
        });
        node.register(ELECTION_NAME, myself.get_cell())?;
        transport.export_from::<RaftEnvelope, ElectionMsg>(ELECTION_NAME, &myself, ElectionMsg::Inbound);
        transport.bulk_to_actor(SNAPSHOT_CHANNEL, &myself, ElectionMsg::SnapshotArrived);
        let ticker = myself.send_interval(tick_interval, || ElectionMsg::Tick);
        let mut state = ElectionState {
            raft,
            rng,
            node,
            transport,
            storage,
            events,
            reported: None,
            flush_scheduled: false,
            snapshot,
            received: None,
            ticker,
        };
        match &state.snapshot {
            Some(held) => (state.events)(ElectionEvent::Restore {
                meta: held.meta,
                voters: held.voters.clone(),
                data: Arc::clone(&held.data),
            }),
            None => (state.events)(ElectionEvent::Bootstrap { voters: state.raft.snapshot_voters().clone() }),
        }
        state.report_leadership();
        Ok(state)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<ElectionMsg>,
        state: &mut ElectionState,
    ) -> Result<(), ActorProcessingErr> {
        state.ticker.abort();
        state.node.unregister(ELECTION_NAME, &myself.get_cell());
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ElectionMsg>,
        msg: ElectionMsg,
        state: &mut ElectionState,
    ) -> Result<(), ActorProcessingErr> {
        let flush_now = matches!(
            msg,
            ElectionMsg::Flush | ElectionMsg::Status(_) | ElectionMsg::Propose(..) | ElectionMsg::ChangeMembership(..)
        );
        match msg {
            ElectionMsg::Tick => {
                let now = state.node.now();
                state.raft.tick(now, &mut state.rng);
            }
            ElectionMsg::Inbound(sender, RaftEnvelope { message }) => {
                // Only masters vote. Unknown senders and malformed messages change nothing;
                // dropping them is all there is to do.
                if sender.role == NodeRole::Master {
                    let _ = state.raft.step(state.node.now(), &PeerId(sender.node), message);
                }
            }
            ElectionMsg::Propose(data, reply) => {
                let term = state.raft.term();
                let _ = reply.send(state.raft.propose(data).map(|index| (index, term)));
            }
            ElectionMsg::ProposeTagged(tag, data) => {
                let term = state.raft.term();
                let result = state.raft.propose(data).map(|index| (index, term));
                (state.events)(ElectionEvent::Proposed { tag, result });
            }
            ElectionMsg::ReadIndex(ctx) => {
                if let Err(error) = state.raft.read_index(ctx) {
                    let leader_hint = match error {
                        ReadError::NotLeader { leader_hint } => leader_hint,
                        ReadError::Backpressure { .. } => state.raft.leader().cloned(),
                    };
                    (state.events)(ElectionEvent::ReadFailed { ctx, leader_hint });
                }
            }
            ElectionMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
            ElectionMsg::ChangeMembership(voters, reply) => {
                let term = state.raft.term();
                let _ = reply.send(state.raft.propose_membership(voters).map(|index| (index, term)));
            }
            ElectionMsg::ChangeTagged(tag, change) => {
                let term = state.raft.term();
                let result = state.raft.propose_change(change).map(|index| (index, term));
                (state.events)(ElectionEvent::MembershipProposed { tag, result });
            }
            ElectionMsg::Flush => state.flush_scheduled = false,
            ElectionMsg::Compact { index, data } => state.compact(index, data)?,
            ElectionMsg::SnapshotArrived(transfer) => state.snapshot_arrived(transfer),
        }
        if flush_now {
            state.drain()?;
        } else if state.raft.has_ready() && !state.flush_scheduled {
            state.flush_scheduled = myself.send_message(ElectionMsg::Flush).is_ok();
        }
        // Also when nothing is to be drained: a leader stepping down on check-quorum changes
        // only its role.
        state.report_leadership();
        Ok(())
    }
}

impl ElectionState {
    fn status(&self) -> Status {
        let raft = &self.raft;
        Status {
            me: raft.me().clone(),
            role: raft.role(),
            term: raft.term(),
            leader: raft.leader().cloned(),
            commit: raft.commit_index(),
            voters: raft.voters().clone(),
        }
    }

    /// Tells the owner when the role, term, leader or configuration changed (not on every
    /// commit).
    fn report_leadership(&mut self) {
        // Compared in place: this runs after every message, and rarely finds a change.
        let raft = &self.raft;
        let unchanged = self.reported.as_ref().is_some_and(|old| {
            old.role == raft.role()
                && old.term == raft.term()
                && old.leader.as_ref() == raft.leader()
                && &old.voters == raft.voters()
        });
        if !unchanged {
            let status = self.status();
            self.reported = Some(status.clone());
            (self.events)(ElectionEvent::Leadership(status));
        }
    }

    /// Stores the owner's snapshot through `index` and compacts the log; a snapshot no newer
    /// than the last one is ignored.
    fn compact(&mut self, index: Index, data: Vec<u8>) -> Result<(), ActorProcessingErr> {
        // Ignore a snapshot no newer than the last, or beyond what this (perhaps restarted)
        // core has applied: it could not compact through it.
        let compactable = index > self.raft.snapshot().index && index <= self.raft.applied();
        let Some(term) = self.raft.term_at(index).filter(|_| compactable) else {
            return Ok(());
        };
        let Some(voters) = self.raft.voters_at(index).cloned() else { return Ok(()) };
        let meta = SnapshotMeta { index, term };
        self.storage.save_snapshot(meta, &voters, &data, true)?;
        self.raft.compact(index)?;
        self.snapshot = Some(HeldSnapshot { meta, voters, data: Arc::new(data) });
        Ok(())
    }

    /// A snapshot from a master: kept until the core decides to install it.
    fn snapshot_arrived(&mut self, transfer: BulkTransfer) {
        if transfer.from_role != NodeRole::Master {
            return;
        }
        let Ok(SnapshotTransfer { term, meta, voters, data }) =
            postcard::from_bytes::<SnapshotTransfer>(&transfer.data)
        else {
            return;
        };
        // Keep it only if the core takes it: an older or redundant transfer must not replace
        // one that is waiting to be installed.
        let waiting = self.received.replace(HeldSnapshot { meta, voters: voters.clone(), data: Arc::new(data) });
        let message = Message::InstallSnapshot { term, meta, voters };
        let _ = self.raft.step(self.node.now(), &PeerId(transfer.from), message);
        if self.raft.pending_install() != Some(meta) {
            self.received = waiting;
        }
    }

    /// Streams the latest snapshot to `peer` in the background, as its leader in `term`.
    fn send_snapshot(&self, peer: &PeerId, term: Term) {
        let Some(held) = &self.snapshot else { return };
        let transfer =
            SnapshotTransfer { term, meta: held.meta, voters: held.voters.clone(), data: held.data.as_ref().clone() };
        let Ok(bytes) = postcard::to_stdvec(&transfer) else { return };
        // A failed transfer is retried by the core after its snapshot timeout.
        let _ = self.transport.start_bulk(&peer.0, SNAPSHOT_CHANNEL, bytes.into());
    }

    /// Carries out every pending `Ready`: install, persist, then send, then apply, then answer
    /// reads.
    fn drain(&mut self) -> Result<(), ActorProcessingErr> {
        while self.raft.has_ready() {
            let ready = self.raft.poll_ready();
            if let Some((meta, voters)) = ready.install {
                let Some(received) =
                    self.received.take().filter(|received| received.meta == meta && received.voters == voters)
                else {
                    return Err(format!("asked to install snapshot {meta:?}, which never arrived").into());
                };
                self.storage.save_snapshot(meta, &voters, &received.data, false)?;
                let data = Arc::clone(&received.data);
                self.snapshot = Some(received);
                (self.events)(ElectionEvent::Restore { meta, voters, data });
            }
            if ready.hard_state.is_some() || !ready.entries.is_empty() {
                self.storage.persist(ready.hard_state.as_ref(), &ready.entries)?;
            }
            for out in ready.messages {
                let envelope = RaftEnvelope { message: out.message };
                // Raft tolerates loss: an unreachable peer is retried by the core's timers.
                let _ = self.transport.cast(&out.to.0, ELECTION_NAME, &envelope);
            }
            for (peer, term) in &ready.send_snapshots {
                self.send_snapshot(peer, *term);
            }
            if !ready.committed.is_empty() {
                (self.events)(ElectionEvent::Committed(ready.committed));
            }
            for read in ready.reads {
                (self.events)(ElectionEvent::ReadReady(read));
            }
            let leader_hint = self.raft.leader().cloned();
            for ctx in ready.failed_reads {
                (self.events)(ElectionEvent::ReadFailed { ctx, leader_hint: leader_hint.clone() });
            }
        }
        Ok(())
    }
}
