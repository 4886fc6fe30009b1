//! The wire codec: how an [`Envelope`] travels between two nodes, as bytes.
//!
//! # Frames
//!
//! Every message, on a QUIC stream or in a datagram, is one *frame*: an 8-byte header, then a
//! body.
//!
//! | offset | size | field                                                       |
//! |-------:|-----:|-------------------------------------------------------------|
//! | 0      | 2    | magic, `b"FL"` ([`MAGIC`])                                  |
//! | 2      | 1    | version, `1` ([`VERSION`])                                  |
//! | 3      | 1    | kind: which [`Envelope`] variant the body holds (see below) |
//! | 4      | 4    | body length in bytes, `u32` little-endian                   |
//! | 8      | len  | body: the variant's fields, encoded with postcard           |
//!
//! The body is the postcard encoding of the variant's fields, in the order of the table below,
//! with nothing before, between or after them. Postcard writes a `u32` or `u64` as an
//! unsigned LEB128 varint, a string or a byte string as a varint length followed by the bytes,
//! and an enum ([`Role`], [`RemoteError`]) as the varint index of its variant followed by that
//! variant's fields.
//!
//! | kind | variant         | body fields                                                           |
//! |-----:|-----------------|-----------------------------------------------------------------------|
//! | 1    | `Hello`         | cluster: string, node: string, role: [`Role`], boot_id: u64            |
//! | 2    | `Welcome`       | cluster: string, node: string, role: [`Role`], boot_id: u64            |
//! | 10   | `Cast`          | to: string, type_tag: u32, payload: bytes                             |
//! | 11   | `Call`          | id: u64, to: string, type_tag: u32, timeout_ms: u32, payload: bytes   |
//! | 12   | `Reply`         | id: u64, payload: bytes                                               |
//! | 13   | `Fail`          | id: u64, error: [`RemoteError`]                                       |
//! | 14   | `Undeliverable` | to: string, type_tag: u32, error: [`RemoteError`]                     |
//! | 20   | `Monitor`       | id: u64, target: string                                               |
//! | 21   | `Demonitor`     | id: u64                                                               |
//! | 22   | `Down`          | id: u64, reason: string                                               |
//! | 23   | `Link`          | id: u64, target: string                                               |
//! | 24   | `Exit`          | id: u64, reason: string                                               |
//! | 30   | `Ping`          | seq: u64, sent_nanos: u64                                             |
//! | 31   | `Pong`          | seq: u64, sent_nanos: u64                                             |
//! | 40   | `BulkOpen`      | channel: string, len: u64                                             |
//! | 50   | `Goodbye`       | reason: string                                                        |
//!
//! # Why it looks like this
//!
//! - The kind is an explicit byte in the header rather than postcard's implicit variant index,
//!   so reordering or regrouping the Rust enum never changes the wire, and a receiver knows
//!   what a frame is (and can refuse an unknown kind) before its body has arrived. Kinds are
//!   numbered by family (handshake 1.., actor traffic 10.., monitors 20.., heartbeats 30..,
//!   bulk 40, close 50) with room to grow in each.
//! - [`Role`] and [`RemoteError`] inside a body *are* encoded by variant index, so both enums
//!   are append-only: a new variant goes last, and no variant is ever reordered or removed.
//!   The golden tests below pin every byte so that a reorder fails a test, not a cluster.
//! - The receiver chooses the largest body it accepts (`max_body`, [`DEFAULT_MAX_BODY`] unless
//!   it says otherwise) and checks it against the header alone, before allocating anything or
//!   waiting for the body: a peer cannot make a node buffer 4 GiB by sending 8 bytes.
//! - Decoding is strict: the body must be consumed exactly, a datagram holds exactly one frame,
//!   and every malformed input is an error value, never a panic (a fuzz target in
//!   `transport/fuzz` checks that). Postcard accepts over-long varints; encoders here always
//!   write the shortest form, so decoding then re-encoding may shorten a frame but never
//!   changes its meaning.
//! - Changing the fields of an existing kind needs a new [`VERSION`]; adding a kind does not,
//!   because an old node rejects the unknown kind cleanly instead of misreading it.
//!
//! The hot paths ([`encode_cast`], [`encode_call`], [`encode_reply`]) write a frame straight
//! from borrowed fields, so a payload is copied once, into the output buffer.

use std::fmt;

use serde::de::{Deserialize, DeserializeOwned, Deserializer, Visitor};
use serde::ser::{Serialize, Serializer};

use crate::core::identity::Role;

/// The first two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"FL";
/// The only wire version this codec speaks.
pub const VERSION: u8 = 1;
/// Magic, version, kind and body length.
pub const HEADER_LEN: usize = 8;
/// The largest body a receiver accepts unless it chooses otherwise: 16 MiB. Larger data goes
/// over a bulk stream (`BulkOpen`), not in one frame.
pub const DEFAULT_MAX_BODY: u32 = 16 * 1024 * 1024;

/// The kind byte of each [`Envelope`] variant. These numbers are the wire: never renumber one.
pub mod kind {
    pub const HELLO: u8 = 1;
    pub const WELCOME: u8 = 2;
    pub const CAST: u8 = 10;
    pub const CALL: u8 = 11;
    pub const REPLY: u8 = 12;
    pub const FAIL: u8 = 13;
    pub const UNDELIVERABLE: u8 = 14;
    pub const MONITOR: u8 = 20;
    pub const DEMONITOR: u8 = 21;
    pub const DOWN: u8 = 22;
    pub const LINK: u8 = 23;
    pub const EXIT: u8 = 24;
    pub const PING: u8 = 30;
    pub const PONG: u8 = 31;
    pub const BULK_OPEN: u8 = 40;
    pub const GOODBYE: u8 = 50;

    /// Every kind this version knows, in wire order.
    pub const ALL: [u8; 16] = [
        HELLO,
        WELCOME,
        CAST,
        CALL,
        REPLY,
        FAIL,
        UNDELIVERABLE,
        MONITOR,
        DEMONITOR,
        DOWN,
        LINK,
        EXIT,
        PING,
        PONG,
        BULK_OPEN,
        GOODBYE,
    ];
}

