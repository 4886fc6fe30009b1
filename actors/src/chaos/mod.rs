//! Chaos: faults injected on purpose (issue 8), in the transport's `Fault` vocabulary.
//!
//! - `core/` (pure): the monkey's schedule — faults drawn from a seed at a rate, with their
//!   heal times, respecting exclusions (never more than a minority of masters down) — and
//!   `faults.rs`, the chaos actor's decisions: which nodes hold a fault, what a valid request
//!   is, the table of held faults with ids and heal times.
//! - `actor.rs`: the chaos actor of a live node (only where chaos is enabled): carries out
//!   faults, heals them, forwards other nodes' parts, runs the monkey, publishes events.
//! - `protocol.rs`: its requests and replies, in-process and over the transport.
//!
//! `flotilla::sim` carries schedules out on simulated clusters (its randomized battery).

pub mod actor;
pub mod core;
pub mod protocol;
