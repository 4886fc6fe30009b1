//! The registry's vocabulary: keys and their metadata, transactions, the commands Raft carries,
//! responses, watch events and errors.
//!
//! Everything here crosses a boundary (the Raft log, a snapshot, a client), so every type is
//! serde and every limit is a named constant that [`Txn::validate`] checks before a command
//! touches the store.

use serde::{Deserialize, Serialize};

/// The store's logical clock: 0 for an empty store, then one more for every applied
/// transaction that writes at least one key. All the writes of one transaction share it, so a
/// watcher resuming "after revision r" never sees half a transaction.
pub type Revision = u64;

/// The longest key, in bytes. Keys are paths (`/apps/prod/web`), never payloads.
pub const MAX_KEY_BYTES: usize = 4096;

/// The largest value, in bytes: one Raft entry carries a whole command, so a value cannot be
/// larger than an entry anyway.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// The most compares and ops (both branches counted) one transaction may hold; bounds the work
/// and the response of a single apply.
pub const MAX_TXN_ITEMS: usize = 1024;

/// Identifies one request of one client so that a retry after a lost reply is applied once.
/// A client numbers its requests with increasing `seq` and retries with the same one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    pub client: u64,
    pub seq: u64,
}

/// A stored key with etcd's metadata, which is what compare-and-swap and watches are built on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision of the put that created the key (since its last delete).
    pub create_revision: Revision,
    /// The revision of the last put.
    pub mod_revision: Revision,
    /// Puts since creation: 1 after the first.
    pub version: u64,
}

/// What a [`Compare`] checks a key against. Every comparison is an equality.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    /// The key's `mod_revision`; 0 means "the key is absent".
    ModRevision(Revision),
    /// The key's `version`; 0 means "the key is absent".
    Version(u64),
    /// The key's value; an absent key equals no value, not even an empty one.
    Value(Vec<u8>),
}

/// One guard of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub key: String,
    pub target: CompareTarget,
}

/// One write. Ops of a transaction run in order and each sees the effects of the previous ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
    },
    Delete {
        key: String,
    },
    /// Deletes every key that starts with `prefix`; an empty prefix is refused so that one
    /// typo cannot wipe the registry.
    DeletePrefix {
        prefix: String,
    },
}

/// If every compare holds, run `success`, else run `failure`: the one write primitive, from
/// which put, delete and compare-and-swap are built.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

impl Txn {
    /// An unconditional put.
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Txn {
        Txn::unconditional(Op::Put { key: key.into(), value: value.into() })
    }

    /// An unconditional delete.
    pub fn delete(key: impl Into<String>) -> Txn {
        Txn::unconditional(Op::Delete { key: key.into() })
    }

    /// Puts `value` only if the key's `mod_revision` is `expected_mod_revision`; 0 means
    /// "create only if absent". On a mismatch nothing is written and `succeeded` is false.
    pub fn cas(key: impl Into<String>, expected_mod_revision: Revision, value: impl Into<Vec<u8>>) -> Txn {
        let key = key.into();
        let compare = Compare { key: key.clone(), target: CompareTarget::ModRevision(expected_mod_revision) };
        Txn { compare: vec![compare], success: vec![Op::Put { key, value: value.into() }], failure: Vec::new() }
    }

    fn unconditional(op: Op) -> Txn {
        Txn { compare: Vec::new(), success: vec![op], failure: Vec::new() }
    }

    /// Checks every limit before anything is applied, so that a transaction is refused whole
    /// (whichever branch would run) rather than failing half way. The message names the
    /// offending item by branch and position.
    pub fn validate(&self) -> Result<(), RegistryError> {
        let items = self.compare.len().saturating_add(self.success.len()).saturating_add(self.failure.len());
        if items > MAX_TXN_ITEMS {
            return Err(RegistryError::Invalid(format!(
                "transaction has {items} compares and ops; the limit is {MAX_TXN_ITEMS}"
            )));
        }
        for (position, compare) in self.compare.iter().enumerate() {
            validate_compare(compare).map_err(|reason| invalid_item("compare", position, reason))?;
        }
        for (branch, ops) in [("success", &self.success), ("failure", &self.failure)] {
            for (position, op) in ops.iter().enumerate() {
                validate_op(op).map_err(|reason| invalid_item(branch, position, reason))?;
            }
        }
        Ok(())
    }
}

fn invalid_item(branch: &str, position: usize, reason: String) -> RegistryError {
    RegistryError::Invalid(format!("{branch}[{position}]: {reason}"))
}

fn validate_compare(compare: &Compare) -> Result<(), String> {
    validate_key(&compare.key)?;
    match &compare.target {
        CompareTarget::Value(value) => validate_value(value),
        CompareTarget::ModRevision(_) | CompareTarget::Version(_) => Ok(()),
    }
}

