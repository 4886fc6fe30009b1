//! The leading master's decisions, pure: agents registering and re-registering, their
//! liveness (pings), the task table fed by status updates, frameworks and their calls, offers
//! from batched allocation rounds (`allocator::core::allocate`), offer timeouts and rescinds,
//! and the recovery after a failover, when the new leader learns from re-registering agents
//! what runs where before it trusts its records or makes offers.
//!
//! It also keeps the service-discovery entries of running tasks, agents and frameworks
//! (`discovery`), which the shell writes to the registry.
//!
//! Time, randomness and input are arguments; every effect comes back as an [`Action`].

pub mod discovery;
mod master;
#[cfg(test)]
mod tests;

pub use master::{Action, AgentRecord, MasterConfig, MasterCore, valid_task_id};
