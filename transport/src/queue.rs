//! The bounded per-peer send queue.
//!
//! Senders encode frames straight into one shared buffer; the peer's writer task swaps the
//! whole buffer out and writes it with one call, so many small messages cost one write
//! (batching falls out of the design rather than from a timer).
//!
//! **Overflow policy: reject the newest.** A cast or call that would push the queue past its
//! bound is refused with [`QueueFull`] and nothing already queued is touched, so the sender
//! learns at once and decides (retry, drop, shed load). Control frames (replies, monitor
//! signals, goodbyes) bypass the bound: they are few, they are owed to a peer that is waiting
//! for them, and refusing them would turn back-pressure into hung callers.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// The limits of one peer's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    pub max_bytes: usize,
    pub max_frames: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits { max_bytes: 16 * 1024 * 1024, max_frames: 100_000 }
    }
}

/// The queue was at its bound; the message was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the send queue to this peer is full ({frames} frames, {bytes} bytes queued)")]
pub struct QueueFull {
    pub frames: usize,
    pub bytes: usize,
}

/// How full a queue is, and what went through it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub frames: usize,
    pub bytes: usize,
    /// Messages refused because the queue was full, since the peer was first known.
    pub rejected: u64,
}

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    frames: usize,
}

/// One peer's queue of encoded frames.
pub(crate) struct SendQueue {
    limits: QueueLimits,
    pending: Mutex<Pending>,
    ready: Notify,
    rejected: AtomicU64,
}

/// Whether a frame counts against the queue's bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Casts and calls: bounded, the newest is rejected when full.
    Bounded,
    /// Replies and control signals: always queued.
    Control,
}

impl SendQueue {
    pub(crate) fn new(limits: QueueLimits) -> Self {
        SendQueue { limits, pending: Mutex::new(Pending::default()), ready: Notify::new(), rejected: AtomicU64::new(0) }
    }

    /// Appends one frame written by `encode` into the shared buffer. `encode` must append
    /// exactly one frame or nothing (on error, whatever it appended is removed).
    pub(crate) fn push<E>(
        &self,
        class: Class,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), PushError<E>> {
        {
            let mut pending = self.lock();
            if class == Class::Bounded
                && (pending.frames >= self.limits.max_frames || pending.buf.len() >= self.limits.max_bytes)
            {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(PushError::Full(QueueFull { frames: pending.frames, bytes: pending.buf.len() }));
            }
            let before = pending.buf.len();
            if let Err(err) = encode(&mut pending.buf) {
                pending.buf.truncate(before);
                return Err(PushError::Encode(err));
            }
            pending.frames += 1;
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Waits until frames are queued, then takes all of them, leaving `spare` (cleared) in
    /// their place so the two buffers are reused without allocating.
    pub(crate) async fn take(&self, spare: Vec<u8>) -> Vec<u8> {
        let mut spare = Some(spare);
        loop {
            let notified = self.ready.notified();
            {
                let mut pending = self.lock();
                if pending.frames > 0 {
                    let mut fresh = spare.take().unwrap_or_default();
                    fresh.clear();
                    pending.frames = 0;
                    return std::mem::replace(&mut pending.buf, fresh);
                }
            }
            notified.await;
        }
    }

    pub(crate) fn depth(&self) -> QueueDepth {
        let pending = self.lock();
        QueueDepth { frames: pending.frames, bytes: pending.buf.len(), rejected: self.rejected.load(Ordering::Relaxed) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why a frame was not queued.
#[derive(Debug)]
pub(crate) enum PushError<E> {
    Full(QueueFull),
    Encode(E),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_bytes(queue: &SendQueue, class: Class, bytes: &[u8]) -> Result<(), PushError<()>> {
        queue.push(class, |buf| {
            buf.extend_from_slice(bytes);
            Ok(())
        })
    }

    #[tokio::test]
    async fn frames_batch_and_the_newest_is_rejected_when_full() {
        let queue = SendQueue::new(QueueLimits { max_bytes: 1024, max_frames: 2 });
        push_bytes(&queue, Class::Bounded, b"one").unwrap();
        push_bytes(&queue, Class::Bounded, b"two").unwrap();
        assert!(matches!(push_bytes(&queue, Class::Bounded, b"three"), Err(PushError::Full(_))));
        push_bytes(&queue, Class::Control, b"ctl").unwrap();
        assert_eq!(queue.depth(), QueueDepth { frames: 3, bytes: 9, rejected: 1 });
        assert_eq!(queue.take(Vec::new()).await, b"onetwoctl");
        assert_eq!(queue.depth().frames, 0);
        push_bytes(&queue, Class::Bounded, b"four").unwrap();
        assert_eq!(queue.take(Vec::new()).await, b"four");
    }

    #[tokio::test]
    async fn a_failed_encode_leaves_nothing_behind() {
        let queue = SendQueue::new(QueueLimits::default());
        let result = queue.push(Class::Bounded, |buf| {
            buf.extend_from_slice(b"partial");
            Err("boom")
        });
        assert!(matches!(result, Err(PushError::Encode("boom"))));
        assert_eq!(queue.depth(), QueueDepth::default());
    }
}
