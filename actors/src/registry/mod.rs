//! The registry: the replicated state machine on top of Raft (DESIGN.md §6). Every master
//! applies the same committed commands in the same order to its own copy, so all copies agree
//! on the cluster's state (apps, groups, deployments, jobs, agents, tasks, frameworks, users,
//! secrets), its revisions and the watch history that feeds every consumer.
//!
//! [`core`] is the state machine itself, a pure function of the committed log: a key-value
//! store with etcd-style revisions, compare-and-swap transactions, exactly-once retries, a
//! bounded watch history and snapshots.
//!
//! [`actor`] is the shell: it applies what the election actor commits, answers clients
//! (writes acknowledged once committed, linearizable reads by read index, watches), and
//! forwards a follower's requests to the leader. [`protocol`] is what travels to and from it.
//!
//! # Not yet
//!
//! - Taking snapshots to compact the log (the store can snapshot and restore itself).

pub mod actor;
pub mod client;
pub mod core;
pub mod protocol;
