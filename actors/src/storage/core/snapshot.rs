//! The snapshot file and the compacted log, as pure functions of byte buffers.
//!
//! A snapshot file holds one snapshot of the state machine, where it ends in the log, and the
//! configuration (voter set) in effect there (all integers little-endian):
//!
//! ```text
//! magic "FLSNAP02" | index: u64 | term: u64 | voters: u32 | (len: u32 | utf-8 name) * voters
//!                  | len: u64 | data_crc: u32 | header_crc: u32 | data
//! ```
//!
//! `header_crc` covers every byte before it; voter names are sorted, unique and 1 to
//! [`MAX_PEER_ID_BYTES`] bytes, and there are 1 to [`MAX_VOTERS`] of them. A file of the first
//! format (`FLSNAP01`, the same without the voters) was written before membership could
//! change: it decodes with no voters, which means the bootstrap configuration.
//!
//! It is written to a temporary file, fsync'd and renamed over the old one, so a reader finds
//! either the old snapshot or the new one whole; any mismatch is corruption.

use std::collections::BTreeSet;

use crate::election::core::{Entry, HardState, Index, MAX_VOTERS, PeerId, Persisted, SnapshotMeta, Term};

use super::crc::crc32c;
use super::record::{BatchError, Corrupt, MAX_PEER_ID_BYTES, Record, encode_record};

const MAGIC: &[u8; 8] = b"FLSNAP02";
/// The format before membership changes: no voters in the header.
const MAGIC_V1: &[u8; 8] = b"FLSNAP01";

/// A snapshot file, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedSnapshot<'a> {
    pub meta: SnapshotMeta,
    /// The configuration at the snapshot's end; `None` in a `FLSNAP01` file (the bootstrap
    /// configuration, the only one there was).
    pub voters: Option<BTreeSet<PeerId>>,
    pub data: &'a [u8],
}

/// The bytes of a snapshot file.
pub fn encode_snapshot(meta: SnapshotMeta, voters: &BTreeSet<PeerId>, data: &[u8]) -> Vec<u8> {
    let names: usize = voters.iter().map(|voter| 4 + voter.0.len()).sum();
    let mut bytes = Vec::with_capacity(8 + 8 + 8 + 4 + names + 8 + 4 + 4 + data.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&meta.index.0.to_le_bytes());
    bytes.extend_from_slice(&meta.term.0.to_le_bytes());
    bytes.extend_from_slice(&(voters.len() as u32).to_le_bytes());
    for voter in voters {
        bytes.extend_from_slice(&(voter.0.len() as u32).to_le_bytes());
        bytes.extend_from_slice(voter.0.as_bytes());
    }
    bytes.extend_from_slice(&(data.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32c(data).to_le_bytes());
    let header_crc = crc32c(&bytes);
    bytes.extend_from_slice(&header_crc.to_le_bytes());
    bytes.extend_from_slice(data);
    bytes
}

/// Reads fields off the front of a snapshot file, every read checked.
struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], Corrupt> {
        let end = self.position.checked_add(count).filter(|end| *end <= self.bytes.len());
        let Some(end) = end else { return Err(corrupt("shorter than its header")) };
        let taken = &self.bytes[self.position..end];
        self.position = end;
        Ok(taken)
    }

    fn u32(&mut self) -> Result<u32, Corrupt> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn u64(&mut self) -> Result<u64, Corrupt> {
        let mut word = [0u8; 8];
        word.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(word))
    }
}

fn corrupt(reason: &str) -> Corrupt {
    Corrupt { offset: 0, reason: format!("snapshot file: {reason}") }
}