/// One message between two nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Envelope {
    /// Opens a session on the control stream: who the dialling node is.
    Hello { cluster: String, node: String, role: Role, boot_id: u64 },
    /// Accepts a session: who the accepting node is.
    Welcome { cluster: String, node: String, role: Role, boot_id: u64 },
    /// A message to the actor registered as `to`, expecting no answer.
    Cast { to: String, type_tag: u32, payload: Vec<u8> },
    /// A request to the actor registered as `to`; answered by a `Reply` or `Fail` with the same `id`.
    Call { id: u64, to: String, type_tag: u32, timeout_ms: u32, payload: Vec<u8> },
    /// The answer to the `Call` numbered `id`.
    Reply { id: u64, payload: Vec<u8> },
    /// The `Call` numbered `id` got no answer, and why.
    Fail { id: u64, error: RemoteError },
    /// A `Cast` to `to` could not be delivered, and why.
    Undeliverable { to: String, type_tag: u32, error: RemoteError },
    /// Watch the actor registered as `target`; a `Down` with the same `id` reports its end.
    Monitor { id: u64, target: String },
    /// Stop the watch numbered `id`.
    Demonitor { id: u64 },
    /// The actor watched by `id` stopped, or never existed.
    Down { id: u64, reason: String },
    /// Link the actor registered as `target` to the sender's actor behind link `id`: the
    /// receiver watches `target` (reporting its end with `Down`) and delivers the sender's
    /// `Exit` for `id` to it as an exit signal. `Demonitor` undoes it.
    Link { id: u64, target: String },
    /// The sender's actor behind link `id` exited with `reason`.
    Exit { id: u64, reason: String },
    /// A heartbeat, sent as a datagram; `sent_nanos` is the sender's clock, echoed in `Pong`.
    Ping { seq: u64, sent_nanos: u64 },
    /// The answer to the `Ping` numbered `seq`.
    Pong { seq: u64, sent_nanos: u64 },
    /// The first frame of a bulk stream: `len` raw bytes for `channel` follow it.
    BulkOpen { channel: String, len: u64 },
    /// The sender closes the session on purpose.
    Goodbye { reason: String },
}

impl Envelope {
    /// The kind byte this envelope travels under.
    pub fn kind(&self) -> u8 {
        match self {
            Envelope::Hello { .. } => kind::HELLO,
            Envelope::Welcome { .. } => kind::WELCOME,
            Envelope::Cast { .. } => kind::CAST,
            Envelope::Call { .. } => kind::CALL,
            Envelope::Reply { .. } => kind::REPLY,
            Envelope::Fail { .. } => kind::FAIL,
            Envelope::Undeliverable { .. } => kind::UNDELIVERABLE,
            Envelope::Monitor { .. } => kind::MONITOR,
            Envelope::Demonitor { .. } => kind::DEMONITOR,
            Envelope::Down { .. } => kind::DOWN,
            Envelope::Link { .. } => kind::LINK,
            Envelope::Exit { .. } => kind::EXIT,
            Envelope::Ping { .. } => kind::PING,
            Envelope::Pong { .. } => kind::PONG,
            Envelope::BulkOpen { .. } => kind::BULK_OPEN,
            Envelope::Goodbye { .. } => kind::GOODBYE,
        }
    }
}

/// A typed error that travels back to the sender of a `Call` or `Cast`.
///
/// Encoded by postcard's variant index: append new variants, never reorder them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum RemoteError {
    #[error("no actor named {name:?} on the remote node")]
    UnknownActor { name: String },
    #[error("the actor expects messages of type {expected:#x}, not {got:#x}")]
    WrongType { expected: u32, got: u32 },
    #[error("the remote node could not decode the message: {0}")]
    Decode(String),
    #[error("the call timed out")]
    Timeout,
    /// The actor stopped, or dropped the reply port, before answering.
    #[error("the actor stopped or dropped the call without replying")]
    NoReply,
    #[error("the remote node is overloaded and refused the message")]
    Overloaded,
}

/// Why bytes could not be read as a frame, or an envelope written as one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("bad magic: not a Flotilla frame")]
    BadMagic,
    #[error("unsupported wire version {0} (this node speaks version {VERSION})")]
    UnsupportedVersion(u8),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The header announces a body larger than the receiver accepts.
    #[error("frame body of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: u32, max: u32 },
    /// The body does not hold exactly the fields of its kind.
    #[error("malformed {} frame (kind {kind}): {reason}", kind_name(*kind))]
    Malformed { kind: u8, reason: String },
    /// A datagram holds more than one frame.
    #[error("bytes follow the frame in a datagram")]
    TrailingBytes,
    /// A datagram ends before its frame does.
    #[error("datagram of {len} bytes ends before its frame does")]
    Truncated { len: usize },
    /// The envelope's body would not fit the 32-bit length field (encode side).
    #[error("envelope body exceeds the 4 GiB a frame can carry")]
    BodyTooLarge,
}

/// A frame header that passed every check: a known kind and an acceptable body length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: u8,
    pub body_len: u32,
}

impl FrameHeader {
    /// Header plus body, in bytes.
    pub fn frame_len(&self) -> usize {
        // Saturates only where usize is 32 bits and the body is within 8 bytes of 4 GiB: a frame
        // that could never be buffered there anyway, so it simply never completes.
        usize::try_from(self.body_len).unwrap_or(usize::MAX).saturating_add(HEADER_LEN)
    }
}

/// The name of a kind, for logs; `"unknown"` for a kind this version does not know.
pub fn kind_name(kind: u8) -> &'static str {
    known_kind_name(kind).unwrap_or("unknown")
}

