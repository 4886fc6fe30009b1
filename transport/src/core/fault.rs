//! The fault vocabulary of Flotilla, and the link model of the simulated network.
//!
//! # One vocabulary
//!
//! [`Fault`] is the one way to say "break something": the chaos actor injects faults into a
//! live cluster, the whole-cluster simulator replays schedules of them, and both speak this
//! enum, so a schedule found by one runs on the other. It serializes, so a schedule can be
//! stored next to the seed that reproduces a bug.
//!
//! Faults come in two kinds:
//!
//! - **Link faults** act on messages between nodes: [`Fault::Drop`], [`Fault::Delay`],
//!   [`Fault::Duplicate`], [`Fault::Reorder`], [`Fault::Partition`], [`Fault::Clog`], and
//!   [`Fault::Heal`], which lifts them all. [`NetModel`] applies them.
//! - **Node faults** act on a node's runtime: [`Fault::KillActor`], [`Fault::CrashNode`],
//!   [`Fault::RestartNode`], [`Fault::PauseNode`], [`Fault::ClockSkew`]. The link model knows
//!   nothing of actors or clocks, so [`NetModel::inject`] refuses them with
//!   [`FaultError::NotALinkFault`]; the node runtime carries them out.
//!
//! Nodes are named by their node id (a `String`); a [`NodeSet`] is either every node or a
//! named few, and [`Links`] are the directed links from one set to another.
//!
//! # The link model
//!
//! [`NetModel`] is a pure decision: SimNet (the in-memory network) asks it, for each message,
//! what happens to it ([`NetModel::route`]), passing the current time and its seeded [`Rng`].
//! The answer is a [`Route`]. The rules, in order:
//!
//! 1. **Partition.** If a [`Fault::Partition`] cuts the link, the message is dropped. A
//!    partition cuts links between distinct nodes only: a node is never cut from itself, even
//!    when it sits on both sides (as in `Partition { a: {x}, b: All }`, which isolates `x`).
//! 2. **Clog.** If a [`Fault::Clog`] matches, the answer is [`Route::Hold`]: the message is not
//!    lost; SimNet keeps it and routes it again after a heal.
//! 3. **Drop.** Each matching [`Fault::Drop`], in injection order, drops the message with its
//!    probability.
//! 4. **Delivery.** Otherwise the message is delivered at `now + base latency + uniform[0,
//!    jitter] + Σ(matching Delay: base + uniform[0, jitter])`.
//! 5. **Reorder.** Each matching [`Fault::Reorder`] holds the message back, with its
//!    probability, by a further uniform `[0, window]`; such a message skips rule 7, so later
//!    messages may overtake it.
//! 6. **Duplicate.** Each matching [`Fault::Duplicate`], with its probability, adds a copy whose
//!    delay (rule 4) is drawn afresh. The copy also skips rule 7.
//! 7. **FIFO.** Any other delivery on a directed link is never scheduled before the previous one
//!    on that link: its time is raised to the link's `last_delivery`, which it then becomes.
//!    Jitter, and a Delay fault healed mid-stream, therefore never reorder messages (QUIC
//!    streams are ordered); only an explicit Reorder (or a Duplicate's extra copy) does.
//!
//! Link faults match literally: unlike a partition, a `Drop` from `All` to `All` also drops a
//! node's messages to itself.
//!
//! Randomness comes only from the caller's [`Rng`], and the number of draws depends only on the
//! faults and the call sequence (a probability draw is made even for probability 0 or 1), so the
//! same seed and the same calls give the same routes.
//!
//! # Limits
//!
//! - At most [`MAX_ACTIVE_FAULTS`] active faults ([`FaultError::TooManyFaults`]).
//! - A [`NodeSet::Only`] names 1 to [`MAX_NODES_PER_SET`] nodes; a node id or actor name is 1 to
//!   [`MAX_NAME_BYTES`] bytes.
//! - Every duration (latency, jitter, window, pause, clock skew) is at most [`MAX_FAULT_DURATION`].
//! - `last_delivery` holds one entry per directed link with a message still in flight, so it is
//!   bounded by the number of node pairs. Entries whose time has passed carry no constraint
//!   (any new delivery is at or after `now`) and are pruned once the map reaches
//!   [`MAX_TRACKED_LINKS`]; should every entry still be in flight then, the earliest is
//!   forgotten, which could let one message on that link overtake one already in flight.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use flotilla_supervisors::{Rng, Time};
use serde::{Deserialize, Serialize};

/// The most faults a [`NetModel`] keeps active at once.
pub const MAX_ACTIVE_FAULTS: usize = 1_024;
/// The most nodes a [`NodeSet::Only`] may name.
pub const MAX_NODES_PER_SET: usize = 4_096;
/// The longest node id or actor name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// The longest duration a fault may carry, and the most clock skew.
pub const MAX_FAULT_DURATION: Duration = Duration::from_secs(3_600);
/// The most directed links whose last delivery is remembered for FIFO.
pub const MAX_TRACKED_LINKS: usize = 1 << 16;

/// A set of nodes, by node id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeSet {
    /// Every node, including nodes that join later.
    All,
    /// Exactly these nodes.
    Only(BTreeSet<String>),
}

impl NodeSet {
    /// The set of the given nodes: `NodeSet::of(["a", "b"])`.
    pub fn of<I, S>(nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        NodeSet::Only(nodes.into_iter().map(Into::into).collect())
    }

    /// The set of one node.
    pub fn one(node: impl Into<String>) -> Self {
        NodeSet::of([node.into()])
    }

    pub fn contains(&self, node: &str) -> bool {
        match self {
            NodeSet::All => true,
            NodeSet::Only(nodes) => nodes.contains(node),
        }
    }

