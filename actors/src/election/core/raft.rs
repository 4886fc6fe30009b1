//! The Raft state machine.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::mem;
use std::time::Duration;

use flotilla_supervisors::Rng;
use flotilla_supervisors::core::time::Time;
use flotilla_supervisors::planted::{PlantedBug, planted};

use super::log::RaftLog;
use super::membership::{MAX_VOTERS, Membership, decode_voters, encode_voters, validate_voters};
use super::types::{
    AppendResult, Entry, EntryKind, HardState, Index, Message, Outbound, PeerId, Persisted, ReadState, Ready,
    SnapshotMeta, Term,
};

/// The most peers (voters other than this node) a cluster may have.
pub const MAX_PEERS: usize = 64;
/// The most entries one `AppendEntries` may carry; larger messages are refused as malformed.
pub const MAX_ENTRIES_PER_MESSAGE: usize = 4096;
/// The most bytes one command may carry.
pub const MAX_ENTRY_BYTES: usize = 1024 * 1024;
/// The most in-flight appends per follower a config may ask for.
pub const MAX_INFLIGHT_LIMIT: usize = 256;
/// The most messages held between two polls; beyond it new messages are dropped (Raft treats
/// them as lost and retransmits).
pub const MAX_PENDING_MESSAGES: usize = 16 * 1024;
/// The most committed entries handed out by one `Ready`; the rest follow in the next.
pub const MAX_APPLY_PER_READY: usize = 1024;
/// The most reads waiting for a leadership confirmation; beyond it `read_index` refuses.
pub const MAX_PENDING_READS: usize = 64 * 1024;

/// Tunables. [`RaftConfig::default`] gives the usual LAN values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftConfig {
    /// Election timeouts are drawn uniformly from `election_timeout_min..election_timeout_max`.
    /// The minimum is also the leader lease a follower honours (leader stickiness) and the
    /// leader's check-quorum period.
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// How often a leader sends heartbeats (and retries stalled appends).
    pub heartbeat_interval: Duration,
    /// An append unacknowledged for this long is presumed lost: a replicating follower goes
    /// back to probing from its match index; a probe is sent again at the same point.
    pub retransmit_timeout: Duration,
    /// Batching: the most entries per `AppendEntries`.
    pub max_entries_per_append: usize,
    /// Pipelining: the most unacknowledged `AppendEntries` per follower while replicating.
    pub max_inflight_appends: usize,
    /// Back-pressure: `propose` fails once this many entries are appended but not committed.
    pub max_uncommitted_entries: usize,
    /// Campaign with a pre-vote first, so a node that cannot win does not bump terms.
    pub pre_vote: bool,
    /// A leader that has not heard from a majority within `election_timeout_min` steps down.
    pub check_quorum: bool,
    /// A snapshot sent to a follower and not acknowledged within this long is sent again.
    pub snapshot_timeout: Duration,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            heartbeat_interval: Duration::from_millis(50),
            retransmit_timeout: Duration::from_millis(100),
            max_entries_per_append: 64,
            max_inflight_appends: 8,
            max_uncommitted_entries: 4096,
            pre_vote: true,
            check_quorum: true,
            snapshot_timeout: Duration::from_secs(10),
        }
    }
}

/// Why [`Raft::new`] refused its inputs (a bad config or a corrupt persisted state).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitError {
    #[error("invalid raft config: {0}")]
    Config(&'static str),
    #[error("invalid peer set: {0}")]
    Peers(&'static str),
    #[error("corrupt persisted state: {0}")]
    Persisted(&'static str),
}

/// Why [`Raft::propose`] refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<PeerId> },
    #[error("command of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("{limit} entries are already waiting to commit")]
    Backpressure { limit: usize },
}

/// A change of one voter, for [`Raft::propose_change`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MembershipChange {
    Add(PeerId),
    Remove(PeerId),
}

/// Why [`Raft::propose_membership`] (or [`Raft::propose_change`]) refused a configuration.
/// Nothing was appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum MembershipError {
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<PeerId> },
    #[error("the configuration entry at {index} is not committed yet: one change at a time")]
    ChangePending { index: Index },
    #[error("this leader has not committed an entry of its term yet (its no-op at {term_start})")]
    TermNotCommitted { term_start: Index },
    #[error("a change adds or removes exactly one voter; this one adds {added} and removes {removed}")]
    NotSingleChange { added: usize, removed: usize },
    #[error("{0} is already a voter")]
    AlreadyVoter(PeerId),
    #[error("{0} is not a voter")]
    NotVoter(PeerId),
    #[error("the change would leave no voter")]
    Empty,
    #[error("the change would make {voters} voters; the limit is {limit}")]
    TooManyVoters { voters: usize, limit: usize },
    #[error("invalid voter set: {0}")]
    Invalid(String),
    #[error("{limit} entries are already waiting to commit")]
    Backpressure { limit: usize },
}

/// Why [`Raft::compact`] refused to drop a prefix of the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    #[error("index {index} is not applied yet (applied through {applied})")]
    NotApplied { index: Index, applied: Index },
    #[error("index {index} is already compacted (the log starts after {snapshot})")]
    AlreadyCompacted { index: Index, snapshot: Index },
}

/// Why [`Raft::read_index`] refused a read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<PeerId> },
    #[error("{limit} reads are already waiting for confirmation")]
    Backpressure { limit: usize },
}

/// A read waiting for the leadership round that confirms it.
#[derive(Clone, Debug)]
struct PendingRead {
    ctx: u64,
    index: Index,
    round: u64,
}

/// Why [`Raft::step`] dropped a message. Stale messages are not errors: they are part of
/// normal operation and are ignored (or answered) silently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("message from {0}, which is not a peer")]
    UnknownPeer(PeerId),
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    /// Asking for pre-votes, still in its old term.
    PreCandidate,
    Candidate,
    Leader,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReplicationState {
    /// One append at a time until the follower's match index is found.
    Probe,
    /// Appends are pipelined up to `max_inflight_appends`.
    Replicate,
    /// The entries the follower needs are compacted: the snapshot ending at `index` is being
    /// streamed to it (sent at `sent`); no appends until it is acknowledged or times out.
    Snapshot { index: Index, sent: Time },
}

/// A leader's view of one follower.
#[derive(Clone, Debug)]
struct Progress {
    match_index: Index,
    next_index: Index,
    state: ReplicationState,
    /// Unacknowledged appends: the last index each covers, and when it was sent. Bounded by
    /// `max_inflight_appends`.
    inflight: VecDeque<(Index, Time)>,
    /// Heard from in the current check-quorum period.
    recent_active: bool,
    /// The latest read-index round this follower confirmed.
    read_ack: u64,
}

impl Progress {
    /// A follower whose match index is still to be found, from `next_index` down.
    fn probing(next_index: Index) -> Self {
        Progress {
            match_index: Index(0),
            next_index,
            state: ReplicationState::Probe,
            inflight: VecDeque::new(),
            recent_active: false,
            read_ack: 0,
        }
    }
}

