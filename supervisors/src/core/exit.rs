//! Exit reasons and the rules by which a process receives an exit signal.
//!
//! Mirrors the Erlang Reference Manual, "Processes" (see `reference/otp-supervision.md`
//! §4.4). ractor carries a stopped actor's reason as an optional string and a failed actor's
//! reason as a boxed error; [`ExitReason::to_stop_reason`] and [`ExitReason::from_stop_reason`]
//! are the one place where the typed reason meets ractor's string channel.

use std::fmt;

/// Why a process terminated. Typed, so restart decisions never parse free text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ExitReason {
    /// Finished its work (`normal`). Not restarted when transient.
    Normal,
    /// Asked to stop by its supervisor or stopped itself in an orderly way (`shutdown`).
    Shutdown,
    /// An orderly stop with a detail (`{shutdown, Term}`).
    ShutdownWith(String),
    /// Terminated by an untrappable kill (`killed`).
    Killed,
    /// The reason `kill` travelling over a link: trappable, and not renamed to `killed`.
    Kill,
    /// Crashed: a panic, a handler error or an explicit failure.
    Failed(String),
    /// The target of a link or monitor did not exist (`noproc`).
    NoProc,
    /// The connection to the target's node was lost; the target may still be alive.
    NoConnection,
}

const SHUTDOWN_WITH: &str = "shutdown:";
const FAILED: &str = "failed:";

impl ExitReason {
    /// Whether a transient child that exits with this reason stays down.
    pub fn is_orderly(&self) -> bool {
        matches!(self, Self::Normal | Self::Shutdown | Self::ShutdownWith(_))
    }

    /// The string handed to ractor's `stop(Some(..))`.
    pub fn to_stop_reason(&self) -> String {
        match self {
            Self::Normal => "normal".into(),
            Self::Shutdown => "shutdown".into(),
            Self::ShutdownWith(detail) => format!("{SHUTDOWN_WITH}{detail}"),
            Self::Killed => "killed".into(),
            Self::Kill => "kill".into(),
            Self::Failed(detail) => format!("{FAILED}{detail}"),
            Self::NoProc => "noproc".into(),
            Self::NoConnection => "noconnection".into(),
        }
    }

    /// Reads the reason of an actor that stopped (rather than failed).
    ///
    /// `None` is ractor's plain `stop(None)`, which is `normal`. A string this crate did not
    /// write (for example ractor's own `"Drained"`) is an orderly stop with that detail.
    pub fn from_stop_reason(reason: Option<&str>) -> Self {
        let Some(reason) = reason else {
            return Self::Normal;
        };
        match reason {
            "normal" => Self::Normal,
            "shutdown" => Self::Shutdown,
            "killed" => Self::Killed,
            "kill" => Self::Kill,
            "noproc" => Self::NoProc,
            "noconnection" => Self::NoConnection,
            other => {
                if let Some(detail) = other.strip_prefix(SHUTDOWN_WITH) {
                    Self::ShutdownWith(detail.into())
                } else if let Some(detail) = other.strip_prefix(FAILED) {
                    Self::Failed(detail.into())
                } else {
                    Self::ShutdownWith(other.into())
                }
            }
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ShutdownWith(detail) => write!(f, "{{shutdown, {detail}}}"),
            Self::Failed(detail) => write!(f, "failed: {detail}"),
            other => f.write_str(&other.to_stop_reason()),
        }
    }
}

/// An exit signal on its way to a receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitSignal {
    pub reason: ExitReason,
    /// Sent because a linked process terminated (rather than by an explicit `exit/2`).
    pub via_link: bool,
    /// The sender is the receiver itself (`exit(self(), Reason)`).
    pub from_self: bool,
}

/// What the receiver does with an exit signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// The signal has no effect.
    Drop,
    /// The receiver terminates with this reason.
    Terminate(ExitReason),
    /// The receiver traps exits: the signal becomes an `{'EXIT', From, Reason}` message.
    Deliver,
}

