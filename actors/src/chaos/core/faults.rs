//! The chaos actor's decisions, pure: which nodes must hold a fault, whether a request is
//! valid, and the table of faults a node holds with their ids and heal times.
//!
//! # Who holds a fault
//!
//! A node carries out the faults it holds: node faults on itself, link faults on the links
//! that touch it (the transport judges its outgoing frames and its incoming ones). So a fault
//! is sent to the nodes that must hold it ([`holders`]): a node fault to its node; a link
//! fault to the nodes of its sending side (`from`, or a partition's `a`), each of which then
//! judges its own links to the other side — every link once when the sides are disjoint, as
//! the monkey draws them. A side of `All` falls back to the other side, and a fault on every
//! link to every node is held by the node asked, acting on its own links only.
//!
//! # Durations
//!
//! A fault with a duration heals itself when it runs out (a pause always has one, its
//! `for`); link faults and clock skews may have one or last until healed; killing an actor,
//! crashing or restarting a node and `Heal` are instantaneous and take none.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_supervisors::Time;
use flotilla_transport::core::fault::{Fault, FaultError, FaultId, Links, MAX_FAULT_DURATION, NodeSet};
use serde::{Deserialize, Serialize};

/// The most faults one node holds at once.
pub const MAX_HELD_FAULTS: usize = 256;

/// What a node does to carry a fault out, and so what healing it undoes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Link faults active in the node's transport (a pause is two clogs, out and in).
    Links(Vec<FaultId>),
    /// The node's clock is skewed; healing sets it right.
    Skewed,
    /// Nothing remains to undo (a killed actor, a crash, a restart, a heal).
    Done,
}

/// A fault held by a node, as listed to operators.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultView {
    /// Unique on its node while the node's chaos actor lives.
    pub id: u64,
    /// The node holding it.
    pub node: String,
    pub fault: Fault,
    /// Milliseconds until it heals itself (`None`: until healed, or instantaneous).
    pub heals_in_ms: Option<u64>,
    /// Whether it is still in effect (false for an instantaneous fault, and once healed).
    pub active: bool,
}

/// Why a chaos request was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ChaosError {
    #[error("invalid fault: {0}")]
    Invalid(#[from] FaultError),
    #[error("{kind} is instantaneous and takes no duration")]
    InstantaneousWithDuration { kind: &'static str },
    #[error("a pause takes its duration in its own `for` field, not a separate duration")]
    PauseWithDuration,
    #[error("a duration of {0:?} exceeds {MAX_FAULT_DURATION:?}")]
    DurationTooLong(Duration),
    #[error("a duration of zero would heal the fault at once")]
    ZeroDuration,
    #[error("the fault touches no link of node {node}; send it to a node it names")]
    TouchesNoLink { node: String },
    #[error("node {node} holds {MAX_HELD_FAULTS} faults already; heal some first")]
    TooManyFaults { node: String },
    #[error("no fault {id} on node {node}")]
    UnknownFault { node: String, id: u64 },
}

/// The kind of a fault, for messages and events.
pub fn kind(fault: &Fault) -> &'static str {
    match fault {
        Fault::Drop { .. } => "Drop",
        Fault::Delay { .. } => "Delay",
        Fault::Duplicate { .. } => "Duplicate",
        Fault::Reorder { .. } => "Reorder",
        Fault::Partition { .. } => "Partition",
        Fault::Clog { .. } => "Clog",
        Fault::Heal => "Heal",
        Fault::KillActor { .. } => "KillActor",
        Fault::CrashNode { .. } => "CrashNode",
        Fault::RestartNode { .. } => "RestartNode",
        Fault::PauseNode { .. } => "PauseNode",
        Fault::ClockSkew { .. } => "ClockSkew",
    }
}

/// Whether a fault happens at once and leaves nothing to heal.
pub fn is_instantaneous(fault: &Fault) -> bool {
    matches!(fault, Fault::KillActor { .. } | Fault::CrashNode { .. } | Fault::RestartNode { .. } | Fault::Heal)
}

/// Checks a fault and its optional duration; returns how long it lasts (`None`: until healed,
/// or instantaneous).
pub fn check_request(fault: &Fault, duration: Option<Duration>) -> Result<Option<Duration>, ChaosError> {
    fault.validate()?;
    match (fault, duration) {
        (Fault::PauseNode { .. }, Some(_)) => Err(ChaosError::PauseWithDuration),
        (Fault::PauseNode { for_, .. }, None) => Ok(Some(*for_)),
        (fault, Some(_)) if is_instantaneous(fault) => Err(ChaosError::InstantaneousWithDuration { kind: kind(fault) }),
        (_, Some(duration)) if duration > MAX_FAULT_DURATION => Err(ChaosError::DurationTooLong(duration)),
        (_, Some(duration)) if duration.is_zero() => Err(ChaosError::ZeroDuration),
        (_, duration) => Ok(duration),
    }
}

