//! The agent's decisions, pure: the status-update stream (each task's updates in order, the
//! head re-sent with backoff until acknowledged), the term fence against deposed leaders, how
//! a task's exit becomes a Mesos state, the environment a task is given, how probe results
//! become health, the fetcher's plan and cache, the HTTP client's parsing, and the launches
//! answered as never received (refused if they come late).

pub mod env;
pub mod fence;
pub mod fetch;
pub mod fetch_cache;
pub mod health;
pub mod http;
pub mod lifecycle;
pub mod never_launched;
pub mod updates;

#[cfg(test)]
mod tests;

pub use env::{Placement, task_environment};
pub use fence::{StaleTerm, TermFence};
pub use lifecycle::{ExitOutcome, exit_outcome};
pub use updates::{Acknowledged, UpdateStream};
