//! Which connection carries a node pair's session: the pure rules.
//!
//! Both nodes of a pair may dial at once, and a peer may dial again because it believes the
//! old connection dead (it restarted, or its failure detector fired first). The rules, from
//! the point of view of the node that receives a peer's `Hello`:
//!
//! 1. **A new boot id replaces at once.** The peer restarted; the old session belongs to a
//!    dead incarnation, whatever this node believes about it.
//! 2. **Simultaneous dial: the lower node id's dial wins.** If this node is still dialing the
//!    peer, it refuses the peer's dial when its own id is lower, and accepts it (abandoning its
//!    own dial) when it is higher. Both nodes apply the same rule, so exactly one connection
//!    survives.
//! 3. **A redial of the same incarnation replaces the old session**, except that a session
//!    dialed by the preferred (lower-id) node is not displaced by a dial from the other side:
//!    that dial is most likely the loser of a simultaneous dial that arrived late. If the
//!    session really is dead, this node's failure detector will end it and the dial after
//!    that succeeds; the cost is bounded by the detection time.
//!
//! The dialer installs whatever the acceptor welcomed: the acceptor has already decided.

/// Who opened a connection, seen from this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Dialed,
    Accepted,
}

/// This node's view of its session with one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// No session and no dial in progress.
    Idle,
    /// A dial is in progress and no session is up.
    Dialing,
    Up {
        boot_id: u64,
        origin: Origin,
    },
}

/// What to do with an incoming connection whose handshake named `boot_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept { replaces: Replaces },
    Refuse(RefuseReason),
}

/// What accepting does to the session in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replaces {
    Nothing,
    /// The peer restarted: everything tied to the old incarnation is gone.
    StaleIncarnation,
    /// The same incarnation dialed again: the old connection is dropped.
    OldConnection,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefuseReason {
    /// This node is dialing the peer and its own dial wins the tie-break.
    SimultaneousDial,
    /// A session dialed by the preferred node is up.
    SessionUp,
}

impl RefuseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefuseReason::SimultaneousDial => "simultaneous dial: the lower node id dials",
            RefuseReason::SessionUp => "a session dialed by the lower node id is up",
        }
    }
}

/// Whether `me` is the node whose dial wins a tie with `peer`.
pub fn preferred_dialer(me: &str, peer: &str) -> bool {
    me < peer
}

/// The verdict on a peer's incoming dial.
pub fn judge_incoming(me: &str, peer: &str, view: View, boot_id: u64) -> Verdict {
    match view {
        View::Idle => Verdict::Accept { replaces: Replaces::Nothing },
        View::Dialing if preferred_dialer(me, peer) => Verdict::Refuse(RefuseReason::SimultaneousDial),
        View::Dialing => Verdict::Accept { replaces: Replaces::Nothing },
        View::Up { boot_id: current, .. } if current != boot_id => {
            Verdict::Accept { replaces: Replaces::StaleIncarnation }
        }
        View::Up { origin, .. } => {
            let current_dialed_by_preferred = match origin {
                Origin::Dialed => preferred_dialer(me, peer),
                Origin::Accepted => preferred_dialer(peer, me),
            };
            let incoming_dialed_by_preferred = preferred_dialer(peer, me);
            if current_dialed_by_preferred && !incoming_dialed_by_preferred {
                Verdict::Refuse(RefuseReason::SessionUp)
            } else {
                Verdict::Accept { replaces: Replaces::OldConnection }
            }
        }
    }
}

/// What installing a connection this node dialed (and the peer welcomed) replaces.
pub fn replaced_by_dial(view: View, boot_id: u64) -> Replaces {
    match view {
        View::Idle | View::Dialing => Replaces::Nothing,
        View::Up { boot_id: current, .. } if current != boot_id => Replaces::StaleIncarnation,
        View::Up { .. } => Replaces::OldConnection,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP_DIALED: View = View::Up { boot_id: 7, origin: Origin::Dialed };
    const UP_ACCEPTED: View = View::Up { boot_id: 7, origin: Origin::Accepted };

    #[test]
    fn verdict_table() {
        use Replaces::*;
        use Verdict::*;
        let cases: [(&str, &str, View, u64, Verdict); 10] = [
            ("a", "b", View::Idle, 7, Accept { replaces: Nothing }),
            // simultaneous dial: the lower id keeps its own dial
            ("a", "b", View::Dialing, 7, Refuse(RefuseReason::SimultaneousDial)),
            ("b", "a", View::Dialing, 7, Accept { replaces: Nothing }),
            // a restarted peer always replaces
            ("a", "b", UP_DIALED, 8, Accept { replaces: StaleIncarnation }),
            ("b", "a", UP_ACCEPTED, 8, Accept { replaces: StaleIncarnation }),
            // same incarnation: a session dialed by the lower id is kept against the higher
            ("a", "b", UP_DIALED, 7, Refuse(RefuseReason::SessionUp)),
            // ...but the lower id may always redial
            ("b", "a", UP_ACCEPTED, 7, Accept { replaces: OldConnection }),
            ("b", "a", UP_DIALED, 7, Accept { replaces: OldConnection }),
            // a session dialed by the higher id is replaced by either side's redial
            ("a", "b", UP_ACCEPTED, 7, Accept { replaces: OldConnection }),
            ("b", "a", UP_DIALED, 7, Accept { replaces: OldConnection }),
        ];
        for (me, peer, view, boot, expected) in cases {
            assert_eq!(judge_incoming(me, peer, view, boot), expected, "{me} judging {peer} in {view:?} boot {boot}");
        }
    }

    /// Both nodes dial at once: exactly one of the two connections is accepted, and it is
    /// the lower id's.
    #[test]
    fn a_simultaneous_dial_leaves_one_connection() {
        let at_low = judge_incoming("a", "b", View::Dialing, 1); // b's dial arrives at a
        let at_high = judge_incoming("b", "a", View::Dialing, 1); // a's dial arrives at b
        assert!(matches!(at_low, Verdict::Refuse(_)));
        assert!(matches!(at_high, Verdict::Accept { .. }));
    }

    #[test]
    fn a_welcomed_dial_replaces_by_incarnation() {
        assert_eq!(replaced_by_dial(View::Dialing, 1), Replaces::Nothing);
        assert_eq!(replaced_by_dial(UP_ACCEPTED, 8), Replaces::StaleIncarnation);
        assert_eq!(replaced_by_dial(UP_ACCEPTED, 7), Replaces::OldConnection);
    }
}