/// The nodes that must hold `fault` (see the module documentation), asked of node `me`.
pub fn holders(fault: &Fault, me: &str) -> Vec<String> {
    let sides = match fault {
        Fault::KillActor { node, .. }
        | Fault::CrashNode { node }
        | Fault::RestartNode { node }
        | Fault::PauseNode { node, .. }
        | Fault::ClockSkew { node, .. } => return vec![node.clone()],
        Fault::Heal => return vec![me.to_owned()],
        Fault::Partition { a, b, .. } => (a, b),
        Fault::Drop { links, .. }
        | Fault::Delay { links, .. }
        | Fault::Duplicate { links, .. }
        | Fault::Reorder { links, .. }
        | Fault::Clog { links } => (&links.from, &links.to),
    };
    match sides {
        (NodeSet::Only(nodes), _) | (NodeSet::All, NodeSet::Only(nodes)) => nodes.iter().cloned().collect(),
        (NodeSet::All, NodeSet::All) => vec![me.to_owned()],
    }
}

/// Whether a link fault held by `node` acts on any of its links.
pub fn touches(fault: &Fault, node: &str) -> bool {
    let touches_links = |links: &Links| links.from.contains(node) || links.to.contains(node);
    match fault {
        Fault::Partition { a, b, .. } => a.contains(node) || b.contains(node),
        Fault::Drop { links, .. }
        | Fault::Delay { links, .. }
        | Fault::Duplicate { links, .. }
        | Fault::Reorder { links, .. }
        | Fault::Clog { links } => touches_links(links),
        _ => true,
    }
}

/// The two clogs that pause `node`: nothing leaves it, nothing reaches it.
pub fn pause_clogs(node: &str) -> [Fault; 2] {
    [
        Fault::Clog { links: Links::new(NodeSet::one(node), NodeSet::All) },
        Fault::Clog { links: Links::new(NodeSet::All, NodeSet::one(node)) },
    ]
}

/// One held fault.
#[derive(Clone, Debug, PartialEq)]
pub struct Held {
    pub id: u64,
    pub fault: Fault,
    pub heal_at: Option<Time>,
    pub effect: Effect,
}

/// The faults one node holds.
#[derive(Debug)]
pub struct FaultTable {
    node: String,
    next_id: u64,
    held: BTreeMap<u64, Held>,
}

impl FaultTable {
    pub fn new(node: impl Into<String>) -> Self {
        FaultTable { node: node.into(), next_id: 1, held: BTreeMap::new() }
    }

    /// Refuses a new fault when the table is full.
    pub fn check_room(&self) -> Result<(), ChaosError> {
        if self.held.len() >= MAX_HELD_FAULTS {
            return Err(ChaosError::TooManyFaults { node: self.node.clone() });
        }
        Ok(())
    }

    /// Records a fault carried out at `now` with `effect`, lasting `duration`. An
    /// instantaneous fault gets an id but is not kept. Returns its view.
    pub fn record(&mut self, fault: Fault, effect: Effect, now: Time, duration: Option<Duration>) -> FaultView {
        let id = self.next_id;
        self.next_id += 1;
        let held = Held { id, fault, heal_at: duration.map(|d| now + d), effect };
        let view = self.view(&held, now, !matches!(held.effect, Effect::Done));
        if view.active {
            self.held.insert(id, held);
        }
        view
    }

    /// The fault held under `id`.
    pub fn get(&self, id: u64) -> Option<&Held> {
        self.held.get(&id)
    }

    /// Sets what a held fault did (carried out after it was recorded); false if it is gone.
    pub fn set_effect(&mut self, id: u64, effect: Effect) -> bool {
        self.held.get_mut(&id).map(|held| held.effect = effect).is_some()
    }

    /// Removes one fault, to be undone by the caller.
    pub fn heal(&mut self, id: u64) -> Result<Held, ChaosError> {
        self.held.remove(&id).ok_or_else(|| ChaosError::UnknownFault { node: self.node.clone(), id })
    }

    /// Removes every fault, in injection order.
    pub fn heal_all(&mut self) -> Vec<Held> {
        std::mem::take(&mut self.held).into_values().collect()
    }

    /// Removes the faults whose time ran out by `now`, in injection order.
    pub fn take_due(&mut self, now: Time) -> Vec<Held> {
        let due: Vec<u64> =
            self.held.values().filter(|held| held.heal_at.is_some_and(|at| at <= now)).map(|held| held.id).collect();
        due.into_iter().filter_map(|id| self.held.remove(&id)).collect()
    }

    /// When the next fault heals itself.
    pub fn next_heal(&self) -> Option<Time> {
        self.held.values().filter_map(|held| held.heal_at).min()
    }

    /// The faults held, in injection order.
    pub fn list(&self, now: Time) -> Vec<FaultView> {
        self.held.values().map(|held| self.view(held, now, true)).collect()
    }

