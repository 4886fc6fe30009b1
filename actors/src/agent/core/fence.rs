//! Commands from a deposed leader must not act: every command carries its leader's term, and
//! the agent remembers (durably) the newest term it has seen.

use flotilla_supervisors::planted::{PlantedBug, planted};

/// A command from an older term than the newest seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a command of term {command} is older than term {newest}, the newest this agent has seen")]
pub struct StaleTerm {
    pub command: u64,
    pub newest: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TermFence {
    newest: u64,
}

impl TermFence {
    pub fn new(newest: u64) -> TermFence {
        TermFence { newest }
    }

    pub fn newest(&self) -> u64 {
        self.newest
    }

    /// Admits a command of `term`; `Ok(true)` when the term is new (to be persisted before the
    /// command acts, and a sign of a new leader).
    pub fn admit(&mut self, term: u64) -> Result<bool, StaleTerm> {
        if term < self.newest && !planted(PlantedBug::AgentIgnoresFence) {
            return Err(StaleTerm { command: term, newest: self.newest });
        }
        let raised = term > self.newest;
        self.newest = self.newest.max(term);
        Ok(raised)
    }
}
