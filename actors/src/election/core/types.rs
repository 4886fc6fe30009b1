//! The values Raft reads and writes: ids, terms, indexes, entries, hard state, messages and the
//! `Ready` batch.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A voter's identity in the election: the name of a master node (the shell maps it to and
/// from `flotilla_supervisors::NodeId`; this one travels on the wire).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerId(pub String);

impl From<&str> for PeerId {
    fn from(name: &str) -> Self {
        PeerId(name.to_owned())
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Raft term: a logical clock that only moves forward. Term 0 is "before any election".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Term(pub u64);

impl Term {
    /// The next term; saturates rather than wrapping (2^64 elections will not happen).
    pub fn next(self) -> Term {
        Term(self.0.saturating_add(1))
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// A position in the log. The first entry has index 1; index 0 is the empty prefix, whose
/// term is 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Index(pub u64);

impl Index {
    pub fn next(self) -> Index {
        Index(self.0.saturating_add(1))
    }

    /// The previous index, or 0 for 0.
    pub fn prev(self) -> Index {
        Index(self.0.saturating_sub(1))
    }
}

impl fmt::Display for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i{}", self.0)
    }
}

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// Appended by a new leader so that it can commit in its own term (Raft §5.4.2 / §8).
    /// Applying it is a no-op; it still occupies its index.
    Noop,
    /// An opaque command for the replicated state machine.
    Command,
    /// A new configuration (Raft thesis §4.1): the data is the whole voter set, postcard of
    /// the sorted `Vec<PeerId>` ([`crate::election::core::encode_voters`]). It takes effect
    /// on every server as soon as it is in its log, committed or not; applying it is a no-op
    /// for the state machine.
    Config,
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub kind: EntryKind,
    /// The command bytes; empty for [`EntryKind::Noop`]; the encoded voters for
    /// [`EntryKind::Config`].
    pub data: Vec<u8>,
}

/// The state that must be on disk before any message that depends on it is sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    pub voted_for: Option<PeerId>,
    /// Persisted so a restarted node re-applies what it knew was committed without waiting
    /// for a leader. Losing it is safe (it is re-learned); it never moves backwards.
    pub commit: Index,
}

/// Where a snapshot ends: the last log entry it includes, and that entry's term. The entries
/// up to it are gone from the log; the snapshot's bytes replace them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub index: Index,
    pub term: Term,
}

/// What a node finds on disk when it starts: the last persisted hard state, snapshot and log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Persisted {
    pub hard_state: HardState,
    /// The snapshot the log continues from, if the log was compacted.
    pub snapshot: Option<SnapshotMeta>,
    /// The configuration that snapshot ends with. `None` without a snapshot, or for a
    /// snapshot written before membership changes existed (its voters were the bootstrap
    /// voters, which the caller of `Raft::new` passes).
    pub snapshot_voters: Option<BTreeSet<PeerId>>,
    /// The log after the snapshot (from index 1 without one), contiguous.
    pub entries: Vec<Entry>,
    /// The highest index the state machine has already applied: the snapshot's index when
    /// the state machine is restored from it, 0 for an in-memory one rebuilt from the log.
    pub applied: Index,
}

/// The answer to an `AppendEntries`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResult {
    /// The follower's log matches the leader's through `match_index`.
    Accepted { match_index: Index },
    /// The follower's log does not contain an entry at `rejected` (the request's
    /// `prev_index`) with the request's `prev_term`.
    ///
    /// The hint is for fast backtracking: `hint_index` is the largest index at or below
    /// `rejected` whose term (`hint_term`) is at most the request's `prev_term`, so the leader
    /// can skip a whole term of mismatching entries in one round trip.
    Rejected { rejected: Index, hint_index: Index, hint_term: Term },
}

