//! Records: framing, payload encoding, decoding with torn-tail and corruption detection, and
//! replay into a [`Persisted`].

use crate::election::core::{Entry, EntryKind, HardState, Index, PeerId, Persisted, SnapshotMeta, Term};

use super::crc::crc32c;

/// Bytes before each payload: length, payload checksum, header checksum.
pub const HEADER_BYTES: usize = 12;

/// The largest voter name a hard state may carry: the limit a configuration puts on names.
pub const MAX_PEER_ID_BYTES: usize = crate::election::core::MAX_PEER_ID_BYTES;

/// The largest payload of one record: an append of the largest entry Raft accepts
/// ([`crate::election::core::MAX_ENTRY_BYTES`]) plus its fixed fields, with room to spare. A
/// header announcing more is corrupt.
pub const MAX_PAYLOAD_BYTES: usize = crate::election::core::MAX_ENTRY_BYTES + 64 * 1024;

const KIND_HARD_STATE: u8 = 1;
const KIND_TRUNCATE_FROM: u8 = 2;
const KIND_APPEND: u8 = 3;
const KIND_COMMIT: u8 = 4;
const KIND_BASE: u8 = 5;

/// One record of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Replaces the hard state.
    HardState(HardState),
    /// Deletes every entry with an index at or above this one.
    TruncateFrom(Index),
    /// Appends one entry, whose index must follow the last one.
    Append(Entry),
    /// Closes a batch of this many records (not counting itself).
    Commit { records: u32 },
    /// The log continues from a snapshot ending here: the entries through it are dropped,
    /// and the next append is at `index + 1`. First in a log rewritten by compaction.
    Base(SnapshotMeta),
}

/// A record and the byte offset of its header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub offset: u64,
    pub record: Record,
}

/// How a decoded buffer ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tail {
    /// At the end of a batch.
    Clean,
    /// In an unfinished batch: the `bytes` from `offset` to the end belong to a write that a
    /// crash interrupted, and are dropped.
    Torn { offset: u64, bytes: u64 },
}

/// A buffer decoded up to its last whole batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The records of every whole batch, in order, without the commit records.
    pub records: Vec<Located>,
    /// The length of the prefix made of whole batches: where the next batch goes.
    pub valid_len: u64,
    pub tail: Tail,
}

/// A buffer decoded and replayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    pub persisted: Persisted,
    pub valid_len: u64,
    pub tail: Tail,
}

/// Corruption found at `offset` (the start of the offending record).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("corrupt log record at byte {offset}: {reason}")]
pub struct Corrupt {
    pub offset: u64,
    pub reason: String,
}

impl Corrupt {
    fn at(offset: u64, reason: impl Into<String>) -> Self {
        Corrupt { offset, reason: reason.into() }
    }
}

/// A batch that cannot be written: it breaks the `Ready` contract or a size limit. Nothing of
/// it is encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("entry index {index} is not in 1..={limit} (the stored log ends at {last})", limit = last.0 + 1)]
    StartOutOfRange { index: Index, last: Index },
    #[error("entries are not contiguous: {next} follows {previous}")]
    NotContiguous { previous: Index, next: Index },
    #[error("a record payload of {bytes} bytes exceeds the limit of {limit}")]
    TooLarge { bytes: usize, limit: usize },
    #[error("voter name of {bytes} bytes exceeds the limit of {MAX_PEER_ID_BYTES}")]
    PeerIdTooLong { bytes: usize },
}

/// Encodes one [`crate::election::core::Ready`]'s persist step as a batch, for a log whose
/// last stored index is `last`: the hard state, a truncation if `entries` overwrite stored
/// entries, the appends, and a commit record. Returns an empty buffer when there is nothing
/// to persist.
pub fn encode_batch(last: Index, hard_state: Option<&HardState>, entries: &[Entry]) -> Result<Vec<u8>, BatchError> {
    if let Some(first) = entries.first()
        && (first.index.0 == 0 || first.index > last.next())
    {
        return Err(BatchError::StartOutOfRange { index: first.index, last });
    }
    for pair in entries.windows(2) {
        if pair[1].index != pair[0].index.next() || pair[1].index.0 == u64::MAX {
            return Err(BatchError::NotContiguous { previous: pair[0].index, next: pair[1].index });
        }
    }
    let mut buffer = Vec::new();
    let mut records = 0u32;
    if let Some(hard_state) = hard_state {
        encode_record(&mut buffer, &Record::HardState(hard_state.clone()))?;
        records += 1;
    }
    if let Some(first) = entries.first()
        && first.index <= last
    {
        encode_record(&mut buffer, &Record::TruncateFrom(first.index))?;
        records += 1;
    }
    for entry in entries {
        encode_append(&mut buffer, entry)?;
        records = records.saturating_add(1);
    }
    if records > 0 {
        encode_record(&mut buffer, &Record::Commit { records })?;
    }
    Ok(buffer)
}

