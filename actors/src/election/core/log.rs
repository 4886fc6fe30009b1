//! The in-memory Raft log: contiguous entries from index 1, every lookup checked.

use super::types::{Entry, Index, Term};

/// The log. Entry `i` is stored at position `i - 1`; no lookup indexes blindly, so an index
/// from the network beyond the log is an ordinary `None`.
#[derive(Clone, Debug, Default)]
pub(crate) struct RaftLog {
    entries: Vec<Entry>,
}

impl RaftLog {
    /// A log from entries already checked to be contiguous from index 1.
    pub(crate) fn from_entries(entries: Vec<Entry>) -> Self {
        RaftLog { entries }
    }

    pub(crate) fn last_index(&self) -> Index {
        Index(self.entries.len() as u64)
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.last().map_or(Term(0), |entry| entry.term)
    }

    fn position(index: Index) -> Option<usize> {
        usize::try_from(index.0.checked_sub(1)?).ok()
    }

    pub(crate) fn get(&self, index: Index) -> Option<&Entry> {
        self.entries.get(Self::position(index)?)
    }

    /// The term of the entry at `index`: `Some(Term(0))` for index 0, `None` beyond the log.
    pub(crate) fn term_at(&self, index: Index) -> Option<Term> {
        if index == Index(0) { Some(Term(0)) } else { self.get(index).map(|entry| entry.term) }
    }

    /// Up to `max` entries starting at `from` (empty if `from` is beyond the log).
    pub(crate) fn slice(&self, from: Index, max: usize) -> Vec<Entry> {
        let Some(start) = Self::position(from) else { return Vec::new() };
        self.entries.iter().skip(start).take(max).cloned().collect()
    }

    /// Entries `from..=to`, clipped to the log.
    pub(crate) fn range(&self, from: Index, to: Index) -> Vec<Entry> {
        let count = to.0.saturating_sub(from.0).saturating_add(1);
        self.slice(from, usize::try_from(count).unwrap_or(usize::MAX))
    }

    /// Appends `entry`, which must be at `last_index + 1`; returns false (and changes nothing)
    /// otherwise.
    pub(crate) fn append(&mut self, entry: Entry) -> bool {
        if entry.index != self.last_index().next() {
            return false;
        }
        self.entries.push(entry);
        true
    }

    /// Removes every entry at or above `index` (index 0 is never removed: there is none).
    pub(crate) fn truncate_from(&mut self, index: Index) {
        if let Some(keep) = Self::position(index) {
            self.entries.truncate(keep);
        }
    }

    /// The largest index `i <= index` (clipped to the log) whose term is at most `term`, with
    /// that term. Used on both sides of fast backtracking; index 0 (term 0) always qualifies.
    pub(crate) fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let upto = usize::try_from(index.min(self.last_index()).0).unwrap_or(usize::MAX);
        // Terms never decrease along a log, so the qualifying entries are a prefix.
        let Some(candidates) = self.entries.get(..upto) else { return (Index(0), Term(0)) };
        let count = candidates.partition_point(|entry| entry.term <= term);
        match count.checked_sub(1).and_then(|position| candidates.get(position)) {
            Some(entry) => (entry.index, entry.term),
            None => (Index(0), Term(0)),
        }
    }
}
