//! The chaos monkey's schedule: faults drawn from a seed at a given rate over a span of
//! time, each with the time it is healed, never breaking the schedule's exclusions.
//!
//! The schedule is computed whole before anything runs, so a failing run can print it and
//! the same seed draws it again. Exclusions, checked against what the schedule itself has
//! down at each instant:
//! - at most a minority of masters crashed or paused at once (the cluster can always elect);
//! - a node is never crashed or paused twice at once, nor skewed while skewed;
//! - nothing is injected after the span: the run's heal phase starts fault-free.

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_supervisors::Rng;
use flotilla_transport::core::fault::{Fault, Links, NodeSet};

/// What the monkey may do, and how often.
#[derive(Clone, Debug, PartialEq)]
pub struct MonkeyConfig {
    pub masters: Vec<String>,
    pub agents: Vec<String>,
    /// Mean time between two faults (drawn uniformly in `[0, 2 × mean]`).
    pub mean_interval: Duration,
    /// A fault lasts between these two before it is healed.
    pub shortest: Duration,
    pub longest: Duration,
    /// Actors that may be killed by name on any node (their supervisors restart them).
    pub actors: Vec<String>,
    /// The largest clock skew either way.
    pub max_skew: Duration,
}

impl MonkeyConfig {
    /// A fault every 2 s on average, each lasting 1–10 s, skew up to 2 s.
    pub fn new(masters: Vec<String>, agents: Vec<String>) -> MonkeyConfig {
        MonkeyConfig {
            masters,
            agents,
            mean_interval: Duration::from_secs(2),
            shortest: Duration::from_secs(1),
            longest: Duration::from_secs(10),
            actors: Vec::new(),
            max_skew: Duration::from_secs(2),
        }
    }

    fn nodes(&self) -> Vec<String> {
        self.masters.iter().chain(&self.agents).cloned().collect()
    }

    /// The most masters that may be down at once: a minority.
    fn max_masters_down(&self) -> usize {
        self.masters.len().saturating_sub(1) / 2
    }
}

/// One fault of a schedule: injected at `at`, healed at `heal_at` (`None`: instantaneous,
/// such as killing an actor).
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduledFault {
    pub at: Duration,
    pub fault: Fault,
    pub heal_at: Option<Duration>,
}

impl std::fmt::Display for ScheduledFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:>8.3} s  {:?}", self.at.as_secs_f64(), self.fault)?;
        if let Some(heal) = self.heal_at {
            write!(f, "  until {:.3} s", heal.as_secs_f64())?;
        }
        Ok(())
    }
}

/// The kinds of fault the monkey draws, equally likely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Partition,
    OneWayPartition,
    Drop,
    Delay,
    Duplicate,
    Crash,
    Pause,
    Skew,
    KillActor,
}

const KINDS: [Kind; 9] = [
    Kind::Partition,
    Kind::OneWayPartition,
    Kind::Drop,
    Kind::Delay,
    Kind::Duplicate,
    Kind::Crash,
    Kind::Pause,
    Kind::Skew,
    Kind::KillActor,
];

/// The faults of one run, in injection order, within `span`.
pub fn schedule(config: &MonkeyConfig, seed: u64, span: Duration) -> Vec<ScheduledFault> {
    let mut draw = Draw { rng: Rng::seeded(seed), config };
    let mut faults: Vec<ScheduledFault> = Vec::new();
    let mut at = Duration::ZERO;
    loop {
        at += draw.duration(Duration::ZERO, config.mean_interval * 2);
        if at >= span || config.nodes().is_empty() {
            return faults;
        }
        let heal_at = (at + draw.duration(config.shortest, config.longest)).min(span);
        // A drawn fault the exclusions forbid is skipped, not redrawn: the rate stays honest.
        if let Some(fault) = draw.fault(&faults, at, heal_at) {
            let heal_at = (!matches!(fault, Fault::KillActor { .. })).then_some(heal_at);
            faults.push(ScheduledFault { at, fault, heal_at });
        }
    }
}

