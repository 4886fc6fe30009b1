//! Link faults on a live transport: the node's [`NetModel`] and the seeded RNG it draws from,
//! shared by every session's writer and reader, which route frames through their
//! [`LinkStage`]s while a fault acts on their link.
//!
//! Which node judges a frame: the one holding the fault. A node applies its faults to the
//! links that touch it, outgoing frames in its writers and incoming frames in its readers,
//! so a fault injected on one node alone takes full effect (its peers need not know it), and
//! a fault on a link between two other nodes does nothing here. Injecting the same fault on
//! both ends judges the link twice (two Drops of 50% lose 75%).
//!
//! What the network sees, beyond frames on the ordered stream:
//! - heartbeats and their answers (datagrams) pass unless the link is cut, clogged or a
//!   Drop fires, so a partition, a pause or a clog makes the failure detectors declare the
//!   session lost, as on SimNet;
//! - a node never dials a peer it is partitioned from, and refuses a connection from a peer
//!   partitioned from it (the mirror of SimNet's dial rule, since here only one side may
//!   know the fault);
//! - bulk transfers are not routed (they run on streams of their own); a partition ends them
//!   with the session.
//!
//! The stages' time is tokio's clock from this transport's start, never the node's clock, so
//! a clock-skew fault does not move link deliveries.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use flotilla_supervisors::{Rng, Time};
use tokio::sync::watch;

use crate::core::fault::{Fault, FaultError, FaultId, NetModel};
use crate::core::link_stage::LinkStage;
use crate::core::wire;

struct Model {
    net: NetModel,
    rng: Rng,
}

/// A node's active link faults.
pub(crate) struct LinkFaults {
    /// Whether any fault is active: the hot path reads only this while the network is healthy.
    any: AtomicBool,
    model: Mutex<Model>,
    origin: tokio::time::Instant,
    /// Bumped on every heal, so stages route their held frames again.
    healed: watch::Sender<u64>,
    /// Frames lost to faults (drops, partitions, full stages), both ways, on every link.
    dropped: AtomicU64,
}

impl LinkFaults {
    pub(crate) fn new(rng: Rng) -> Self {
        // No healthy latency: the real network adds its own.
        let net = NetModel::new(std::time::Duration::ZERO, std::time::Duration::ZERO);
        LinkFaults {
            any: AtomicBool::new(false),
            model: Mutex::new(Model { net, rng }),
            origin: tokio::time::Instant::now(),
            healed: watch::Sender::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Time on the stages' clock.
    pub(crate) fn now(&self) -> Time {
        Time::from_duration(self.origin.elapsed())
    }

    /// The instant a stage time falls on, for sleeping until a frame is due.
    pub(crate) fn instant(&self, at: Time) -> tokio::time::Instant {
        self.origin + at.since_origin()
    }

    pub(crate) fn inject(&self, fault: Fault) -> Result<FaultId, FaultError> {
        let heals = matches!(fault, Fault::Heal);
        let id = {
            let mut model = self.lock();
            let id = model.net.inject(fault)?;
            self.any.store(!model.net.active().is_empty(), Ordering::SeqCst);
            id
        };
        if heals {
            self.announce_heal();
        }
        Ok(id)
    }

    pub(crate) fn heal(&self, id: FaultId) -> bool {
        let healed = {
            let mut model = self.lock();
            let healed = model.net.heal(id);
            self.any.store(!model.net.active().is_empty(), Ordering::SeqCst);
            healed
        };
        self.announce_heal();
        healed
    }

    pub(crate) fn heal_all(&self) {
        self.lock().net.heal_all();
        self.any.store(false, Ordering::SeqCst);
        self.announce_heal();
    }

    fn announce_heal(&self) {
        self.healed.send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    pub(crate) fn active(&self) -> Vec<(FaultId, Fault)> {
        self.lock().net.active()
    }

    /// Whether frames from `from` to `to` must go through a stage.
    pub(crate) fn affects(&self, from: &str, to: &str) -> bool {
        self.any.load(Ordering::Relaxed) && self.lock().net.affects(from, to)
    }

    /// Whether a connection from `from` to `to` may be made (no partition cuts it).
    pub(crate) fn reachable(&self, from: &str, to: &str) -> bool {
        !self.any.load(Ordering::Relaxed) || self.lock().net.reachable(from, to)
    }

    pub(crate) fn datagram_passes(&self, from: &str, to: &str) -> bool {
        if !self.any.load(Ordering::Relaxed) {
            return true;
        }
        let mut model = self.lock();
        let Model { net, rng } = &mut *model;
        net.datagram_passes(from, to, rng)
    }

    /// Routes every frame of `frames` (whole wire frames back to back) through `stage`.
    pub(crate) fn offer_frames(&self, stage: &mut LinkStage, frames: &[u8]) {
        let now = self.now();
        let mut model = self.lock();
        let Model { net, rng } = &mut *model;
        let before = lost(stage);
        for frame in split_frames(frames) {
            stage.offer(net, frame, now, rng);
        }
        self.dropped.fetch_add(lost(stage) - before, Ordering::Relaxed);
    }

    /// Routes one frame through `stage`.
    pub(crate) fn offer(&self, stage: &mut LinkStage, frame: Bytes) {
        let now = self.now();
        let mut model = self.lock();
        let Model { net, rng } = &mut *model;
        let before = lost(stage);
        stage.offer(net, frame, now, rng);
        self.dropped.fetch_add(lost(stage) - before, Ordering::Relaxed);
    }

    /// Frames lost to faults so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Routes the frames `stage` holds again (after a heal).
    pub(crate) fn release(&self, stage: &mut LinkStage) {
        let now = self.now();
        let mut model = self.lock();
        let Model { net, rng } = &mut *model;
        stage.release(net, now, rng);
    }

    /// A receiver that changes on every heal.
    pub(crate) fn heals(&self) -> watch::Receiver<u64> {
        self.healed.subscribe()
    }
}

fn lost(stage: &LinkStage) -> u64 {
    stage.dropped() + stage.overflowed()
}

/// Waits for the next heal; never returns if the faults are gone (the transport is ending).
pub(crate) async fn next_heal(heals: &mut watch::Receiver<u64>) {
    if heals.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Waits until `at` on the stages' clock, or forever when nothing is scheduled.
pub(crate) async fn until_due(faults: &LinkFaults, at: Option<Time>) {
    match at {
        Some(at) => tokio::time::sleep_until(faults.instant(at)).await,
        None => std::future::pending::<()>().await,
    }
}

/// Cuts a batch of this node's own encoded frames into single frames. The batch is trusted
/// (we encoded it); should a header not parse, the rest travels as one unit rather than be lost.
fn split_frames(batch: &[u8]) -> Vec<Bytes> {
    let mut frames = Vec::new();
    let mut rest = batch;
    while !rest.is_empty() {
        let len = match wire::frame_len(rest, u32::MAX) {
            Ok(Some(len)) if len <= rest.len() => len,
            _ => rest.len(),
        };
        frames.push(Bytes::copy_from_slice(&rest[..len]));
        rest = &rest[len..];
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::wire::Envelope;

    #[test]
    fn a_batch_splits_into_its_frames() {
        let mut batch = Vec::new();
        for seq in 0..3 {
            wire::encode(&Envelope::Ping { seq, sent_nanos: seq }, &mut batch).unwrap();
        }
        let frames = split_frames(&batch);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames.concat(), batch);
        assert!(split_frames(&[]).is_empty());
        assert_eq!(split_frames(&[1, 2, 3]).len(), 1, "an unparsable tail travels whole");
    }
}
