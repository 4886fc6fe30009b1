use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use flotilla_supervisors::Rng;

use super::core::Tail;
use super::core::tests::{Batch, entry, hard_state};
use super::*;

/// The format tests' history, ending in overwrites from index 1.
fn history() -> Vec<Batch> {
    let mut batches = super::core::tests::history();
    batches.truncate(5);
    batches.push((None, vec![entry(3, 1, b"everything")]));
    batches.push((None, vec![entry(3, 2, b"z")]));
    batches
}

/// The Ready contract, as a model.
fn apply(model: &mut Persisted, (hard, entries): &Batch) {
    if let Some(hard) = hard {
        model.hard_state = hard.clone();
    }
    if let Some(first) = entries.first() {
        model.entries.retain(|stored| stored.index < first.index);
        model.entries.extend(entries.iter().cloned());
    }
}

fn persist(storage: &mut impl RaftStorage, (hard, entries): &Batch) -> Result<(), StorageError> {
    storage.persist(hard.as_ref(), entries)
}

/// Persists the history, restarting after every batch (`restart` stands for a crash and a new
/// process) and checking that `load` gives exactly what was acknowledged.
fn round_trip<S: RaftStorage>(mut storage: S, restart: impl Fn(S) -> S) {
    let mut model = storage.load().expect("load");
    assert_eq!(model, Persisted::default());
    for batch in history() {
        persist(&mut storage, &batch).expect("persist");
        apply(&mut model, &batch);
        storage = restart(storage);
        assert_eq!(storage.load().expect("load after restart"), model);
    }
}

