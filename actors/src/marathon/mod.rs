//! Flotilla's service scheduler in the Marathon style: long-running apps kept at their
//! instance count, placed on agents' offers under placement constraints, relaunched with a
//! backoff after failures.
//!
//! The decisions are pure (in [`core`]): constraint matching, offer matching with its
//! `/v2/queue` diagnostics, and the launch backoff.

pub mod core;