struct Draw<'a> {
    rng: Rng,
    config: &'a MonkeyConfig,
}

impl Draw<'_> {
    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.rng.below(bound as u64)).unwrap_or(0)
    }

    fn duration(&mut self, low: Duration, high: Duration) -> Duration {
        let span = u64::try_from(high.saturating_sub(low).as_millis()).unwrap_or(u64::MAX);
        low + Duration::from_millis(self.rng.below(span.saturating_add(1)))
    }

    fn probability(&mut self) -> f64 {
        // Between 10% and 60%: enough to matter, not a partition in disguise.
        0.1 + self.rng.below(51) as f64 / 100.0
    }

    fn node(&mut self, nodes: &[String]) -> String {
        nodes[self.below(nodes.len())].clone()
    }

    /// A random non-empty proper subset of every node, and the rest.
    fn split(&mut self) -> (NodeSet, NodeSet) {
        let mut nodes = self.config.nodes();
        let size = 1 + self.below(nodes.len().saturating_sub(1).max(1));
        let mut side = BTreeSet::new();
        for _ in 0..size.min(nodes.len()) {
            let index = self.below(nodes.len());
            side.insert(nodes.swap_remove(index));
        }
        (NodeSet::Only(side), NodeSet::of(nodes))
    }

    fn links(&mut self) -> Links {
        let (a, b) = self.split();
        Links::new(a, b)
    }

    fn fault(&mut self, earlier: &[ScheduledFault], at: Duration, heal_at: Duration) -> Option<Fault> {
        let kind = KINDS[self.below(KINDS.len())];
        match kind {
            Kind::Partition | Kind::OneWayPartition => {
                let (a, b) = self.split();
                if matches!(b, NodeSet::Only(ref rest) if rest.is_empty()) {
                    return None;
                }
                Some(Fault::Partition { a, b, one_way: kind == Kind::OneWayPartition })
            }
            Kind::Drop => Some(Fault::Drop { links: self.links(), probability: self.probability() }),
            Kind::Duplicate => Some(Fault::Duplicate { links: self.links(), probability: self.probability() }),
            Kind::Delay => {
                let base = self.duration(Duration::from_millis(1), Duration::from_millis(200));
                let jitter = self.duration(Duration::ZERO, Duration::from_millis(200));
                Some(Fault::Delay { links: self.links(), base, jitter })
            }
            Kind::Crash | Kind::Pause => {
                let nodes = self.config.nodes();
                let node = self.node(&nodes);
                if !self.may_take_down(earlier, &node, at, heal_at) {
                    return None;
                }
                Some(match kind {
                    Kind::Crash => Fault::CrashNode { node },
                    _ => Fault::PauseNode { node, for_: heal_at - at },
                })
            }
            Kind::Skew => {
                let nodes = self.config.nodes();
                let node = self.node(&nodes);
                let busy = overlapping(earlier, at, heal_at)
                    .any(|f| matches!(&f.fault, Fault::ClockSkew { node: n, .. } if *n == node));
                if busy {
                    return None;
                }
                let max = i64::try_from(self.config.max_skew.as_nanos()).unwrap_or(i64::MAX);
                let magnitude = i64::try_from(self.rng.below(max.unsigned_abs().saturating_add(1))).unwrap_or(0);
                let skew_nanos = if self.rng.below(2) == 0 { magnitude } else { -magnitude };
                Some(Fault::ClockSkew { node, skew_nanos })
            }
            Kind::KillActor => {
                if self.config.actors.is_empty() {
                    return None;
                }
                let nodes = self.config.nodes();
                let node = self.node(&nodes);
                let name = self.config.actors[self.below(self.config.actors.len())].clone();
                Some(Fault::KillActor { node, name })
            }
        }
    }

    /// Whether `node` may be crashed or paused over `[at, heal_at)`: it is not down then
    /// already, and if it is a master, fewer than a minority of masters are.
    fn may_take_down(&self, earlier: &[ScheduledFault], node: &str, at: Duration, heal_at: Duration) -> bool {
        let down: BTreeSet<&str> = overlapping(earlier, at, heal_at).filter_map(|f| down_node(&f.fault)).collect();
        if down.contains(node) {
            return false;
        }
        let is_master = self.config.masters.iter().any(|m| m == node);
        let masters_down = down.iter().filter(|n| self.config.masters.iter().any(|m| m == *n)).count();
        !is_master || masters_down < self.config.max_masters_down()
    }
}