    fn validate(&self) -> Result<(), FaultError> {
        let NodeSet::Only(nodes) = self else { return Ok(()) };
        if nodes.is_empty() {
            return Err(FaultError::EmptyNodeSet);
        }
        if nodes.len() > MAX_NODES_PER_SET {
            return Err(FaultError::TooManyNodes { count: nodes.len() });
        }
        nodes.iter().try_for_each(|node| check_name(node))
    }
}

/// Directed links: the messages whose sender is in `from` and whose receiver is in `to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Links {
    pub from: NodeSet,
    pub to: NodeSet,
}

impl Links {
    pub fn new(from: NodeSet, to: NodeSet) -> Self {
        Links { from, to }
    }

    /// Every link, in both directions.
    pub fn all() -> Self {
        Links { from: NodeSet::All, to: NodeSet::All }
    }

    /// The one link from `from` to `to`.
    pub fn one(from: impl Into<String>, to: impl Into<String>) -> Self {
        Links { from: NodeSet::one(from), to: NodeSet::one(to) }
    }

    /// Whether a message from `from` to `to` travels on these links.
    pub fn matches(&self, from: &str, to: &str) -> bool {
        self.from.contains(from) && self.to.contains(to)
    }

    fn validate(&self) -> Result<(), FaultError> {
        self.from.validate()?;
        self.to.validate()
    }
}

/// A fault to inject: the one vocabulary of the chaos actor and the simulator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Fault {
    /// Each message on `links` is lost with `probability`.
    Drop { links: Links, probability: f64 },
    /// Each message on `links` takes `base + uniform[0, jitter]` longer.
    Delay { links: Links, base: Duration, jitter: Duration },
    /// With `probability`, a second copy of a message is delivered, with its own delay.
    Duplicate { links: Links, probability: f64 },
    /// With `probability`, a message is held back by up to `window`, letting later ones
    /// overtake it.
    Reorder { links: Links, probability: f64, window: Duration },
    /// Cuts the links between `a` and `b` both ways, or only from `a` to `b` if `one_way`.
    Partition { a: NodeSet, b: NodeSet, one_way: bool },
    /// Messages on `links` are held, not lost, until the clog is healed.
    Clog { links: Links },
    /// Heals every active link fault. A fault value, so a chaos schedule can contain it.
    Heal,
    /// Node fault: stop the actor registered as `name` on `node`, abnormally.
    KillActor { node: String, name: String },
    /// Node fault: stop every actor of `node` at once, as a power loss would.
    CrashNode { node: String },
    /// Node fault: start a crashed `node` again.
    RestartNode { node: String },
    /// Node fault: freeze `node` (no message handled, no timer fired) for `for_`.
    PauseNode {
        node: String,
        #[serde(rename = "for")]
        for_: Duration,
    },
    /// Node fault: shift `node`'s clock by `skew_nanos` (negative: behind).
    ClockSkew { node: String, skew_nanos: i64 },
}

impl Fault {
    /// Whether every value is in range: probabilities finite and in `[0, 1]`, durations and
    /// skew at most [`MAX_FAULT_DURATION`], names and node sets non-empty and bounded.
    pub fn validate(&self) -> Result<(), FaultError> {
        match self {
            Fault::Drop { links, probability } | Fault::Duplicate { links, probability } => {
                links.validate()?;
                check_probability(*probability)
            }
            Fault::Delay { links, base, jitter } => {
                links.validate()?;
                check_duration("delay base", *base)?;
                check_duration("delay jitter", *jitter)
            }
            Fault::Reorder { links, probability, window } => {
                links.validate()?;
                check_probability(*probability)?;
                check_duration("reorder window", *window)
            }
            Fault::Partition { a, b, .. } => {
                a.validate()?;
                b.validate()
            }
            Fault::Clog { links } => links.validate(),
            Fault::Heal => Ok(()),
            Fault::KillActor { node, name } => {
                check_name(node)?;
                check_name(name)
            }
            Fault::CrashNode { node } | Fault::RestartNode { node } => check_name(node),
            Fault::PauseNode { node, for_ } => {
                check_name(node)?;
                check_duration("pause", *for_)
            }
            Fault::ClockSkew { node, skew_nanos } => {
                check_name(node)?;
                check_skew(*skew_nanos)
            }
        }
    }

    /// Whether [`NetModel`] applies this fault (otherwise the node runtime does).
    pub fn is_link_fault(&self) -> bool {
        matches!(
            self,
            Fault::Drop { .. }
                | Fault::Delay { .. }
                | Fault::Duplicate { .. }
                | Fault::Reorder { .. }
                | Fault::Partition { .. }
                | Fault::Clog { .. }
                | Fault::Heal
        )
    }

    /// The links a fault made of [`Links`] acts on.
    fn links(&self) -> Option<&Links> {
        match self {
            Fault::Drop { links, .. }
            | Fault::Delay { links, .. }
            | Fault::Duplicate { links, .. }
            | Fault::Reorder { links, .. }
            | Fault::Clog { links } => Some(links),
            _ => None,
        }
    }

    /// Whether this is a partition that cuts the link from `from` to `to`.
    fn cuts(&self, from: &str, to: &str) -> bool {
        let Fault::Partition { a, b, one_way } = self else { return false };
        from != to && ((a.contains(from) && b.contains(to)) || (!one_way && b.contains(from) && a.contains(to)))
    }
}

fn check_probability(probability: f64) -> Result<(), FaultError> {
    if (0.0..=1.0).contains(&probability) { Ok(()) } else { Err(FaultError::InvalidProbability(probability)) }
}