/// Raft as a pure state machine (Ongaro & Ousterhout, with the pre-vote and check-quorum
/// extensions of Ongaro's thesis §9.6 and §6.2, and single-server membership changes, §4.1).
///
/// Inputs: [`Raft::tick`], [`Raft::step`], [`Raft::propose`]. Outputs: [`Raft::poll_ready`]
/// (see [`Ready`] for the order in which its parts must be carried out).
#[derive(Clone, Debug)]
pub struct Raft {
    me: PeerId,
    /// Every configuration of the log; the latest is in effect.
    membership: Membership,
    /// The voters of the configuration in effect other than this node: whom a candidate asks
    /// and a leader replicates to (derived from `membership`).
    peers: BTreeSet<PeerId>,
    /// Whether this node votes in the configuration in effect (derived from `membership`).
    voter: bool,
    config: RaftConfig,

    term: Term,
    voted_for: Option<PeerId>,
    commit: Index,
    log: RaftLog,
    /// The highest index handed out for applying.
    applied: Index,

    role: Role,
    leader: Option<PeerId>,
    /// The latest time fed in.
    now: Time,
    election_deadline: Time,
    /// The timeout the next election-timer reset uses; redrawn on the next tick once used.
    randomized_timeout: Duration,
    timeout_used: bool,
    /// When this node last heard from its current leader (for leader stickiness).
    leader_contact: Option<Time>,
    /// Votes (or pre-votes) received in the current campaign, including our own.
    votes: BTreeMap<PeerId, bool>,
    /// Leader only: one entry per peer.
    progress: BTreeMap<PeerId, Progress>,
    next_heartbeat: Time,
    next_quorum_check: Time,
    /// Leader only: the index of the no-op that opened its term; reads wait for it.
    term_start: Index,
    /// Leader only: the last read-index round sent, whether the next one is due, and the
    /// reads waiting for their round (in round order).
    read_round: u64,
    read_ping_due: bool,
    pending_reads: VecDeque<PendingRead>,

    // Pending effects.
    persisted_hard_state: HardState,
    /// Entries appended since the last poll, contiguous.
    unstable: Vec<Entry>,
    messages: Vec<Outbound>,
    /// A snapshot received from the leader, to be installed before anything else persists.
    pending_install: Option<(SnapshotMeta, BTreeSet<PeerId>)>,
    snapshot_sends: Vec<(PeerId, Term)>,
    confirmed_reads: Vec<ReadState>,
    failed_reads: Vec<u64>,
    dropped_messages: u64,
}

impl Raft {
    /// A node that starts (or restarts) as a follower from `persisted`. The bootstrap
    /// configuration, in effect until the log says otherwise, is `peers` and this node.
    pub fn new(
        me: PeerId,
        peers: BTreeSet<PeerId>,
        config: RaftConfig,
        persisted: Persisted,
        now: Time,
        rng: &mut Rng,
    ) -> Result<Raft, InitError> {
        if peers.contains(&me) {
            return Err(InitError::Peers("the peer set contains this node"));
        }
        if peers.len() > MAX_PEERS {
            return Err(InitError::Peers("more peers than MAX_PEERS"));
        }
        let mut voters = peers;
        voters.insert(me.clone());
        Raft::start(me, voters, config, persisted, now, rng)
    }

    /// A node joining an existing cluster: its bootstrap configuration is `voters`, the
    /// cluster's masters, without this node. It follows the leader and never campaigns until
    /// a configuration entry that lists it reaches its log (the leader's `propose_membership`).
    /// A restart resumes from the configurations in `persisted`, exactly like [`Raft::new`].
    pub fn new_joining(
        me: PeerId,
        voters: BTreeSet<PeerId>,
        config: RaftConfig,
        persisted: Persisted,
        now: Time,
        rng: &mut Rng,
    ) -> Result<Raft, InitError> {
        if voters.contains(&me) {
            return Err(InitError::Peers("a joining node is not one of the bootstrap voters"));
        }
        if voters.is_empty() {
            return Err(InitError::Peers("a joining node needs the cluster's voters"));
        }
        if voters.len() > MAX_VOTERS {
            return Err(InitError::Peers("more voters than MAX_VOTERS"));
        }
        Raft::start(me, voters, config, persisted, now, rng)
    }

    fn start(
        me: PeerId,
        bootstrap: BTreeSet<PeerId>,
        config: RaftConfig,
        persisted: Persisted,
        now: Time,
        rng: &mut Rng,
    ) -> Result<Raft, InitError> {
        validate_config(&config)?;
        if validate_voters(&bootstrap).is_err() {
            return Err(InitError::Peers("a voter name is empty or too long"));
        }
        let Persisted { hard_state: stored, snapshot, snapshot_voters, entries, applied } = persisted;
        // A snapshot installed from a leader of a later term may be on disk without that
        // term (a crash between storing the snapshot and the hard state): this node had
        // moved to the snapshot's term and voted in it for no one, so resume there.
        let hard_state = match snapshot {
            Some(snapshot) if snapshot.term > stored.term => {
                HardState { term: snapshot.term, voted_for: None, commit: stored.commit }
            }
            _ => stored.clone(),
        };
        validate_persisted(&hard_state, snapshot, &entries, applied)?;
        let base = match snapshot_voters {
            Some(voters) if snapshot.is_some() => {
                validate_voters(&voters).map_err(|_| InitError::Persisted("the snapshot's voters are invalid"))?;
                voters
            }
            Some(_) => return Err(InitError::Persisted("snapshot voters without a snapshot")),
            None => bootstrap,
        };
        let mut membership = Membership::new(base);
        for entry in entries.iter().filter(|entry| entry.kind == EntryKind::Config) {
            let voters = decode_voters(&entry.data)
                .map_err(|_| InitError::Persisted("a configuration entry does not decode"))?;
            membership.push(entry.index, voters);
        }
        // The state machine starts from the snapshot, which holds only committed entries.
        let compacted = snapshot.map_or(Index(0), |snapshot| snapshot.index);
        let mut raft = Raft {
            me,
            membership,
            peers: BTreeSet::new(),
            voter: false,
            term: hard_state.term,
            voted_for: hard_state.voted_for.clone(),
            commit: hard_state.commit.max(compacted),
            log: RaftLog::from_parts(snapshot, entries),
            applied: applied.max(compacted),
            role: Role::Follower,
            leader: None,
            now,
            election_deadline: now,
            randomized_timeout: config.election_timeout_min,
            timeout_used: true,
            leader_contact: None,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            next_heartbeat: now,
            next_quorum_check: now,
            term_start: Index(0),
            read_round: 0,
            read_ping_due: false,
            pending_reads: VecDeque::new(),
            persisted_hard_state: stored,
            unstable: Vec::new(),
            messages: Vec::new(),
            pending_install: None,
            snapshot_sends: Vec::new(),
            confirmed_reads: Vec::new(),
            failed_reads: Vec::new(),
            dropped_messages: 0,
            config,
        };
        raft.refresh_configuration();
        raft.draw_timeout(rng);
        raft.reset_election_timer();
        Ok(raft)
    }

