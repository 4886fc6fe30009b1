//! Where typed exit reasons meet ractor's supervision events.
//!
//! An actor ends in one of three ways in ractor: it stops (`stop(reason)` — its `post_stop`
//! runs), it fails (a handler returns `Err` or panics — no `post_stop`), or it is killed.
//! [`exit_reason`] turns each into an [`ExitReason`]. To exit with a chosen reason, an actor
//! either returns `Err(exit_error(reason))` from a handler or calls [`stop_with`].

use ractor::{ActorCell, ActorProcessingErr, SupervisionEvent};

pub use crate::core::exit::{Disposition, ExitReason, ExitSignal, receive_exit_signal};

/// Marks an error's text as an encoded exit reason: ractor forwards failures to monitors as
/// plain text, and the reason must survive that trip.
const MARKER: &str = "flotilla-exit:";

/// A handler error that carries the exact exit reason.
#[derive(Debug)]
pub struct ExitError(pub ExitReason);

impl std::fmt::Display for ExitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{MARKER}{}", self.0.to_stop_reason())
    }
}

impl std::error::Error for ExitError {}

/// The error a handler returns to exit with `reason` (skipping `post_stop`, like a crash).
pub fn exit_error(reason: ExitReason) -> ActorProcessingErr {
    Box::new(ExitError(reason))
}

/// Stops `actor` in an orderly way (its `post_stop` runs) with `reason`.
pub fn stop_with(actor: &ActorCell, reason: &ExitReason) {
    match reason {
        ExitReason::Killed => actor.kill(),
        ExitReason::Normal => actor.stop(None),
        other => actor.stop(Some(other.to_stop_reason())),
    }
}

/// The reason carried by a failure: an [`ExitError`] (typed, or as text after a monitor's
/// copy), otherwise a crash described by the error's text.
pub fn failure_reason(err: &ActorProcessingErr) -> ExitReason {
    if let Some(ExitError(reason)) = err.downcast_ref::<ExitError>() {
        return reason.clone();
    }
    let text = err.to_string();
    match text.strip_prefix(MARKER) {
        Some(encoded) => ExitReason::from_stop_reason(Some(encoded)),
        None => ExitReason::Failed(text),
    }
}

/// The actor and reason of a termination event; `None` for other events.
pub fn exit_reason(event: &SupervisionEvent) -> Option<(&ActorCell, ExitReason)> {
    match event {
        SupervisionEvent::ActorTerminated(cell, _, reason) => {
            Some((cell, ExitReason::from_stop_reason(reason.as_deref())))
        }
        SupervisionEvent::ActorFailed(cell, err) => Some((cell, failure_reason(err))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_reasons_survive_the_trip_through_text() {
        for reason in [ExitReason::Shutdown, ExitReason::Kill, ExitReason::ShutdownWith("why".into())] {
            let err = exit_error(reason.clone());
            assert_eq!(failure_reason(&err), reason);
            let as_monitor_sees_it: ActorProcessingErr = From::from(err.to_string());
            assert_eq!(failure_reason(&as_monitor_sees_it), reason);
        }
        let panic: ActorProcessingErr = From::from("index out of bounds");
        assert_eq!(failure_reason(&panic), ExitReason::Failed("index out of bounds".into()));
    }
}