fn check_duration(what: &'static str, duration: Duration) -> Result<(), FaultError> {
    if duration <= MAX_FAULT_DURATION { Ok(()) } else { Err(FaultError::DurationTooLong { what, duration }) }
}

fn check_skew(skew_nanos: i64) -> Result<(), FaultError> {
    if u128::from(skew_nanos.unsigned_abs()) <= MAX_FAULT_DURATION.as_nanos() {
        Ok(())
    } else {
        Err(FaultError::SkewTooLarge(skew_nanos))
    }
}

fn check_name(name: &str) -> Result<(), FaultError> {
    if name.is_empty() {
        Err(FaultError::EmptyName)
    } else if name.len() > MAX_NAME_BYTES {
        Err(FaultError::NameTooLong { bytes: name.len() })
    } else {
        Ok(())
    }
}

/// Why a fault was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum FaultError {
    #[error("probability {0} is not a finite number in [0, 1]")]
    InvalidProbability(f64),
    #[error("{what} of {duration:?} exceeds {MAX_FAULT_DURATION:?}")]
    DurationTooLong { what: &'static str, duration: Duration },
    #[error("clock skew of {0} ns exceeds {MAX_FAULT_DURATION:?}")]
    SkewTooLarge(i64),
    #[error("a node id or actor name is empty")]
    EmptyName,
    #[error("a node id or actor name of {bytes} bytes exceeds {MAX_NAME_BYTES}")]
    NameTooLong { bytes: usize },
    #[error("a node set names no node; use a fault on fewer links instead")]
    EmptyNodeSet,
    #[error("a node set of {count} nodes exceeds {MAX_NODES_PER_SET}")]
    TooManyNodes { count: usize },
    #[error("node faults are carried out by the node runtime, not the link model")]
    NotALinkFault,
    #[error("{MAX_ACTIVE_FAULTS} faults are already active")]
    TooManyFaults,
}

/// The id of an injected fault, for healing it alone. Ids grow with each injection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FaultId(u64);

impl FaultId {
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FaultId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fault-{}", self.0)
    }
}

/// What to do with one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Lose it.
    Drop,
    /// The link is clogged: keep the message and route it again after a heal.
    Hold,
    /// Deliver one copy at each time (more than one if a Duplicate fired); the first entry is
    /// the original, which keeps FIFO order unless a Reorder fired.
    Deliver { at: Vec<Time> },
}

/// The link model of the simulated network: healthy latency plus the active link faults.
#[derive(Clone, Debug)]
pub struct NetModel {
    base_latency: Duration,
    jitter: Duration,
    /// Active faults by id; ids grow, so this is injection order.
    faults: BTreeMap<FaultId, Fault>,
    next_id: u64,
    /// Per directed link (sender, receiver): the latest in-order delivery scheduled on it.
    last_delivery: BTreeMap<(String, String), Time>,
}

impl NetModel {
    /// A healthy network: each message takes `base_latency + uniform[0, jitter]`. Both are
    /// clamped to [`MAX_FAULT_DURATION`]; zero is allowed.
    pub fn new(base_latency: Duration, jitter: Duration) -> Self {
        NetModel {
            base_latency: base_latency.min(MAX_FAULT_DURATION),
            jitter: jitter.min(MAX_FAULT_DURATION),
            faults: BTreeMap::new(),
            next_id: 0,
            last_delivery: BTreeMap::new(),
        }
    }

    /// Activates a link fault. [`Fault::Heal`] heals every active fault and returns an id of
    /// its own, which is never active. Node faults are refused with
    /// [`FaultError::NotALinkFault`].
    pub fn inject(&mut self, fault: Fault) -> Result<FaultId, FaultError> {
        if !fault.is_link_fault() {
            return Err(FaultError::NotALinkFault);
        }
        fault.validate()?;
        if matches!(fault, Fault::Heal) {
            self.heal_all();
            return Ok(self.allocate_id());
        }
        if self.faults.len() >= MAX_ACTIVE_FAULTS {
            return Err(FaultError::TooManyFaults);
        }
        let id = self.allocate_id();
        self.faults.insert(id, fault);
        Ok(id)
    }

    /// Heals one fault; false if it is not active.
    pub fn heal(&mut self, id: FaultId) -> bool {
        self.faults.remove(&id).is_some()
    }

    /// Heals every fault. FIFO memory is kept: a message delayed by a healed fault is still
    /// not overtaken by the ones sent after it.
    pub fn heal_all(&mut self) {
        self.faults.clear();
    }

    /// The active faults, in injection order.
    pub fn active(&self) -> Vec<(FaultId, Fault)> {
        self.faults.iter().map(|(id, fault)| (*id, fault.clone())).collect()
    }

    /// Whether a connection from `from` to `to` can be opened: false only if partitioned.
    /// Clogs and drops do not make a link unreachable.
    pub fn reachable(&self, from: &str, to: &str) -> bool {
        !self.faults.values().any(|fault| fault.cuts(from, to))
    }

    /// Whether messages from `from` to `to` are held by a clog.
    pub fn clogged(&self, from: &str, to: &str) -> bool {
        self.matching(from, to).any(|fault| matches!(fault, Fault::Clog { .. }))
    }

    /// Whether any active fault acts on the link from `from` to `to` (a partition that cuts
    /// it, or a fault made of links that match it). False means [`Self::route`] would deliver
    /// at once: a shell can skip the model for that link.
    pub fn affects(&self, from: &str, to: &str) -> bool {
        !self.reachable(from, to) || self.matching(from, to).next().is_some()
    }

