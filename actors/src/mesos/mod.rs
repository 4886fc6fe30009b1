//! The Mesos cluster manager's shared vocabulary: resources, task states and status updates
//! (pure, in `mesos/core`), used by the allocator, the master and the agents.

pub mod core;
