//! [`SimDisk`]: a simulated disk for whole-cluster simulation, with fsync semantics and fault
//! hooks.

use std::collections::BTreeSet;
use std::path::PathBuf;

use flotilla_supervisors::Rng;

use crate::election::core::{Entry, HardState, Index, PeerId, Persisted, SnapshotMeta};

use super::core::{self, Tail};
use super::{RaftStorage, StorageError, StoredSnapshot, check_after_snapshot, check_voters, not_loaded};

/// The name a simulated disk gives in its I/O errors.
const SIM_PATH: &str = "<sim-disk>";

/// One node's log on a simulated disk.
///
/// Bytes written but not yet synced are kept apart from synced ones: [`SimDisk::crash`] loses
/// the unsynced bytes, except (with torn writes on, the default) a random prefix of them drawn
/// from the injected [`Rng`], as a real disk may have written part of a page cache flush.
/// [`RaftStorage::persist`] writes and syncs, so it is durable on return;
/// [`SimDisk::persist_unsynced`] and [`SimDisk::sync`] split it to model a crash in between.
///
/// Fault hooks: [`SimDisk::fail_next_writes`] (I/O errors), [`SimDisk::set_capacity`]
/// ([`StorageError::Full`]) and [`SimDisk::corrupt_byte`] (bit rot, for detection). A failed
/// write appends nothing, so the store stays usable.
#[derive(Debug)]
pub struct SimDisk {
    synced: Vec<u8>,
    unsynced: Vec<u8>,
    rng: Rng,
    torn_writes: bool,
    failing_writes: u32,
    capacity: Option<u64>,
    /// The last stored index (including unsynced batches), once loaded.
    loaded: Option<Index>,
    last_recovery: Option<Tail>,
    /// The snapshot file: written whole and synced, as a rename makes it on a real disk.
    snapshot: Option<StoredSnapshot>,
}

impl SimDisk {
    /// An empty disk; `rng` decides how much of an unsynced write survives a crash.
    pub fn new(rng: Rng) -> Self {
        SimDisk {
            synced: Vec::new(),
            unsynced: Vec::new(),
            rng,
            torn_writes: true,
            failing_writes: 0,
            capacity: None,
            loaded: None,
            last_recovery: None,
            snapshot: None,
        }
    }

    /// Whether a crash keeps a random prefix of the unsynced bytes (`true`) or none of them.
    pub fn set_torn_writes(&mut self, torn: bool) {
        self.torn_writes = torn;
    }

    /// The next `count` writes fail with an I/O error and write nothing.
    pub fn fail_next_writes(&mut self, count: u32) {
        self.failing_writes = count;
    }

    /// A write that would grow the disk beyond `bytes` fails with [`StorageError::Full`] and
    /// writes nothing. `None` removes the limit.
    pub fn set_capacity(&mut self, bytes: Option<u64>) {
        self.capacity = bytes;
    }

    /// XORs the byte at `offset` (synced bytes first, then unsynced ones) with `mask`. Returns
    /// false if the disk is shorter.
    pub fn corrupt_byte(&mut self, offset: u64, mask: u8) -> bool {
        let offset = offset as usize;
        let synced = self.synced.len();
        let byte = if offset < synced { self.synced.get_mut(offset) } else { self.unsynced.get_mut(offset - synced) };
        match byte {
            Some(byte) => {
                *byte ^= mask;
                true
            }
            None => false,
        }
    }

    /// The process (or machine) dies: unsynced bytes are lost, but for a random prefix when
    /// torn writes are on. The store must be loaded again.
    pub fn crash(&mut self) {
        let keep = if self.torn_writes { self.rng.below(self.unsynced.len() as u64 + 1) as usize } else { 0 };
        self.synced.extend_from_slice(&self.unsynced[..keep]);
        self.unsynced.clear();
        self.loaded = None;
    }

    /// The write half of [`RaftStorage::persist`]: the batch reaches the page cache, not the
    /// disk. A crash before [`SimDisk::sync`] keeps all, none or (torn) part of it; replay
    /// then sees all of it or none.
    pub fn persist_unsynced(&mut self, hard_state: Option<&HardState>, entries: &[Entry]) -> Result<(), StorageError> {
        let last = self.loaded.ok_or_else(not_loaded)?;
        check_after_snapshot(self.snapshot.as_ref().map_or(Index(0), |stored| stored.meta.index), entries)?;
        let batch = core::encode_batch(last, hard_state, entries)?;
        if batch.is_empty() {
            return Ok(());
        }
        self.injected_failure()?;
        if let Some(capacity) = self.capacity
            && self.len() + batch.len() as u64 > capacity
        {
            return Err(StorageError::Full);
        }
        self.unsynced.extend_from_slice(&batch);
        self.loaded = Some(entries.last().map_or(last, |entry| entry.index));
        Ok(())
    }

