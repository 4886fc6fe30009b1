//! Planted bugs: checking the checkers (reliability.md §7.8). Each [`PlantedBug`] names a
//! mistake a real implementation could make; code at the bug's site asks [`planted`] and, when
//! that bug is switched on, makes the mistake on purpose. A battery that does not report a
//! violation within 1,000 seeds of a planted bug has an oracle or a fault schedule too weak to
//! trust.
//!
//! The switch exists only with the test-only `planted-bugs` cargo feature. Without it
//! [`planted`] is a constant `false`, so every site compiles to the correct code and no build
//! that ships can be switched into a planted bug.

/// The bugs that can be planted, one at a time, for a whole process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PlantedBug {
    /// A Raft voter grants a vote in a term in which it already voted for another candidate.
    DoubleVote,
    /// The Raft leader commits (so the registry acknowledges) an entry as soon as it holds it,
    /// before a quorum has it durably.
    AckBeforeQuorum,
    /// An agent acts on commands of a term older than the newest it has seen.
    AgentIgnoresFence,
    /// The service scheduler gives a replacement task the id of the task it replaces.
    ReusedInstanceId,
    /// The master applies a duplicated terminal status update again, releasing the task's
    /// resources twice.
    NonIdempotentStatus,
    /// A supervisor restarts a `temporary` child when a sibling's crash restarts the group.
    TemporaryChildRestarted,
    /// A restarting agent skips its checkpoint and kills the tasks still running on its host.
    RecoveryKillsTasks,
}

impl PlantedBug {
    /// Every bug, in the order of the report.
    pub const ALL: [PlantedBug; 7] = [
        PlantedBug::DoubleVote,
        PlantedBug::AckBeforeQuorum,
        PlantedBug::AgentIgnoresFence,
        PlantedBug::ReusedInstanceId,
        PlantedBug::NonIdempotentStatus,
        PlantedBug::TemporaryChildRestarted,
        PlantedBug::RecoveryKillsTasks,
    ];

    /// The bug's name on command lines and in reports (kebab case).
    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::DoubleVote => "double-vote",
            PlantedBug::AckBeforeQuorum => "ack-before-quorum",
            PlantedBug::AgentIgnoresFence => "agent-ignores-fence",
            PlantedBug::ReusedInstanceId => "reused-instance-id",
            PlantedBug::NonIdempotentStatus => "non-idempotent-status",
            PlantedBug::TemporaryChildRestarted => "temporary-child-restarted",
            PlantedBug::RecoveryKillsTasks => "recovery-kills-tasks",
        }
    }

    /// The bug named `name`, if any.
    pub fn from_name(name: &str) -> Option<PlantedBug> {
        PlantedBug::ALL.into_iter().find(|bug| bug.name() == name)
    }

    #[cfg(feature = "planted-bugs")]
    fn code(self) -> usize {
        PlantedBug::ALL.iter().position(|bug| *bug == self).map_or(0, |position| position + 1)
    }
}

#[cfg(feature = "planted-bugs")]
static ACTIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Switches `bug` on for the whole process (`None`: every site correct again).
#[cfg(feature = "planted-bugs")]
pub fn plant(bug: Option<PlantedBug>) {
    ACTIVE.store(bug.map_or(0, PlantedBug::code), std::sync::atomic::Ordering::SeqCst);
}

/// Whether the site of `bug` should make its mistake now.
#[inline]
pub fn planted(bug: PlantedBug) -> bool {
    #[cfg(feature = "planted-bugs")]
    {
        ACTIVE.load(std::sync::atomic::Ordering::Relaxed) == bug.code()
    }
    #[cfg(not(feature = "planted-bugs"))]
    {
        let _ = bug;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bug_has_a_unique_name_that_parses_back() {
        for bug in PlantedBug::ALL {
            assert_eq!(PlantedBug::from_name(bug.name()), Some(bug));
        }
        assert_eq!(PlantedBug::from_name("no-such-bug"), None);
    }

    #[cfg(not(feature = "planted-bugs"))]
    #[test]
    fn without_the_feature_no_bug_is_ever_planted() {
        assert!(PlantedBug::ALL.into_iter().all(|bug| !planted(bug)));
    }
}
