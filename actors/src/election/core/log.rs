//! The in-memory Raft log: a snapshot's end (index 0, term 0 before any compaction), then the
//! contiguous entries after it, every lookup checked.

use super::types::{Entry, Index, SnapshotMeta, Term};

/// The log. Entry `i` is stored at position `i - snapshot.index - 1`; no lookup indexes
/// blindly, so an index from the network beyond the log (or inside the snapshot) is an
/// ordinary `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct RaftLog {
    snapshot: SnapshotMeta,
    entries: Vec<Entry>,
}

impl RaftLog {
    /// A log from a snapshot's end and the entries after it, already checked to be
    /// contiguous from `snapshot.index + 1`.
    pub(crate) fn from_parts(snapshot: Option<SnapshotMeta>, entries: Vec<Entry>) -> Self {
        RaftLog { snapshot: snapshot.unwrap_or_default(), entries }
    }

    /// Where the log's compacted prefix ends (index 0, term 0 if nothing was compacted).
    pub(crate) fn snapshot(&self) -> SnapshotMeta {
        self.snapshot
    }

    pub(crate) fn last_index(&self) -> Index {
        Index(self.snapshot.index.0.saturating_add(self.entries.len() as u64))
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.last().map_or(self.snapshot.term, |entry| entry.term)
    }

    fn position(&self, index: Index) -> Option<usize> {
        let offset = index.0.checked_sub(self.snapshot.index.0)?.checked_sub(1)?;
        usize::try_from(offset).ok()
    }

    pub(crate) fn get(&self, index: Index) -> Option<&Entry> {
        self.entries.get(self.position(index)?)
    }

    /// The term of the entry at `index`: the snapshot's term at its index (term 0 for index 0),
    /// `None` inside the compacted prefix or beyond the log.
    pub(crate) fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.snapshot.index { Some(self.snapshot.term) } else { self.get(index).map(|entry| entry.term) }
    }

    /// Up to `max` entries starting at `from` (empty if `from` is compacted or beyond the log).
    pub(crate) fn slice(&self, from: Index, max: usize) -> Vec<Entry> {
        let Some(start) = self.position(from) else { return Vec::new() };
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

    /// Removes every entry at or above `index` (the compacted prefix is never removed).
    pub(crate) fn truncate_from(&mut self, index: Index) {
        if let Some(keep) = self.position(index) {
            self.entries.truncate(keep);
        }
    }

    /// Drops the entries through `index` (which must be in the log), which a snapshot now
    /// covers; returns the snapshot's end, or `None` (changing nothing) for any other index.
    pub(crate) fn compact(&mut self, index: Index) -> Option<SnapshotMeta> {
        let term = self.get(index)?.term;
        let drop = self.position(index)?.checked_add(1)?;
        self.entries.drain(..drop);
        self.snapshot = SnapshotMeta { index, term };
        Some(self.snapshot)
    }

    /// Replaces the whole log by a snapshot received from the leader.
    pub(crate) fn install(&mut self, snapshot: SnapshotMeta) {
        self.entries.clear();
        self.snapshot = snapshot;
    }

    /// The largest index `i <= index` (clipped to the log) whose term is at most `term`, with
    /// that term; the snapshot's end when no entry after it qualifies. Used on both sides of
    /// fast backtracking (a compacted prefix is committed, so it matches every leader's log).
    pub(crate) fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let upto = index.min(self.last_index()).0.saturating_sub(self.snapshot.index.0);
        let upto = usize::try_from(upto).unwrap_or(usize::MAX);
        // Terms never decrease along a log, so the qualifying entries are a prefix.
        let Some(candidates) = self.entries.get(..upto) else { return (self.snapshot.index, self.snapshot.term) };
        let count = candidates.partition_point(|entry| entry.term <= term);
        match count.checked_sub(1).and_then(|position| candidates.get(position)) {
            Some(entry) => (entry.index, entry.term),
            None => (self.snapshot.index, self.snapshot.term),
        }
    }
}
