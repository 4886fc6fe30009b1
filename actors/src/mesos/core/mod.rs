//! The Mesos vocabulary, pure: resources and roles, task states and status updates, health
//! checks, and the environment a task is given.

pub mod health;
pub mod resources;
pub mod task;

#[cfg(test)]
mod tests;

pub use resources::{Ranges, ResourceError, Resources, RoleResources, UNRESERVED, parse_resources, validate_role};
pub use task::{TaskState, TaskStatus, UpdateReason, UpdateSource};