    // --- Read-only accessors -------------------------------------------------------------

    pub fn me(&self) -> &PeerId {
        &self.me
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn term(&self) -> Term {
        self.term
    }

    /// The leader this node believes in for its current term, if any.
    pub fn leader(&self) -> Option<&PeerId> {
        self.leader.as_ref()
    }

    pub fn commit_index(&self) -> Index {
        self.commit
    }

    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }

    pub fn entry(&self, index: Index) -> Option<&Entry> {
        self.log.get(index)
    }

    /// The term of the entry at `index`: `None` beyond the log or inside its compacted
    /// prefix (the snapshot's own end has its term).
    pub fn term_at(&self, index: Index) -> Option<Term> {
        self.log.term_at(index)
    }

    /// Where the compacted prefix of the log ends.
    pub fn snapshot(&self) -> SnapshotMeta {
        self.log.snapshot()
    }

    /// The highest index handed out for applying.
    pub fn applied(&self) -> Index {
        self.applied
    }

    /// The voters of the configuration in effect: the latest in the log, committed or not.
    pub fn voters(&self) -> &BTreeSet<PeerId> {
        self.membership.voters()
    }

    /// Whether this node votes in the configuration in effect.
    pub fn is_voter(&self) -> bool {
        self.voter
    }

    /// The index of the latest configuration entry in the log if it is not committed yet.
    pub fn pending_configuration(&self) -> Option<Index> {
        self.membership.latest_change().filter(|index| *index > self.commit)
    }

    /// The configuration in effect at the snapshot's end (stored with the snapshot).
    pub fn snapshot_voters(&self) -> &BTreeSet<PeerId> {
        self.membership.base()
    }

    /// The configuration in effect once the log ends at `index`: what a snapshot through
    /// `index` must carry. `None` inside the compacted prefix or beyond the log.
    pub fn voters_at(&self, index: Index) -> Option<&BTreeSet<PeerId>> {
        if index < self.log.snapshot().index || index > self.log.last_index() {
            return None;
        }
        Some(self.membership.at(index))
    }

    /// The snapshot the next `Ready` will ask to install, if any.
    pub fn pending_install(&self) -> Option<SnapshotMeta> {
        self.pending_install.as_ref().map(|(meta, _)| *meta)
    }

