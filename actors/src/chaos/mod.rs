//! Chaos: faults injected on purpose (issue 8), in the transport's `Fault` vocabulary.
//!
//! - `core/` (pure): the monkey's schedule — faults drawn from a seed at a rate, with their
//!   heal times, respecting exclusions (never more than a minority of masters down).
//!
//! `flotilla::sim` carries schedules out on simulated clusters (its randomized battery).

pub mod core;
