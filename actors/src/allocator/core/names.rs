//! Resources as short vectors for the length of one round.
//!
//! [`Resources`] keys its scalars and ranges by name, which is right for the wire and wrong for
//! a loop that adds, subtracts and compares bags thousands of times per round. A round first
//! gives every resource name found on an agent a dense index ([`Names`]); a [`Bag`] is then one
//! vector of thousandths and one of ranges, and only offers are turned back into `Resources`.

use std::collections::BTreeSet;

use super::spans::Spans;
use crate::mesos::core::resources::{MILLI, Resources};

/// The scalar and range names of a round's agents, sorted, each at its index.
///
/// Names no agent has are dropped when a bag comes in: no offer can hold them, so they can
/// neither fill an agent nor stop an offer.
#[derive(Debug)]
pub(super) struct Names<'a> {
    pub scalars: Vec<&'a str>,
    pub ranges: Vec<&'a str>,
}

/// Resources in the layout of a round's [`Names`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Bag {
    /// Thousandths, one per scalar name.
    pub scalars: Vec<u64>,
    /// One per range name.
    pub ranges: Vec<Spans>,
}

/// One bag of [`super::AllocSnapshot::min_allocatable`]: an offer meets it if it holds at least
/// these scalars and at least this many values of each range resource.
#[derive(Debug)]
pub(super) struct Minimum {
    scalars: Vec<u64>,
    range_counts: Vec<u64>,
    /// False when it names a resource no agent has: no offer can meet it.
    possible: bool,
}

impl<'a> Names<'a> {
    pub fn of(agents: impl IntoIterator<Item = &'a Resources>) -> Names<'a> {
        let (mut scalars, mut ranges) = (BTreeSet::new(), BTreeSet::new());
        for total in agents {
            scalars.extend(total.scalars().map(|(name, _)| name));
            ranges.extend(total.all_ranges().map(|(name, _)| name));
        }
        Names { scalars: scalars.into_iter().collect(), ranges: ranges.into_iter().collect() }
    }

    fn scalar(&self, name: &str) -> Option<usize> {
        self.scalars.iter().position(|n| *n == name)
    }

    fn range(&self, name: &str) -> Option<usize> {
        self.ranges.iter().position(|n| *n == name)
    }

    pub fn zero(&self) -> Bag {
        Bag { scalars: vec![0; self.scalars.len()], ranges: vec![Spans::default(); self.ranges.len()] }
    }

    pub fn bag(&self, resources: &Resources) -> Bag {
        let mut bag = self.zero();
        for_known(&self.scalars, resources.scalars(), |k, milli| bag.scalars[k] = milli);
        for_known(&self.ranges, resources.all_ranges(), |j, ranges| bag.ranges[j] = Spans::of(ranges));
        bag
    }

    /// The scalars of `resources`, into `out`.
    pub fn scalars_into(&self, resources: &Resources, out: &mut [u64]) {
        out.fill(0);
        for_known(&self.scalars, resources.scalars(), |k, milli| out[k] = milli);
    }

    /// Removes the ranges of `resources` from `bag`.
    pub fn subtract_ranges(&self, bag: &mut Bag, resources: &Resources) {
        for_known(&self.ranges, resources.all_ranges(), |j, ranges| bag.ranges[j].subtract(ranges.iter()));
    }

    pub fn resources(&self, scalars: &[u64], ranges: &[Spans]) -> Resources {
        let mut out = Resources::new();
        for (name, &milli) in self.scalars.iter().zip(scalars) {
            out.add_scalar(name, milli);
        }
        for (name, spans) in self.ranges.iter().zip(ranges) {
            out.add_ranges(name, &spans.to_ranges());
        }
        out
    }

    /// Whether every scalar and range of `bag` is in `resources` (a filter's test). One
    /// forward walk over `resources`, whose names are sorted like ours: with hundreds of
    /// thousands of filters a round, a tree search per name cost twice as much.
    pub fn within(&self, bag: &Bag, resources: &Resources) -> bool {
        let mut held = resources.scalars().peekable();
        let scalars_within =
            self.scalars.iter().zip(&bag.scalars).filter(|(_, milli)| **milli > 0).all(|(name, &milli)| {
                while held.next_if(|(other, _)| other < name).is_some() {}
                held.peek().is_some_and(|(other, have)| other == name && *have >= milli)
            });
        let mut held = resources.all_ranges().peekable();
        scalars_within
            && self.ranges.iter().zip(&bag.ranges).filter(|(_, spans)| !spans.is_empty()).all(|(name, wanted)| {
                while held.next_if(|(other, _)| other < name).is_some() {}
                held.peek().is_some_and(|(other, ranges)| other == name && wanted.within(ranges))
            })
    }

    pub fn minimum(&self, resources: &Resources) -> Minimum {
        let mut min =
            Minimum { scalars: vec![0; self.scalars.len()], range_counts: vec![0; self.ranges.len()], possible: true };
        for (name, milli) in resources.scalars() {
            match (self.scalar(name), self.range(name)) {
                (Some(k), _) => min.scalars[k] = milli,
                (None, Some(j)) => min.range_counts[j] = milli.div_ceil(MILLI),
                (None, None) => min.possible = false,
            }
        }
        for (name, ranges) in resources.all_ranges() {
            match self.range(name) {
                Some(j) => min.range_counts[j] = min.range_counts[j].max(ranges.count()),
                None => min.possible = false,
            }
        }
        min
    }
}

/// Calls `found` with the index of each item whose name is in `names`. Both are sorted (a
/// `Resources` iterates its names in order), so one forward walk finds them all.
fn for_known<'n, T>(names: &[&str], items: impl Iterator<Item = (&'n str, T)>, mut found: impl FnMut(usize, T)) {
    let mut k = 0;
    for (name, item) in items {
        while k < names.len() && names[k] < name {
            k += 1;
        }
        if names.get(k) == Some(&name) {
            found(k, item);
        }
    }
}