    /// The snapshot end a state machine snapshot taken now would have: the applied index and
    /// its term (`None` if nothing was applied since the last compaction).
    pub fn snapshot_point(&self) -> Option<SnapshotMeta> {
        let index = self.applied;
        if index <= self.log.snapshot().index {
            return None;
        }
        Some(SnapshotMeta { index, term: self.log.term_at(index)? })
    }

    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, voted_for: self.voted_for.clone(), commit: self.commit }
    }

    /// Messages dropped because more than [`MAX_PENDING_MESSAGES`] piled up between polls.
    pub fn dropped_messages(&self) -> u64 {
        self.dropped_messages
    }

    // --- Inputs ------------------------------------------------------------------------------

    /// Advances the timers to `now`: may start a campaign (follower, candidate), or send
    /// heartbeats, retry stalled appends and check the quorum (leader).
    pub fn tick(&mut self, now: Time, rng: &mut Rng) {
        self.observe(now);
        if self.timeout_used {
            self.draw_timeout(rng);
        }
        match self.role {
            Role::Leader => self.tick_leader(),
            Role::Follower | Role::PreCandidate | Role::Candidate => {
                // A node outside the configuration (joining, or removed) never campaigns.
                if self.now >= self.election_deadline && self.voter {
                    self.campaign();
                }
            }
        }
    }

    /// Feeds one message from `from`. Messages from unknown nodes and malformed messages are
    /// refused with an error and change nothing; stale ones are ignored or answered.
    ///
    /// Requests are taken from any node but this one, answers only from voters of the
    /// configuration in effect (thesis §4.1: servers process requests without consulting
    /// their configuration). A follower may lag behind the configuration that made its
    /// leader or a candidate a voter — a server added while it was down, now leading or
    /// campaigning with its vote needed — or be ahead of it — a leader removing itself
    /// replicates the entry that removes it —, and only that leader's log can bring it up to
    /// date, only its vote can complete that majority. A removed server that does not know it
    /// cannot disrupt the cluster: its log lacks the entry that removed it, so no voter that
    /// has it grants its (pre-)votes, and pre-vote and leader stickiness keep it from moving
    /// anyone's term while a leader is alive. Answers (votes, acknowledgements, read
    /// confirmations) from outside the configuration would never count, and are refused.
    pub fn step(&mut self, now: Time, from: &PeerId, message: Message) -> Result<(), StepError> {
        self.observe(now);
        if !self.knows(from, &message) {
            return Err(StepError::UnknownPeer(from.clone()));
        }
        validate_message(&message)?;
        let msg_term = message.term();

        if msg_term > self.term {
            match &message {
                Message::PreVote { .. } => {} // Asking about a term it has not moved to.
                Message::PreVoteResponse { granted: true, .. } => {} // Echoes the proposed term.
                Message::RequestVote { .. } if self.in_lease() => {
                    // Leader stickiness: a live leader exists, so this candidate is
                    // disruptive. Do not move to its term and do not answer.
                    return Ok(());
                }
                Message::AppendEntries { .. } | Message::ReadPing { .. } | Message::InstallSnapshot { .. } => {
                    self.become_follower(msg_term, Some(from.clone()))
                }
                _ => self.become_follower(msg_term, None),
            }
        } else if msg_term < self.term {
            match message {
                // Tell a stale leader (or pre-candidate) about the newer term so it steps down.
                Message::AppendEntries { prev_index: rejected, .. }
                | Message::InstallSnapshot { meta: SnapshotMeta { index: rejected, .. }, .. } => {
                    let result = AppendResult::Rejected { rejected, hint_index: Index(0), hint_term: Term(0) };
                    self.send(from, Message::AppendEntriesResponse { term: self.term, result });
                }
                Message::PreVote { .. } => {
                    self.send(from, Message::PreVoteResponse { term: self.term, granted: false });
                }
                _ => {}
            }
            return Ok(());
        }

        match message {
            Message::PreVote { term, last_index, last_term } => self.handle_pre_vote(from, term, last_index, last_term),
            Message::PreVoteResponse { term, granted } => self.handle_pre_vote_response(from, term, granted),
            Message::RequestVote { last_index, last_term, .. } => self.handle_request_vote(from, last_index, last_term),
            Message::RequestVoteResponse { granted, .. } => self.handle_vote_response(from, granted),
            Message::AppendEntries { prev_index, prev_term, entries, leader_commit, .. } => {
                self.handle_append(from, prev_index, prev_term, entries, leader_commit)
            }
            Message::AppendEntriesResponse { result, .. } => self.handle_append_response(from, result),
            Message::ReadPing { round, .. } => self.handle_read_ping(from, round),
            Message::ReadPong { round, .. } => self.handle_read_pong(from, round),
            Message::InstallSnapshot { meta, voters, .. } => self.handle_install_snapshot(from, meta, voters),
        }
        Ok(())
    }

    /// Appends a command to the leader's log and starts replicating it; returns its index.
    /// The command is committed when it appears in a `Ready::committed`; a leader change may
    /// instead discard it, so a client learns the outcome from the applied log, not from here.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<Index, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader_hint: self.leader.clone() });
        }
        if data.len() > MAX_ENTRY_BYTES {
            return Err(ProposeError::TooLarge { size: data.len(), limit: MAX_ENTRY_BYTES });
        }
        let uncommitted = self.log.last_index().0.saturating_sub(self.commit.0);
        if uncommitted >= self.config.max_uncommitted_entries as u64 {
            return Err(ProposeError::Backpressure { limit: self.config.max_uncommitted_entries });
        }
        let index = self.append_as_leader(EntryKind::Command, data);
        self.broadcast_append();
        self.maybe_commit();
        Ok(index)
    }

    /// Appends a new configuration, `voters`, and starts replicating it (leader only). It
    /// takes effect at once: quorums count the new voters from here on, an added server is
    /// probed (and sent a snapshot if it needs compacted entries), a removed one is no longer
    /// replicated to. It is refused unless it adds or removes exactly one voter, the previous
    /// configuration entry is committed, and this leader has committed an entry of its own
    /// term (thesis §4.1 and its fix for single-server changes: a leader must not change the
    /// configuration before it knows its predecessors' changes are settled). A leader that
    /// removes itself keeps leading, without counting itself, until the entry commits, then
    /// steps down. Committed when it appears in a `Ready::committed`, as for commands.
    pub fn propose_membership(&mut self, voters: BTreeSet<PeerId>) -> Result<Index, MembershipError> {
        self.check_can_change()?;
        if voters.is_empty() {
            return Err(MembershipError::Empty);
        }
        if voters.len() > MAX_VOTERS {
            return Err(MembershipError::TooManyVoters { voters: voters.len(), limit: MAX_VOTERS });
        }
        validate_voters(&voters).map_err(|error| MembershipError::Invalid(error.to_string()))?;
        let current = self.membership.voters();
        let added = voters.difference(current).count();
        let removed = current.difference(&voters).count();
        if added + removed != 1 {
            return Err(MembershipError::NotSingleChange { added, removed });
        }
        let uncommitted = self.log.last_index().0.saturating_sub(self.commit.0);
        if uncommitted >= self.config.max_uncommitted_entries as u64 {
            return Err(MembershipError::Backpressure { limit: self.config.max_uncommitted_entries });
        }
        let index = self.append_as_leader(EntryKind::Config, encode_voters(&voters));
        self.broadcast_append();
        self.maybe_commit();
        Ok(index)
    }

    /// [`Raft::propose_membership`] of the configuration in effect with one voter added or
    /// removed; refused with [`MembershipError::AlreadyVoter`] or
    /// [`MembershipError::NotVoter`] when there is nothing to change.
    pub fn propose_change(&mut self, change: MembershipChange) -> Result<Index, MembershipError> {
        self.check_can_change()?;
        let mut voters = self.membership.voters().clone();
        match change {
            MembershipChange::Add(peer) => {
                if !voters.insert(peer.clone()) {
                    return Err(MembershipError::AlreadyVoter(peer));
                }
            }
            MembershipChange::Remove(peer) => {
                if !voters.remove(&peer) {
                    return Err(MembershipError::NotVoter(peer));
                }
            }
        }
        self.propose_membership(voters)
    }

    /// The conditions every configuration change needs, whatever it changes.
    fn check_can_change(&self) -> Result<(), MembershipError> {
        if self.role != Role::Leader {
            return Err(MembershipError::NotLeader { leader_hint: self.leader.clone() });
        }
        if let Some(index) = self.pending_configuration() {
            return Err(MembershipError::ChangePending { index });
        }
        if self.commit < self.term_start {
            return Err(MembershipError::TermNotCommitted { term_start: self.term_start });
        }
        Ok(())
    }

    /// Drops the log through `index`, which a snapshot of the state machine taken after
    /// applying it now covers (the shell stores that snapshot durably first). Followers that
    /// need the dropped entries get the snapshot instead.
    pub fn compact(&mut self, index: Index) -> Result<SnapshotMeta, CompactError> {
        if index > self.applied {
            return Err(CompactError::NotApplied { index, applied: self.applied });
        }
        let snapshot = self.log.snapshot().index;
        let meta = self.log.compact(index).ok_or(CompactError::AlreadyCompacted { index, snapshot })?;
        self.membership.compact(index);
        Ok(meta)
    }

    /// Queues a linearizable read tagged `ctx` (leader only). It comes back in
    /// [`Ready::reads`] once a majority has confirmed this node still leads, with the index
    /// the state machine must have applied before answering; or in [`Ready::failed_reads`]
    /// if this node loses the leadership first.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ReadError> {
        if self.role != Role::Leader {
            return Err(ReadError::NotLeader { leader_hint: self.leader.clone() });
        }
        if self.pending_reads.len() >= MAX_PENDING_READS {
            return Err(ReadError::Backpressure { limit: MAX_PENDING_READS });
        }
        // Everything committed when the read arrived is at or below this index, and so is
        // everything an earlier leader committed (the no-op follows it in this leader's log).
        let index = self.commit.max(self.term_start);
        if self.voter && self.quorum() == 1 {
            self.confirmed_reads.push(ReadState { ctx, index });
            return Ok(());
        }
        self.pending_reads.push_back(PendingRead { ctx, index, round: self.read_round + 1 });
        self.read_ping_due = true;
        Ok(())
    }

    /// Takes the effects accumulated since the last poll. See [`Ready`] for the order in which
    /// they must be carried out.
    pub fn poll_ready(&mut self) -> Ready {
        self.send_read_ping();
        let hard_state = self.hard_state();
        let hard_state = if hard_state == self.persisted_hard_state {
            None
        } else {
            self.persisted_hard_state = hard_state.clone();
            Some(hard_state)
        };
        let apply_to = self.commit.min(Index(self.applied.0.saturating_add(MAX_APPLY_PER_READY as u64)));
        let committed =
            if apply_to > self.applied { self.log.range(self.applied.next(), apply_to) } else { Vec::new() };
        if let Some(last) = committed.last() {
            self.applied = last.index;
        }
        Ready {
            hard_state,
            entries: mem::take(&mut self.unstable),
            messages: mem::take(&mut self.messages),
            committed,
            reads: mem::take(&mut self.confirmed_reads),
            failed_reads: mem::take(&mut self.failed_reads),
            install: self.pending_install.take(),
            send_snapshots: mem::take(&mut self.snapshot_sends),
        }
    }

    /// Whether [`Raft::poll_ready`] would return a non-empty `Ready`.
    pub fn has_ready(&self) -> bool {
        self.hard_state() != self.persisted_hard_state
            || !self.unstable.is_empty()
            || !self.messages.is_empty()
            || self.commit > self.applied
            || self.read_ping_due
            || !self.confirmed_reads.is_empty()
            || !self.failed_reads.is_empty()
            || self.pending_install.is_some()
            || !self.snapshot_sends.is_empty()
    }

    // --- Roles ---------------------------------------------------------------------------------

    fn observe(&mut self, now: Time) {
        self.now = self.now.max(now);
    }

    /// A majority of the configuration in effect.
    fn quorum(&self) -> usize {
        self.membership.voters().len() / 2 + 1
    }

    /// Whether messages like `message` are taken from `from` (see [`Raft::step`]).
    fn knows(&self, from: &PeerId, message: &Message) -> bool {
        if *from == self.me {
            return false;
        }
        match message {
            Message::PreVoteResponse { .. }
            | Message::RequestVoteResponse { .. }
            | Message::AppendEntriesResponse { .. }
            | Message::ReadPong { .. } => self.membership.voters().contains(from),
            Message::PreVote { .. }
            | Message::RequestVote { .. }
            | Message::AppendEntries { .. }
            | Message::InstallSnapshot { .. }
            | Message::ReadPing { .. } => true,
        }
    }

    /// Derives the peers and this node's vote from the configuration in effect; a leader
    /// starts probing added voters, forgets removed ones, and re-counts its quorums.
    fn refresh_configuration(&mut self) {
        let voters = self.membership.voters();
        self.voter = voters.contains(&self.me);
        self.peers = voters.iter().filter(|voter| **voter != self.me).cloned().collect();
        if self.role != Role::Leader {
            return;
        }
        let peers = &self.peers;
        self.progress.retain(|peer, _| peers.contains(peer));
        let next_index = self.log.last_index().next();
        for peer in &self.peers {
            self.progress.entry(peer.clone()).or_insert_with(|| Progress::probing(next_index));
        }
        self.maybe_commit();
        self.confirm_reads();
    }

    fn draw_timeout(&mut self, rng: &mut Rng) {
        let min = self.config.election_timeout_min;
        let spread = self.config.election_timeout_max.saturating_sub(min);
        let spread_nanos = u64::try_from(spread.as_nanos()).unwrap_or(u64::MAX);
        self.randomized_timeout = min + Duration::from_nanos(rng.below(spread_nanos.max(1)));
        self.timeout_used = false;
    }

    fn reset_election_timer(&mut self) {
        self.election_deadline = self.now + self.randomized_timeout;
        self.timeout_used = true;
    }

    /// Whether this node believes a leader is alive: it is one, or it heard from one within
    /// the minimum election timeout.
    fn in_lease(&self) -> bool {
        if self.role == Role::Leader {
            return true;
        }
        match (&self.leader, self.leader_contact) {
            (Some(_), Some(contact)) => self.now.saturating_since(contact) < self.config.election_timeout_min,
            _ => false,
        }
    }

    fn become_follower(&mut self, term: Term, leader: Option<PeerId>) {
        if term > self.term {
            self.term = term;
            self.voted_for = None;
        }
        self.role = Role::Follower;
        if leader.is_some() {
            self.leader_contact = Some(self.now);
        }
        self.leader = leader;
        self.votes.clear();
        self.progress.clear();
        self.fail_pending_reads();
        self.reset_election_timer();
    }

    fn campaign(&mut self) {
        if self.config.pre_vote {
            self.start_pre_vote();
        } else {
            self.start_election();
        }
    }

    /// Starts counting votes as `role`, with this node's own; true if that alone wins.
    fn campaign_as(&mut self, role: Role) -> bool {
        self.role = role;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.me.clone(), true);
        self.reset_election_timer();
        self.votes_won()
    }

    fn start_pre_vote(&mut self) {
        if self.campaign_as(Role::PreCandidate) {
            self.start_election();
            return;
        }
        let message = Message::PreVote {
            term: self.term.next(),
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
        };
        self.broadcast(&message);
    }

    fn start_election(&mut self) {
        self.term = self.term.next();
        self.voted_for = Some(self.me.clone());
        if self.campaign_as(Role::Candidate) {
            self.become_leader();
            return;
        }
        let message = Message::RequestVote {
            term: self.term,
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
        };
        self.broadcast(&message);
    }

    /// Records a peer's ballot: true if the campaign is won; a lost campaign ends here, with
    /// this node a follower of no one in the current term.
    fn tally(&mut self, from: &PeerId, granted: bool) -> bool {
        self.votes.insert(from.clone(), granted);
        if self.votes_won() {
            return true;
        }
        if self.votes_lost() {
            self.become_follower(self.term, None);
        }
        false
    }

    /// Ballots of voters of the configuration in effect only.
    fn ballots(&self, granted: bool) -> usize {
        let voters = self.membership.voters();
        self.votes.iter().filter(|(voter, ballot)| **ballot == granted && voters.contains(*voter)).count()
    }

    fn votes_won(&self) -> bool {
        self.ballots(true) >= self.quorum()
    }

    fn votes_lost(&self) -> bool {
        self.ballots(false) >= self.quorum()
    }

    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.me.clone());
        self.votes.clear();
        let next_index = self.log.last_index().next();
        self.progress = self.peers.iter().map(|peer| (peer.clone(), Progress::probing(next_index))).collect();
        self.next_heartbeat = self.now + self.config.heartbeat_interval;
        self.next_quorum_check = self.now + self.config.election_timeout_min;
        // Raft §5.4.2: entries of earlier terms commit only under one of the current term.
        self.term_start = self.append_as_leader(EntryKind::Noop, Vec::new());
        self.read_round = 0;
        self.read_ping_due = false;
        self.broadcast_append();
        self.maybe_commit();
    }

    // --- Elections -----------------------------------------------------------------------------

    fn log_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        (last_term, last_index) >= (self.log.last_term(), self.log.last_index())
    }

    fn handle_pre_vote(&mut self, from: &PeerId, term: Term, last_index: Index, last_term: Term) {
        // Reached with term >= ours. A pre-vote is granted for a later term only, to a log at
        // least as up to date, and never while a leader is known to be alive.
        let granted = term > self.term && !self.in_lease() && self.log_up_to_date(last_index, last_term);
        let term = if granted { term } else { self.term };
        self.send(from, Message::PreVoteResponse { term, granted });
    }

    fn handle_pre_vote_response(&mut self, from: &PeerId, term: Term, granted: bool) {
        if self.role != Role::PreCandidate {
            return;
        }
        if granted && term != self.term.next() {
            return;
        }
        if self.tally(from, granted) {
            self.start_election();
        }
    }

    fn handle_request_vote(&mut self, from: &PeerId, last_index: Index, last_term: Term) {
        // Reached with the request's term equal to ours.
        let free = match &self.voted_for {
            Some(voted) => voted == from || planted(PlantedBug::DoubleVote),
            None => self.leader.is_none(),
        };
        let granted = free && self.log_up_to_date(last_index, last_term);
        if granted {
            self.voted_for = Some(from.clone());
            self.reset_election_timer();
        }
        // The vote is in the hard state of this Ready, persisted before this response is sent.
        self.send(from, Message::RequestVoteResponse { term: self.term, granted });
    }

    fn handle_vote_response(&mut self, from: &PeerId, granted: bool) {
        if self.role != Role::Candidate {
            return;
        }
        if self.tally(from, granted) {
            self.become_leader();
        }
    }

    // --- Replication: follower side --------------------------------------------------------

    fn handle_append(
        &mut self,
        from: &PeerId,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
    ) {
        if !self.follow(from) {
            return;
        }

        let snapshot = self.log.snapshot();
        let (prev_index, prev_term, entries) = if prev_index < snapshot.index {
            // Entries through the snapshot are committed here, so they match the leader's:
            // skip them and continue from the snapshot's end.
            let rest: Vec<Entry> = entries.into_iter().filter(|entry| entry.index > snapshot.index).collect();
            (snapshot.index, snapshot.term, rest)
        } else {
            (prev_index, prev_term, entries)
        };
        if self.log.term_at(prev_index) != Some(prev_term) {
            let (hint_index, hint_term) = self.log.find_conflict_by_term(prev_index, prev_term);
            let result = AppendResult::Rejected { rejected: prev_index, hint_index, hint_term };
            self.send(from, Message::AppendEntriesResponse { term: self.term, result });
            return;
        }
        let last_new = Index(prev_index.0.saturating_add(entries.len() as u64));
        for entry in entries {
            match self.log.term_at(entry.index) {
                Some(term) if term == entry.term => continue,
                Some(_) => {
                    if entry.index <= self.commit {
                        // A leader contradicting a committed entry: refuse rather than lose
                        // committed data (this cannot happen in a correct cluster).
                        return;
                    }
                    self.log.truncate_from(entry.index);
                    if self.membership.truncate_from(entry.index) {
                        // An uncommitted configuration is gone: the one before it is back.
                        self.refresh_configuration();
                    }
                    self.append_entry(entry);
                }
                None => self.append_entry(entry),
            }
        }
        let new_commit = leader_commit.min(last_new);
        if new_commit > self.commit {
            self.commit = new_commit;
        }
        let result = AppendResult::Accepted { match_index: last_new };
        self.send(from, Message::AppendEntriesResponse { term: self.term, result });
    }

    /// A message from `from` in our term, which makes it this term's leader: follow it and
    /// restart the election timer. False (change nothing) if this node leads the term itself:
    /// two leaders in one term cannot happen, so never act on it.
    fn follow(&mut self, from: &PeerId) -> bool {
        if self.role == Role::Leader {
            return false;
        }
        if self.role != Role::Follower || self.leader.as_ref() != Some(from) {
            self.become_follower(self.term, Some(from.clone()));
        }
        self.leader_contact = Some(self.now);
        self.reset_election_timer();
        true
    }

    fn handle_install_snapshot(&mut self, from: &PeerId, meta: SnapshotMeta, voters: BTreeSet<PeerId>) {
        if !self.follow(from) {
            return;
        }
        if meta.index > self.commit {
            if self.log.term_at(meta.index) == Some(meta.term) {
                // This log already holds the snapshot's last entry, so (log matching) all it
                // covers: keep the log, whose suffix this node may have acknowledged already,
                // and only learn that the prefix is committed (Raft Fig. 13, step 6).
                self.commit = meta.index;
            } else {
                // Otherwise everything here is replaced: the snapshot holds only committed
                // entries, and whatever followed here is re-sent by the leader.
                self.log.install(meta);
                self.membership.install(voters.clone());
                self.refresh_configuration();
                self.unstable.clear();
                self.commit = meta.index;
                self.applied = meta.index;
                self.pending_install = Some((meta, voters));
            }
        }
        let result = AppendResult::Accepted { match_index: meta.index.max(self.commit) };
        self.send(from, Message::AppendEntriesResponse { term: self.term, result });
    }

    /// Appends to the log and records the entry for the next `Ready`, keeping `unstable` a
    /// contiguous run that overwrites whatever was stored from its first index on.
    fn append_entry(&mut self, entry: Entry) {
        if !self.log.append(entry.clone()) {
            return;
        }
        if entry.kind == EntryKind::Config
            && let Ok(voters) = decode_voters(&entry.data)
        {
            // Validated on the way in (`validate_message`, or built by this leader).
            self.membership.push(entry.index, voters);
            self.refresh_configuration();
        }
        let keep = self.unstable.iter().take_while(|pending| pending.index < entry.index).count();
        self.unstable.truncate(keep);
        self.unstable.push(entry);
    }

    // --- Replication: leader side ----------------------------------------------------------

    fn append_as_leader(&mut self, kind: EntryKind, data: Vec<u8>) -> Index {
        let index = self.log.last_index().next();
        self.append_entry(Entry { term: self.term, index, kind, data });
        index
    }

    fn handle_append_response(&mut self, from: &PeerId, result: AppendResult) {
        if self.role != Role::Leader {
            return;
        }
        let last_index = self.log.last_index();
        let Some(progress) = self.progress.get_mut(from) else { return };
        progress.recent_active = true;
        match result {
            AppendResult::Accepted { match_index } => {
                if match_index > last_index {
                    return; // Claims entries this leader never sent.
                }
                if let ReplicationState::Snapshot { index, .. } = progress.state {
                    if match_index < index {
                        return; // A heartbeat's answer, from before the snapshot landed.
                    }
                    // Installed: replicate from just after it.
                    progress.state = ReplicationState::Replicate;
                    progress.next_index = match_index.next();
                    progress.inflight.clear();
                }
                if match_index > progress.match_index {
                    progress.match_index = match_index;
                }
                progress.next_index = progress.next_index.max(match_index.next());
                while progress.inflight.front().is_some_and(|(last, _)| *last <= match_index) {
                    progress.inflight.pop_front();
                }
                // A probe is answered once the follower matches at (or beyond) the probed
                // point; an older or heartbeat acknowledgement leaves the probe outstanding.
                if progress.state == ReplicationState::Probe && match_index.next() >= progress.next_index {
                    progress.state = ReplicationState::Replicate;
                    progress.next_index = progress.match_index.next();
                    progress.inflight.clear();
                }
                self.maybe_commit();
            }
            AppendResult::Rejected { rejected, hint_index, hint_term } => {
                if rejected <= progress.match_index || matches!(progress.state, ReplicationState::Snapshot { .. }) {
                    return; // Stale, or answering a heartbeat while the snapshot streams.
                }
                let (index, _) = self.log.find_conflict_by_term(hint_index.min(rejected), hint_term);
                let next = index.next().min(rejected).max(progress.match_index.next());
                progress.next_index = next;
                progress.state = ReplicationState::Probe;
                progress.inflight.clear();
            }
        }
        self.send_append(from);
    }

    /// Sends as many appends to `peer` as its state allows: one probe, or a pipeline of
    /// batches while replicating.
    fn send_append(&mut self, peer: &PeerId) {
        let max_inflight = self.config.max_inflight_appends;
        let max_batch = self.config.max_entries_per_append;
        let last_index = self.log.last_index();
        loop {
            let Some(progress) = self.progress.get_mut(peer) else { return };
            let can_send = match progress.state {
                ReplicationState::Probe => progress.inflight.is_empty(),
                ReplicationState::Replicate => {
                    progress.inflight.len() < max_inflight && progress.next_index <= last_index
                }
                ReplicationState::Snapshot { .. } => false,
            };
            if !can_send {
                return;
            }
            progress.next_index = progress.next_index.min(last_index.next());
            let prev_index = progress.next_index.prev();
            let Some(prev_term) = self.log.term_at(prev_index) else {
                // The entries this follower needs are compacted: send the snapshot instead.
                let snapshot = self.log.snapshot();
                progress.state = ReplicationState::Snapshot { index: snapshot.index, sent: self.now };
                progress.inflight.clear();
                self.snapshot_sends.push((peer.clone(), self.term));
                return;
            };
            let entries = self.log.slice(progress.next_index, max_batch);
            let last_sent = Index(prev_index.0.saturating_add(entries.len() as u64));
            progress.inflight.push_back((last_sent, self.now));
            let probing = progress.state == ReplicationState::Probe;
            if !probing {
                progress.next_index = last_sent.next();
            }
            let message =
                Message::AppendEntries { term: self.term, prev_index, prev_term, entries, leader_commit: self.commit };
            self.send(peer, message);
            if probing {
                return;
            }
        }
    }

    fn broadcast_append(&mut self) {
        let peers: Vec<PeerId> = self.peers.iter().cloned().collect();
        for peer in &peers {
            self.send_append(peer);
        }
    }

    fn tick_leader(&mut self) {
        if self.now >= self.next_heartbeat {
            self.next_heartbeat = self.now + self.config.heartbeat_interval;
            let peers: Vec<PeerId> = self.peers.iter().cloned().collect();
            for peer in &peers {
                self.heartbeat(peer);
            }
        }
        if self.config.check_quorum && self.now >= self.next_quorum_check {
            self.next_quorum_check = self.now + self.config.election_timeout_min;
            let me = usize::from(self.voter);
            let active = me + self.progress.values().filter(|progress| progress.recent_active).count();
            for progress in self.progress.values_mut() {
                progress.recent_active = false;
            }
            if active < self.quorum() {
                self.become_follower(self.term, None);
            }
        }
    }

    /// Retries a stalled append, then sends whatever is pending, or an empty heartbeat that
    /// only asserts the match index (which a follower never rejects in this term).
    fn heartbeat(&mut self, peer: &PeerId) {
        let now = self.now;
        let retransmit = self.config.retransmit_timeout;
        let last_index = self.log.last_index();
        let snapshot_timeout = self.config.snapshot_timeout;
        let Some(progress) = self.progress.get_mut(peer) else { return };
        if progress.inflight.front().is_some_and(|(_, sent)| now.saturating_since(*sent) >= retransmit) {
            // A replicating follower's match index is known: resume from it. A lost probe is
            // sent again where it was: falling back to the match index (0 until a new leader
            // hears from the follower) would resend the whole log, or a snapshot once it is
            // compacted, to a follower that may lack nothing.
            if progress.state == ReplicationState::Replicate {
                progress.next_index = progress.match_index.next();
            }
            progress.state = ReplicationState::Probe;
            progress.inflight.clear();
        }
        if let ReplicationState::Snapshot { sent, .. } = progress.state
            && now.saturating_since(sent) >= snapshot_timeout
        {
            // The snapshot was lost (or the follower could not install it): start over.
            progress.state = ReplicationState::Probe;
            progress.next_index = progress.match_index.next();
        }
        let sends_append = match progress.state {
            ReplicationState::Probe => progress.inflight.is_empty(),
            ReplicationState::Replicate => {
                progress.inflight.len() < self.config.max_inflight_appends && progress.next_index <= last_index
            }
            ReplicationState::Snapshot { .. } => false,
        };
        if sends_append {
            self.send_append(peer);
            return;
        }
        // A heartbeat asserts the match index, or the snapshot's end while one streams (a
        // follower still without it rejects, which is ignored; either way its timer resets).
        let prev_index = match progress.state {
            ReplicationState::Snapshot { index, .. } => index,
            _ => progress.match_index,
        };
        let prev_index = if self.log.term_at(prev_index).is_some() { prev_index } else { self.log.snapshot().index };
        let Some(prev_term) = self.log.term_at(prev_index) else { return };
        let message = Message::AppendEntries {
            term: self.term,
            prev_index,
            prev_term,
            entries: Vec::new(),
            leader_commit: self.commit,
        };
        self.send(peer, message);
    }

    /// Commits the highest index replicated on a majority of the configuration in effect (this
    /// node counts only if it votes), if it is of the current term. A leader outside the
    /// configuration steps down once the configuration that removed it is committed, after
    /// telling its followers the new commit index.
    fn maybe_commit(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let mut matches: Vec<Index> = self.progress.values().map(|progress| progress.match_index).collect();
        if self.voter {
            matches.push(self.log.last_index());
        }
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let quorum = if planted(PlantedBug::AckBeforeQuorum) { 1 } else { self.quorum() };
        let Some(&candidate) = matches.get(quorum - 1) else { return };
        if candidate > self.commit && self.log.term_at(candidate) == Some(self.term) {
            self.commit = candidate;
            if !self.voter && self.pending_configuration().is_none() {
                let peers: Vec<PeerId> = self.peers.iter().cloned().collect();
                for peer in &peers {
                    self.heartbeat(peer);
                }
                self.become_follower(self.term, None);
            }
        }
    }

    // --- Read index ----------------------------------------------------------------------

    /// Sends the round that confirms the reads queued since the last one (one round per poll,
    /// however many reads arrived).
    fn send_read_ping(&mut self) {
        if !self.read_ping_due || self.role != Role::Leader {
            return;
        }
        self.read_ping_due = false;
        self.read_round += 1;
        self.broadcast(&Message::ReadPing { term: self.term, round: self.read_round });
    }

    fn handle_read_ping(&mut self, from: &PeerId, round: u64) {
        if !self.follow(from) {
            return;
        }
        self.send(from, Message::ReadPong { term: self.term, round });
    }

    fn handle_read_pong(&mut self, from: &PeerId, round: u64) {
        if self.role != Role::Leader {
            return;
        }
        let Some(progress) = self.progress.get_mut(from) else { return };
        progress.recent_active = true;
        progress.read_ack = progress.read_ack.max(round.min(self.read_round));
        self.confirm_reads();
    }

    /// Confirms the reads of every round a majority of the configuration in effect has
    /// answered (this node, if it votes, answers every round it sent).
    fn confirm_reads(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let mut acks: Vec<u64> = self.progress.values().map(|progress| progress.read_ack).collect();
        if self.voter {
            acks.push(self.read_round);
        }
        acks.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&confirmed) = acks.get(self.quorum() - 1) else { return };
        while self.pending_reads.front().is_some_and(|read| read.round <= confirmed) {
            if let Some(read) = self.pending_reads.pop_front() {
                self.confirmed_reads.push(ReadState { ctx: read.ctx, index: read.index });
            }
        }
    }

    fn fail_pending_reads(&mut self) {
        self.failed_reads.extend(self.pending_reads.drain(..).map(|read| read.ctx));
        self.read_ping_due = false;
    }

    // --- Output ----------------------------------------------------------------------------

    fn send(&mut self, to: &PeerId, message: Message) {
        if self.messages.len() >= MAX_PENDING_MESSAGES {
            self.dropped_messages = self.dropped_messages.saturating_add(1);
            return;
        }
        self.messages.push(Outbound { to: to.clone(), message });
    }

    fn broadcast(&mut self, message: &Message) {
        let peers: Vec<PeerId> = self.peers.iter().cloned().collect();
        for peer in &peers {
            self.send(peer, message.clone());
        }
    }
}