/// A unique directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("flotilla-storage-{}-{unique}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        TempDir(path)
    }

    fn log(&self) -> PathBuf {
        self.0.join(LOG_FILE_NAME)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn open_and_load(dir: &Path) -> Result<(DiskStorage, Persisted), StorageError> {
    let mut storage = DiskStorage::open(dir)?;
    let persisted = storage.load()?;
    Ok((storage, persisted))
}

/// The log bytes of the whole history, and the state after each prefix of batches.
fn history_bytes() -> (Vec<u8>, Vec<Persisted>) {
    let mut disk = SimDisk::new(Rng::seeded(1));
    let mut model = disk.load().expect("load");
    let mut states = vec![model.clone()];
    for batch in history() {
        persist(&mut disk, &batch).expect("persist");
        apply(&mut model, &batch);
        states.push(model.clone());
    }
    (disk.bytes(), states)
}

// ---------------------------------------------------------------------------------------------
// SimDisk
// ---------------------------------------------------------------------------------------------

#[test]
fn sim_round_trips_hard_states_appends_and_truncations() {
    round_trip(SimDisk::new(Rng::seeded(1)), |mut disk| {
        disk.crash();
        disk
    });
}

#[test]
fn sim_crash_loses_only_unsynced_bytes() {
    let mut disk = SimDisk::new(Rng::seeded(2));
    disk.set_torn_writes(false);
    let mut model = disk.load().expect("load");
    let batches = history();
    persist(&mut disk, &batches[0]).expect("persist");
    persist(&mut disk, &batches[1]).expect("persist");
    apply(&mut model, &batches[0]);
    apply(&mut model, &batches[1]);
    let synced = disk.synced_bytes().to_vec();
    disk.persist_unsynced(batches[2].0.as_ref(), &batches[2].1).expect("write");
    assert!(disk.unsynced_len() > 0);
    assert_eq!(disk.synced_bytes(), synced);
    disk.crash();
    assert_eq!(disk.bytes(), synced);
    assert_eq!(disk.load().expect("load"), model);
    assert_eq!(disk.last_recovery(), Some(Tail::Clean));
    // Synced explicitly, the same batch survives.
    disk.persist_unsynced(batches[2].0.as_ref(), &batches[2].1).expect("write");
    disk.sync();
    disk.crash();
    apply(&mut model, &batches[2]);
    assert_eq!(disk.load().expect("load"), model);
}

#[test]
fn sim_torn_crash_recovers_all_or_none_of_the_unsynced_batch() {
    let batches = history();
    let (mut saw_old, mut saw_new, mut saw_torn) = (false, false, false);
    for seed in 0..200 {
        let mut disk = SimDisk::new(Rng::seeded(seed));
        let mut old = disk.load().expect("load");
        for batch in &batches[..3] {
            persist(&mut disk, batch).expect("persist");
            apply(&mut old, batch);
        }
        let mut new = old.clone();
        apply(&mut new, &batches[3]);
        disk.persist_unsynced(batches[3].0.as_ref(), &batches[3].1).expect("write");
        disk.crash();
        let loaded = disk.load().expect("load");
        if let Some(Tail::Torn { .. }) = disk.last_recovery() {
            saw_torn = true;
        }
        if loaded == old {
            saw_old = true;
        } else {
            assert_eq!(loaded, new, "seed {seed}");
            saw_new = true;
        }
        // The dropped tail is gone for good: the store appends after whole batches.
        persist(&mut disk, &batches[3]).expect("persist after recovery");
        disk.crash();
        assert_eq!(disk.load().expect("load"), new, "seed {seed}");
    }
    assert!(saw_old && saw_new && saw_torn);
}

#[test]
fn sim_write_errors_are_returned_and_leave_the_store_usable() {
    let mut disk = SimDisk::new(Rng::seeded(3));
    let mut model = disk.load().expect("load");
    let batches = history();
    persist(&mut disk, &batches[0]).expect("persist");
    apply(&mut model, &batches[0]);
    disk.fail_next_writes(2);
    for _ in 0..2 {
        let error = persist(&mut disk, &batches[1]).expect_err("injected");
        assert!(matches!(error, StorageError::Io { kind: std::io::ErrorKind::Other, .. }), "{error}");
    }
    persist(&mut disk, &batches[1]).expect("persist after the faults");
    apply(&mut model, &batches[1]);
    disk.crash();
    assert_eq!(disk.load().expect("load"), model);
}

#[test]
fn sim_full_disk_is_returned_and_leaves_the_store_usable() {
    let mut disk = SimDisk::new(Rng::seeded(4));
    let mut model = disk.load().expect("load");
    let batches = history();
    persist(&mut disk, &batches[0]).expect("persist");
    apply(&mut model, &batches[0]);
    disk.set_capacity(Some(disk.len() + 10));
    assert_eq!(persist(&mut disk, &batches[1]), Err(StorageError::Full));
    disk.crash();
    assert_eq!(disk.load().expect("load after Full"), model);
    assert_eq!(persist(&mut disk, &batches[1]), Err(StorageError::Full));
    disk.set_capacity(None);
    persist(&mut disk, &batches[1]).expect("persist with space");
    apply(&mut model, &batches[1]);
    disk.crash();
    assert_eq!(disk.load().expect("load"), model);
}

#[test]
fn sim_detects_a_corrupted_byte() {
    let mut disk = SimDisk::new(Rng::seeded(5));
    disk.load().expect("load");
    for batch in history() {
        persist(&mut disk, &batch).expect("persist");
    }
    assert!(disk.corrupt_byte(20, 0x10));
    assert!(!disk.corrupt_byte(disk.len(), 0x10));
    assert!(matches!(disk.load(), Err(StorageError::Corrupt { offset: 0, .. })));
    assert!(matches!(persist(&mut disk, &history()[0]), Err(StorageError::Rejected { .. })), "no load, no persist");
}

#[test]
fn persist_before_load_and_contract_breaking_batches_are_rejected() {
    let mut disk = SimDisk::new(Rng::seeded(6));
    assert!(matches!(disk.persist(None, &[entry(1, 1, b"")]), Err(StorageError::Rejected { .. })));
    disk.load().expect("load");
    assert!(matches!(disk.persist(None, &[entry(1, 2, b"")]), Err(StorageError::Rejected { .. })));
    assert!(disk.is_empty());
    disk.persist(None, &[]).expect("nothing to persist");
    assert!(disk.is_empty());
}

#[test]
fn sim_seeded_workload_with_faults_and_crashes_matches_the_model() {
    for seed in 0..50 {
        let mut rng = Rng::seeded(seed);
        let mut disk = SimDisk::new(rng.fork());
        let mut model = disk.load().expect("load");
        let mut term = 1;
        for step in 0..60 {
            match rng.below(10) {
                0 => disk.fail_next_writes(1),
                1 => disk.set_capacity(Some(disk.len() + rng.below(80))),
                2 => {
                    disk.crash();
                    assert_eq!(disk.load().expect("load after crash"), model, "seed {seed} step {step}");
                }
                _ => {
                    term += rng.below(2);
                    let last = model.entries.len() as u64;
                    let first = 1 + rng.below(last + 1);
                    let count = rng.below(4);
                    let entries: Vec<Entry> = (0..count).map(|k| entry(term, first + k, &[k as u8; 2])).collect();
                    let hard = (rng.below(2) == 0).then(|| hard_state(term, Some("m1"), rng.below(last + 1)));
                    let batch = (hard, entries);
                    match persist(&mut disk, &batch) {
                        Ok(()) => apply(&mut model, &batch),
                        Err(StorageError::Full) => disk.set_capacity(None),
                        Err(StorageError::Io { .. }) => {}
                        Err(other) => panic!("seed {seed} step {step}: {other}"),
                    }
                }
            }
        }
        disk.crash();
        assert_eq!(disk.load().expect("final load"), model, "seed {seed}");
    }
}

// ---------------------------------------------------------------------------------------------
// DiskStorage
// ---------------------------------------------------------------------------------------------

#[test]
fn disk_round_trips_across_reopens() {
    let dir = TempDir::new("round-trip");
    let path = dir.0.clone();
    round_trip(DiskStorage::open(&dir.0).expect("open"), |storage| {
        drop(storage);
        DiskStorage::open(&path).expect("reopen")
    });
}

#[test]
fn disk_writes_the_same_format_as_the_sim() {
    let dir = TempDir::new("format");
    let (mut storage, _) = open_and_load(&dir.0).expect("open");
    for batch in history() {
        persist(&mut storage, &batch).expect("persist");
    }
    assert_eq!(fs::read(dir.log()).expect("read"), history_bytes().0);
}

#[test]
fn disk_recovers_the_longest_whole_prefix_at_every_truncation_point() {
    let (bytes, states) = history_bytes();
    let ends = batch_ends(&bytes);
    let dir = TempDir::new("torn");
    for cut in 0..=bytes.len() {
        fs::create_dir_all(&dir.0).expect("mkdir");
        fs::write(dir.log(), &bytes[..cut]).expect("write");
        let (mut storage, loaded) = open_and_load(&dir.0).unwrap_or_else(|error| panic!("cut {cut}: {error}"));
        let valid = fs::metadata(dir.log()).expect("stat").len();
        assert!(valid <= cut as u64);
        assert_eq!(storage.last_recovery() == Some(Tail::Clean), valid == cut as u64, "cut {cut}");
        // The whole batches before the cut all survive: nothing acknowledged is lost.
        let whole = ends.iter().filter(|&&end| end <= cut).count() - 1;
        assert_eq!(loaded, states[whole], "cut {cut}");
        // Appending after the recovery yields a clean log.
        let batch = (Some(hard_state(9, None, 0)), vec![]);
        persist(&mut storage, &batch).expect("persist after recovery");
        drop(storage);
        let (storage, reloaded) = open_and_load(&dir.0).expect("reopen");
        assert_eq!(storage.last_recovery(), Some(Tail::Clean));
        let mut expected = states[whole].clone();
        apply(&mut expected, &batch);
        assert_eq!(reloaded, expected, "cut {cut}");
    }
}

/// Where each prefix of whole batches ends: `ends[k]` is the length of the first `k` batches.
fn batch_ends(bytes: &[u8]) -> Vec<usize> {
    let mut ends = vec![0];
    for cut in 1..=bytes.len() {
        if core::decode(&bytes[..cut]).expect("decodes").tail == Tail::Clean {
            ends.push(cut);
        }
    }
    ends
}

#[test]
fn disk_reports_corruption_and_leaves_the_file_alone() {
    let (bytes, _) = history_bytes();
    let dir = TempDir::new("corrupt");
    fs::create_dir_all(&dir.0).expect("mkdir");
    for offset in (0..bytes.len()).step_by(7) {
        let mut damaged = bytes.clone();
        damaged[offset] ^= 0x04;
        fs::write(dir.log(), &damaged).expect("write");
        let error = open_and_load(&dir.0).map(|(_, loaded)| loaded).expect_err("corrupt");
        assert!(matches!(error, StorageError::Corrupt { offset: at, .. } if at <= offset as u64), "{error}");
        assert_eq!(fs::read(dir.log()).expect("read"), damaged, "the evidence is kept");
    }
}

#[test]
fn disk_rejects_persist_before_load() {
    let dir = TempDir::new("unloaded");
    let mut storage = DiskStorage::open(&dir.0).expect("open");
    assert!(matches!(storage.persist(Some(&hard_state(1, None, 0)), &[]), Err(StorageError::Rejected { .. })));
    assert_eq!(fs::metadata(dir.log()).expect("stat").len(), 0);
}

#[test]
fn io_errors_are_classified() {
    let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
    assert_eq!(StorageError::from_io(&full, "/x"), StorageError::Full);
    #[cfg(unix)]
    assert_eq!(StorageError::from_io(&std::io::Error::from_raw_os_error(28), "/x"), StorageError::Full);
    let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
    assert!(matches!(
        StorageError::from_io(&denied, "/x"),
        StorageError::Io { kind: std::io::ErrorKind::PermissionDenied, .. }
    ));
}

// --- Snapshots -----------------------------------------------------------------------------

fn meta(index: u64, term: u64) -> SnapshotMeta {
    SnapshotMeta { index: Index(index), term: crate::election::core::Term(term) }
}

fn voters(names: &[&str]) -> std::collections::BTreeSet<crate::election::core::PeerId> {
    names.iter().map(|name| crate::election::core::PeerId::from(*name)).collect()
}

/// Five entries of term 1 and a hard state, then a snapshot through 3: compaction keeps 4 and
/// 5 after the base, survives a restart with the snapshot's configuration, and later appends
/// continue the log; installing a leader's snapshot drops every entry.
fn snapshots<S: RaftStorage>(mut storage: S, restart: impl Fn(S) -> S) {
    storage.load().expect("load");
    let entries: Vec<Entry> = (1..=5).map(|i| entry(1, i, &[i as u8])).collect();
    storage.persist(Some(&hard_state(1, Some("a"), 5)), &entries).expect("persist");
    storage.save_snapshot(meta(3, 1), &voters(&["a", "b", "c"]), b"state through 3", true).expect("compact");
    let mut storage = restart(storage);
    let loaded = storage.load().expect("load after compaction");
    assert_eq!(loaded.snapshot, Some(meta(3, 1)));
    assert_eq!(loaded.snapshot_voters, Some(voters(&["a", "b", "c"])));
    assert_eq!(loaded.applied, Index(3));
    assert_eq!(loaded.entries, entries[3..].to_vec());
    assert_eq!(loaded.hard_state, hard_state(1, Some("a"), 5));
    let stored =
        StoredSnapshot { meta: meta(3, 1), voters: Some(voters(&["a", "b", "c"])), data: b"state through 3".to_vec() };
    assert_eq!(storage.snapshot().expect("read"), Some(stored));
    // A configuration no snapshot file could be read back with is refused.
    let empty = voters(&[]);
    assert!(matches!(storage.save_snapshot(meta(4, 1), &empty, b"x", true), Err(StorageError::Rejected { .. })));

    // Appends continue after the compacted log; an entry inside the snapshot is refused.
    storage.persist(None, &[entry(2, 6, b"six")]).expect("append after compaction");
    assert!(matches!(storage.persist(None, &[entry(2, 3, b"old")]), Err(StorageError::Rejected { .. })));
    let mut storage = restart(storage);
    assert_eq!(storage.load().expect("load").entries.last().map(|e| e.index), Some(Index(6)));

    // A leader's snapshot replaces everything.
    storage.save_snapshot(meta(9, 2), &voters(&["a", "d"]), b"leader's state", false).expect("install");
    let mut storage = restart(storage);
    let loaded = storage.load().expect("load after install");
    assert_eq!((loaded.snapshot, loaded.entries.len(), loaded.applied), (Some(meta(9, 2)), 0, Index(9)));
    assert_eq!(loaded.snapshot_voters, Some(voters(&["a", "d"])));
    storage.persist(None, &[entry(2, 10, b"ten")]).expect("append after install");
}

#[test]
fn disk_snapshots_compact_and_install_across_restarts() {
    let dir = TempDir::new("snapshots");
    let open = |path: &Path| DiskStorage::open(path).expect("open");
    snapshots(open(&dir.0), |storage| {
        drop(storage); // A new process: the old one released the directory's lock.
        open(&dir.0)
    });
}

#[test]
fn sim_snapshots_compact_and_install_across_crashes() {
    snapshots(SimDisk::new(Rng::seeded(5)), |mut disk| {
        disk.crash();
        disk
    });
}

#[test]
fn a_snapshot_saved_before_the_log_was_rewritten_still_loads() {
    // What a crash between the two renames leaves: the new snapshot and the old log.
    let dir = TempDir::new("snapshot-crash");
    let mut storage = DiskStorage::open(&dir.0).expect("open");
    storage.load().expect("load");
    let entries: Vec<Entry> = (1..=4).map(|i| entry(1, i, &[i as u8])).collect();
    storage.persist(Some(&hard_state(1, None, 4)), &entries).expect("persist");
    fs::write(dir.0.join(SNAPSHOT_FILE_NAME), core::encode_snapshot(meta(2, 1), &voters(&["a"]), b"s")).expect("write");
    drop(storage);
    let loaded = DiskStorage::open(&dir.0).expect("open").load().expect("load");
    assert_eq!((loaded.snapshot, loaded.applied), (Some(meta(2, 1)), Index(2)));
    assert_eq!(loaded.entries, entries[2..].to_vec());
}

#[test]
fn a_damaged_snapshot_file_is_reported_as_corruption() {
    let dir = TempDir::new("snapshot-corrupt");
    let mut storage = DiskStorage::open(&dir.0).expect("open");
    storage.load().expect("load");
    storage.persist(Some(&hard_state(1, None, 1)), &[entry(1, 1, b"x")]).expect("persist");
    storage.save_snapshot(meta(1, 1), &voters(&["a"]), b"snapshot bytes", true).expect("snapshot");
    let path = dir.0.join(SNAPSHOT_FILE_NAME);
    let mut bytes = fs::read(&path).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    fs::write(&path, bytes).expect("write");
    drop(storage);
    let error = DiskStorage::open(&dir.0).expect("open").load().expect_err("corrupt");
    assert!(matches!(&error, StorageError::Corrupt { reason, .. } if reason.contains("data checksum")), "{error}");
}

#[test]
fn a_crash_while_installing_a_leaders_snapshot_drops_the_diverged_suffix() {
    // The leader's snapshot (through 2, term 2) is on disk; the log still holds this node's
    // own entries 1..=4 of term 1, which diverge from it at index 2.
    let dir = TempDir::new("snapshot-install-crash");
    let mut storage = DiskStorage::open(&dir.0).expect("open");
    storage.load().expect("load");
    let entries: Vec<Entry> = (1..=4).map(|i| entry(1, i, &[i as u8])).collect();
    storage.persist(Some(&hard_state(1, None, 1)), &entries).expect("persist");
    fs::write(dir.0.join(SNAPSHOT_FILE_NAME), core::encode_snapshot(meta(2, 2), &voters(&["a"]), b"leader"))
        .expect("write");
    drop(storage);
    let loaded = DiskStorage::open(&dir.0).expect("open").load().expect("load");
    assert_eq!((loaded.snapshot, loaded.applied), (Some(meta(2, 2)), Index(2)));
    assert!(loaded.entries.is_empty(), "entries 3 and 4 follow a different entry 2: {:?}", loaded.entries);
}

#[test]
fn a_second_store_on_the_same_directory_is_refused_until_the_first_closes() {
    let dir = TempDir::new("lock");
    let first = DiskStorage::open(&dir.0).expect("open");
    let second = DiskStorage::open(&dir.0);
    assert!(matches!(&second, Err(StorageError::Locked { .. })), "{second:?}");
    drop(first);
    DiskStorage::open(&dir.0).expect("the lock is released with the store");
}

#[test]
fn a_log_continuing_from_a_snapshot_needs_the_snapshot_file() {
    let dir = TempDir::new("snapshot-missing");
    let mut storage = DiskStorage::open(&dir.0).expect("open");
    storage.load().expect("load");
    let entries: Vec<Entry> = (1..=4).map(|i| entry(1, i, &[i as u8])).collect();
    storage.persist(Some(&hard_state(1, None, 4)), &entries).expect("persist");
    storage.save_snapshot(meta(2, 1), &voters(&["a"]), b"s", true).expect("compact");
    fs::remove_file(dir.0.join(SNAPSHOT_FILE_NAME)).expect("remove the snapshot file");
    drop(storage);
    let error = DiskStorage::open(&dir.0).expect("open").load().expect_err("the entries through 2 are gone");
    assert!(matches!(&error, StorageError::Corrupt { reason, .. } if reason.contains("no snapshot file")), "{error}");
}

#[test]
fn configuration_entries_survive_a_restart() {
    let dir = TempDir::new("config-entry");
    let mut storage = DiskStorage::open(&dir.0).expect("open");
    storage.load().expect("load");
    let config = Entry {
        term: crate::election::core::Term(1),
        index: Index(1),
        kind: crate::election::core::EntryKind::Config,
        data: crate::election::core::encode_voters(&voters(&["a", "b"])),
    };
    storage.persist(Some(&hard_state(1, None, 0)), std::slice::from_ref(&config)).expect("persist");
    drop(storage);
    let loaded = DiskStorage::open(&dir.0).expect("open").load().expect("load");
    assert_eq!(loaded.entries, vec![config]);
}
