//! Flotilla's service scheduler in the Marathon style: long-running apps kept at their
//! instance counts, changed through deployments, placed on agents' offers under placement
//! constraints, relaunched with a backoff after failures.
//!
//! The decisions are pure (in [`core`]): the app model the REST API and the scheduler share,
//! deployments, placement and backoff. The scheduler actor and the REST API v2 that drive
//! them are the next step.

pub mod core;
