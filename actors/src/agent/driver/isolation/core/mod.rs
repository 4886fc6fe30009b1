//! The isolating driver's pure decisions, as functions of text and numbers: no file, process
//! or clock is touched here, so every cgroup layout (v1, v2, hybrid) and every record format
//! is unit tested on any host — including cgroup v2, which the development machine does not
//! mount as its main hierarchy.
//!
//! - [`mountinfo`]: which cgroup hierarchies `/proc/self/mountinfo` shows, and the mode
//!   (v1, v2 or hybrid) they make.
//! - [`limits`]: the cgroup files and values for a task's cpu and memory limits, per mode.
//! - [`procfs`]: `/proc/<pid>/stat` (start time, state) and the flat-keyed cgroup files
//!   (`memory.events`, `memory.oom_control`, `cgroup.events`).
//! - [`logs`]: size rotation of a task's `stdout`/`stderr`.
//! - [`records`]: the run-directory records (exit, leader), the shim's command line and its
//!   handshake lines, and task-id validation.

pub mod limits;
pub mod logs;
pub mod mountinfo;
pub mod procfs;
pub mod records;

#[cfg(test)]
mod tests;
