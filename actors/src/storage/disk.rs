//! [`DiskStorage`]: the log in one append-only file, fsync'd before `persist` returns.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::election::core::{Entry, HardState, Index, Persisted};

use super::core::{self, Tail};
use super::{RaftStorage, StorageError, not_loaded};

/// The log's file name inside the storage directory.
pub const LOG_FILE_NAME: &str = "raft.log";

/// A Raft log in `<dir>/raft.log`.
///
/// `persist` appends one batch with `write_all` and `sync_data`s it before returning. If either
/// fails, the file is truncated back to its last good length and synced, so the next call
/// appends after whole batches; if that rollback fails too the store is
/// [`StorageError::Poisoned`] until reopened. `load` drops a torn tail by truncating the file
/// (reported by [`DiskStorage::last_recovery`] for the caller to log) and fails on corruption
/// without touching the file.
#[derive(Debug)]
pub struct DiskStorage {
    path: PathBuf,
    file: File,
    /// The last stored index and the file's good length, once loaded.
    loaded: Option<(Index, u64)>,
    poisoned: bool,
    last_recovery: Option<Tail>,
}

impl DiskStorage {
    /// Opens (creating if needed) the log in `dir`. Reads nothing: call [`RaftStorage::load`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StorageError> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(|error| StorageError::from_io(&error, dir))?;
        let path = dir.join(LOG_FILE_NAME);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|error| StorageError::from_io(&error, &path))?;
        if !existed {
            sync_dir(dir)?;
        }
        Ok(DiskStorage { path, file, loaded: None, poisoned: false, last_recovery: None })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How the last successful `load` found the file's end: [`Tail::Torn`] means it dropped an
    /// unacknowledged, interrupted write (worth a log line).
    pub fn last_recovery(&self) -> Option<Tail> {
        self.last_recovery
    }

    fn io(&self, error: std::io::Error) -> StorageError {
        StorageError::from_io(&error, &self.path)
    }

    /// Truncates the file to `len` and syncs; poisons the store if that fails.
    fn roll_back(&mut self, len: u64) {
        let result = self.file.set_len(len).and_then(|()| self.file.sync_all());
        if result.is_err() {
            self.poisoned = true;
            self.loaded = None;
        }
    }
}

impl RaftStorage for DiskStorage {
    fn load(&mut self) -> Result<Persisted, StorageError> {
        self.loaded = None;
        let mut buffer = Vec::new();
        self.file.seek(SeekFrom::Start(0)).map_err(|error| self.io(error))?;
        self.file.read_to_end(&mut buffer).map_err(|error| self.io(error))?;
        let recovered = core::recover(&buffer)?;
        if let Tail::Torn { .. } = recovered.tail {
            self.file.set_len(recovered.valid_len).map_err(|error| self.io(error))?;
            self.file.sync_all().map_err(|error| self.io(error))?;
        }
        self.poisoned = false;
        self.last_recovery = Some(recovered.tail);
        let last = recovered.persisted.entries.last().map_or(Index(0), |entry| entry.index);
        self.loaded = Some((last, recovered.valid_len));
        Ok(recovered.persisted)
    }

    fn persist(&mut self, hard_state: Option<&HardState>, entries: &[Entry]) -> Result<(), StorageError> {
        if self.poisoned {
            return Err(StorageError::Poisoned);
        }
        let (last, len) = self.loaded.ok_or_else(not_loaded)?;
        let batch = core::encode_batch(last, hard_state, entries)?;
        if batch.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.file.write_all(&batch).and_then(|()| self.file.sync_data()) {
            let error = self.io(error);
            self.roll_back(len);
            return Err(error);
        }
        let last = entries.last().map_or(last, |entry| entry.index);
        self.loaded = Some((last, len + batch.len() as u64));
        Ok(())
    }
}

/// Makes a new file's directory entry durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|handle| handle.sync_all()).map_err(|error| StorageError::from_io(&error, dir))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), StorageError> {
    Ok(())
}
