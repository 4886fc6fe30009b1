//! The seam between the session logic and a network: one connection to one peer, over QUIC
//! or over SimNet, behind the same small set of operations.
//!
//! Enum dispatch rather than trait objects: there are exactly two networks, and the hot path
//! (writing a batch, reading a chunk) stays a direct call.

use std::io;

use bytes::Bytes;

use crate::core::wire::{self, Borrowed, Envelope, WireError};
use crate::sim;

/// Application close codes, so a peer can log why a connection ended.
pub(crate) mod close_code {
    pub const GOODBYE: u32 = 0;
    pub const REFUSED: u32 = 1;
    pub const REPLACED: u32 = 2;
    pub const LOST: u32 = 3;
    pub const PROTOCOL: u32 = 4;
}

/// The sending half of an ordered stream.
pub(crate) enum Tx {
    Quic(quinn::SendStream),
    Sim(sim::PipeTx),
}

impl Tx {
    pub(crate) async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Tx::Quic(stream) => stream.write_all(buf).await.map_err(io::Error::other),
            Tx::Sim(pipe) => pipe.write_frames(buf),
        }
    }

    pub(crate) fn finish(&mut self) {
        match self {
            Tx::Quic(stream) => {
                let _ = stream.finish();
            }
            Tx::Sim(pipe) => pipe.finish(),
        }
    }
}

/// The receiving half of an ordered stream.
pub(crate) enum Rx {
    Quic(quinn::RecvStream),
    Sim(sim::PipeRx),
}

impl Rx {
    /// Appends what arrived to `buf`; `Ok(0)` at the end of the stream.
    async fn read_into(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Rx::Quic(stream) => {
                // One chunk as quinn holds it, copied once: no zero-filled read buffer.
                const CHUNK: usize = 64 * 1024;
                match stream.read_chunk(CHUNK, true).await.map_err(io::Error::other)? {
                    Some(chunk) => {
                        buf.extend_from_slice(&chunk.bytes);
                        Ok(chunk.bytes.len())
                    }
                    None => Ok(0),
                }
            }
            Rx::Sim(pipe) => pipe.read_into(buf).await,
        }
    }
}

/// A connection to one peer.
#[derive(Clone)]
pub(crate) enum Conn {
    Quic(quinn::Connection),
    Sim(sim::SimConn),
}

impl Conn {
    pub(crate) fn send_datagram(&self, frame: Bytes) {
        match self {
            // A datagram that does not fit or finds the buffer full is dropped, as datagrams are.
            Conn::Quic(conn) => {
                let _ = conn.send_datagram(frame);
            }
            Conn::Sim(conn) => conn.send_datagram(frame),
        }
    }

    pub(crate) async fn read_datagram(&self) -> Option<Bytes> {
        match self {
            Conn::Quic(conn) => conn.read_datagram().await.ok(),
            Conn::Sim(conn) => conn.read_datagram().await,
        }
    }

    pub(crate) async fn open_bulk(&self) -> io::Result<Tx> {
        match self {
            Conn::Quic(conn) => conn.open_uni().await.map(Tx::Quic).map_err(io::Error::other),
            Conn::Sim(conn) => conn.open_bulk().map(Tx::Sim),
        }
    }

    pub(crate) async fn accept_bulk(&self) -> Option<Rx> {
        match self {
            Conn::Quic(conn) => conn.accept_uni().await.ok().map(Rx::Quic),
            Conn::Sim(conn) => conn.accept_bulk().await.map(Rx::Sim),
        }
    }

    pub(crate) fn close(&self, code: u32, reason: &str) {
        match self {
            Conn::Quic(conn) => conn.close(quinn::VarInt::from_u32(code), reason.as_bytes()),
            Conn::Sim(conn) => conn.close(),
        }
    }
}

/// Reads whole frames from an ordered stream, keeping what arrived beyond the last frame.
pub(crate) struct FrameReader {
    rx: Rx,
    buf: Vec<u8>,
    start: usize,
    max_body: u32,
}

/// Why a stream stopped yielding frames.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("the stream ended")]
    Closed,
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    #[error("corrupt frame: {0}")]
    Wire(#[from] WireError),
}

impl FrameReader {
    pub(crate) fn new(rx: Rx, max_body: u32) -> Self {
        FrameReader { rx, buf: Vec::with_capacity(64 * 1024), start: 0, max_body }
    }

    /// The next frame already buffered, without reading.
    pub(crate) fn buffered(&mut self) -> Result<Option<Envelope>, WireError> {
        match wire::decode(&self.buf[self.start..], self.max_body)? {
            Some((envelope, used)) => {
                self.start += used;
                Ok(Some(envelope))
            }
            None => Ok(None),
        }
    }

    /// The next whole frame already buffered, as its raw bytes (header included), for a
    /// fault stage that keeps it before it is decoded and dispatched.
    pub(crate) fn buffered_raw(&mut self) -> Result<Option<Bytes>, WireError> {
        let rest = &self.buf[self.start..];
        match wire::frame_len(rest, self.max_body)? {
            Some(len) if len <= rest.len() => {
                let frame = Bytes::copy_from_slice(&rest[..len]);
                self.start += len;
                Ok(Some(frame))
            }
            _ => Ok(None),
        }
    }

    /// The next frame already buffered, borrowed from the buffer where it can be.
    pub(crate) fn buffered_borrowed(&mut self) -> Result<Option<Borrowed<'_>>, WireError> {
        let rest = &self.buf[self.start..];
        match wire::decode_borrowed(rest, self.max_body)? {
            Some((frame, used)) => {
                self.start += used;
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }

    /// Reads more from the stream; compacts the buffer first so it never grows beyond one
    /// frame plus one read.
    pub(crate) async fn fill(&mut self) -> Result<(), ReadError> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        // The header's length is checked against the limit before waiting for the body.
        wire::frame_len(&self.buf, self.max_body)?;
        match self.rx.read_into(&mut self.buf).await? {
            0 => Err(ReadError::Closed),
            _ => Ok(()),
        }
    }

    /// The next frame, reading as needed.
    pub(crate) async fn next(&mut self) -> Result<Envelope, ReadError> {
        loop {
            if let Some(envelope) = self.buffered()? {
                return Ok(envelope);
            }
            self.fill().await?;
        }
    }

    /// Reads raw bytes after the frames (a bulk transfer's body), at most `len` in all.
    pub(crate) async fn read_body(&mut self, len: usize) -> Result<Vec<u8>, ReadError> {
        let mut body = self.buf.split_off(self.start);
        self.buf.clear();
        self.start = 0;
        if body.len() > len {
            return Err(ReadError::Wire(WireError::TrailingBytes));
        }
        while body.len() < len {
            if self.rx.read_into(&mut body).await? == 0 {
                return Err(ReadError::Closed);
            }
            if body.len() > len {
                return Err(ReadError::Wire(WireError::TrailingBytes));
            }
        }
        Ok(body)
    }
}
