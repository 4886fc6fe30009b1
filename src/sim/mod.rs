//! `flotilla::sim`: whole clusters in one process, for test authors and experiments.
//!
//! [`SimBuilder`] starts N masters and M agents as real nodes — the same supervision trees
//! `flotilla master` and `flotilla agent` run (transport, control plane with the registry and
//! the election, the leader's cluster manager and Marathon scheduler, agents, discovery) —
//! joined by [`SimNet`](flotilla_transport::SimNet), the in-memory network with the
//! transport's fault vocabulary. Masters keep their Raft logs on simulated disks that survive
//! a crash with what was synced (and lose what was not); agents run tasks with the mock
//! driver, whose script decides how each task behaves.
//!
//! Time: run a simulation on tokio's paused clock (`#[tokio::test(flavor = "current_thread",
//! start_paused = true)]`, or [`run`]), and timers, timeouts and the network's delays all
//! move in virtual time — a minute of cluster life takes milliseconds. Each node has its own
//! clock with a fixed wall origin, so timestamps do not depend on when the test runs, and a
//! clock can be skewed ([`SimCluster::skew_clock`]).
//!
//! Faults: [`SimCluster::inject`] carries out any `Fault` of the transport's vocabulary
//! (link faults through the network, crashes, restarts, pauses, clock skew, killed actors)
//! and [`SimCluster::heal`] undoes it. [`battery`] runs the randomized battery: a workload
//! under the chaos monkey's seeded schedule, with safety and liveness invariants.
//!
//! Waiting: [`wait_until`] polls a condition on the (virtual) clock with a bound and fails
//! with what it waited for; nothing in a simulation sleeps a guessed duration.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use flotilla::sim::{SimBuilder, wait_until};
//!
//! let cluster = SimBuilder::new(7).masters(3).agents(2).start().await?;
//! let leader = wait_until("a leader", Duration::from_secs(30), async || cluster.leader().await).await;
//! let created = cluster.marathon("POST", "/v2/apps", serde_json::json!({"id": "/web", "cmd": "serve", "instances": 2})).await;
//! # Ok(()) }
//! ```

pub mod battery;
mod chaos;
mod cluster;

pub use battery::{BatteryConfig, SeedReport, run_seed};
pub use chaos::Injected;
pub use cluster::{SimBuilder, SimCluster};
/// Waits on the (virtual) clock for a condition, with a bound.
pub use flotilla_supervisors::wait_until;

/// The wall time every simulated node's clock starts at (2026-01-01T00:00:00Z), so that
/// timestamps in a simulation are the same from run to run.
pub const WALL_ORIGIN_MILLIS: u64 = 1_767_225_600_000;

/// Runs `simulation` on a fresh single-threaded runtime whose clock is paused (virtual time
/// that jumps to the next timer whenever every task waits), and returns its output.
pub fn run<F: std::future::Future>(simulation: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds");
    runtime.block_on(simulation)
}