impl RaftConfig {
    /// Whether `Raft::new` would accept this config, and if not, why.
    pub fn validate(&self) -> Result<(), InitError> {
        validate_config(self)
    }
}

fn validate_config(config: &RaftConfig) -> Result<(), InitError> {
    let fail = |why| Err(InitError::Config(why));
    if config.election_timeout_min.is_zero() {
        return fail("election_timeout_min must be positive");
    }
    if config.election_timeout_max <= config.election_timeout_min {
        return fail("election_timeout_max must exceed election_timeout_min");
    }
    if config.heartbeat_interval.is_zero() || config.heartbeat_interval >= config.election_timeout_min {
        return fail("heartbeat_interval must be positive and below election_timeout_min");
    }
    if config.retransmit_timeout.is_zero() {
        return fail("retransmit_timeout must be positive");
    }
    if !(1..=MAX_ENTRIES_PER_MESSAGE).contains(&config.max_entries_per_append) {
        return fail("max_entries_per_append must be in 1..=MAX_ENTRIES_PER_MESSAGE");
    }
    if !(1..=MAX_INFLIGHT_LIMIT).contains(&config.max_inflight_appends) {
        return fail("max_inflight_appends must be in 1..=MAX_INFLIGHT_LIMIT");
    }
    if config.max_uncommitted_entries == 0 {
        return fail("max_uncommitted_entries must be positive");
    }
    if config.snapshot_timeout.is_zero() {
        return fail("snapshot_timeout must be positive");
    }
    Ok(())
}

