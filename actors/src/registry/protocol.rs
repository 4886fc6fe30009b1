//! What travels to and from the registry actor: client requests and replies (local or over
//! the transport), watch notices, and the messages registries on different masters exchange
//! to forward a follower's writes and reads to the leader.

use flotilla_transport::{RemoteCall, RemoteMessage};
use serde::{Deserialize, Serialize};

use super::core::{Command, Event, KeyValue, RegistryError, RequestId, Revision, TxnResponse};
use crate::election::core::{MembershipChange, MembershipError};

/// The name the registry actor is exported under on every master.
pub const REGISTRY_NAME: &str = "registry";

/// A client's request. Writes are acknowledged only once committed (durable on a quorum) and
/// applied; reads are linearizable (a read-index round on the leader).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryRequest {
    /// A transaction. With a [`RequestId`], a retry after a lost reply is applied once (within
    /// the store's de-duplication window).
    Write(Command),
    Get {
        key: String,
    },
    /// Keys starting with `prefix` ("" for all), sorted, at most `limit`.
    Range {
        prefix: String,
        limit: u32,
    },
    /// Stream the changes of keys starting with `prefix` after revision `after` to the actor
    /// exported as `sink` on the caller's node, as [`WatchNotice`]s. Served by any master
    /// (every master applies the same log), without a read-index round.
    Watch {
        prefix: String,
        after: Revision,
        sink: String,
    },
    /// Stop a watch.
    Unwatch {
        watch: u64,
    },
    /// This master's view of the cluster.
    Status,
    /// The masters that vote: the committed configuration, read linearizably (a read-index
    /// round, like `Get`).
    Members,
    /// Add or remove one voting master (from an operator's node, or this master's own
    /// actors; refused as [`RegistryFailure::Forbidden`] otherwise). Proposed on the leader (a follower forwards it) and
    /// answered with the new voters once the configuration entry is committed and applied
    /// here. Not retried across leaders: a change whose leader is lost times out, and
    /// `Members` tells whether it was made.
    ChangeMembership(MembershipChange),
}

impl RemoteMessage for RegistryRequest {
    const TAG: u32 = 0x5245_4751; // "REGQ"
}

impl RemoteCall for RegistryRequest {
    type Reply = RegistryReply;
}

/// The answer to a [`RegistryRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryReply {
    Written(TxnResponse),
    Value {
        revision: Revision,
        kv: Option<KeyValue>,
    },
    Values {
        revision: Revision,
        kvs: Vec<KeyValue>,
    },
    Watching {
        watch: u64,
    },
    Unwatched,
    Status(RegistryStatus),
    /// The voting masters, sorted.
    Members {
        voters: Vec<String>,
    },
    Failed(RegistryFailure),
}

/// A master's view of itself and the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryStatus {
    pub node: String,
    pub leader: Option<String>,
    pub term: u64,
    pub is_leader: bool,
    pub commit: u64,
    pub applied: u64,
    pub revision: Revision,
    /// The applied index of the last snapshot this master took or installed.
    pub snapshot: u64,
    /// The voters of the configuration in effect on this master (the latest in its log,
    /// committed or not).
    pub voters: Vec<String>,
}

/// Why a request did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RegistryFailure {
    /// The command or query is invalid; nothing was written.
    #[error("{0}")]
    Rejected(RegistryError),
    /// The leader refused the proposal (too large, too many waiting); nothing was written.
    #[error("the leader refused the write: {0}")]
    Refused(String),
    /// No leader answered in time. For a write the outcome is unknown: retry it with the same
    /// request id, which applies it at most once.
    #[error("no answer from a leader within {timeout_ms} ms (a write may or may not have been applied)")]
    Timeout { timeout_ms: u64 },
    /// The master is shutting down.
    #[error("the registry is stopping")]
    Stopping,
    /// The caller may not make this request (its certificate's role).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The leader refused the membership change; the configuration is unchanged.
    #[error("the membership change was refused: {0}")]
    Membership(MembershipError),
    /// The change was appended at `index`, but a new leader replaced that entry before it
    /// committed: it was not made. Check the members and retry.
    #[error("the membership change appended at {index} was discarded by a new leader; it was not made")]
    Superseded { index: u64 },
    /// This master skipped the change's entry (it installed a snapshot past it): whether the
    /// change was made is unknown here. Check the members.
    #[error("the outcome of the membership change is unknown here: {0}")]
    OutcomeUnknown(String),
}

/// What a watcher receives, in revision order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchNotice {
    pub watch: u64,
    pub body: WatchBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchBody {
    /// Changes after the last notice (or the watch's start revision), whole revisions only.
    Events(Vec<Event>),
    /// The history the watch needs is gone (compacted, or the watcher fell too far behind):
    /// re-read the state at a revision of at least `compacted` and watch again from there.
    /// The watch has ended.
    Compacted { compacted: Revision },
    /// The watch ended (the master stops, or the sink could not keep up): watch again from
    /// the last revision seen; nothing is missed.
    Ended,
}

impl RemoteMessage for WatchNotice {
    const TAG: u32 = 0x5741_5443; // "WATC"
}

/// Between the registries of two masters (accepted from masters only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// Follower → leader: propose this encoded command (its id routes the answer back).
    Propose { id: RequestId, command: Vec<u8> },
    /// Leader → follower: the proposal was refused. A `retriable` refusal (this master no
    /// longer leads, or too many writes wait) says nothing about other copies of the write:
    /// the origin keeps it pending and routes it again. Otherwise (too large) no copy can
    /// ever be applied.
    Refused { id: RequestId, reason: String, retriable: bool },
    /// Follower → leader: confirm a read tagged `ctx`.
    ReadIndex { ctx: u64 },
    /// Leader → follower: the read tagged `ctx` may be answered once applied through
    /// `index`, or (with `None`) could not be confirmed.
    ReadIndexed { ctx: u64, index: Option<u64> },
    /// Follower → leader: propose this membership change (`ctx` routes the answer back).
    ChangeMembership { ctx: u64, change: MembershipChange },
    /// Leader → follower: the change tagged `ctx` is committed and applied (the new voters)
    /// or failed. A `retriable` failure (the receiver does not lead, or has not committed an
    /// entry of its term yet) says the change was not proposed: the origin routes it again.
    MembershipChanged { ctx: u64, outcome: Result<Vec<String>, RegistryFailure>, retriable: bool },
}

impl RemoteMessage for PeerMessage {
    const TAG: u32 = 0x5245_4750; // "REGP"
}
