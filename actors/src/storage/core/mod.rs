//! The Raft log's on-disk format, as pure functions of byte buffers: no I/O, so every torn
//! write and every flipped bit can be tried exhaustively in a unit test.
//!
//! # Format
//!
//! The log is one append-only byte stream of framed records:
//!
//! ```text
//! record  = len: u32 LE | payload_crc: u32 LE | header_crc: u32 LE | payload (len bytes)
//! payload = kind: u8 | body
//! ```
//!
//! `payload_crc` is the CRC-32C of the payload and `header_crc` that of the first eight header
//! bytes, so a damaged length is caught as corruption instead of being mistaken for a record
//! that runs past the end of the file. Bodies (all integers little-endian):
//!
//! - `1` hard state: `term: u64 | commit: u64 | voted: u8 (0 or 1) | [len: u32 | utf-8 name]`
//! - `2` truncate-from: `index: u64` — delete every entry at or above `index`
//! - `3` append: `term: u64 | index: u64 | kind: u8 (0 noop, 1 command, 2 configuration) |
//!   len: u32 | data`
//! - `4` commit: `records: u32` — closes a batch of that many records
//! - `5` base: `index: u64 | term: u64` — the log continues from a snapshot ending there
//!   (entries through it are dropped); first in a log rewritten by compaction
//!
//! # Batches
//!
//! One [`RaftStorage::persist`](crate::storage::RaftStorage::persist) writes one **batch**:
//! the hard state, a truncation if the entries overwrite stored ones, one append per entry,
//! then a commit record. Replay applies whole batches only, so a crash in the middle of a
//! persist leaves the previous state, never half of a `Ready` (a hard state whose commit index
//! points at entries that did not make it, or a truncation without its appends).
//!
//! # Decoding
//!
//! [`decode`] distinguishes three endings:
//!
//! - **clean**: the buffer ends at the end of a batch;
//! - **torn tail**: the buffer ends inside a record, or after whole records of a batch with
//!   no commit record yet, or is followed only by zero bytes (a file system may extend a file
//!   with zeros whose data never landed). That is what a crash during a write leaves; the
//!   batch was never acknowledged, and recovery drops it;
//! - **corruption**: a checksum mismatch, a malformed payload, or a batch that breaks the log's
//!   rules, anywhere a whole record is present. Never accepted silently.

mod crc;
mod record;
mod snapshot;

#[cfg(test)]
pub(crate) mod tests;

pub use crc::crc32c;
pub use record::{
    BatchError, Corrupt, Decoded, HEADER_BYTES, Located, MAX_PAYLOAD_BYTES, MAX_PEER_ID_BYTES, Record, Recovered, Tail,
    decode, encode_batch, encode_record, recover, replay,
};
pub use snapshot::{
    DecodedSnapshot, RewriteError, decode_snapshot, encode_compacted_log, encode_snapshot, last_index, rewrite_log,
    with_snapshot,
};