/// Reads a snapshot file: where it ends in the log, its configuration and its data.
pub fn decode_snapshot(bytes: &[u8]) -> Result<DecodedSnapshot<'_>, Corrupt> {
    let mut cursor = Cursor { bytes, position: 0 };
    let magic = cursor.take(8)?;
    let versioned = if magic == MAGIC {
        true
    } else if magic == MAGIC_V1 {
        false
    } else {
        return Err(corrupt("bad magic"));
    };
    let meta = SnapshotMeta { index: Index(cursor.u64()?), term: Term(cursor.u64()?) };
    let voters = if versioned { Some(decode_voter_list(&mut cursor)?) } else { None };
    let len = cursor.u64()?;
    let data_crc = cursor.u32()?;
    let header_end = cursor.position;
    if crc32c(&bytes[..header_end]) != cursor.u32()? {
        return Err(corrupt("header checksum mismatch"));
    }
    if (meta.index.0 == 0) != (meta.term.0 == 0) {
        return Err(corrupt("index and term must be zero together"));
    }
    let len = usize::try_from(len).map_err(|_| corrupt("length overflows"))?;
    let data = &bytes[cursor.position..];
    if data.len() != len {
        return Err(corrupt(&format!("holds {} data bytes, its header says {len}", data.len())));
    }
    if crc32c(data) != data_crc {
        return Err(corrupt("data checksum mismatch"));
    }
    Ok(DecodedSnapshot { meta, voters, data })
}

/// The voters of a `FLSNAP02` header: 1 to [`MAX_VOTERS`] sorted, unique, non-empty UTF-8
/// names of at most [`MAX_PEER_ID_BYTES`] bytes.
fn decode_voter_list(cursor: &mut Cursor<'_>) -> Result<BTreeSet<PeerId>, Corrupt> {
    let count = cursor.u32()? as usize;
    if count == 0 || count > MAX_VOTERS {
        return Err(corrupt(&format!("{count} voters; a configuration has 1 to {MAX_VOTERS}")));
    }
    let mut voters = BTreeSet::new();
    let mut previous: Option<String> = None;
    for _ in 0..count {
        let length = cursor.u32()? as usize;
        if length == 0 || length > MAX_PEER_ID_BYTES {
            return Err(corrupt(&format!("a voter name of {length} bytes (1 to {MAX_PEER_ID_BYTES})")));
        }
        let name = std::str::from_utf8(cursor.take(length)?).map_err(|_| corrupt("a voter name is not UTF-8"))?;
        if previous.as_deref().is_some_and(|previous| previous >= name) {
            return Err(corrupt("voters out of order or listed twice"));
        }
        previous = Some(name.to_owned());
        voters.insert(PeerId(name.to_owned()));
    }
    Ok(voters)
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
/// `applied` is its index. A log that continues from a base record needs the snapshot file
/// it continues (the entries before the base exist nowhere else): without one it is refused.
pub fn with_snapshot(mut persisted: Persisted, meta: Option<SnapshotMeta>) -> Result<Persisted, Corrupt> {
    let Some(meta) = meta else {
        return match persisted.snapshot {
            Some(base) if base.index.0 > 0 => Err(Corrupt {
                offset: 0,
                reason: format!(
                    "the log continues from a snapshot ending at {} but there is no snapshot file",
                    base.index
                ),
            }),
            _ => Ok(persisted),
        };
    };
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

/// Why a log could not be rewritten after a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RewriteError {
    /// The current log is damaged.
    Corrupt(Corrupt),
    /// The rewritten log breaks a limit.
    Batch(BatchError),
}

/// The log file that follows a snapshot ending at `meta`, made from the current log file's
/// bytes: the current hard state, then the entries after `meta` if `keep_after` (a
/// compaction) or none (a leader's snapshot replaces the whole log); with the last index it
/// holds.
pub fn rewrite_log(current_log: &[u8], meta: SnapshotMeta, keep_after: bool) -> Result<(Vec<u8>, Index), RewriteError> {
    let recovered = super::record::recover(current_log).map_err(RewriteError::Corrupt)?;
    let current = with_snapshot(recovered.persisted, Some(meta)).map_err(RewriteError::Corrupt)?;
    let after: &[Entry] = if keep_after { &current.entries } else { &[] };
    let log = encode_compacted_log(meta, &current.hard_state, after).map_err(RewriteError::Batch)?;
    Ok((log, after.last().map_or(meta.index, |entry| entry.index)))
}
