//! The Marathon scheduler's pure cores: no runtime, no I/O, no clock reads, no RNG
//! construction; time and seeds are arguments.
//!
//! - The app model: path ids ([`path`]), timestamps ([`timestamp`]), the app definition with
//!   its defaults, deprecated aliases, partial updates, read model and task environment
//!   ([`app`]), its JSON reader with Marathon's error shapes ([`app_json`]), and its semantic
//!   validation ([`validation`]).
//! - [`deployment`]: deployment plans between two sets of apps in dependency order, locks
//!   and conflicts, rollback, and a run's progress and events.
//! - [`upgrade`]: one app's instance-level decisions: rolling replacement within
//!   `minimumHealthCapacity`/`maximumOverCapacity`, scaling with `killSelection`.
//! - [`constraints`]: `[field, OPERATOR(, value)]` placement constraints, parsed into typed
//!   rules and matched against an agent and the app's placed instances.
//! - [`placement`]: offer matching as a pure function from a snapshot (offers, demands) to a
//!   plan (launches, unused offers, per-offer rejection reasons), plus the launch-attempt
//!   statistics and the `/v2/queue` item view built from them.
//! - [`backoff`]: the launch backoff (Marathon's rate limiter) per run spec and configuration.

pub mod app;
pub mod app_json;
pub mod backoff;
pub mod constraints;
pub mod deployment;
pub mod path;
pub mod placement;
pub mod rest;
pub mod scheduler;
pub mod timestamp;
pub mod upgrade;
pub mod validation;

#[cfg(test)]
mod app_tests;
#[cfg(test)]
mod deployment_tests;
#[cfg(test)]
mod placement_tests;
#[cfg(test)]
mod scheduler_tests;
