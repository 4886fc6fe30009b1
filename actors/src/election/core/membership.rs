//! Cluster membership (Raft thesis §4.1): which servers vote, as a function of the log.
//!
//! A configuration is a set of voters. It changes one server at a time, through an
//! [`EntryKind::Config`](super::EntryKind::Config) entry whose data is the whole new voter set
//! (postcard of the sorted `Vec<PeerId>`, see [`encode_voters`]). A server uses the **latest
//! configuration in its log, committed or not**, from the moment the entry is appended; a
//! truncation that removes an uncommitted configuration entry reverts to the one before it.
//!
//! [`Membership`] keeps the configuration in effect at the log's snapshot end (the bootstrap
//! configuration when nothing was compacted, or one a snapshot carries) and every
//! configuration entry after it, so that truncation, compaction and snapshot installation each
//! find the configuration they need without scanning the log.

use std::collections::BTreeSet;

use super::raft::MAX_PEERS;
use super::types::{Index, PeerId};

/// The most voters a configuration may have: [`MAX_PEERS`] and this node.
pub const MAX_VOTERS: usize = MAX_PEERS + 1;

/// The longest voter name a configuration may carry (the storage's hard-state record holds
/// the same limit for the name a vote went to).
pub const MAX_PEER_ID_BYTES: usize = 4096;

/// Why a voter set is not a valid configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VotersError {
    #[error("a configuration needs at least one voter")]
    Empty,
    #[error("a configuration has at most {MAX_VOTERS} voters")]
    TooMany,
    #[error("a voter name is empty or longer than {MAX_PEER_ID_BYTES} bytes")]
    BadName,
    #[error("configuration data is not a postcard list of voter names")]
    Undecodable,
    #[error("configuration data lists its voters out of order or twice")]
    Unsorted,
}

/// Checks the limits every configuration obeys: 1 to [`MAX_VOTERS`] voters, each named with 1
/// to [`MAX_PEER_ID_BYTES`] bytes.
pub fn validate_voters(voters: &BTreeSet<PeerId>) -> Result<(), VotersError> {
    if voters.is_empty() {
        return Err(VotersError::Empty);
    }
    if voters.len() > MAX_VOTERS {
        return Err(VotersError::TooMany);
    }
    if voters.iter().any(|voter| voter.0.is_empty() || voter.0.len() > MAX_PEER_ID_BYTES) {
        return Err(VotersError::BadName);
    }
    Ok(())
}

/// The data of a configuration entry: postcard of the voters as a sorted `Vec<PeerId>`.
pub fn encode_voters(voters: &BTreeSet<PeerId>) -> Vec<u8> {
    let sorted: Vec<&PeerId> = voters.iter().collect();
    // Serializing strings into a vector cannot fail.
    postcard::to_stdvec(&sorted).unwrap_or_default()
}

/// Reads a configuration entry's data, strictly: a postcard `Vec<PeerId>` with nothing after
/// it, sorted without duplicates, within the limits of [`validate_voters`].
pub fn decode_voters(data: &[u8]) -> Result<BTreeSet<PeerId>, VotersError> {
    let (list, rest) = postcard::take_from_bytes::<Vec<PeerId>>(data).map_err(|_| VotersError::Undecodable)?;
    if !rest.is_empty() {
        return Err(VotersError::Undecodable);
    }
    if list.windows(2).any(|pair| pair[0] >= pair[1]) {
        return Err(VotersError::Unsorted);
    }
    let voters: BTreeSet<PeerId> = list.into_iter().collect();
    validate_voters(&voters)?;
    Ok(voters)
}

/// The configurations of one log: the one at its snapshot end, then one per configuration
/// entry after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Membership {
    /// In effect at the snapshot end (the bootstrap configuration before any compaction).
    base: BTreeSet<PeerId>,
    /// Configuration entries after the snapshot end, in index order.
    changes: Vec<(Index, BTreeSet<PeerId>)>,
}

impl Membership {
    pub(crate) fn new(base: BTreeSet<PeerId>) -> Self {
        Membership { base, changes: Vec::new() }
    }

    /// The configuration in effect: the latest in the log.
    pub(crate) fn voters(&self) -> &BTreeSet<PeerId> {
        self.changes.last().map_or(&self.base, |(_, voters)| voters)
    }

    /// The index of the latest configuration entry still in the log, if any (a configuration
    /// from the snapshot or the bootstrap is committed by definition).
    pub(crate) fn latest_change(&self) -> Option<Index> {
        self.changes.last().map(|(index, _)| *index)
    }

    /// The configuration at the snapshot end.
    pub(crate) fn base(&self) -> &BTreeSet<PeerId> {
        &self.base
    }

    /// The configuration in effect once the log ends at `index` (at or after the snapshot end).
    pub(crate) fn at(&self, index: Index) -> &BTreeSet<PeerId> {
        self.changes.iter().rev().find(|(at, _)| *at <= index).map_or(&self.base, |(_, voters)| voters)
    }

    /// A configuration entry appended at `index` (after every one already held).
    pub(crate) fn push(&mut self, index: Index, voters: BTreeSet<PeerId>) {
        self.changes.retain(|(at, _)| *at < index);
        self.changes.push((index, voters));
    }

    /// The log lost every entry at or above `index`: so do its configurations. True if the
    /// configuration in effect changed.
    pub(crate) fn truncate_from(&mut self, index: Index) -> bool {
        let before = self.changes.len();
        self.changes.retain(|(at, _)| *at < index);
        self.changes.len() != before
    }

    /// The log now starts after `index`: the configuration there becomes the base.
    pub(crate) fn compact(&mut self, index: Index) {
        self.base = self.at(index).clone();
        self.changes.retain(|(at, _)| *at > index);
    }

    /// The log was replaced by a snapshot whose configuration is `voters`.
    pub(crate) fn install(&mut self, voters: BTreeSet<PeerId>) {
        self.base = voters;
        self.changes.clear();
    }
}