/// Appends one framed record to `buffer`.
pub fn encode_record(buffer: &mut Vec<u8>, record: &Record) -> Result<(), BatchError> {
    let mut payload = Vec::new();
    match record {
        Record::HardState(hard_state) => {
            payload.push(KIND_HARD_STATE);
            payload.extend_from_slice(&hard_state.term.0.to_le_bytes());
            payload.extend_from_slice(&hard_state.commit.0.to_le_bytes());
            match &hard_state.voted_for {
                None => payload.push(0),
                Some(peer) => {
                    let name = peer.0.as_bytes();
                    if name.len() > MAX_PEER_ID_BYTES {
                        return Err(BatchError::PeerIdTooLong { bytes: name.len() });
                    }
                    payload.push(1);
                    payload.extend_from_slice(&(name.len() as u32).to_le_bytes());
                    payload.extend_from_slice(name);
                }
            }
        }
        Record::TruncateFrom(index) => {
            payload.push(KIND_TRUNCATE_FROM);
            payload.extend_from_slice(&index.0.to_le_bytes());
        }
        Record::Append(entry) => return encode_append(buffer, entry),
        Record::Commit { records } => {
            payload.push(KIND_COMMIT);
            payload.extend_from_slice(&records.to_le_bytes());
        }
        Record::Base(meta) => {
            payload.push(KIND_BASE);
            payload.extend_from_slice(&meta.index.0.to_le_bytes());
            payload.extend_from_slice(&meta.term.0.to_le_bytes());
        }
    }
    frame(buffer, &payload)
}

/// [`encode_record`] for an append, without cloning the entry.
fn encode_append(buffer: &mut Vec<u8>, entry: &Entry) -> Result<(), BatchError> {
    let bytes = 1 + 8 + 8 + 1 + 4 + entry.data.len();
    if bytes > MAX_PAYLOAD_BYTES {
        return Err(BatchError::TooLarge { bytes, limit: MAX_PAYLOAD_BYTES });
    }
    let mut payload = Vec::with_capacity(bytes);
    payload.push(KIND_APPEND);
    payload.extend_from_slice(&entry.term.0.to_le_bytes());
    payload.extend_from_slice(&entry.index.0.to_le_bytes());
    payload.push(match entry.kind {
        EntryKind::Noop => 0,
        EntryKind::Command => 1,
        EntryKind::Config => 2,
    });
    payload.extend_from_slice(&(entry.data.len() as u32).to_le_bytes());
    payload.extend_from_slice(&entry.data);
    frame(buffer, &payload)
}

fn frame(buffer: &mut Vec<u8>, payload: &[u8]) -> Result<(), BatchError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(BatchError::TooLarge { bytes: payload.len(), limit: MAX_PAYLOAD_BYTES });
    }
    let mut header = [0u8; HEADER_BYTES];
    header[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[4..8].copy_from_slice(&crc32c(payload).to_le_bytes());
    let header_crc = crc32c(&header[0..8]);
    header[8..12].copy_from_slice(&header_crc.to_le_bytes());
    buffer.extend_from_slice(&header);
    buffer.extend_from_slice(payload);
    Ok(())
}

/// Decodes `buffer` up to its last whole batch. Errors on corruption anywhere a whole record
/// is present; an incomplete ending is reported as [`Tail::Torn`].
pub fn decode(buffer: &[u8]) -> Result<Decoded, Corrupt> {
    let mut records = Vec::new();
    let mut pending = Vec::new();
    let mut position = 0usize;
    let mut valid_len = 0usize;
    while position < buffer.len() {
        let rest = &buffer[position..];
        let offset = position as u64;
        if rest.len() < HEADER_BYTES || rest.iter().all(|&byte| byte == 0) {
            break;
        }
        let length = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let payload_crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let header_crc = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]);
        if crc32c(&rest[0..8]) != header_crc {
            return Err(Corrupt::at(offset, "header checksum mismatch"));
        }
        if length > MAX_PAYLOAD_BYTES {
            return Err(Corrupt::at(offset, format!("payload length {length} exceeds {MAX_PAYLOAD_BYTES}")));
        }
        let Some(payload) = rest.get(HEADER_BYTES..HEADER_BYTES + length) else {
            break;
        };
        if crc32c(payload) != payload_crc {
            return Err(Corrupt::at(offset, "payload checksum mismatch"));
        }
        let record = decode_payload(payload).map_err(|reason| Corrupt::at(offset, reason))?;
        position += HEADER_BYTES + length;
        match record {
            Record::Commit { records: count } => {
                if pending.len() != count as usize || count == 0 {
                    let reason = format!("commit record closes {count} records but the batch has {}", pending.len());
                    return Err(Corrupt::at(offset, reason));
                }
                records.append(&mut pending);
                valid_len = position;
            }
            record => pending.push(Located { offset, record }),
        }
    }
    let tail = if valid_len == buffer.len() {
        Tail::Clean
    } else {
        Tail::Torn { offset: valid_len as u64, bytes: (buffer.len() - valid_len) as u64 }
    };
    Ok(Decoded { records, valid_len: valid_len as u64, tail })
}

