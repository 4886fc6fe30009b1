//! OTP supervision on ractor, the node-scoped runtime context, and the seams for time and
//! randomness.
//!
//! ractor provides actors, a parent link and one-per-pair monitors; this crate adds what
//! Erlang/OTP has and ractor lacks:
//!
//! - [`supervisor`]: OTP supervisors (`one_for_one`, `one_for_all`, `rest_for_one`,
//!   `simple_one_for_one`), restart intensity with escalation, ordered start and reverse
//!   stop with per-child shutdown policies, `auto_shutdown`, and optional restart backoff.
//!   The decisions live in the pure [`core`]; the actor is a thin shell.
//! - [`process`]: Erlang links, stackable monitors and exit signals with `trap_exit`.
//! - [`node`]: a node's context — identity, name registry, clock, seeded RNG — so that many
//!   nodes coexist in one process.
//! - [`clock`] and [`rng`]: the seams through which time and randomness enter.
//! - [`call`]: request-reply that always carries a timeout.
//! - [`tree`]: renders a live supervision tree.
//! - [`planted`]: bugs planted on purpose (test-only feature) to prove the checkers catch them.

pub mod call;
pub mod clock;
pub mod core;
pub mod exit;
pub mod node;
pub mod planted;
pub mod process;
pub mod registry;
pub mod rng;
pub mod supervisor;
pub mod tree;
pub mod wait;

pub use crate::call::{CallError, call};
pub use crate::clock::{Clock, ManualClock, TokioClock};
pub use crate::core::backoff::Backoff;
pub use crate::core::spec::{AutoShutdown, ChildId, ChildKind, Restart, Shutdown, Strategy, SupervisorFlags};
pub use crate::core::supervisor::{ChildCounts, ChildOpError, ChildStatus};
pub use crate::core::time::Time;
pub use crate::exit::{ExitReason, exit_error, stop_with};
pub use crate::node::{InvariantSink, Node, NodeId};
pub use crate::process::{MonitorRef, Signal};
pub use crate::rng::Rng;
pub use crate::supervisor::{
    ChildInfo, ChildSpec, ChildTarget, DynArgs, StartContext, StartError, Started, Supervisor, SupervisorError,
    SupervisorRef, SupervisorSpec,
};
pub use crate::wait::wait_until;
