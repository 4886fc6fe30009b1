//! Range resources (ports) as the allocator computes with them.
//!
//! A round subtracts every allocation's ports from its agent and every offer's from what is
//! left, so range arithmetic runs thousands of times per round on lists of a few dozen
//! fragments. [`Spans`] holds the same inclusive, sorted, disjoint, non-adjacent pairs as
//! [`Ranges`] and does each operation in one merge pass with one allocation at most.

use crate::mesos::core::resources::Ranges;

/// Inclusive `(begin, end)` pairs, sorted, disjoint and non-adjacent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Spans(Vec<(u64, u64)>);

impl Spans {
    pub fn of(ranges: &Ranges) -> Spans {
        Spans(ranges.iter().collect())
    }

    /// As [`Ranges`]; the pairs arrive sorted with gaps, so each insertion is an append.
    pub fn to_ranges(&self) -> Ranges {
        let mut out = Ranges::default();
        for &(begin, end) in &self.0 {
            out.insert(begin, end);
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many values the spans hold.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|(begin, end)| end - begin + 1).sum()
    }

    /// Adds `other`'s values, merging overlapping and adjacent spans.
    pub fn union(&mut self, other: &Spans) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            self.0.clone_from(&other.0);
            return;
        }
        let (a, b) = (&self.0, &other.0);
        let mut all: Vec<(u64, u64)> = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let next = if j == b.len() || (i < a.len() && a[i] <= b[j]) {
                i += 1;
                a[i - 1]
            } else {
                j += 1;
                b[j - 1]
            };
            match all.last_mut() {
                Some((_, end)) if next.0 <= end.saturating_add(1) => *end = (*end).max(next.1),
                _ => all.push(next),
            }
        }
        self.0 = all;
    }

    /// Removes the values of `holes` (sorted, disjoint pairs, as [`Spans`] and [`Ranges`]
    /// iterate them; values not here are ignored) in one pass over both.
    pub fn subtract(&mut self, holes: impl IntoIterator<Item = (u64, u64)>) {
        let mut holes = holes.into_iter().peekable();
        if self.is_empty() || holes.peek().is_none() {
            return;
        }
        // Each hole splits at most one span in two.
        let mut kept = Vec::with_capacity(self.0.len() + holes.size_hint().0);
        for &(mut begin, end) in &self.0 {
            loop {
                match holes.peek() {
                    Some(&(_, hole_end)) if hole_end < begin => {
                        holes.next();
                    }
                    Some(&(hole_begin, hole_end)) if hole_begin <= end => {
                        if hole_begin > begin {
                            kept.push((begin, hole_begin - 1));
                        }
                        if hole_end >= end {
                            // The hole may reach into the next span: keep it.
                            break;
                        }
                        begin = hole_end + 1;
                        holes.next();
                    }
                    _ => {
                        kept.push((begin, end));
                        break;
                    }
                }
            }
        }
        self.0 = kept;
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.0.iter().copied()
    }

    /// The values both hold.
    pub fn common(&self, other: &Spans) -> Spans {
        let mut out = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < self.0.len() && j < other.0.len() {
            let (a, b) = (self.0[i], other.0[j]);
            let (begin, end) = (a.0.max(b.0), a.1.min(b.1));
            if begin <= end {
                out.push((begin, end));
            }
            if a.1 < b.1 { i += 1 } else { j += 1 }
        }
        Spans(out)
    }

    /// Whether every value here is in `ranges`.
    pub fn within(&self, ranges: &Ranges) -> bool {
        let mut outer = ranges.iter().peekable();
        self.0.iter().all(|&(begin, end)| {
            while outer.next_if(|&(_, outer_end)| outer_end < begin).is_some() {}
            outer.peek().is_some_and(|&(outer_begin, outer_end)| outer_begin <= begin && end <= outer_end)
        })
    }
}