fn validate_persisted(
    hard_state: &HardState,
    snapshot: Option<SnapshotMeta>,
    entries: &[Entry],
    applied: Index,
) -> Result<(), InitError> {
    let fail = |why| Err(InitError::Persisted(why));
    let snapshot = snapshot.unwrap_or_default();
    if (snapshot.index == Index(0)) != (snapshot.term == Term(0)) {
        return fail("a snapshot's index and term are zero together or not at all");
    }
    if snapshot.term > hard_state.term {
        return fail("the snapshot's term is above the persisted term");
    }
    let mut previous_term = snapshot.term;
    for (position, entry) in entries.iter().enumerate() {
        if entry.index != Index(snapshot.index.0.saturating_add(position as u64 + 1)) {
            return fail("log entries are not contiguous after the snapshot");
        }
        if entry.term < previous_term || entry.term == Term(0) {
            return fail("log entry terms decrease or are zero");
        }
        previous_term = entry.term;
    }
    if previous_term > hard_state.term {
        return fail("a log entry's term is above the persisted term");
    }
    let last = Index(snapshot.index.0.saturating_add(entries.len() as u64));
    if hard_state.commit > last {
        return fail("the commit index is beyond the log");
    }
    if applied > hard_state.commit.max(snapshot.index) {
        return fail("the applied index is beyond the commit index");
    }
    // The vote may have gone to a node outside today's configuration (a candidate of a
    // configuration entry truncated since), so it is not checked against it.
    Ok(())
}

