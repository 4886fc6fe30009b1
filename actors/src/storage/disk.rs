//! [`DiskStorage`]: the log in one append-only file, fsync'd before `persist` returns.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::election::core::{Entry, HardState, Index, PeerId, Persisted, SnapshotMeta};

use super::core::{self, Tail};
use super::{RaftStorage, StorageError, StoredSnapshot, check_after_snapshot, check_voters, not_loaded};

/// The log's file name inside the storage directory.
pub const LOG_FILE_NAME: &str = "raft.log";
/// The snapshot's file name inside the storage directory.
pub const SNAPSHOT_FILE_NAME: &str = "snapshot";
/// The file whose exclusive lock a store holds while it is open.
pub const LOCK_FILE_NAME: &str = "lock";

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
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// The last stored index and the file's good length, once loaded.
    loaded: Option<(Index, u64)>,
    /// Where the stored snapshot ends (index 0 without one), once loaded.
    snapshot_end: Index,
    /// Holds the directory's exclusive lock (released when the store is dropped or the
    /// process dies): two processes appending to one log would corrupt it.
    _lock: File,
    poisoned: bool,
    last_recovery: Option<Tail>,
}

impl DiskStorage {
    /// Opens (creating if needed) the log in `dir`. Reads nothing: call [`RaftStorage::load`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StorageError> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(|error| StorageError::from_io(&error, dir))?;
        let lock = lock_dir(dir)?;
        let path = dir.join(LOG_FILE_NAME);
        let existed = path.exists();
        let file = open_log(&path)?;
        if !existed {
            sync_dir(dir)?;
        }
        Ok(DiskStorage {
            dir: dir.to_owned(),
            path,
            file,
            loaded: None,
            snapshot_end: Index(0),
            _lock: lock,
            poisoned: false,
            last_recovery: None,
        })
    }

    /// Writes `bytes` to `name` in the directory atomically: a temporary file, fsync'd, then
    /// renamed over `name`, then the directory fsync'd.
    fn replace_file(&self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let target = self.dir.join(name);
        let temporary = self.dir.join(format!("{name}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&temporary)?;
            file.write_all(bytes)?;
            file.sync_all()
        };
        write().map_err(|error| StorageError::from_io(&error, &temporary))?;
        fs::rename(&temporary, &target).map_err(|error| StorageError::from_io(&error, &target))?;
        sync_dir(&self.dir)
    }

    /// The log file's bytes.
    fn read_bytes(&mut self) -> Result<Vec<u8>, StorageError> {
        let mut buffer = Vec::new();
        self.file.seek(SeekFrom::Start(0)).map_err(|error| self.io(error))?;
        self.file.read_to_end(&mut buffer).map_err(|error| self.io(error))?;
        Ok(buffer)
    }

    fn read_log(&mut self) -> Result<core::Recovered, StorageError> {
        Ok(core::recover(&self.read_bytes()?)?)
    }

    fn read_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        let path = self.dir.join(SNAPSHOT_FILE_NAME);
        match fs::read(&path) {
            Ok(bytes) => {
                let core::DecodedSnapshot { meta, voters, data } = core::decode_snapshot(&bytes)?;
                Ok(Some(StoredSnapshot { meta, voters, data: data.to_vec() }))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(StorageError::from_io(&error, &path)),
        }
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
        let recovered = self.read_log()?;
        if let Tail::Torn { .. } = recovered.tail {
            self.file.set_len(recovered.valid_len).map_err(|error| self.io(error))?;
            self.file.sync_all().map_err(|error| self.io(error))?;
        }
        let snapshot = self.read_snapshot()?;
        let mut persisted = core::with_snapshot(recovered.persisted, snapshot.as_ref().map(|stored| stored.meta))?;
        persisted.snapshot_voters = snapshot.and_then(|stored| stored.voters);
        self.poisoned = false;
        self.last_recovery = Some(recovered.tail);
        self.snapshot_end = persisted.snapshot.map_or(Index(0), |snapshot| snapshot.index);
        self.loaded = Some((core::last_index(&persisted), recovered.valid_len));
        Ok(persisted)
    }

    fn persist(&mut self, hard_state: Option<&HardState>, entries: &[Entry]) -> Result<(), StorageError> {
        if self.poisoned {
            return Err(StorageError::Poisoned);
        }
        let (last, len) = self.loaded.ok_or_else(not_loaded)?;
        check_after_snapshot(self.snapshot_end, entries)?;
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

    fn save_snapshot(
        &mut self,
        meta: SnapshotMeta,
        voters: &BTreeSet<PeerId>,
        data: &[u8],
        keep_log_after: bool,
    ) -> Result<(), StorageError> {
        if self.poisoned {
            return Err(StorageError::Poisoned);
        }
        self.loaded.ok_or_else(not_loaded)?;
        check_voters(voters)?;
        self.replace_file(SNAPSHOT_FILE_NAME, &core::encode_snapshot(meta, voters, data))?;
        // From here a crash is safe: load continues the old log from the new snapshot.
        let (log, last) = core::rewrite_log(&self.read_bytes()?, meta, keep_log_after)?;
        self.replace_file(LOG_FILE_NAME, &log)?;
        self.file = open_log(&self.path)?;
        self.snapshot_end = meta.index;
        self.loaded = Some((last, log.len() as u64));
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Option<StoredSnapshot>, StorageError> {
        self.read_snapshot()
    }
}

/// Takes the directory's exclusive lock, or says who cannot have it.
fn lock_dir(dir: &Path) -> Result<File, StorageError> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|error| StorageError::from_io(&error, &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(StorageError::Locked { path }),
        Err(fs::TryLockError::Error(error)) => Err(StorageError::from_io(&error, &path)),
    }
}

fn open_log(path: &Path) -> Result<File, StorageError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|error| StorageError::from_io(&error, path))
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
