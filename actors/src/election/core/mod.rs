//! Raft as a pure state machine: leader election and log replication with no runtime, no
//! I/O, no clock reads and no RNG construction.
//!
//! A [`Raft`] is fed three kinds of input, each with the current time:
//!
//! - [`Raft::tick`]`(now, rng)`: timers. Followers and candidates campaign when their
//!   randomized election timeout (drawn from the injected [`flotilla_supervisors::Rng`])
//!   expires; a leader sends heartbeats, retries stalled appends and checks its quorum.
//! - [`Raft::step`]`(now, from, message)`: a [`Message`] from a peer.
//! - [`Raft::propose`]`(data)`: a command for the leader to replicate, and
//!   [`Raft::propose_membership`]`(voters)`: a new configuration.
//!
//! Its effects accumulate in a [`Ready`] taken with [`Raft::poll_ready`], carried out in the
//! order **persist, then send, then apply** (the contract is on [`Ready`]).
//!
//! # What it implements
//!
//! - Elections with randomized timeouts, votes granted once per term to an up-to-date log
//!   (Raft §5.2, §5.4.1), and persisted before the response leaves.
//! - Pre-vote (thesis §9.6): a node first asks whether it could win, without bumping its term,
//!   so a partitioned node cannot disrupt the cluster when it returns.
//! - Leader stickiness: a node that heard from a live leader within the minimum election
//!   timeout refuses pre-votes and ignores vote requests for a later term.
//! - Check-quorum (thesis §6.2): a leader that has not heard from a majority within the
//!   minimum election timeout steps down.
//! - Replication with batching (`max_entries_per_append`) and pipelining
//!   (`max_inflight_appends`) per follower, probing after a rejection, fast backtracking by
//!   term hints, retransmission after `retransmit_timeout`, truncation of conflicting
//!   suffixes (never of committed entries).
//! - Commitment by counting replicas of entries of the current term only (§5.4.2); a new
//!   leader appends a no-op entry so earlier entries commit promptly. A single-node cluster
//!   elects itself and commits on its own.
//! - A limit on everything: peers, entries per message, bytes per entry, in-flight appends,
//!   uncommitted entries (back-pressure), pending messages, entries applied per `Ready`.
//!   Input from the network is validated; unknown senders, malformed and stale messages never
//!   panic a node.
//! - Linearizable reads by read index (thesis §6.4): [`Raft::read_index`] queues a read at
//!   the commit index (at least the start of the leader's term), the leader confirms it still
//!   leads with one `ReadPing` round to a majority, and the read comes back in
//!   [`Ready::reads`], to be answered once applied through its index. No clock is trusted.
//! - Log compaction and snapshots (Raft §7): [`Raft::compact`] drops the log through an index
//!   the shell's state machine snapshot covers; a follower whose next entry is compacted gets
//!   the snapshot ([`Ready::send_snapshots`], no appends until it is acknowledged or
//!   `snapshot_timeout` passes) and installs it ([`Message::InstallSnapshot`],
//!   [`Ready::install`]) when it goes beyond its commit index.
//!
//! - Single-server membership changes (thesis §4.1): [`Raft::propose_membership`] appends an
//!   [`EntryKind::Config`] entry holding the whole new voter set, which every server uses as
//!   soon as it is in its log (committed or not; a truncation reverts it). Quorums — votes,
//!   commitment, check-quorum, read-index rounds — count the voters of that configuration; a
//!   leader counts itself only while it votes, so a leader removing itself replicates the
//!   change without counting itself and steps down once it commits. A change is refused while
//!   another is uncommitted and before the leader has committed an entry of its own term.
//!   A server started with [`Raft::new_joining`] follows the leader without campaigning until
//!   a configuration lists it. Snapshots carry the configuration they end with.
//!
//! # Not yet
//!
//! - Catching a new server up before it counts (thesis §4.2.1): an added server votes at
//!   once, so adding one to a cluster with a failed member waits for it to catch up.
//! - Leader leases (reads always take a read-index round) and leadership transfer.

mod log;
mod membership;
mod raft;
mod types;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use membership::{MAX_PEER_ID_BYTES, MAX_VOTERS, VotersError, decode_voters, encode_voters, validate_voters};
pub use raft::{
    CompactError, InitError, MAX_APPLY_PER_READY, MAX_ENTRIES_PER_MESSAGE, MAX_ENTRY_BYTES, MAX_INFLIGHT_LIMIT,
    MAX_PEERS, MAX_PENDING_MESSAGES, MAX_PENDING_READS, MembershipChange, MembershipError, ProposeError, Raft,
    RaftConfig, ReadError, Role, StepError,
};
pub use types::{
    AppendResult, Entry, EntryKind, HardState, Index, Message, Outbound, PeerId, Persisted, ReadState, Ready,
    SnapshotMeta, Term,
};
