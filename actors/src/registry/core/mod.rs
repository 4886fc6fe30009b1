//! The registry's state machine as a pure core: a key-value store that applies committed Raft
//! entries and nothing else, so every master holds the same state, revision and history.
//!
//! # Model
//!
//! - Keys are strings, values bytes, each with etcd's metadata: `create_revision`,
//!   `mod_revision`, `version` ([`KeyValue`]).
//! - The one write is a transaction ([`Txn`]): equality compares on several keys, then the
//!   success or the failure branch of puts, deletes and prefix deletes. Put, delete and
//!   compare-and-swap are constructors of it.
//! - The [`Revision`] moves by one per transaction that writes something; all its events share
//!   it, and watchers resume from a revision with [`Store::events_since`].
//! - A [`Command`] (what a Raft entry carries) may name its request ([`RequestId`]): a retry
//!   returns the first answer instead of writing twice, within the last
//!   [`StoreConfig::dedup_clients`] clients.
//! - [`Store::snapshot`] and [`Store::restore`] carry everything, so a restored store continues
//!   exactly as the original would.
//!
//! Nothing here panics on any input: commands and snapshots are decoded, checked and refused
//! with a [`RegistryError`] that says what is wrong.

mod store;
mod types;

#[cfg(test)]
mod tests;

pub use store::{SNAPSHOT_FORMAT, Store, StoreConfig};
pub use types::{
    Command, Compare, CompareTarget, Event, EventKind, KeyValue, MAX_KEY_BYTES, MAX_TXN_ITEMS, MAX_VALUE_BYTES, Op,
    RegistryError, RequestId, Revision, Txn, TxnResponse,
};