    /// Whether an unreliable datagram (a heartbeat) from `from` to `to` gets through: not if
    /// the link is cut or clogged (holding a heartbeat is pointless; a paused node sends none),
    /// nor if a Drop fires. Delays, duplicates and reorders do not apply to datagrams, and the
    /// link's FIFO memory is left alone.
    pub fn datagram_passes(&self, from: &str, to: &str, rng: &mut Rng) -> bool {
        self.reachable(from, to) && !self.clogged(from, to) && !self.dropped(from, to, rng)
    }

    /// What happens to a message sent from `from` to `to` at `now` (the rules are in the
    /// module documentation).
    pub fn route(&mut self, from: &str, to: &str, now: Time, rng: &mut Rng) -> Route {
        if !self.reachable(from, to) {
            return Route::Drop;
        }
        if self.clogged(from, to) {
            return Route::Hold;
        }
        if self.dropped(from, to, rng) {
            return Route::Drop;
        }
        let delay = self.draw_delay(from, to, rng);
        let held_back = self.draw_reorder(from, to, rng);
        let first = match held_back {
            Some(extra) => later(now, delay.saturating_add(extra)),
            None => self.in_order(from, to, later(now, delay), now),
        };
        let mut at = vec![first];
        at.extend(self.draw_duplicates(from, to, now, rng));
        Route::Deliver { at }
    }

    fn allocate_id(&mut self) -> FaultId {
        let id = FaultId(self.next_id);
        // 2^64 injections cannot happen; wrapping only keeps this free of a panic path.
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// The active faults made of [`Links`] that match the link, in injection order.
    fn matching<'a>(&'a self, from: &'a str, to: &'a str) -> impl Iterator<Item = &'a Fault> + 'a {
        self.faults.values().filter(move |fault| fault.links().is_some_and(|links| links.matches(from, to)))
    }

    /// Rule 3: every matching Drop draws, in injection order; any hit drops.
    fn dropped(&self, from: &str, to: &str, rng: &mut Rng) -> bool {
        let mut dropped = false;
        for fault in self.matching(from, to) {
            if let Fault::Drop { probability, .. } = fault {
                dropped |= chance(rng, *probability);
            }
        }
        dropped
    }

    /// Rule 4: the healthy latency plus every matching Delay, each with fresh jitter.
    fn draw_delay(&self, from: &str, to: &str, rng: &mut Rng) -> Duration {
        let mut delay = self.base_latency.saturating_add(uniform(rng, self.jitter));
        for fault in self.matching(from, to) {
            if let Fault::Delay { base, jitter, .. } = fault {
                delay = delay.saturating_add(*base).saturating_add(uniform(rng, *jitter));
            }
        }
        delay
    }

    /// Rule 5: the extra hold-back if any matching Reorder fires, or `None`.
    fn draw_reorder(&self, from: &str, to: &str, rng: &mut Rng) -> Option<Duration> {
        let mut held_back = None;
        for fault in self.matching(from, to) {
            if let Fault::Reorder { probability, window, .. } = fault
                && chance(rng, *probability)
            {
                let extra = uniform(rng, *window);
                held_back = Some(held_back.unwrap_or(Duration::ZERO).saturating_add(extra));
            }
        }
        held_back
    }

    /// Rule 6: one extra copy, with a fresh delay, per matching Duplicate that fires.
    fn draw_duplicates(&self, from: &str, to: &str, now: Time, rng: &mut Rng) -> Vec<Time> {
        let mut copies = Vec::new();
        for fault in self.matching(from, to) {
            if let Fault::Duplicate { probability, .. } = fault
                && chance(rng, *probability)
            {
                copies.push(later(now, self.draw_delay(from, to, rng)));
            }
        }
        copies
    }

    /// Rule 7: no earlier than the link's last in-order delivery, which `at` then becomes.
    fn in_order(&mut self, from: &str, to: &str, at: Time, now: Time) -> Time {
        let key = (from.to_owned(), to.to_owned());
        let at = self.last_delivery.get(&key).map_or(at, |last| at.max(*last));
        if !self.last_delivery.contains_key(&key) && self.last_delivery.len() >= MAX_TRACKED_LINKS {
            self.make_room(now);
        }
        self.last_delivery.insert(key, at);
        at
    }

    /// Forgets links with nothing in flight; failing that, the one whose delivery is earliest.
    fn make_room(&mut self, now: Time) {
        self.last_delivery.retain(|_, last| *last > now);
        if self.last_delivery.len() < MAX_TRACKED_LINKS {
            return;
        }
        let earliest = self.last_delivery.iter().min_by_key(|(_, last)| **last).map(|(link, _)| link.clone());
        if let Some(link) = earliest {
            self.last_delivery.remove(&link);
        }
    }
}

/// True with `probability`: a uniform draw in `[0, 1)` (53 bits) below it. One draw always, so
/// probability 0 is never and 1 is always, exactly.
fn chance(rng: &mut Rng, probability: f64) -> bool {
    let unit = (rng.next_u64() >> 11) as f64 / (1_u64 << 53) as f64;
    unit < probability
}

/// A duration drawn uniformly from `[0, max]`, to the nanosecond.
fn uniform(rng: &mut Rng, max: Duration) -> Duration {
    let max_nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.below(max_nanos.saturating_add(1)))
}

/// `time + duration`, saturating instead of overflowing.
fn later(time: Time, duration: Duration) -> Time {
    Time::from_duration(time.since_origin().saturating_add(duration))
}

#[cfg(test)]
mod tests {
    use super::*;
    // Named, because proptest's prelude exports a trait of the same name.
    use flotilla_supervisors::Rng;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn at(d: Duration) -> Time {
        Time::from_duration(d)
    }

