//! One directed link's frames under link faults: the pure queue the real transport routes
//! frames through while a [`Fault`](super::fault::Fault) acts on the link.
//!
//! SimNet applies [`NetModel`] to frames in flight between simulated nodes; the QUIC transport
//! cannot reach into the network, so it applies the same model at its own edges: a session's
//! writer routes each outgoing frame through a stage before the stream, and its reader routes
//! each incoming frame through another before dispatching it. The stage only keeps frames and
//! says which are due; the shell writes or dispatches them and sleeps until
//! [`LinkStage::next_due`].
//!
//! What happens to a frame is [`NetModel::route`]'s answer:
//! - `Drop`: it is gone (counted).
//! - `Hold` (a clog): it waits, and so does every frame after it on this link, until
//!   [`LinkStage::release`] routes them again after a heal — a clog keeps order.
//! - `Deliver { at }`: one copy is due at each time; with the model's FIFO rule, only an
//!   explicit Reorder or a Duplicate's copy can overtake.
//!
//! Limit: at most [`MAX_STAGED_BYTES`] wait in a stage; a frame beyond it is dropped and
//! counted ([`LinkStage::overflowed`]), so a long clog cannot exhaust memory.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use flotilla_supervisors::{Rng, Time};

use super::fault::{NetModel, Route};

/// The most bytes one stage keeps (held and scheduled together).
pub const MAX_STAGED_BYTES: usize = 64 << 20;

/// The frames of one directed link that link faults delay or hold.
#[derive(Debug)]
pub struct LinkStage {
    from: String,
    to: String,
    /// Frames to deliver, by due time; ties in the order they were routed.
    scheduled: BTreeMap<(Time, u64), Bytes>,
    /// Frames held by a clog, in send order.
    held: VecDeque<Bytes>,
    seq: u64,
    staged_bytes: usize,
    dropped: u64,
    overflowed: u64,
}

impl LinkStage {
    /// The stage of the link from `from` to `to` (node ids, as the model names them).
    pub fn new(from: impl Into<String>, to: impl Into<String>) -> Self {
        LinkStage {
            from: from.into(),
            to: to.into(),
            scheduled: BTreeMap::new(),
            held: VecDeque::new(),
            seq: 0,
            staged_bytes: 0,
            dropped: 0,
            overflowed: 0,
        }
    }

    /// Routes one frame sent at `now`. Behind a held frame, it is held too (order is kept).
    pub fn offer(&mut self, model: &mut NetModel, frame: Bytes, now: Time, rng: &mut Rng) {
        if !self.held.is_empty() {
            return self.hold(frame);
        }
        match model.route(&self.from, &self.to, now, rng) {
            Route::Drop => self.dropped += 1,
            Route::Hold => self.hold(frame),
            Route::Deliver { at } => {
                for at in at {
                    self.schedule(at, frame.clone());
                }
            }
        }
    }

    /// Routes the held frames again, in order, after a heal; those still clogged stay held.
    pub fn release(&mut self, model: &mut NetModel, now: Time, rng: &mut Rng) {
        let held = std::mem::take(&mut self.held);
        for frame in held {
            self.staged_bytes -= frame.len();
            self.offer(model, frame, now, rng);
        }
    }

    /// Takes the frames due at `now`, in delivery order.
    pub fn take_due(&mut self, now: Time) -> Vec<Bytes> {
        let later = self.scheduled.split_off(&(now, u64::MAX));
        let due = std::mem::replace(&mut self.scheduled, later);
        let frames: Vec<Bytes> = due.into_values().collect();
        self.staged_bytes -= frames.iter().map(Bytes::len).sum::<usize>();
        frames
    }

    /// When the next scheduled frame is due (`None`: nothing scheduled; held frames wait for
    /// a heal, not a time).
    pub fn next_due(&self) -> Option<Time> {
        self.scheduled.first_key_value().map(|((at, _), _)| *at)
    }

    /// Whether no frame waits (scheduled or held).
    pub fn is_empty(&self) -> bool {
        self.scheduled.is_empty() && self.held.is_empty()
    }

    /// Frames held by a clog now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Frames lost to Drop faults and partitions so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Frames dropped because the stage was full.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }

    fn hold(&mut self, frame: Bytes) {
        if self.admit(&frame) {
            self.held.push_back(frame);
        }
    }

    fn schedule(&mut self, at: Time, frame: Bytes) {
        if self.admit(&frame) {
            self.seq += 1;
            self.scheduled.insert((at, self.seq), frame);
        }
    }