    /// How a held fault is listed at `now`.
    pub fn view(&self, held: &Held, now: Time, active: bool) -> FaultView {
        let heals_in_ms =
            held.heal_at.map(|at| u64::try_from(at.saturating_since(now).as_millis()).unwrap_or(u64::MAX));
        FaultView { id: held.id, node: self.node.clone(), fault: held.fault.clone(), heals_in_ms, active }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn at(n: u64) -> Time {
        Time::from_duration(ms(n))
    }

    #[test]
    fn requests_are_checked_with_precise_reasons() {
        let drop = Fault::Drop { links: Links::all(), probability: 0.5 };
        assert_eq!(check_request(&drop, None), Ok(None));
        assert_eq!(check_request(&drop, Some(ms(10))), Ok(Some(ms(10))));
        assert_eq!(check_request(&drop, Some(Duration::ZERO)), Err(ChaosError::ZeroDuration));
        let long = MAX_FAULT_DURATION + ms(1);
        assert_eq!(check_request(&drop, Some(long)), Err(ChaosError::DurationTooLong(long)));
        let pause = Fault::PauseNode { node: "a".into(), for_: ms(300) };
        assert_eq!(check_request(&pause, None), Ok(Some(ms(300))));
        assert_eq!(check_request(&pause, Some(ms(1))), Err(ChaosError::PauseWithDuration));
        let crash = Fault::CrashNode { node: "a".into() };
        assert_eq!(
            check_request(&crash, Some(ms(1))),
            Err(ChaosError::InstantaneousWithDuration { kind: "CrashNode" })
        );
        let bad = Fault::Drop { links: Links::all(), probability: 1.5 };
        assert_eq!(check_request(&bad, None), Err(ChaosError::Invalid(FaultError::InvalidProbability(1.5))));
    }

    #[test]
    fn node_faults_are_held_by_their_node_and_link_faults_by_their_sending_side() {
        assert_eq!(holders(&Fault::CrashNode { node: "b".into() }, "a"), ["b"]);
        assert_eq!(holders(&Fault::Heal, "a"), ["a"]);
        let partition = Fault::Partition { a: NodeSet::of(["x", "y"]), b: NodeSet::All, one_way: false };
        assert_eq!(holders(&partition, "a"), ["x", "y"]);
        let into = Fault::Clog { links: Links::new(NodeSet::All, NodeSet::one("z")) };
        assert_eq!(holders(&into, "a"), ["z"]);
        assert_eq!(holders(&Fault::Drop { links: Links::all(), probability: 0.1 }, "a"), ["a"]);
    }

    #[test]
    fn a_link_fault_touches_a_node_only_if_it_names_it() {
        let fault = Fault::Delay { links: Links::one("x", "y"), base: ms(1), jitter: ms(0) };
        assert!(touches(&fault, "x") && touches(&fault, "y") && !touches(&fault, "z"));
        let partition = Fault::Partition { a: NodeSet::one("x"), b: NodeSet::All, one_way: true };
        assert!(touches(&partition, "z"));
        assert!(touches(&Fault::CrashNode { node: "q".into() }, "z"), "node faults are checked by holder");
    }

    #[test]
    fn the_table_lists_heals_and_expires_faults() {
        let mut table = FaultTable::new("a");
        let drop = Fault::Drop { links: Links::all(), probability: 0.5 };
        let first = table.record(drop.clone(), Effect::Links(vec![]), at(0), Some(ms(100)));
        let second = table.record(drop.clone(), Effect::Links(vec![]), at(10), None);
        let kill = table.record(Fault::KillActor { node: "a".into(), name: "dns".into() }, Effect::Done, at(10), None);
        assert_eq!((first.id, second.id, kill.id), (1, 2, 3));
        assert!(first.active && !kill.active);
        assert_eq!(
            table.list(at(40)).iter().map(|v| (v.id, v.heals_in_ms)).collect::<Vec<_>>(),
            [(1, Some(60)), (2, None)]
        );
        assert_eq!(table.next_heal(), Some(at(100)));
        assert!(table.take_due(at(99)).is_empty());
        assert_eq!(table.take_due(at(100)).iter().map(|h| h.id).collect::<Vec<_>>(), [1]);
        assert_eq!(table.heal(3), Err(ChaosError::UnknownFault { node: "a".into(), id: 3 }));
        assert_eq!(table.heal(2).map(|h| h.id), Ok(2));
        assert!(table.heal_all().is_empty());
    }

    #[test]
    fn a_full_table_refuses_more() {
        let mut table = FaultTable::new("a");
        for _ in 0..MAX_HELD_FAULTS {
            table.record(Fault::Heal, Effect::Skewed, at(0), None);
        }
        assert_eq!(table.check_room(), Err(ChaosError::TooManyFaults { node: "a".into() }));
    }
}