fn validate_op(op: &Op) -> Result<(), String> {
    match op {
        Op::Put { key, value } => {
            validate_key(key)?;
            validate_value(value)
        }
        Op::Delete { key } => validate_key(key),
        Op::DeletePrefix { prefix } if prefix.is_empty() => {
            Err("delete-prefix prefix is empty (it would delete every key)".to_owned())
        }
        Op::DeletePrefix { prefix } => validate_key(prefix).map_err(|reason| format!("prefix: {reason}")),
    }
}

/// Whether `key` could be stored: non-empty and at most [`MAX_KEY_BYTES`].
pub(crate) fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("key is empty".to_owned());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!("key is {} bytes; the limit is {MAX_KEY_BYTES}", key.len()));
    }
    Ok(())
}

/// Whether `value` could be stored: at most [`MAX_VALUE_BYTES`].
pub(crate) fn validate_value(value: &[u8]) -> Result<(), String> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!("value is {} bytes; the limit is {MAX_VALUE_BYTES}", value.len()));
    }
    Ok(())
}

/// What one Raft entry carries: a transaction, the request it answers if the client wants a
/// retry to be applied only once, and the leader term its writer is fenced to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub id: Option<RequestId>,
    pub txn: Txn,
    /// The writer is a leader-only actor started for this term (a fencing token): the command
    /// applies only from an entry of this very term. An entry of a later term was appended by
    /// a newer leader, so the writer's leadership ended before its write reached the log — a
    /// deposed leader's scheduler must not overwrite what its successor has acknowledged.
    pub leader_term: Option<u64>,
}

/// A command as encoded before leader terms existed; entries already in a log or snapshot on
/// disk decode through it.
#[derive(Deserialize)]
struct CommandWithoutTerm {
    id: Option<RequestId>,
    txn: Txn,
}

impl Command {
    /// The bytes to propose to Raft (postcard).
    pub fn encode(&self) -> Vec<u8> {
        encode_postcard(self)
    }

    /// Decodes the bytes of a committed entry. Trailing bytes are refused so that one command
    /// has exactly one encoding. Bytes of the older encoding (no leader term) are one field
    /// short, so they never decode as the current one and are read as unfenced commands.
    pub fn decode(bytes: &[u8]) -> Result<Command, RegistryError> {
        match decode_exact::<Command>(bytes) {
            Ok(command) => Ok(command),
            Err(error) => match decode_exact::<CommandWithoutTerm>(bytes) {
                Ok(CommandWithoutTerm { id, txn }) => Ok(Command { id, txn, leader_term: None }),
                Err(_) => Err(error),
            },
        }
    }
}

fn decode_exact<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, RegistryError> {
    let (value, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|error| RegistryError::Decode(error.to_string()))?;
    if !rest.is_empty() {
        return Err(RegistryError::Decode(format!("{} trailing bytes after the command", rest.len())));
    }
    Ok(value)
}

/// Postcard into a fresh buffer. Postcard's serializer into a `Vec` fails only for sequences of
/// unknown length, which derived serde types never produce; should it ever fail, the empty
/// buffer it returns is refused by every decoder rather than read as something else.
pub(crate) fn encode_postcard<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap_or_default()
}

/// The outcome of one applied transaction; also what a retried request gets back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    /// Whether every compare held (so the success branch ran).
    pub succeeded: bool,
    /// The store's revision after applying.
    pub revision: Revision,
    /// How many keys the transaction deleted.
    pub deleted: u64,
    /// For each op that ran, in order: the key's previous value for a put or delete (`None` if
    /// it was absent); always `None` for a delete-prefix.
    pub prev: Vec<Option<KeyValue>>,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change, as a watcher sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub revision: Revision,
    pub kind: EventKind,
    /// For a put, the key as stored after it. For a delete: the key, an empty value,
    /// `mod_revision` the revision of the delete, `create_revision` and `version` 0 (as etcd).
    pub kv: KeyValue,
}

/// Why the registry refused something.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RegistryError {
    /// The command breaks a limit or was already applied; the message says which.
    #[error("invalid command: {0}")]
    Invalid(String),
    /// The command's bytes are not a command.
    #[error("undecodable command: {0}")]
    Decode(String),
    /// A retry of a request older than the last one recorded for its client; its response is
    /// no longer kept, and applying it again could undo a newer write.
    #[error("stale request: client {client} sent seq {seq}, but seq {last_seq} was already applied")]
    StaleRequest { client: u64, seq: u64, last_seq: u64 },
    /// The events after `requested` are no longer kept; the watcher must re-read the state.
    #[error("revision {requested} is compacted: history starts after revision {compacted}")]
    Compacted { requested: Revision, compacted: Revision },
    /// The command was fenced to leader term `fenced` but reached the log in an entry of term
    /// `term`: its writer no longer leads, and nothing was written.
    #[error("the writer's leadership of term {fenced} is over (now term {term}); nothing was written")]
    StaleLeader { fenced: u64, term: u64 },
    /// A snapshot could not be restored; the message says why.
    #[error("invalid snapshot: {0}")]
    Snapshot(String),
}