    /// Counts the frame in if it fits within [`MAX_STAGED_BYTES`].
    fn admit(&mut self, frame: &Bytes) -> bool {
        if self.staged_bytes.saturating_add(frame.len()) > MAX_STAGED_BYTES {
            self.overflowed += 1;
            return false;
        }
        self.staged_bytes += frame.len();
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::core::fault::{Fault, Links, NodeSet};

    fn ms(n: u64) -> Time {
        Time::from_duration(Duration::from_millis(n))
    }

    fn frame(n: u8) -> Bytes {
        Bytes::from(vec![n; 4])
    }

    fn healthy() -> NetModel {
        NetModel::new(Duration::ZERO, Duration::ZERO)
    }

    fn firsts(frames: Vec<Bytes>) -> Vec<u8> {
        frames.iter().map(|f| f[0]).collect()
    }

    #[test]
    fn a_healthy_link_delivers_at_once_in_order() {
        let (mut model, mut rng, mut stage) = (healthy(), Rng::seeded(1), LinkStage::new("a", "b"));
        for n in 0..3 {
            stage.offer(&mut model, frame(n), ms(5), &mut rng);
        }
        assert_eq!(stage.next_due(), Some(ms(5)));
        assert_eq!(firsts(stage.take_due(ms(5))), [0, 1, 2]);
        assert!(stage.is_empty());
    }

    #[test]
    fn a_delay_holds_frames_until_due_and_keeps_fifo() {
        let (mut model, mut rng, mut stage) = (healthy(), Rng::seeded(2), LinkStage::new("a", "b"));
        let delay =
            Fault::Delay { links: Links::one("a", "b"), base: Duration::from_millis(100), jitter: Duration::ZERO };
        let id = model.inject(delay).unwrap();
        stage.offer(&mut model, frame(1), ms(0), &mut rng);
        model.heal(id);
        stage.offer(&mut model, frame(2), ms(10), &mut rng);
        assert!(stage.take_due(ms(99)).is_empty());
        assert_eq!(stage.next_due(), Some(ms(100)));
        assert_eq!(firsts(stage.take_due(ms(100))), [1, 2], "the later frame never overtakes");
    }

    #[test]
    fn a_partition_or_a_certain_drop_loses_frames() {
        let (mut model, mut rng, mut stage) = (healthy(), Rng::seeded(3), LinkStage::new("a", "b"));
        model.inject(Fault::Partition { a: NodeSet::one("a"), b: NodeSet::one("b"), one_way: true }).unwrap();
        stage.offer(&mut model, frame(1), ms(0), &mut rng);
        let mut back = LinkStage::new("b", "a");
        back.offer(&mut model, frame(2), ms(0), &mut rng);
        assert_eq!((stage.dropped(), stage.is_empty()), (1, true));
        assert_eq!(firsts(back.take_due(ms(0))), [2], "a one-way partition leaves the way back open");
    }

    #[test]
    fn a_clog_holds_everything_behind_it_until_released() {
        let (mut model, mut rng, mut stage) = (healthy(), Rng::seeded(4), LinkStage::new("a", "b"));
        let clog = model.inject(Fault::Clog { links: Links::one("a", "b") }).unwrap();
        stage.offer(&mut model, frame(1), ms(0), &mut rng);
        stage.offer(&mut model, frame(2), ms(1), &mut rng);
        assert_eq!((stage.held(), stage.next_due()), (2, None));
        stage.release(&mut model, ms(2), &mut rng);
        assert_eq!(stage.held(), 2, "still clogged: still held");
        model.heal(clog);
        stage.release(&mut model, ms(3), &mut rng);
        stage.offer(&mut model, frame(3), ms(3), &mut rng);
        assert_eq!(firsts(stage.take_due(ms(3))), [1, 2, 3]);
    }

    #[test]
    fn a_certain_duplicate_delivers_twice() {
        let (mut model, mut rng, mut stage) = (healthy(), Rng::seeded(5), LinkStage::new("a", "b"));
        model.inject(Fault::Duplicate { links: Links::all(), probability: 1.0 }).unwrap();
        stage.offer(&mut model, frame(7), ms(0), &mut rng);
        assert_eq!(firsts(stage.take_due(ms(0))), [7, 7]);
    }

    #[test]
    fn a_full_stage_drops_the_newest_frame() {
        let (mut model, mut rng, mut stage) = (healthy(), Rng::seeded(6), LinkStage::new("a", "b"));
        model.inject(Fault::Clog { links: Links::all() }).unwrap();
        let big = Bytes::from(vec![0u8; MAX_STAGED_BYTES / 2]);
        for _ in 0..3 {
            stage.offer(&mut model, big.clone(), ms(0), &mut rng);
        }
        assert_eq!((stage.held(), stage.overflowed()), (2, 1));
    }
}