fn known_kind_name(kind: u8) -> Option<&'static str> {
    let name = match kind {
        kind::HELLO => "hello",
        kind::WELCOME => "welcome",
        kind::CAST => "cast",
        kind::CALL => "call",
        kind::REPLY => "reply",
        kind::FAIL => "fail",
        kind::UNDELIVERABLE => "undeliverable",
        kind::MONITOR => "monitor",
        kind::DEMONITOR => "demonitor",
        kind::DOWN => "down",
        kind::LINK => "link",
        kind::EXIT => "exit",
        kind::PING => "ping",
        kind::PONG => "pong",
        kind::BULK_OPEN => "bulk-open",
        kind::GOODBYE => "goodbye",
        _ => return None,
    };
    Some(name)
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// Appends one frame holding `envelope` to `out`. On error `out` is left as it was.
pub fn encode(envelope: &Envelope, out: &mut Vec<u8>) -> Result<(), WireError> {
    let kind = envelope.kind();
    match envelope {
        Envelope::Hello { cluster, node, role, boot_id } | Envelope::Welcome { cluster, node, role, boot_id } => {
            encode_frame(kind, &(cluster, node, role, boot_id), out)
        }
        Envelope::Cast { to, type_tag, payload } => encode_cast(to, *type_tag, payload, out),
        Envelope::Call { id, to, type_tag, timeout_ms, payload } => {
            encode_call(*id, to, *type_tag, *timeout_ms, payload, out)
        }
        Envelope::Reply { id, payload } => encode_reply(*id, payload, out),
        Envelope::Fail { id, error } => encode_frame(kind, &(id, error), out),
        Envelope::Undeliverable { to, type_tag, error } => encode_frame(kind, &(to, type_tag, error), out),
        Envelope::Monitor { id, target } | Envelope::Link { id, target } => encode_frame(kind, &(id, target), out),
        Envelope::Demonitor { id } => encode_frame(kind, &(id,), out),
        Envelope::Down { id, reason } | Envelope::Exit { id, reason } => encode_frame(kind, &(id, reason), out),
        Envelope::Ping { seq, sent_nanos } | Envelope::Pong { seq, sent_nanos } => {
            encode_frame(kind, &(seq, sent_nanos), out)
        }
        Envelope::BulkOpen { channel, len } => encode_frame(kind, &(channel, len), out),
        Envelope::Goodbye { reason } => encode_frame(kind, &(reason,), out),
    }
}

/// Appends a `Cast` frame built from borrowed fields: the same bytes as [`encode`] of an
/// [`Envelope::Cast`], without first copying `payload` into an envelope.
pub fn encode_cast(to: &str, type_tag: u32, payload: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
    encode_frame(kind::CAST, &(to, type_tag, PayloadRef(payload)), out)
}

/// Appends a `Call` frame built from borrowed fields (see [`encode_cast`]).
pub fn encode_call(
    id: u64,
    to: &str,
    type_tag: u32,
    timeout_ms: u32,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    encode_frame(kind::CALL, &(id, to, type_tag, timeout_ms, PayloadRef(payload)), out)
}

/// Appends a `Reply` frame built from borrowed fields (see [`encode_cast`]).
pub fn encode_reply(id: u64, payload: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
    encode_frame(kind::REPLY, &(id, PayloadRef(payload)), out)
}

/// Writes a placeholder header, the body straight after it, then the header for the body's
/// now known length: one pass, no intermediate buffer.
fn encode_frame<B: Serialize>(kind: u8, body: &B, out: &mut Vec<u8>) -> Result<(), WireError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    match write_body(kind, body, out) {
        Ok(body_len) => {
            write_header(kind, body_len, out, start);
            Ok(())
        }
        Err(error) => {
            out.truncate(start);
            Err(error)
        }
    }
}

/// Appends the body and returns its length.
fn write_body<B: Serialize>(kind: u8, body: &B, out: &mut Vec<u8>) -> Result<u32, WireError> {
    let body_start = out.len();
    // Writing to a Vec cannot fail and every field type serializes, so this error is
    // unreachable today; it is mapped rather than unwrapped so that a future field type
    // cannot turn it into a panic.
    postcard::to_io(body, &mut *out)
        .map_err(|error| WireError::Malformed { kind, reason: format!("cannot encode the body: {error}") })?;
    u32::try_from(out.len().saturating_sub(body_start)).map_err(|_| WireError::BodyTooLarge)
}

