//! Flotilla's components, each a pure core (a plain state machine with no runtime, no I/O, no
//! clock reads and no RNG construction) driven by a thin actor shell.
//!
//! - [`election`]: leader election and log replication (Raft) among the master nodes.
//! - [`storage`]: the durable-storage seam of the Raft log: a checksummed append-only record
//!   format (pure, in `storage/core`), a file-backed store and a simulated disk with fault hooks.
//!
//! Cores live in `core/` folders; `tests/tidy.rs` keeps them free of runtimes, I/O, clocks,
//! random-order collections and RNG construction, so they are unit tested and simulated on
//! virtual time from a seed.

pub mod election;
pub mod storage;
