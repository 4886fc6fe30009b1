//! The snapshot file and the compacted log, as pure functions of byte buffers.
//!
//! A snapshot file holds one snapshot of the state machine and where it ends in the log:
//!
//! ```text
//! magic "FLSNAP01" | index: u64 | term: u64 | len: u64 | data_crc: u32 | header_crc: u32 | data
//! ```
//!
//! It is written to a temporary file, fsync'd and renamed over the old one, so a reader finds
//! either the old snapshot or the new one whole; any mismatch is corruption.

use crate::election::core::{Entry, HardState, Index, Persisted, SnapshotMeta, Term};

use super::crc::crc32c;
use super::record::{BatchError, Corrupt, Record, encode_record};

const MAGIC: &[u8; 8] = b"FLSNAP01";
/// Bytes before the snapshot's data.
pub const SNAPSHOT_HEADER_BYTES: usize = 8 + 8 + 8 + 8 + 4 + 4;

/// The bytes of a snapshot file.
pub fn encode_snapshot(meta: SnapshotMeta, data: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + data.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&meta.index.0.to_le_bytes());
    bytes.extend_from_slice(&meta.term.0.to_le_bytes());
    bytes.extend_from_slice(&(data.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32c(data).to_le_bytes());
    let header_crc = crc32c(&bytes);
    bytes.extend_from_slice(&header_crc.to_le_bytes());
    bytes.extend_from_slice(data);
    bytes
}

/// Reads a snapshot file: where it ends in the log, and its data.
pub fn decode_snapshot(bytes: &[u8]) -> Result<(SnapshotMeta, &[u8]), Corrupt> {
    let corrupt = |reason: &str| Corrupt { offset: 0, reason: format!("snapshot file: {reason}") };
    let header = bytes.get(..SNAPSHOT_HEADER_BYTES).ok_or_else(|| corrupt("shorter than its header"))?;
    let field = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(word)
    };
    let word32 = |at: usize| u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    if &header[..8] != MAGIC {
        return Err(corrupt("bad magic"));
    }
    if crc32c(&header[..SNAPSHOT_HEADER_BYTES - 4]) != word32(SNAPSHOT_HEADER_BYTES - 4) {
        return Err(corrupt("header checksum mismatch"));
    }
    let meta = SnapshotMeta { index: Index(field(8)), term: Term(field(16)) };
    if (meta.index.0 == 0) != (meta.term.0 == 0) {
        return Err(corrupt("index and term must be zero together"));
    }
    let len = usize::try_from(field(24)).map_err(|_| corrupt("length overflows"))?;
    let data = &bytes[SNAPSHOT_HEADER_BYTES..];
    if data.len() != len {
        return Err(corrupt(&format!("holds {} data bytes, its header says {len}", data.len())));
    }
    if crc32c(data) != word32(32) {
        return Err(corrupt("data checksum mismatch"));
    }
    Ok((meta, data))
}

/// A whole log file after compaction to `base`: one batch of the base, the hard state and the
/// entries after the base.
pub fn encode_compacted_log(
    base: SnapshotMeta,
    hard_state: &HardState,
    entries: &[Entry],
) -> Result<Vec<u8>, BatchError> {
    let mut buffer = Vec::new();
    encode_record(&mut buffer, &Record::Base(base))?;
    encode_record(&mut buffer, &Record::HardState(hard_state.clone()))?;
    let mut expected = base.index.next();
    for entry in entries {
        if entry.index != expected {
            return Err(BatchError::NotContiguous { previous: expected.prev(), next: entry.index });
        }
        encode_record(&mut buffer, &Record::Append(entry.clone()))?;
        expected = expected.next();
    }
    let records = u32::try_from(entries.len() + 2)
        .map_err(|_| BatchError::TooLarge { bytes: entries.len(), limit: u32::MAX as usize })?;
    encode_record(&mut buffer, &Record::Commit { records })?;
    Ok(buffer)
}

/// The last index a recovered log holds (the snapshot's end if it holds no entry after it).
pub fn last_index(persisted: &Persisted) -> Index {
    let base = persisted.snapshot.map_or(Index(0), |snapshot| snapshot.index);
    persisted.entries.last().map_or(base, |entry| entry.index)
}

/// What a store finds on load: the recovered log, continued from the snapshot file's `meta`
/// if there is one. The snapshot is written before the log is rewritten, so it may be newer
/// than the log's base (a crash in between): the entries it covers are dropped, and so is
/// everything if the log does not reach it. The state machine starts from the snapshot, so
/// `applied` is its index.
pub fn with_snapshot(mut persisted: Persisted, meta: Option<SnapshotMeta>) -> Result<Persisted, Corrupt> {
    let Some(meta) = meta else { return Ok(persisted) };
    let base = persisted.snapshot.map_or(Index(0), |snapshot| snapshot.index);
    if meta.index < base {
        let reason = format!("the snapshot file ends at {}, before the log's base {base}", meta.index);
        return Err(Corrupt { offset: 0, reason });
    }
    // The entries after the snapshot continue it only if the log holds the snapshot's last
    // entry (then, by log matching, everything before it too). Otherwise they may come from a
    // diverged history (a crash while installing a leader's snapshot): drop them.
    let continues = persisted.snapshot == Some(meta)
        || persisted.entries.iter().any(|entry| entry.index == meta.index && entry.term == meta.term);
    persisted.entries.retain(|entry| entry.index > meta.index);
    if !continues || persisted.entries.first().is_some_and(|entry| entry.index != meta.index.next()) {
        persisted.entries.clear();
    }
    persisted.snapshot = Some(meta);
    persisted.applied = meta.index;
    Ok(persisted)
}

/// The log file that follows a snapshot ending at `meta`: the current hard state, then the
/// entries after `meta` if `keep_after` (a compaction) or none (a leader's snapshot replaces
/// the whole log).
pub fn compacted_log(current: &Persisted, meta: SnapshotMeta, keep_after: bool) -> Result<Vec<u8>, BatchError> {
    let after: Vec<Entry> = if keep_after {
        current.entries.iter().filter(|entry| entry.index > meta.index).cloned().collect()
    } else {
        Vec::new()
    };
    let after = if after.first().is_some_and(|entry| entry.index != meta.index.next()) { Vec::new() } else { after };
    encode_compacted_log(meta, &current.hard_state, &after)
}
