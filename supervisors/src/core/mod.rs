//! The pure cores of supervision: no async, no tokio, no clock reads, no RNG construction.
//!
//! Everything here takes time and randomness as arguments and returns decisions, so it can
//! be unit-tested exhaustively and replayed deterministically. The `tidy` test enforces that
//! this folder stays free of I/O and runtimes.

pub mod backoff;
pub mod exit;
pub mod intensity;
pub mod spec;
pub mod supervisor;
pub mod time;