/// The reception rules of an exit signal (Erlang Reference Manual, "Receiving Exit Signals").
///
/// `link_active` is false when the signal came over a link that has since been removed.
pub fn receive_exit_signal(signal: &ExitSignal, trapping: bool, link_active: bool) -> Disposition {
    if signal.via_link && !link_active {
        return Disposition::Drop;
    }
    let reason = &signal.reason;
    // An explicit `exit(Pid, kill)` cannot be trapped and is renamed `killed`.
    if !signal.via_link && *reason == ExitReason::Kill {
        return Disposition::Terminate(ExitReason::Killed);
    }
    if *reason == ExitReason::Normal {
        return if signal.from_self {
            Disposition::Terminate(ExitReason::Normal)
        } else if trapping {
            Disposition::Deliver
        } else {
            Disposition::Drop
        };
    }
    if trapping { Disposition::Deliver } else { Disposition::Terminate(reason.clone()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(reason: ExitReason, via_link: bool) -> ExitSignal {
        ExitSignal { reason, via_link, from_self: false }
    }

    #[test]
    fn stop_reasons_round_trip() {
        let reasons = [
            ExitReason::Normal,
            ExitReason::Shutdown,
            ExitReason::ShutdownWith("maintenance".into()),
            ExitReason::Killed,
            ExitReason::Kill,
            ExitReason::Failed("boom: at line 3".into()),
            ExitReason::NoProc,
            ExitReason::NoConnection,
        ];
        for reason in reasons {
            assert_eq!(ExitReason::from_stop_reason(Some(&reason.to_stop_reason())), reason);
        }
        assert_eq!(ExitReason::from_stop_reason(None), ExitReason::Normal);
        assert_eq!(ExitReason::from_stop_reason(Some("Drained")), ExitReason::ShutdownWith("Drained".into()));
    }

    #[test]
    fn orderly_reasons_are_exactly_normal_and_shutdowns() {
        assert!(ExitReason::Normal.is_orderly());
        assert!(ExitReason::Shutdown.is_orderly());
        assert!(ExitReason::ShutdownWith("x".into()).is_orderly());
        for reason in [
            ExitReason::Killed,
            ExitReason::Kill,
            ExitReason::Failed("x".into()),
            ExitReason::NoProc,
            ExitReason::NoConnection,
        ] {
            assert!(!reason.is_orderly(), "{reason}");
        }
    }

    #[test]
    fn explicit_kill_is_untrappable_and_renamed() {
        let kill = signal(ExitReason::Kill, false);
        assert_eq!(receive_exit_signal(&kill, true, true), Disposition::Terminate(ExitReason::Killed));
        assert_eq!(receive_exit_signal(&kill, false, true), Disposition::Terminate(ExitReason::Killed));
    }

    #[test]
    fn linked_kill_is_trappable_and_keeps_its_name() {
        let kill = signal(ExitReason::Kill, true);
        assert_eq!(receive_exit_signal(&kill, true, true), Disposition::Deliver);
        assert_eq!(receive_exit_signal(&kill, false, true), Disposition::Terminate(ExitReason::Kill));
    }

    #[test]
    fn normal_from_another_process_is_ignored_unless_trapping() {
        for via_link in [false, true] {
            let normal = signal(ExitReason::Normal, via_link);
            assert_eq!(receive_exit_signal(&normal, false, true), Disposition::Drop);
            assert_eq!(receive_exit_signal(&normal, true, true), Disposition::Deliver);
        }
        let own = ExitSignal { reason: ExitReason::Normal, via_link: false, from_self: true };
        assert_eq!(receive_exit_signal(&own, true, true), Disposition::Terminate(ExitReason::Normal));
    }

    #[test]
    fn signals_over_removed_links_are_dropped() {
        let crash = signal(ExitReason::Failed("x".into()), true);
        assert_eq!(receive_exit_signal(&crash, false, false), Disposition::Drop);
        assert_eq!(receive_exit_signal(&crash, false, true), Disposition::Terminate(ExitReason::Failed("x".into())));
    }
}
