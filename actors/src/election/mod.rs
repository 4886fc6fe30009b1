//! Leader election and log replication among the master nodes.
//!
//! [`core`] is Raft as a pure state machine: time, randomness and messages go in, a
//! [`core::Ready`] batch (persist, then send, then apply) comes out. The election actor (the
//! shell that carries a `Ready` to disk and to the transport) comes next.

pub mod core;