fn write_header(kind: u8, body_len: u32, out: &mut [u8], start: usize) {
    let [magic0, magic1] = MAGIC;
    let [len0, len1, len2, len3] = body_len.to_le_bytes();
    if let Some(slot) = out.get_mut(start..).and_then(|tail| tail.first_chunk_mut::<HEADER_LEN>()) {
        *slot = [magic0, magic1, VERSION, kind, len0, len1, len2, len3];
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// Checks a frame header: magic, version, a known kind and a body within `max_body`. Needs
/// nothing but the 8 header bytes, so a stream reader can refuse a frame before reading on.
pub fn parse_header(header: &[u8; HEADER_LEN], max_body: u32) -> Result<FrameHeader, WireError> {
    let [magic0, magic1, version, kind, len0, len1, len2, len3] = *header;
    if [magic0, magic1] != MAGIC {
        return Err(WireError::BadMagic);
    }
    if version != VERSION {
        return Err(WireError::UnsupportedVersion(version));
    }
    if known_kind_name(kind).is_none() {
        return Err(WireError::UnknownKind(kind));
    }
    let body_len = u32::from_le_bytes([len0, len1, len2, len3]);
    if body_len > max_body {
        return Err(WireError::TooLarge { len: body_len, max: max_body });
    }
    Ok(FrameHeader { kind, body_len })
}

/// The length (header plus body) of the frame that starts `buf`, read from its header alone;
/// `Ok(None)` while fewer than [`HEADER_LEN`] bytes have arrived.
pub fn frame_len(buf: &[u8], max_body: u32) -> Result<Option<usize>, WireError> {
    Ok(read_header(buf, max_body)?.map(|header| header.frame_len()))
}

/// Decodes the frame that starts `buf`: the envelope and the bytes it used, or `Ok(None)` if
/// the frame has not fully arrived yet. Bytes after the frame are left for the next call.
pub fn decode(buf: &[u8], max_body: u32) -> Result<Option<(Envelope, usize)>, WireError> {
    let Some(header) = read_header(buf, max_body)? else {
        return Ok(None);
    };
    let frame_len = header.frame_len();
    let Some(body) = buf.get(HEADER_LEN..frame_len) else {
        return Ok(None);
    };
    Ok(Some((decode_body(header.kind, body)?, frame_len)))
}

/// Decodes a datagram, which must hold exactly one frame.
pub fn decode_datagram(buf: &[u8], max_body: u32) -> Result<Envelope, WireError> {
    match decode(buf, max_body)? {
        None => Err(WireError::Truncated { len: buf.len() }),
        Some((envelope, used)) if used == buf.len() => Ok(envelope),
        Some(_) => Err(WireError::TrailingBytes),
    }
}

fn read_header(buf: &[u8], max_body: u32) -> Result<Option<FrameHeader>, WireError> {
    buf.first_chunk::<HEADER_LEN>().map(|header| parse_header(header, max_body)).transpose()
}

/// Decodes the body of a frame of kind `kind` (already checked by [`parse_header`]).
pub fn decode_body(kind: u8, body: &[u8]) -> Result<Envelope, WireError> {
    match kind {
        kind::HELLO => {
            fields(kind, body).map(|(cluster, node, role, boot_id)| Envelope::Hello { cluster, node, role, boot_id })
        }
        kind::WELCOME => {
            fields(kind, body).map(|(cluster, node, role, boot_id)| Envelope::Welcome { cluster, node, role, boot_id })
        }
        kind::CAST => {
            fields(kind, body).map(|(to, type_tag, Payload(payload))| Envelope::Cast { to, type_tag, payload })
        }
        kind::CALL => fields(kind, body).map(|(id, to, type_tag, timeout_ms, Payload(payload))| Envelope::Call {
            id,
            to,
            type_tag,
            timeout_ms,
            payload,
        }),
        kind::REPLY => fields(kind, body).map(|(id, Payload(payload))| Envelope::Reply { id, payload }),
        kind::FAIL => fields(kind, body).map(|(id, error)| Envelope::Fail { id, error }),
        kind::UNDELIVERABLE => {
            fields(kind, body).map(|(to, type_tag, error)| Envelope::Undeliverable { to, type_tag, error })
        }
        kind::MONITOR => fields(kind, body).map(|(id, target)| Envelope::Monitor { id, target }),
        kind::DEMONITOR => fields(kind, body).map(|(id,)| Envelope::Demonitor { id }),
        kind::DOWN => fields(kind, body).map(|(id, reason)| Envelope::Down { id, reason }),
        kind::LINK => fields(kind, body).map(|(id, target)| Envelope::Link { id, target }),
        kind::EXIT => fields(kind, body).map(|(id, reason)| Envelope::Exit { id, reason }),
        kind::PING => fields(kind, body).map(|(seq, sent_nanos)| Envelope::Ping { seq, sent_nanos }),
        kind::PONG => fields(kind, body).map(|(seq, sent_nanos)| Envelope::Pong { seq, sent_nanos }),
        kind::BULK_OPEN => fields(kind, body).map(|(channel, len)| Envelope::BulkOpen { channel, len }),
        kind::GOODBYE => fields(kind, body).map(|(reason,)| Envelope::Goodbye { reason }),
        _ => Err(WireError::UnknownKind(kind)),
    }
}

/// A frame of actor traffic borrowed from the read buffer: the hot kinds (cast, call, reply)
/// decoded without allocating; every other kind decoded as an [`Envelope`].
#[derive(Debug, PartialEq, Eq)]
pub enum Borrowed<'a> {
    Cast { to: &'a str, type_tag: u32, payload: &'a [u8] },
    Call { id: u64, to: &'a str, type_tag: u32, timeout_ms: u32, payload: &'a [u8] },
    Reply { id: u64, payload: &'a [u8] },
    Other(Envelope),
}

impl Borrowed<'_> {
    /// The same frame as an owned envelope.
    pub fn into_owned(self) -> Envelope {
        match self {
            Borrowed::Cast { to, type_tag, payload } => {
                Envelope::Cast { to: to.to_owned(), type_tag, payload: payload.to_vec() }
            }
            Borrowed::Call { id, to, type_tag, timeout_ms, payload } => {
                Envelope::Call { id, to: to.to_owned(), type_tag, timeout_ms, payload: payload.to_vec() }
            }
            Borrowed::Reply { id, payload } => Envelope::Reply { id, payload: payload.to_vec() },
            Borrowed::Other(envelope) => envelope,
        }
    }
}

/// [`decode`], borrowing the hot kinds' strings and payloads from `buf`.
pub fn decode_borrowed(buf: &[u8], max_body: u32) -> Result<Option<(Borrowed<'_>, usize)>, WireError> {
    let Some(header) = read_header(buf, max_body)? else {
        return Ok(None);
    };
    let frame_len = header.frame_len();
    let Some(body) = buf.get(HEADER_LEN..frame_len) else {
        return Ok(None);
    };
    let kind = header.kind;
    let frame = match kind {
        kind::CAST => fields_borrowed(kind, body).map(|(to, type_tag, PayloadSlice(payload))| Borrowed::Cast {
            to,
            type_tag,
            payload,
        })?,
        kind::CALL => fields_borrowed(kind, body).map(|(id, to, type_tag, timeout_ms, PayloadSlice(payload))| {
            Borrowed::Call { id, to, type_tag, timeout_ms, payload }
        })?,
        kind::REPLY => {
            fields_borrowed(kind, body).map(|(id, PayloadSlice(payload))| Borrowed::Reply { id, payload })?
        }
        _ => Borrowed::Other(decode_body(kind, body)?),
    };
    Ok(Some((frame, frame_len)))
}

fn fields_borrowed<'a, T: Deserialize<'a>>(kind: u8, body: &'a [u8]) -> Result<T, WireError> {
    let (value, rest) = postcard::take_from_bytes::<T>(body)
        .map_err(|error| WireError::Malformed { kind, reason: error.to_string() })?;
    if !rest.is_empty() {
        return Err(WireError::Malformed { kind, reason: format!("{} bytes left after the fields", rest.len()) });
    }
    Ok(value)
}

/// Reads a kind's fields from `body`, which they must fill exactly: a body with bytes left
/// over is as malformed as one that ends early, or a peer could smuggle data past the codec.
fn fields<T: DeserializeOwned>(kind: u8, body: &[u8]) -> Result<T, WireError> {
    let (value, rest) = postcard::take_from_bytes::<T>(body)
        .map_err(|error| WireError::Malformed { kind, reason: error.to_string() })?;
    if !rest.is_empty() {
        return Err(WireError::Malformed { kind, reason: format!("{} bytes left after the fields", rest.len()) });
    }
    Ok(value)
}

// ---------------------------------------------------------------------------------------------
// Payloads
// ---------------------------------------------------------------------------------------------

/// A borrowed payload, written as postcard bytes (varint length, then the bytes) in a single
/// copy. Serde's default for a byte slice is a sequence written byte by byte; postcard gives
/// both the same encoding, so this changes the speed, not the wire.
struct PayloadRef<'a>(&'a [u8]);