/// Structural checks on a message from the network, before any state changes.
fn validate_message(message: &Message) -> Result<(), StepError> {
    if let Message::InstallSnapshot { term, meta, voters } = message {
        if meta.index == Index(0) || meta.term == Term(0) || meta.term > *term {
            return Err(StepError::Malformed("a snapshot must end at an entry of a term up to the message's"));
        }
        if validate_voters(voters).is_err() {
            return Err(StepError::Malformed("a snapshot's voters must be 1 to MAX_VOTERS valid names"));
        }
        return Ok(());
    }
    let Message::AppendEntries { term, prev_index, prev_term, entries, .. } = message else { return Ok(()) };
    if entries.len() > MAX_ENTRIES_PER_MESSAGE {
        return Err(StepError::Malformed("more entries than MAX_ENTRIES_PER_MESSAGE"));
    }
    if prev_term > term {
        return Err(StepError::Malformed("prev_term above the message term"));
    }
    let mut expected = prev_index.next();
    let mut previous_term = *prev_term;
    for entry in entries {
        if entry.index != expected {
            return Err(StepError::Malformed("entries are not contiguous after prev_index"));
        }
        if entry.term < previous_term || entry.term > *term || entry.term == Term(0) {
            return Err(StepError::Malformed("entry terms out of order"));
        }
        if entry.data.len() > MAX_ENTRY_BYTES {
            return Err(StepError::Malformed("entry larger than MAX_ENTRY_BYTES"));
        }
        if entry.kind == EntryKind::Config && decode_voters(&entry.data).is_err() {
            return Err(StepError::Malformed("a configuration entry's data is not a valid voter set"));
        }
        expected = expected.next();
        previous_term = entry.term;
    }
    Ok(())
}