impl Minimum {
    pub fn met_by(&self, bag: &Bag) -> bool {
        self.possible
            && self.scalars.iter().zip(&bag.scalars).all(|(min, have)| have >= min)
            && self.range_counts.iter().zip(&bag.ranges).all(|(min, have)| have.count() >= *min)
    }
}

impl Bag {
    pub fn is_empty(&self) -> bool {
        !self.has_scalars() && self.ranges.iter().all(Spans::is_empty)
    }

    pub fn has_scalars(&self) -> bool {
        self.scalars.iter().any(|&milli| milli > 0)
    }

    /// Adds `other`'s ranges.
    pub fn add_ranges(&mut self, other: &Bag) {
        for (mine, theirs) in self.ranges.iter_mut().zip(&other.ranges) {
            mine.union(theirs);
        }
    }

    /// Removes `scalars` and every range: what an offer takes from a pool.
    pub fn remove_offered(&mut self, scalars: &[u64]) {
        for (mine, taken) in self.scalars.iter_mut().zip(scalars) {
            *mine = mine.saturating_sub(*taken);
        }
        self.ranges.iter_mut().for_each(|spans| *spans = Spans::default());
    }

    /// Removes `other`, saturating at nothing.
    pub fn subtract(&mut self, other: &Bag) {
        for (mine, theirs) in self.scalars.iter_mut().zip(&other.scalars) {
            *mine = mine.saturating_sub(*theirs);
        }
        for (mine, theirs) in self.ranges.iter_mut().zip(&other.ranges) {
            mine.subtract(theirs.iter());
        }
    }

    /// The part of `self` that `want` names: the smaller of each scalar and the values of each
    /// range that both hold.
    pub fn common(&self, want: &Bag) -> Bag {
        let scalars = self.scalars.iter().zip(&want.scalars).map(|(a, b)| *a.min(b)).collect();
        let ranges = self.ranges.iter().zip(&want.ranges).map(|(mine, wanted)| mine.common(wanted)).collect();
        Bag { scalars, ranges }
    }
}