impl Serialize for PayloadRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// An owned payload, read as postcard bytes in a single copy (see [`PayloadRef`]).
struct Payload(Vec<u8>);

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_byte_buf(PayloadVisitor).map(Payload)
    }
}

/// A payload borrowed from the frame (see [`PayloadRef`]).
struct PayloadSlice<'a>(&'a [u8]);

impl<'de> Deserialize<'de> for PayloadSlice<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(SliceVisitor).map(PayloadSlice)
    }
}

struct SliceVisitor;

impl<'de> Visitor<'de> for SliceVisitor {
    type Value = &'de [u8];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a borrowed byte string")
    }

    fn visit_borrowed_bytes<E: serde::de::Error>(self, bytes: &'de [u8]) -> Result<&'de [u8], E> {
        Ok(bytes)
    }
}

struct PayloadVisitor;

impl Visitor<'_> for PayloadVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
        Ok(bytes.to_vec())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: u32 = DEFAULT_MAX_BODY;

    /// One envelope of every kind, in [`kind::ALL`] order.
    fn samples() -> Vec<Envelope> {
        vec![
            Envelope::Hello { cluster: "prod".into(), node: "m1".into(), role: Role::Master, boot_id: 7 },
            Envelope::Welcome { cluster: "prod".into(), node: "a1".into(), role: Role::Agent, boot_id: u64::MAX },
            Envelope::Cast { to: "dns".into(), type_tag: 0xdead_beef, payload: vec![1, 2, 3] },
            Envelope::Call { id: 42, to: "scheduler".into(), type_tag: 3, timeout_ms: 5000, payload: vec![] },
            Envelope::Reply { id: 42, payload: b"ok".to_vec() },
            Envelope::Fail { id: 43, error: RemoteError::WrongType { expected: 1, got: 2 } },
            Envelope::Undeliverable {
                to: "gone".into(),
                type_tag: 9,
                error: RemoteError::UnknownActor { name: "gone".into() },
            },
            Envelope::Monitor { id: 1, target: "lb".into() },
            Envelope::Demonitor { id: 1 },
            Envelope::Down { id: 1, reason: "killed".into() },
            Envelope::Link { id: 2, target: "scheduler".into() },
            Envelope::Exit { id: 2, reason: "noconnection".into() },
            Envelope::Ping { seq: 1, sent_nanos: 1_000_000_007 },
            Envelope::Pong { seq: 1, sent_nanos: 1_000_000_007 },
            Envelope::BulkOpen { channel: "artifact/app.tar".into(), len: 1 << 40 },
            Envelope::Goodbye { reason: "shutdown".into() },
        ]
    }

    #[test]
    fn borrowed_decoding_agrees_with_owned_decoding() {
        for envelope in samples() {
            let frame = encoded(&envelope);
            let (borrowed, used) = decode_borrowed(&frame, MAX).expect("decodes").expect("complete");
            assert_eq!(used, frame.len());
            assert_eq!(borrowed.into_owned(), envelope);
            assert_eq!(decode_borrowed(&frame[..frame.len() - 1], MAX), Ok(None));
        }
    }

    fn encoded(envelope: &Envelope) -> Vec<u8> {
        let mut out = Vec::new();
        encode(envelope, &mut out).expect("every envelope encodes");
        out
    }

    fn header(kind: u8, body_len: u32) -> Vec<u8> {
        let mut bytes = vec![b'F', b'L', VERSION, kind];
        bytes.extend_from_slice(&body_len.to_le_bytes());
        bytes
    }

    #[test]
    fn every_kind_has_a_sample_and_a_name() {
        let kinds: Vec<u8> = samples().iter().map(Envelope::kind).collect();
        assert_eq!(kinds, kind::ALL);
        for kind in kind::ALL {
            assert_ne!(kind_name(kind), "unknown", "kind {kind}");
        }
        assert_eq!(kind_name(0), "unknown");
        assert_eq!(kind_name(255), "unknown");
    }

    #[test]
    fn every_variant_round_trips() {
        for envelope in samples() {
            let bytes = encoded(&envelope);
            assert_eq!(decode(&bytes, MAX), Ok(Some((envelope.clone(), bytes.len()))));
            assert_eq!(decode_datagram(&bytes, MAX), Ok(envelope.clone()));
            assert_eq!(frame_len(&bytes, MAX), Ok(Some(bytes.len())));
        }
    }

    /// Pins every byte of one frame per kind, including the variant indices of `Role` and
    /// `RemoteError`: if one of these fails, the wire changed and old nodes can no longer talk.
    #[test]
    fn golden_frames() {
        let cases: Vec<(Envelope, Vec<u8>)> = vec![
            (
                Envelope::Hello { cluster: "c".into(), node: "n".into(), role: Role::Master, boot_id: 300 },
                vec![1, b'c', 1, b'n', 0, 0xac, 0x02],
            ),
            (
                Envelope::Welcome { cluster: "c".into(), node: "n".into(), role: Role::Agent, boot_id: 1 },
                vec![1, b'c', 1, b'n', 1, 1],
            ),
            (Envelope::Cast { to: "a".into(), type_tag: 128, payload: vec![9, 8] }, vec![1, b'a', 0x80, 0x01, 2, 9, 8]),
            (
                Envelope::Call { id: 5, to: "a".into(), type_tag: 1, timeout_ms: 1000, payload: vec![7] },
                vec![5, 1, b'a', 1, 0xe8, 0x07, 1, 7],
            ),
            (Envelope::Reply { id: 5, payload: vec![] }, vec![5, 0]),
            (Envelope::Fail { id: 5, error: RemoteError::UnknownActor { name: "x".into() } }, vec![5, 0, 1, b'x']),
            (Envelope::Fail { id: 5, error: RemoteError::WrongType { expected: 1, got: 2 } }, vec![5, 1, 1, 2]),
            (Envelope::Fail { id: 5, error: RemoteError::Decode("e".into()) }, vec![5, 2, 1, b'e']),
            (Envelope::Fail { id: 5, error: RemoteError::Timeout }, vec![5, 3]),
            (Envelope::Fail { id: 5, error: RemoteError::NoReply }, vec![5, 4]),
            (
                Envelope::Undeliverable { to: "a".into(), type_tag: 2, error: RemoteError::Overloaded },
                vec![1, b'a', 2, 5],
            ),
            (Envelope::Monitor { id: 1, target: "t".into() }, vec![1, 1, b't']),
            (Envelope::Demonitor { id: 2 }, vec![2]),
            (Envelope::Down { id: 3, reason: "r".into() }, vec![3, 1, b'r']),
            (Envelope::Link { id: 4, target: "t".into() }, vec![4, 1, b't']),
            (Envelope::Exit { id: 5, reason: "r".into() }, vec![5, 1, b'r']),
            (Envelope::Ping { seq: 1, sent_nanos: 2 }, vec![1, 2]),
            (Envelope::Pong { seq: 3, sent_nanos: 4 }, vec![3, 4]),
            (Envelope::BulkOpen { channel: "b".into(), len: 10 }, vec![1, b'b', 10]),
            (Envelope::Goodbye { reason: "".into() }, vec![0]),
        ];
        for (envelope, body) in cases {
            let mut expected = header(envelope.kind(), u32::try_from(body.len()).expect("small body"));
            expected.extend_from_slice(&body);
            assert_eq!(encoded(&envelope), expected, "{envelope:?}");
        }
    }

    #[test]
    fn hot_paths_match_encode() {
        let (mut fast, mut slow) = (Vec::new(), Vec::new());
        encode_cast("dns", 7, &[1, 2, 3], &mut fast).expect("cast encodes");
        encode_call(9, "dns", 7, 250, &[4; 300], &mut fast).expect("call encodes");
        encode_reply(9, &[5; 200], &mut fast).expect("reply encodes");
        let envelopes = [
            Envelope::Cast { to: "dns".into(), type_tag: 7, payload: vec![1, 2, 3] },
            Envelope::Call { id: 9, to: "dns".into(), type_tag: 7, timeout_ms: 250, payload: vec![4; 300] },
            Envelope::Reply { id: 9, payload: vec![5; 200] },
        ];
        for envelope in &envelopes {
            encode(envelope, &mut slow).expect("envelope encodes");
        }
        assert_eq!(fast, slow);
    }

    #[test]
    fn payload_wrappers_keep_postcards_encoding_of_a_byte_vector() {
        let payload: Vec<u8> = (0..=255).collect();
        let as_sequence = postcard::to_allocvec(&payload).expect("encodes");
        assert_eq!(postcard::to_allocvec(&PayloadRef(&payload)).expect("encodes"), as_sequence);
        let Payload(read_back) = postcard::from_bytes(&as_sequence).expect("decodes");
        assert_eq!(read_back, payload);
    }

    #[test]
    fn encode_appends_after_existing_bytes() {
        let mut out = b"prefix".to_vec();
        encode(&Envelope::Demonitor { id: 1 }, &mut out).expect("encodes");
        assert_eq!(out.get(..6), Some(&b"prefix"[..]));
        assert_eq!(decode(out.get(6..).unwrap_or_default(), MAX), Ok(Some((Envelope::Demonitor { id: 1 }, 9))));
    }

    #[test]
    fn incomplete_frames_wait_at_every_split_point() {
        for envelope in samples() {
            let bytes = encoded(&envelope);
            for split in 0..bytes.len() {
                let prefix = bytes.get(..split).unwrap_or_default();
                assert_eq!(decode(prefix, MAX), Ok(None), "{envelope:?} cut at {split}");
                let expected_len = if split < HEADER_LEN { None } else { Some(bytes.len()) };
                assert_eq!(frame_len(prefix, MAX), Ok(expected_len), "{envelope:?} cut at {split}");
                assert_eq!(decode_datagram(prefix, MAX), Err(WireError::Truncated { len: split }));
            }
            assert_eq!(decode(&bytes, MAX), Ok(Some((envelope, bytes.len()))));
        }
    }

    #[test]
    fn bad_headers_are_refused() {
        let good = encoded(&Envelope::Demonitor { id: 1 });
        let with = |offset: usize, byte: u8| {
            let mut bytes = good.clone();
            if let Some(slot) = bytes.get_mut(offset) {
                *slot = byte;
            }
            bytes
        };
        assert_eq!(decode(&with(0, b'X'), MAX), Err(WireError::BadMagic));
        assert_eq!(frame_len(&with(1, b'X'), MAX), Err(WireError::BadMagic));
        assert_eq!(decode(&with(2, 2), MAX), Err(WireError::UnsupportedVersion(2)));
        assert_eq!(decode(&with(3, 0), MAX), Err(WireError::UnknownKind(0)));
        assert_eq!(decode_datagram(&with(3, 99), MAX), Err(WireError::UnknownKind(99)));
        // The unknown kind is refused from the header alone, before any body byte.
        assert_eq!(frame_len(&header(3, 1), MAX), Err(WireError::UnknownKind(3)));
    }

    #[test]
    fn too_large_is_refused_from_the_header_alone() {
        let gib = 1 << 30;
        assert_eq!(frame_len(&header(kind::CAST, gib), MAX), Err(WireError::TooLarge { len: gib, max: MAX }));
        assert_eq!(decode(&header(kind::CAST, gib), MAX), Err(WireError::TooLarge { len: gib, max: MAX }));
        assert_eq!(
            decode_datagram(&header(kind::CAST, u32::MAX), 0),
            Err(WireError::TooLarge { len: u32::MAX, max: 0 })
        );
        // Exactly the limit is accepted, and then waits for its body.
        assert_eq!(frame_len(&header(kind::CAST, MAX), MAX), Ok(Some(HEADER_LEN + 16 * 1024 * 1024)));
        assert_eq!(decode(&header(kind::CAST, MAX), MAX), Ok(None));
    }

    #[test]
    fn a_body_must_hold_exactly_its_fields() {
        // Demonitor { id: 1 } with one byte too many inside the announced body.
        let mut long = header(kind::DEMONITOR, 2);
        long.extend_from_slice(&[1, 0]);
        assert!(matches!(decode(&long, MAX), Err(WireError::Malformed { kind: kind::DEMONITOR, .. })));
        // Ping with its second field cut off by the announced length.
        let mut short = header(kind::PING, 1);
        short.extend_from_slice(&[1, 2]);
        assert!(matches!(decode(&short, MAX), Err(WireError::Malformed { kind: kind::PING, .. })));
        // An empty body for a kind with fields.
        assert!(matches!(decode(&header(kind::GOODBYE, 0), MAX), Err(WireError::Malformed { .. })));
    }

    #[test]
    fn bad_field_values_are_malformed() {
        let cases: [(u8, &[u8]); 5] = [
            (kind::HELLO, &[1, b'c', 1, b'n', 3, 0]), // role index 3 does not exist
            (kind::FAIL, &[1, 6]),                    // RemoteError index 6 does not exist
            (kind::GOODBYE, &[2, 0xff, 0xfe]),        // not UTF-8
            (kind::REPLY, &[1, 5, 1]),                // payload claims 5 bytes, has 1
            (kind::PING, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]), // varint over 64 bits
        ];
        for (kind, body) in cases {
            let mut bytes = header(kind, u32::try_from(body.len()).expect("small body"));
            bytes.extend_from_slice(body);
            let result = decode(&bytes, MAX);
            assert!(matches!(&result, Err(WireError::Malformed { kind: k, .. }) if *k == kind), "{result:?}");
        }
    }

    #[test]
    fn a_datagram_holds_exactly_one_frame() {
        let mut bytes = encoded(&Envelope::Ping { seq: 1, sent_nanos: 2 });
        bytes.push(0);
        assert_eq!(decode_datagram(&bytes, MAX), Err(WireError::TrailingBytes));
        assert_eq!(decode_datagram(&[], MAX), Err(WireError::Truncated { len: 0 }));
    }

    #[test]
    fn errors_read_as_sentences() {
        assert_eq!(
            RemoteError::UnknownActor { name: "dns".into() }.to_string(),
            "no actor named \"dns\" on the remote node"
        );
        assert_eq!(RemoteError::NoReply.to_string(), "the actor stopped or dropped the call without replying");
        let malformed = WireError::Malformed { kind: kind::CAST, reason: "eof".into() };
        assert_eq!(malformed.to_string(), "malformed cast frame (kind 10): eof");
        assert_eq!(
            WireError::UnsupportedVersion(2).to_string(),
            "unsupported wire version 2 (this node speaks version 1)"
        );
    }

    // -----------------------------------------------------------------------------------------
    // Properties
    // -----------------------------------------------------------------------------------------

    fn text() -> impl Strategy<Value = String> {
        "\\PC{0,16}"
    }

    fn payload() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..300)
    }

    fn role() -> impl Strategy<Value = Role> {
        prop_oneof![Just(Role::Master), Just(Role::Agent)]
    }

    fn remote_error() -> impl Strategy<Value = RemoteError> {
        prop_oneof![
            text().prop_map(|name| RemoteError::UnknownActor { name }),
            (any::<u32>(), any::<u32>()).prop_map(|(expected, got)| RemoteError::WrongType { expected, got }),
            text().prop_map(RemoteError::Decode),
            Just(RemoteError::Timeout),
            Just(RemoteError::NoReply),
            Just(RemoteError::Overloaded),
        ]
    }

    fn handshake() -> impl Strategy<Value = Envelope> {
        (any::<bool>(), text(), text(), role(), any::<u64>()).prop_map(|(hello, cluster, node, role, boot_id)| {
            if hello {
                Envelope::Hello { cluster, node, role, boot_id }
            } else {
                Envelope::Welcome { cluster, node, role, boot_id }
            }
        })
    }

    fn actor_traffic() -> impl Strategy<Value = Envelope> {
        prop_oneof![
            (text(), any::<u32>(), payload()).prop_map(|(to, type_tag, payload)| Envelope::Cast {
                to,
                type_tag,
                payload
            }),
            (any::<u64>(), text(), any::<u32>(), any::<u32>(), payload()).prop_map(
                |(id, to, type_tag, timeout_ms, payload)| Envelope::Call { id, to, type_tag, timeout_ms, payload }
            ),
            (any::<u64>(), payload()).prop_map(|(id, payload)| Envelope::Reply { id, payload }),
            (any::<u64>(), remote_error()).prop_map(|(id, error)| Envelope::Fail { id, error }),
            (text(), any::<u32>(), remote_error()).prop_map(|(to, type_tag, error)| Envelope::Undeliverable {
                to,
                type_tag,
                error
            }),
        ]
    }

    fn control() -> impl Strategy<Value = Envelope> {
        prop_oneof![
            (any::<u64>(), text()).prop_map(|(id, target)| Envelope::Monitor { id, target }),
            any::<u64>().prop_map(|id| Envelope::Demonitor { id }),
            (any::<u64>(), text()).prop_map(|(id, reason)| Envelope::Down { id, reason }),
            (any::<u64>(), text()).prop_map(|(id, target)| Envelope::Link { id, target }),
            (any::<u64>(), text()).prop_map(|(id, reason)| Envelope::Exit { id, reason }),
            (any::<u64>(), any::<u64>()).prop_map(|(seq, sent_nanos)| Envelope::Ping { seq, sent_nanos }),
            (any::<u64>(), any::<u64>()).prop_map(|(seq, sent_nanos)| Envelope::Pong { seq, sent_nanos }),
            (text(), any::<u64>()).prop_map(|(channel, len)| Envelope::BulkOpen { channel, len }),
            text().prop_map(|reason| Envelope::Goodbye { reason }),
        ]
    }

    fn envelope() -> impl Strategy<Value = Envelope> {
        prop_oneof![handshake(), actor_traffic(), control()]
    }

    /// A header with valid magic, version and a known kind over a random body, so the
    /// no-panic property reaches the body decoders and not just the header checks.
    fn plausible_frame() -> impl Strategy<Value = Vec<u8>> {
        (proptest::sample::select(kind::ALL.to_vec()), proptest::collection::vec(any::<u8>(), 0..64), 0..3usize)
            .prop_map(|(kind, body, slack)| {
                let announced = u32::try_from(body.len().saturating_sub(slack)).unwrap_or(0);
                let mut bytes = header(kind, announced);
                bytes.extend_from_slice(&body);
                bytes
            })
    }

    proptest! {
        #[test]
        fn arbitrary_envelopes_round_trip(envelope in envelope()) {
            let bytes = encoded(&envelope);
            prop_assert_eq!(frame_len(&bytes, MAX), Ok(Some(bytes.len())));
            prop_assert_eq!(decode(&bytes, MAX), Ok(Some((envelope.clone(), bytes.len()))));
            prop_assert_eq!(decode_datagram(&bytes, MAX), Ok(envelope.clone()));
            let borrowed = decode_borrowed(&bytes, MAX).map(|f| f.map(|(b, used)| (b.into_owned(), used)));
            prop_assert_eq!(borrowed, Ok(Some((envelope, bytes.len()))));
        }

        #[test]
        fn hot_paths_match_encode_for_any_fields(
            id in any::<u64>(), to in text(), type_tag in any::<u32>(), timeout_ms in any::<u32>(), payload in payload()
        ) {
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            encode_cast(&to, type_tag, &payload, &mut fast).expect("cast encodes");
            encode_call(id, &to, type_tag, timeout_ms, &payload, &mut fast).expect("call encodes");
            encode_reply(id, &payload, &mut fast).expect("reply encodes");
            let envelopes = [
                Envelope::Cast { to: to.clone(), type_tag, payload: payload.clone() },
                Envelope::Call { id, to, type_tag, timeout_ms, payload: payload.clone() },
                Envelope::Reply { id, payload },
            ];
            for envelope in &envelopes {
                encode(envelope, &mut slow).expect("encodes");
            }
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), max in any::<u32>()) {
            let _ = frame_len(&bytes, max);
            let _ = decode(&bytes, max);
            let _ = decode_borrowed(&bytes, max);
            let _ = decode_datagram(&bytes, max);
        }

        #[test]
        fn plausible_frames_never_panic(bytes in plausible_frame()) {
            let _ = frame_len(&bytes, MAX);
            // The borrowed decoder accepts exactly what the owned one does.
            let borrowed = decode_borrowed(&bytes, MAX).map(|f| f.map(|(b, used)| (b.into_owned(), used)));
            prop_assert_eq!(borrowed, decode(&bytes, MAX));
            if let Ok(Some((envelope, used))) = decode(&bytes, MAX) {
                // Whatever decodes re-encodes to something that decodes the same.
                prop_assert!(used <= bytes.len());
                prop_assert_eq!(decode_datagram(&encoded(&envelope), MAX), Ok(envelope));
            }
            let _ = decode_datagram(&bytes, MAX);
        }

        #[test]
        fn concatenated_frames_decode_one_after_another(envelopes in proptest::collection::vec(envelope(), 0..8)) {
            let mut stream = Vec::new();
            let mut lengths = Vec::new();
            for envelope in &envelopes {
                let before = stream.len();
                encode(envelope, &mut stream).expect("encodes");
                lengths.push(stream.len() - before);
            }
            let mut rest = stream.as_slice();
            for (envelope, length) in envelopes.iter().zip(&lengths) {
                prop_assert_eq!(frame_len(rest, MAX), Ok(Some(*length)));
                let decoded = decode(rest, MAX);
                prop_assert_eq!(&decoded, &Ok(Some((envelope.clone(), *length))));
                rest = rest.get(*length..).unwrap_or_default();
            }
            prop_assert!(rest.is_empty());
            prop_assert_eq!(decode(rest, MAX), Ok(None));
        }

        /// A stream reader's loop: bytes arrive in chunks of any size, and after each chunk it
        /// decodes every complete frame it holds and keeps the rest.
        #[test]
        fn frames_arriving_in_any_chunks_decode_in_order(
            envelopes in proptest::collection::vec(envelope(), 0..6),
            chunk in 1..40usize,
        ) {
            let mut stream = Vec::new();
            for envelope in &envelopes {
                encode(envelope, &mut stream).expect("encodes");
            }
            let (mut buffer, mut decoded) = (Vec::new(), Vec::new());
            for piece in stream.chunks(chunk) {
                buffer.extend_from_slice(piece);
                while let Some((envelope, used)) = decode(&buffer, MAX).expect("a valid stream decodes") {
                    decoded.push(envelope);
                    buffer.drain(..used);
                }
            }
            prop_assert!(buffer.is_empty());
            prop_assert_eq!(decoded, envelopes);
        }
    }
}