/// A message between two Raft nodes. Every message carries a term: the sender's current term,
/// except for a `PreVote`, which carries the term the sender *would* campaign in (its term
/// + 1) without having moved to it, and a granted `PreVoteResponse`, which echoes that term.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    PreVote {
        term: Term,
        last_index: Index,
        last_term: Term,
    },
    PreVoteResponse {
        term: Term,
        granted: bool,
    },
    RequestVote {
        term: Term,
        last_index: Index,
        last_term: Term,
    },
    RequestVoteResponse {
        term: Term,
        granted: bool,
    },
    AppendEntries {
        term: Term,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
    },
    AppendEntriesResponse {
        term: Term,
        result: AppendResult,
    },
    /// A leader asking its followers to confirm it still leads (read index, thesis §6.4):
    /// reads queued up to `round` are served once a majority has answered this round.
    ReadPing {
        term: Term,
        round: u64,
    },
    /// A follower's answer: it still follows the sender in `term`.
    ReadPong {
        term: Term,
        round: u64,
    },
    /// A leader's snapshot, delivered whole: its bytes travel on the transport's bulk stream
    /// and the shell feeds this message in once they have all arrived. Answered like an
    /// append (accepted through `meta.index`). `voters` is the configuration in effect at
    /// the snapshot's end.
    InstallSnapshot {
        term: Term,
        meta: SnapshotMeta,
        voters: BTreeSet<PeerId>,
    },
}

impl Message {
    pub fn term(&self) -> Term {
        match self {
            Message::PreVote { term, .. }
            | Message::PreVoteResponse { term, .. }
            | Message::RequestVote { term, .. }
            | Message::RequestVoteResponse { term, .. }
            | Message::AppendEntries { term, .. }
            | Message::AppendEntriesResponse { term, .. }
            | Message::ReadPing { term, .. }
            | Message::ReadPong { term, .. }
            | Message::InstallSnapshot { term, .. } => *term,
        }
    }
}

/// A read confirmed by [`crate::election::core::Raft::read_index`]'s protocol: once this
/// node has applied through `index`, its state machine answers the read linearizably.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReadState {
    /// The caller's tag for the read.
    pub ctx: u64,
    pub index: Index,
}

/// A message to send to one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outbound {
    pub to: PeerId,
    pub message: Message,
}

/// The effects of the inputs fed since the last [`crate::election::core::Raft::poll_ready`],
/// to be carried out **in this order**:
///
/// 1. **Persist**: if `hard_state` is `Some`, write it; if `entries` is not empty, delete every
///    stored entry with an index at or above `entries[0].index`, then append `entries`. Both
///    must be durable (fsync) before step 2. A vote is therefore on disk before the vote
///    response leaves, and an entry before the follower acknowledges it.
/// 2. **Send** `messages`, in order. Any may be lost; Raft tolerates loss, duplication and
///    reordering.
/// 3. **Apply** `committed`, in order: every entry is committed, has been persisted (by step 1
///    of this or an earlier `Ready`), and follows the previously applied one with no gap.
///
/// Snapshots add two duties. `install` (a follower receiving a leader's snapshot) comes first
/// of all: store the snapshot received with this meta durably, with the configuration it
/// carries, replacing the whole log, and restore the state machine from it, before the
/// persist step. `send_snapshots` are peers to
/// stream this node's latest snapshot to (with the send step).
///
/// 4. **Answer reads**: each of `reads` may be served once the state machine has applied
///    through its index (at once if it already has); each of `failed_reads` lost its leader
///    before it was confirmed and must be retried (on the new leader).
///
/// A shell handles one `Ready` completely before the next one. It may feed several inputs
/// between two polls: their effects accumulate here in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    pub messages: Vec<Outbound>,
    pub committed: Vec<Entry>,
    pub reads: Vec<ReadState>,
    pub failed_reads: Vec<u64>,
    /// A leader's snapshot to install: where it ends and the voters in effect there.
    pub install: Option<(SnapshotMeta, BTreeSet<PeerId>)>,
    /// Peers to stream the latest snapshot to, each with the term this node decided it in
    /// as their leader (the transfer carries that term).
    pub send_snapshots: Vec<(PeerId, Term)>,
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.committed.is_empty()
            && self.reads.is_empty()
            && self.failed_reads.is_empty()
            && self.install.is_none()
            && self.send_snapshots.is_empty()
    }
}