/// Reads a payload; the error is the reason it is malformed.
fn decode_payload(payload: &[u8]) -> Result<Record, String> {
    let mut reader = Reader { bytes: payload };
    let record = match reader.u8()? {
        KIND_HARD_STATE => {
            let term = Term(reader.u64()?);
            let commit = Index(reader.u64()?);
            let voted_for = match reader.u8()? {
                0 => None,
                1 => {
                    let length = reader.u32()? as usize;
                    if length > MAX_PEER_ID_BYTES {
                        return Err(format!("voter name of {length} bytes exceeds {MAX_PEER_ID_BYTES}"));
                    }
                    let name = reader.take(length)?;
                    let name = std::str::from_utf8(name).map_err(|_| "voter name is not UTF-8".to_owned())?;
                    Some(PeerId(name.to_owned()))
                }
                other => return Err(format!("bad vote tag {other}")),
            };
            Record::HardState(HardState { term, voted_for, commit })
        }
        KIND_TRUNCATE_FROM => Record::TruncateFrom(Index(reader.u64()?)),
        KIND_APPEND => {
            let term = Term(reader.u64()?);
            let index = Index(reader.u64()?);
            let kind = match reader.u8()? {
                0 => EntryKind::Noop,
                1 => EntryKind::Command,
                2 => EntryKind::Config,
                other => return Err(format!("bad entry kind {other}")),
            };
            let length = reader.u32()? as usize;
            let data = reader.take(length)?.to_vec();
            Record::Append(Entry { term, index, kind, data })
        }
        KIND_COMMIT => Record::Commit { records: reader.u32()? },
        KIND_BASE => Record::Base(SnapshotMeta { index: Index(reader.u64()?), term: Term(reader.u64()?) }),
        other => return Err(format!("unknown record kind {other}")),
    };
    if !reader.bytes.is_empty() {
        return Err(format!("{} trailing bytes after the record", reader.bytes.len()));
    }
    Ok(record)
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < count {
            return Err(format!("payload ends {} bytes early", count - self.bytes.len()));
        }
        let (head, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut array = [0u8; 8];
        array.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(array))
    }
}

/// Rebuilds the hard state and the log from the records of whole batches. A truncation must
/// fall within the log and an append must extend it by exactly one index; anything else is
/// corruption (the writer never produces it).
pub fn replay(records: Vec<Located>) -> Result<Persisted, Corrupt> {
    let mut persisted = Persisted::default();
    for Located { offset, record } in records {
        let base = persisted.snapshot.map_or(0, |snapshot| snapshot.index.0);
        let last = base + persisted.entries.len() as u64;
        match record {
            Record::HardState(hard_state) => persisted.hard_state = hard_state,
            Record::Base(meta) => {
                if meta.index.0 < base || (meta.index.0 == 0) != (meta.term.0 == 0) {
                    return Err(Corrupt::at(
                        offset,
                        format!("base {} {} behind the log's base i{base}", meta.index, meta.term),
                    ));
                }
                let keep_from = usize::try_from(meta.index.0 - base).unwrap_or(usize::MAX).min(persisted.entries.len());
                persisted.entries.drain(..keep_from);
                persisted.snapshot = Some(meta);
            }
            Record::TruncateFrom(index) => {
                if index.0 <= base || index.0 > last + 1 {
                    return Err(Corrupt::at(
                        offset,
                        format!("truncation from {index} outside a log spanning i{}..=i{last}", base + 1),
                    ));
                }
                persisted.entries.truncate((index.0 - base - 1) as usize);
            }
            Record::Append(entry) => {
                if entry.index.0 != last + 1 {
                    return Err(Corrupt::at(offset, format!("append of {} to a log ending at i{last}", entry.index)));
                }
                persisted.entries.push(entry);
            }
            Record::Commit { .. } => {}
        }
    }
    Ok(persisted)
}

/// [`decode`] then [`replay`].
pub fn recover(buffer: &[u8]) -> Result<Recovered, Corrupt> {
    let Decoded { records, valid_len, tail } = decode(buffer)?;
    let persisted = replay(records)?;
    Ok(Recovered { persisted, valid_len, tail })
}