    fn delivered(route: Route) -> Vec<Time> {
        match route {
            Route::Deliver { at } => at,
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    fn drop_all(probability: f64) -> Fault {
        Fault::Drop { links: Links::all(), probability }
    }

    #[test]
    fn node_sets_all_and_only() {
        let some = NodeSet::of(["a", "b"]);
        assert!(some.contains("a") && some.contains("b") && !some.contains("c"));
        assert!(NodeSet::All.contains("anyone"));
        assert_eq!(NodeSet::one("a"), NodeSet::of(["a"]));
        let links = Links::new(NodeSet::one("a"), NodeSet::All);
        assert!(links.matches("a", "b") && links.matches("a", "z"));
        assert!(!links.matches("b", "a"), "links are directed");
    }

    #[test]
    fn a_healthy_network_delivers_after_latency_plus_jitter() {
        let mut net = NetModel::new(ms(5), ms(2));
        let mut rng = Rng::seeded(1);
        for i in 0..200 {
            let now = at(ms(10 * i));
            let times = delivered(net.route("a", "b", now, &mut rng));
            assert_eq!(times.len(), 1);
            assert!(times[0] >= now + ms(5) && times[0] <= now + ms(7), "{times:?}");
        }
        let mut instant = NetModel::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(instant.route("a", "b", at(ms(3)), &mut rng), Route::Deliver { at: vec![at(ms(3))] });
    }

    #[test]
    fn drop_probability_zero_and_one_are_exact() {
        let mut rng = Rng::seeded(2);
        let mut never = NetModel::new(MS, Duration::ZERO);
        never.inject(drop_all(0.0)).unwrap();
        let mut always = NetModel::new(MS, Duration::ZERO);
        always.inject(drop_all(1.0)).unwrap();
        for i in 0..10_000 {
            assert!(matches!(never.route("a", "b", at(ms(i)), &mut rng), Route::Deliver { .. }));
            assert_eq!(always.route("a", "b", at(ms(i)), &mut rng), Route::Drop);
        }
    }

    #[test]
    fn drop_probability_one_half_drops_about_half() {
        // A fixed seed makes this exact and repeatable; the bound is about 4 standard deviations
        // (sd = 50 for 10 000 trials), so another seed would pass too.
        let mut net = NetModel::new(MS, Duration::ZERO);
        net.inject(drop_all(0.5)).unwrap();
        let mut rng = Rng::seeded(42);
        let dropped = (0..10_000).filter(|i| net.route("a", "b", at(ms(*i)), &mut rng) == Route::Drop).count();
        assert!((4_800..=5_200).contains(&dropped), "{dropped}");
    }

    #[test]
    fn delay_adds_base_and_jitter_on_matching_links_only() {
        let mut net = NetModel::new(ms(1), Duration::ZERO);
        let links = Links::one("a", "b");
        net.inject(Fault::Delay { links, base: ms(100), jitter: ms(10) }).unwrap();
        let mut rng = Rng::seeded(3);
        for i in 0..100 {
            let now = at(ms(1_000 * i));
            let slow = delivered(net.route("a", "b", now, &mut rng))[0];
            assert!(slow >= now + ms(101) && slow <= now + ms(111), "{slow:?}");
            assert_eq!(delivered(net.route("b", "a", now, &mut rng)), [now + ms(1)]);
        }
    }

    #[test]
    fn delays_of_several_faults_add_up() {
        let mut net = NetModel::new(ms(1), Duration::ZERO);
        net.inject(Fault::Delay { links: Links::all(), base: ms(10), jitter: Duration::ZERO }).unwrap();
        net.inject(Fault::Delay { links: Links::one("a", "b"), base: ms(20), jitter: Duration::ZERO }).unwrap();
        let mut rng = Rng::seeded(4);
        assert_eq!(delivered(net.route("a", "b", Time::ZERO, &mut rng)), [at(ms(31))]);
        assert_eq!(delivered(net.route("b", "a", Time::ZERO, &mut rng)), [at(ms(11))]);
    }

    #[test]
    fn duplicate_delivers_a_second_copy_with_its_own_delay() {
        let mut net = NetModel::new(ms(10), ms(10));
        net.inject(Fault::Duplicate { links: Links::all(), probability: 1.0 }).unwrap();
        let mut rng = Rng::seeded(5);
        let mut differed = false;
        for i in 0..50 {
            let now = at(ms(1_000 * i));
            let copies = delivered(net.route("a", "b", now, &mut rng));
            assert_eq!(copies.len(), 2);
            assert!(copies.iter().all(|t| *t >= now + ms(10) && *t <= now + ms(20)), "{copies:?}");
            differed |= copies[0] != copies[1];
        }
        assert!(differed, "each copy draws its own jitter");
        net.heal_all();
        net.inject(Fault::Duplicate { links: Links::all(), probability: 0.0 }).unwrap();
        assert_eq!(delivered(net.route("a", "b", at(ms(99_000)), &mut rng)).len(), 1);
    }

    #[test]
    fn reorder_lets_later_messages_overtake() {
        let mut net = NetModel::new(ms(1), Duration::ZERO);
        let links = Links::one("a", "b");
        net.inject(Fault::Reorder { links, probability: 0.5, window: ms(50) }).unwrap();
        let mut rng = Rng::seeded(6);
        let times: Vec<Time> = (0..200).map(|i| delivered(net.route("a", "b", at(ms(i)), &mut rng))[0]).collect();
        let overtaken = times.windows(2).filter(|pair| pair[1] < pair[0]).count();
        assert!(overtaken > 10, "{overtaken}");
        assert!(times.iter().enumerate().all(|(i, t)| *t <= at(ms(i as u64 + 51))), "at most `window` extra");
        // The other direction keeps FIFO.
        let back: Vec<Time> = (0..200).map(|i| delivered(net.route("b", "a", at(ms(i)), &mut rng))[0]).collect();
        assert!(back.is_sorted());
    }

    #[test]
    fn affects_names_exactly_the_links_a_fault_touches() {
        let mut net = NetModel::new(Duration::ZERO, Duration::ZERO);
        assert!(!net.affects("a", "b"));
        net.inject(Fault::Delay { links: Links::one("a", "b"), base: MS, jitter: Duration::ZERO }).unwrap();
        net.inject(Fault::Partition { a: NodeSet::one("c"), b: NodeSet::one("d"), one_way: true }).unwrap();
        assert!(net.affects("a", "b") && !net.affects("b", "a"));
        assert!(net.affects("c", "d") && !net.affects("d", "c"));
    }

    #[test]
    fn datagrams_pass_unless_cut_clogged_or_dropped() {
        let mut net = NetModel::new(Duration::ZERO, Duration::ZERO);
        let mut rng = Rng::seeded(3);
        net.inject(Fault::Delay { links: Links::all(), base: ms(500), jitter: Duration::ZERO }).unwrap();
        assert!(net.datagram_passes("a", "b", &mut rng), "delays do not hold datagrams");
        let clog = net.inject(Fault::Clog { links: Links::one("a", "b") }).unwrap();
        assert!(!net.datagram_passes("a", "b", &mut rng) && net.datagram_passes("b", "a", &mut rng));
        net.heal(clog);
        net.inject(drop_all(1.0)).unwrap();
        assert!(!net.datagram_passes("b", "a", &mut rng));
    }

    #[test]
    fn partition_cuts_both_ways() {
        let mut net = NetModel::new(MS, Duration::ZERO);
        let (a, b) = (NodeSet::of(["a1", "a2"]), NodeSet::one("b"));
        net.inject(Fault::Partition { a, b, one_way: false }).unwrap();
        let mut rng = Rng::seeded(7);
        for (from, to) in [("a1", "b"), ("b", "a1"), ("a2", "b"), ("b", "a2")] {
            assert!(!net.reachable(from, to), "{from}->{to}");
            assert_eq!(net.route(from, to, Time::ZERO, &mut rng), Route::Drop, "{from}->{to}");
        }
        assert!(net.reachable("a1", "a2") && net.reachable("b", "c"));
        assert!(matches!(net.route("a1", "a2", Time::ZERO, &mut rng), Route::Deliver { .. }));
    }

    #[test]
    fn one_way_partition_cuts_one_direction() {
        let mut net = NetModel::new(MS, Duration::ZERO);
        net.inject(Fault::Partition { a: NodeSet::one("a"), b: NodeSet::one("b"), one_way: true }).unwrap();
        let mut rng = Rng::seeded(8);
        assert!(!net.reachable("a", "b"));
        assert_eq!(net.route("a", "b", Time::ZERO, &mut rng), Route::Drop);
        assert!(net.reachable("b", "a"));
        assert_eq!(net.route("b", "a", Time::ZERO, &mut rng), Route::Deliver { at: vec![at(MS)] });
    }

    #[test]
    fn isolating_a_node_does_not_cut_it_from_itself() {
        let mut net = NetModel::new(MS, Duration::ZERO);
        net.inject(Fault::Partition { a: NodeSet::one("x"), b: NodeSet::All, one_way: false }).unwrap();
        assert!(!net.reachable("x", "y") && !net.reachable("y", "x"));
        assert!(net.reachable("x", "x") && net.reachable("y", "z"));
    }

    #[test]
    fn clog_holds_without_cutting_until_healed() {
        let mut net = NetModel::new(MS, Duration::ZERO);
        let id = net.inject(Fault::Clog { links: Links::one("a", "b") }).unwrap();
        let mut rng = Rng::seeded(9);
        assert!(net.clogged("a", "b") && !net.clogged("b", "a"));
        assert!(net.reachable("a", "b"), "a clog is not a partition");
        assert_eq!(net.route("a", "b", Time::ZERO, &mut rng), Route::Hold);
        assert!(net.heal(id));
        assert!(!net.clogged("a", "b"));
        assert_eq!(net.route("a", "b", at(ms(5)), &mut rng), Route::Deliver { at: vec![at(ms(6))] });
    }

    #[test]
    fn partition_wins_over_clog_and_clog_over_drop() {
        let mut net = NetModel::new(MS, Duration::ZERO);
        let mut rng = Rng::seeded(10);
        net.inject(drop_all(1.0)).unwrap();
        net.inject(Fault::Clog { links: Links::all() }).unwrap();
        assert_eq!(net.route("a", "b", Time::ZERO, &mut rng), Route::Hold);
        net.inject(Fault::Partition { a: NodeSet::All, b: NodeSet::All, one_way: false }).unwrap();
        assert_eq!(net.route("a", "b", Time::ZERO, &mut rng), Route::Drop);
        assert!(!net.reachable("a", "b"));
    }

    #[test]
    fn heal_by_id_removes_only_that_fault() {
        let mut net = NetModel::new(MS, Duration::ZERO);
        let drop = net.inject(drop_all(1.0)).unwrap();
        let clog = Fault::Clog { links: Links::one("c", "d") };
        let clog_id = net.inject(clog.clone()).unwrap();
        assert!(drop < clog_id);
        assert!(net.heal(drop));
        assert!(!net.heal(drop), "already healed");
        assert_eq!(net.active(), vec![(clog_id, clog)]);
        assert!(!net.heal(FaultId(999)));
    }

    #[test]
    fn heal_fault_heals_everything() {
        let mut net = NetModel::new(MS, Duration::ZERO);
        let first = net.inject(drop_all(1.0)).unwrap();
        let partition = Fault::Partition { a: NodeSet::one("a"), b: NodeSet::one("b"), one_way: false };
        net.inject(partition).unwrap();
        let heal = net.inject(Fault::Heal).unwrap();
        assert!(net.active().is_empty());
        assert!(!net.heal(heal), "a Heal is never active");
        assert!(net.reachable("a", "b"));
        let again = net.inject(drop_all(0.1)).unwrap();
        assert!(first < heal && heal < again, "ids are never reused");
    }

    #[test]
    fn active_lists_faults_in_injection_order() {
        let mut net = NetModel::new(MS, Duration::ZERO);
        let faults = [drop_all(0.1), Fault::Clog { links: Links::one("a", "b") }, drop_all(0.2)];
        let ids: Vec<FaultId> = faults.iter().map(|f| net.inject(f.clone()).unwrap()).collect();
        assert_eq!(net.active(), ids.into_iter().zip(faults).collect::<Vec<_>>());
    }

    #[test]
    fn node_faults_are_valid_but_not_link_faults() {
        let node_faults = [
            Fault::KillActor { node: "a".into(), name: "dns".into() },
            Fault::CrashNode { node: "a".into() },
            Fault::RestartNode { node: "a".into() },
            Fault::PauseNode { node: "a".into(), for_: ms(300) },
            Fault::ClockSkew { node: "a".into(), skew_nanos: -5_000_000 },
        ];
        let mut net = NetModel::new(MS, Duration::ZERO);
        for fault in node_faults {
            assert_eq!(fault.validate(), Ok(()), "{fault:?}");
            assert!(!fault.is_link_fault());
            assert_eq!(net.inject(fault), Err(FaultError::NotALinkFault));
        }
        assert!(net.active().is_empty());
    }

    #[test]
    fn validation_rejects_out_of_range_values() {
        let too_long = MAX_FAULT_DURATION + MS;
        let cases = [
            (drop_all(1.5), FaultError::InvalidProbability(1.5)),
            (drop_all(-0.1), FaultError::InvalidProbability(-0.1)),
            (drop_all(f64::INFINITY), FaultError::InvalidProbability(f64::INFINITY)),
            (Fault::Duplicate { links: Links::all(), probability: 2.0 }, FaultError::InvalidProbability(2.0)),
            (
                Fault::Delay { links: Links::all(), base: too_long, jitter: Duration::ZERO },
                FaultError::DurationTooLong { what: "delay base", duration: too_long },
            ),
            (
                Fault::Delay { links: Links::all(), base: MS, jitter: too_long },
                FaultError::DurationTooLong { what: "delay jitter", duration: too_long },
            ),
            (
                Fault::Reorder { links: Links::all(), probability: 0.5, window: too_long },
                FaultError::DurationTooLong { what: "reorder window", duration: too_long },
            ),
            (
                Fault::Clog { links: Links::new(NodeSet::of::<[&str; 0], &str>([]), NodeSet::All) },
                FaultError::EmptyNodeSet,
            ),
            (Fault::Clog { links: Links::one("", "b") }, FaultError::EmptyName),
            (
                Fault::Partition { a: NodeSet::one("x".repeat(256)), b: NodeSet::All, one_way: true },
                FaultError::NameTooLong { bytes: 256 },
            ),
            (
                Fault::Partition {
                    a: NodeSet::of((0..=MAX_NODES_PER_SET).map(|i| i.to_string())),
                    b: NodeSet::All,
                    one_way: false,
                },
                FaultError::TooManyNodes { count: MAX_NODES_PER_SET + 1 },
            ),
            (Fault::KillActor { node: "a".into(), name: String::new() }, FaultError::EmptyName),
            (Fault::CrashNode { node: String::new() }, FaultError::EmptyName),
            (
                Fault::PauseNode { node: "a".into(), for_: too_long },
                FaultError::DurationTooLong { what: "pause", duration: too_long },
            ),
            (Fault::ClockSkew { node: "a".into(), skew_nanos: i64::MIN }, FaultError::SkewTooLarge(i64::MIN)),
        ];
        let mut net = NetModel::new(MS, Duration::ZERO);
        for (fault, error) in cases {
            assert_eq!(fault.validate(), Err(error.clone()), "{fault:?}");
            if fault.is_link_fault() {
                assert_eq!(net.inject(fault), Err(error));
            }
        }
        let nan = drop_all(f64::NAN).validate();
        assert!(matches!(nan, Err(FaultError::InvalidProbability(p)) if p.is_nan()));
        assert!(net.active().is_empty());
        let edge = Fault::ClockSkew { node: "a".into(), skew_nanos: -3_600_000_000_000 };
        assert_eq!(edge.validate(), Ok(()));
    }

    #[test]
    fn at_most_the_limit_of_faults_is_active() {
        let mut net = NetModel::new(MS, Duration::ZERO);
        for _ in 0..MAX_ACTIVE_FAULTS {
            net.inject(drop_all(0.0)).unwrap();
        }
        assert_eq!(net.inject(drop_all(0.0)), Err(FaultError::TooManyFaults));
        assert!(net.inject(Fault::Heal).is_ok(), "a heal is always accepted");
        assert!(net.inject(drop_all(0.0)).is_ok());
    }

    #[test]
    fn the_same_seed_gives_the_same_routes() {
        let run = |seed| {
            let mut net = NetModel::new(ms(2), ms(8));
            net.inject(drop_all(0.2)).unwrap();
            net.inject(Fault::Duplicate { links: Links::all(), probability: 0.3 }).unwrap();
            net.inject(Fault::Reorder { links: Links::one("a", "b"), probability: 0.3, window: ms(20) }).unwrap();
            net.inject(Fault::Delay { links: Links::one("b", "a"), base: ms(3), jitter: ms(4) }).unwrap();
            let mut rng = Rng::seeded(seed);
            let pairs = [("a", "b"), ("b", "a"), ("a", "c")];
            (0..300).map(|i| net.route(pairs[i % 3].0, pairs[i % 3].1, at(ms(i as u64)), &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
    }

    #[test]
    fn fifo_survives_the_heal_of_a_delay() {
        let mut net = NetModel::new(ms(1), Duration::ZERO);
        let mut rng = Rng::seeded(13);
        let slow = net.inject(Fault::Delay { links: Links::all(), base: ms(500), jitter: Duration::ZERO }).unwrap();
        let delayed = delivered(net.route("a", "b", Time::ZERO, &mut rng))[0];
        net.heal(slow);
        let after = delivered(net.route("a", "b", at(ms(10)), &mut rng))[0];
        assert_eq!((delayed, after), (at(ms(501)), at(ms(501))), "the later message waits for the earlier");
        assert_eq!(delivered(net.route("b", "a", at(ms(10)), &mut rng)), [at(ms(11))], "other links are free");
    }

    #[test]
    fn finished_links_are_forgotten_when_the_table_is_full() {
        let mut net = NetModel::new(MS, Duration::ZERO);
        let mut rng = Rng::seeded(14);
        for i in 0..MAX_TRACKED_LINKS {
            net.last_delivery.insert((i.to_string(), "x".into()), at(ms(i as u64 % 2 * 100)));
        }
        net.route("new", "x", at(ms(50)), &mut rng);
        assert_eq!(net.last_delivery.len(), MAX_TRACKED_LINKS / 2 + 1, "entries at 0 ms were stale at 50 ms");
        // Every entry in flight: the earliest is forgotten to make room.
        net.last_delivery.retain(|_, last| *last > at(ms(60)));
        while net.last_delivery.len() < MAX_TRACKED_LINKS {
            let n = net.last_delivery.len();
            net.last_delivery.insert((format!("busy-{n}"), "x".into()), at(ms(200)));
        }
        net.route("newer", "x", at(ms(60)), &mut rng);
        assert_eq!(net.last_delivery.len(), MAX_TRACKED_LINKS);
        assert!(net.last_delivery.contains_key(&("newer".to_owned(), "x".to_owned())));
    }

    #[test]
    fn times_at_the_end_of_the_clock_saturate() {
        let mut net = NetModel::new(Duration::MAX, Duration::MAX);
        net.inject(Fault::Delay { links: Links::all(), base: MAX_FAULT_DURATION, jitter: MAX_FAULT_DURATION }).unwrap();
        let end = Time::from_duration(Duration::MAX);
        let mut rng = Rng::seeded(15);
        assert_eq!(net.route("a", "b", end, &mut rng), Route::Deliver { at: vec![end] });
    }

    /// Compile-time check that the vocabulary serializes (the simulator stores schedules).
    #[test]
    fn the_vocabulary_is_serializable() {
        fn serializable<T: Serialize + for<'de> Deserialize<'de>>() {}
        serializable::<Fault>();
        serializable::<NodeSet>();
        serializable::<Links>();
        serializable::<FaultId>();
    }

    proptest! {
        /// Without Reorder or Duplicate, jitter and Delay faults never reorder a link.
        #[test]
        fn deliveries_on_a_link_stay_in_order(
            seed in any::<u64>(),
            base_us in 0_u64..10_000,
            jitter_us in 0_u64..50_000,
            delay in proptest::option::of((0_u64..10_000, 0_u64..100_000)),
            gaps_us in proptest::collection::vec(0_u64..5_000, 1..200),
        ) {
            let mut net = NetModel::new(Duration::from_micros(base_us), Duration::from_micros(jitter_us));
            if let Some((base, jitter)) = delay {
                let (base, jitter) = (Duration::from_micros(base), Duration::from_micros(jitter));
                net.inject(Fault::Delay { links: Links::one("a", "b"), base, jitter }).unwrap();
            }
            net.inject(drop_all(0.1)).unwrap();
            let mut rng = Rng::seeded(seed);
            let mut now = Time::ZERO;
            let mut previous = Time::ZERO;
            for gap in gaps_us {
                now = now + Duration::from_micros(gap);
                if let Route::Deliver { at } = net.route("a", "b", now, &mut rng) {
                    prop_assert_eq!(at.len(), 1);
                    prop_assert!(at[0] >= previous && at[0] >= now);
                    previous = at[0];
                }
            }
        }

        /// A Duplicate's extra copies may arrive in any order, but originals keep FIFO.
        #[test]
        fn originals_stay_in_order_under_duplication(
            seed in any::<u64>(),
            jitter_us in 0_u64..50_000,
            gaps_us in proptest::collection::vec(0_u64..5_000, 1..200),
        ) {
            let mut net = NetModel::new(Duration::ZERO, Duration::from_micros(jitter_us));
            net.inject(Fault::Duplicate { links: Links::all(), probability: 0.5 }).unwrap();
            let mut rng = Rng::seeded(seed);
            let (mut now, mut previous) = (Time::ZERO, Time::ZERO);
            for gap in gaps_us {
                now = now + Duration::from_micros(gap);
                let at = delivered(net.route("a", "b", now, &mut rng));
                prop_assert!((1..=2).contains(&at.len()));
                prop_assert!(at[0] >= previous);
                previous = at[0];
            }
        }
    }
}