    /// Fails the write, writing nothing, while [`SimDisk::fail_next_writes`] has some left.
    fn injected_failure(&mut self) -> Result<(), StorageError> {
        if self.failing_writes == 0 {
            return Ok(());
        }
        self.failing_writes -= 1;
        Err(StorageError::Io {
            kind: std::io::ErrorKind::Other,
            path: PathBuf::from(SIM_PATH),
            message: "injected write failure".to_owned(),
        })
    }

    /// Makes every written byte durable.
    pub fn sync(&mut self) {
        self.synced.append(&mut self.unsynced);
    }

    /// Every byte written, synced or not: what a reader of the file sees.
    pub fn bytes(&self) -> Vec<u8> {
        let mut bytes = self.synced.clone();
        bytes.extend_from_slice(&self.unsynced);
        bytes
    }

    pub fn synced_bytes(&self) -> &[u8] {
        &self.synced
    }

    pub fn unsynced_len(&self) -> u64 {
        self.unsynced.len() as u64
    }

    pub fn len(&self) -> u64 {
        (self.synced.len() + self.unsynced.len()) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How the last successful `load` found the log's end.
    pub fn last_recovery(&self) -> Option<Tail> {
        self.last_recovery
    }
}

impl RaftStorage for SimDisk {
    fn load(&mut self) -> Result<Persisted, StorageError> {
        self.loaded = None;
        let recovered = core::recover(&self.bytes())?;
        let valid = recovered.valid_len as usize;
        if valid < self.synced.len() {
            self.synced.truncate(valid);
            self.unsynced.clear();
        } else {
            self.unsynced.truncate(valid - self.synced.len());
        }
        self.last_recovery = Some(recovered.tail);
        let mut persisted = core::with_snapshot(recovered.persisted, self.snapshot.as_ref().map(|stored| stored.meta))?;
        persisted.snapshot_voters = self.snapshot.as_ref().and_then(|stored| stored.voters.clone());
        self.loaded = Some(core::last_index(&persisted));
        Ok(persisted)
    }

    fn persist(&mut self, hard_state: Option<&HardState>, entries: &[Entry]) -> Result<(), StorageError> {
        self.persist_unsynced(hard_state, entries)?;
        self.sync();
        Ok(())
    }

    fn save_snapshot(
        &mut self,
        meta: SnapshotMeta,
        voters: &BTreeSet<PeerId>,
        data: &[u8],
        keep_log_after: bool,
    ) -> Result<(), StorageError> {
        self.loaded.ok_or_else(not_loaded)?;
        check_voters(voters)?;
        self.injected_failure()?;
        self.sync();
        let (log, last) = core::rewrite_log(&self.synced, meta, keep_log_after)?;
        if let Some(capacity) = self.capacity
            && (log.len() + data.len()) as u64 > capacity
        {
            return Err(StorageError::Full);
        }
        self.snapshot = Some(StoredSnapshot { meta, voters: Some(voters.clone()), data: data.to_vec() });
        self.loaded = Some(last);
        self.synced = log;
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Option<StoredSnapshot>, StorageError> {
        Ok(self.snapshot.clone())
    }
}

/// A [`SimDisk`] shared by the incarnations of one simulated node: a node restarted in the
/// same process finds what its predecessor made durable (after [`SimDisk::crash`], only
/// that). Tests and benchmarks hand a clone to each start of the node's storage.
#[derive(Clone)]
pub struct SharedSimDisk(pub std::sync::Arc<std::sync::Mutex<SimDisk>>);

impl SharedSimDisk {
    pub fn new(disk: SimDisk) -> SharedSimDisk {
        SharedSimDisk(std::sync::Arc::new(std::sync::Mutex::new(disk)))
    }

    fn disk(&self) -> std::sync::MutexGuard<'_, SimDisk> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl RaftStorage for SharedSimDisk {
    fn load(&mut self) -> Result<Persisted, StorageError> {
        self.disk().load()
    }

    fn persist(&mut self, hard_state: Option<&HardState>, entries: &[Entry]) -> Result<(), StorageError> {
        self.disk().persist(hard_state, entries)
    }

    fn save_snapshot(
        &mut self,
        meta: SnapshotMeta,
        voters: &BTreeSet<PeerId>,
        data: &[u8],
        keep_log_after: bool,
    ) -> Result<(), StorageError> {
        self.disk().save_snapshot(meta, voters, data, keep_log_after)
    }

    fn snapshot(&mut self) -> Result<Option<StoredSnapshot>, StorageError> {
        self.disk().snapshot()
    }
}