/// The node a crash or pause takes down.
fn down_node(fault: &Fault) -> Option<&str> {
    match fault {
        Fault::CrashNode { node } | Fault::PauseNode { node, .. } => Some(node),
        _ => None,
    }
}

/// The faults active at some instant of `[at, until)`.
fn overlapping(faults: &[ScheduledFault], at: Duration, until: Duration) -> impl Iterator<Item = &ScheduledFault> {
    faults.iter().filter(move |f| f.at < until && f.heal_at.is_some_and(|heal| heal > at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(masters: usize, agents: usize) -> MonkeyConfig {
        let mut config = MonkeyConfig::new(
            (1..=masters).map(|i| format!("m{i}")).collect(),
            (1..=agents).map(|i| format!("a{i}")).collect(),
        );
        config.actors = vec!["registry".to_owned(), "master".to_owned()];
        config
    }

    #[test]
    fn one_seed_draws_one_schedule_and_another_seed_another() {
        let config = config(3, 5);
        let span = Duration::from_secs(60);
        assert_eq!(schedule(&config, 9, span), schedule(&config, 9, span));
        assert_ne!(schedule(&config, 9, span), schedule(&config, 10, span));
    }

    #[test]
    fn never_more_than_a_minority_of_masters_down_and_nothing_after_the_span() {
        for masters in [3, 5] {
            let config = config(masters, 5);
            let span = Duration::from_secs(120);
            for seed in 0..200 {
                let faults = schedule(&config, seed, span);
                assert!(faults.iter().all(|f| f.at < span && f.heal_at.is_none_or(|h| h <= span)));
                assert!(faults.windows(2).all(|w| w[0].at <= w[1].at), "in injection order");
                for fault in &faults {
                    let at = fault.at;
                    let down: Vec<&str> = faults
                        .iter()
                        .filter(|f| f.at <= at && f.heal_at.is_some_and(|h| h > at))
                        .filter_map(|f| down_node(&f.fault))
                        .collect();
                    let unique: BTreeSet<&str> = down.iter().copied().collect();
                    assert_eq!(unique.len(), down.len(), "seed {seed}: a node down twice at {at:?}");
                    let masters_down = down.iter().filter(|n| n.starts_with('m')).count();
                    assert!(masters_down <= (masters - 1) / 2, "seed {seed}: {masters_down} masters down at {at:?}");
                }
            }
        }
    }

    #[test]
    fn every_kind_of_fault_is_drawn_and_each_is_valid() {
        let config = config(3, 5);
        let faults: Vec<ScheduledFault> =
            (0..50).flat_map(|seed| schedule(&config, seed, Duration::from_secs(60))).collect();
        let names: BTreeSet<String> =
            faults.iter().map(|f| format!("{:?}", f.fault).split([' ', '{']).next().unwrap().to_owned()).collect();
        for kind in ["Partition", "Drop", "Delay", "Duplicate", "CrashNode", "PauseNode", "ClockSkew", "KillActor"] {
            assert!(names.contains(kind), "{kind} never drawn: {names:?}");
        }
        assert!(faults.iter().any(|f| matches!(f.fault, Fault::Partition { one_way: true, .. })));
        for fault in &faults {
            assert_eq!(fault.fault.validate(), Ok(()), "{fault}");
        }
    }
}
