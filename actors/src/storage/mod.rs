//! The durable-storage seam of the Raft log (DESIGN.md §1, principle 7): one trait,
//! [`RaftStorage`], with a real implementation on a file ([`DiskStorage`]) and a simulated
//! disk with fsync semantics and fault hooks ([`SimDisk`]), chosen by injection.
//!
//! Both write the same format, defined by the pure functions in [`core`]: an append-only
//! stream of checksummed records, grouped in batches that replay all or nothing. A torn tail
//! (what a crash leaves) is dropped on load; corruption anywhere else is an error, never
//! silently accepted.
//!
//! Snapshots live next to the log: [`RaftStorage::save_snapshot`] writes the state machine's
//! snapshot and the configuration it ends with atomically (temporary file, fsync, rename),
//! then rewrites the log to continue from it. [`Persisted::applied`] is the snapshot's index
//! (the state machine is restored from it and re-applies only the entries after it), and
//! [`Persisted::snapshot_voters`] its configuration.
//!
//! A [`DiskStorage`] holds an exclusive lock on its directory while open, so a second process
//! (or a second store in one process) pointed at the same directory is refused with
//! [`StorageError::Locked`] instead of corrupting the log.

pub mod core;
mod disk;
mod sim;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::io;
use std::path::PathBuf;

use crate::election::core::{Entry, HardState, Index, PeerId, Persisted, SnapshotMeta};

pub use disk::{DiskStorage, LOCK_FILE_NAME, LOG_FILE_NAME, SNAPSHOT_FILE_NAME};
pub use sim::{SharedSimDisk, SimDisk};

/// Where a Raft node keeps its hard state and log.
pub trait RaftStorage {
    /// Reads the stored hard state and log, dropping a torn tail left by a crash (the
    /// implementation reports it; see `last_recovery`). Must succeed before [`Self::persist`].
    fn load(&mut self) -> Result<Persisted, StorageError>;

    /// Step 1 of a `Ready` ("persist, then send, then apply"): if `hard_state` is `Some`,
    /// replace the stored one; if `entries` is not empty, delete every stored entry with an
    /// index at or above `entries[0].index`, then append `entries`. When it returns `Ok`, all of
    /// it is durable (fsync'd); a crash before then leaves either all of it or none of it.
    ///
    /// After an error nothing of this call is stored and the store stays usable, unless the
    /// error is [`StorageError::Poisoned`].
    fn persist(&mut self, hard_state: Option<&HardState>, entries: &[Entry]) -> Result<(), StorageError>;

    /// Stores `data`, the state machine's snapshot through `meta`, with `voters`, the
    /// configuration in effect at `meta.index`, durably, then rewrites the log to continue
    /// from it: keeping the entries after `meta.index` if `keep_log_after` (a compaction),
    /// none otherwise (installing a leader's snapshot). The hard state is kept. A crash leaves
    /// the old snapshot and log, or the new snapshot with the old or the new log; `load`
    /// makes the same `Persisted` of the last two.
    fn save_snapshot(
        &mut self,
        meta: SnapshotMeta,
        voters: &BTreeSet<PeerId>,
        data: &[u8],
        keep_log_after: bool,
    ) -> Result<(), StorageError>;

    /// The stored snapshot, if there is one.
    fn snapshot(&mut self) -> Result<Option<StoredSnapshot>, StorageError>;
}

/// A snapshot as a store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSnapshot {
    pub meta: SnapshotMeta,
    /// The configuration at `meta.index`; `None` for a snapshot stored before membership
    /// changes existed (the bootstrap configuration).
    pub voters: Option<BTreeSet<PeerId>>,
    pub data: Vec<u8>,
}

/// Refuses a snapshot configuration the snapshot file could not be read back with.
fn check_voters(voters: &BTreeSet<PeerId>) -> Result<(), StorageError> {
    crate::election::core::validate_voters(voters)
        .map_err(|error| StorageError::Rejected { reason: format!("snapshot voters: {error}") })
}

/// Refuses a persist whose entries reach into the snapshot (the core never sends one).
fn check_after_snapshot(snapshot: Index, entries: &[Entry]) -> Result<(), StorageError> {
    match entries.first() {
        Some(first) if first.index <= snapshot => Err(StorageError::Rejected {
            reason: format!("entry {} is inside the snapshot ending at {snapshot}", first.index),
        }),
        _ => Ok(()),
    }
}

/// Why a storage operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// An I/O error other than running out of space.
    #[error("I/O error ({kind}) on {}: {message}", path.display())]
    Io { kind: io::ErrorKind, path: PathBuf, message: String },
    /// The stored log is damaged before its tail: a checksum mismatch or a malformed record.
    #[error("corrupt log at byte {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
    /// No space left on the device (or the simulated disk's capacity), or a quota exceeded.
    #[error("no space left for the log")]
    Full,
    /// The call breaks the contract (a batch not contiguous or not attached to the stored
    /// log, an oversize entry, `persist` before `load`); nothing was written.
    #[error("rejected: {reason}")]
    Rejected { reason: String },
    /// Another store (in this process or another) holds the directory's lock.
    #[error("{} is locked by another store: is another master running on this data directory?", path.display())]
    Locked { path: PathBuf },
    /// An earlier failure could not be rolled back, so what is on disk is unknown: reopen the
    /// store (which recovers from the file) before using it again.
    #[error("storage poisoned by an earlier failure that could not be rolled back; reopen it")]
    Poisoned,
}

impl StorageError {
    /// Classifies an I/O error: ENOSPC (`StorageFull`) and `QuotaExceeded` are [`Self::Full`].
    pub fn from_io(error: &io::Error, path: impl Into<PathBuf>) -> Self {
        match error.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => StorageError::Full,
            kind => StorageError::Io { kind, path: path.into(), message: error.to_string() },
        }
    }
}

impl From<core::Corrupt> for StorageError {
    fn from(corrupt: core::Corrupt) -> Self {
        StorageError::Corrupt { offset: corrupt.offset, reason: corrupt.reason }
    }
}

impl From<core::RewriteError> for StorageError {
    fn from(error: core::RewriteError) -> Self {
        match error {
            core::RewriteError::Corrupt(corrupt) => corrupt.into(),
            core::RewriteError::Batch(batch) => batch.into(),
        }
    }
}

impl From<core::BatchError> for StorageError {
    fn from(error: core::BatchError) -> Self {
        StorageError::Rejected { reason: error.to_string() }
    }
}

fn not_loaded() -> StorageError {
    StorageError::Rejected { reason: "persist before a successful load".to_owned() }
}
