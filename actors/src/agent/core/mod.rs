//! The agent's decisions, pure: the status-update stream (each task's updates in order, the
//! head re-sent with backoff until acknowledged), the term fence against deposed leaders, how
//! a task's exit becomes a Mesos state, the environment a task is given, and how probe results
//! become health.

pub mod env;
pub mod fence;
pub mod health;
pub mod lifecycle;
pub mod updates;

#[cfg(test)]
mod tests;

pub use env::{Placement, task_environment};
pub use fence::{StaleTerm, TermFence};
pub use lifecycle::{ExitOutcome, exit_outcome};
pub use updates::{Acknowledged, UpdateStream};
