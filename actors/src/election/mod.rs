//! Leader election and log replication among the master nodes.
//!
//! [`core`] is Raft as a pure state machine: time, randomness and messages go in, a
//! [`core::Ready`] batch (persist, then send, then apply) comes out. [`actor`] is the shell: the
//! [`actor::Election`] actor ticks the core on a ractor timer, feeds it the
//! [`actor::RaftEnvelope`]s the transport delivers under the name `election` and the proposals
//! it is asked for, and carries out each `Ready` to a `RaftStorage`, the transport and an apply
//! callback.

pub mod actor;
pub mod core;
