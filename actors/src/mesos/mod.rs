//! The Mesos cluster manager's shared vocabulary: resources, task states and status updates
//! (pure, in `mesos/core`), and the messages between masters, agents and frameworks
//! (`protocol`).

pub mod core;
pub mod legacy;
pub mod protocol;
