//! Records written by earlier versions of Flotilla, read so that an upgrade keeps them: an
//! agent's checkpointed tasks (their processes keep running across the agent's restart) and
//! the launcher's records in the registry. Each format names its version where it is stored
//! (the checkpoint's magic, the launcher record's leading bytes); readers try the current
//! format and fall back to these.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::core::Resources;
use super::core::health::HealthCheck;
use super::protocol::TaskInfo;
use crate::agent::driver::TaskCommand;

/// `TaskInfo` before fetch URIs and discovery info (checkpoint `FLTASK01`, launcher records
/// without a version prefix).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskInfoV1 {
    pub task_id: String,
    pub name: String,
    pub framework_id: String,
    pub role: String,
    pub command: TaskCommand,
    pub resources: Resources,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub kill_grace_ms: u64,
    pub health_check: Option<HealthCheck>,
}

impl From<TaskInfoV1> for TaskInfo {
    fn from(v1: TaskInfoV1) -> TaskInfo {
        TaskInfo {
            task_id: v1.task_id,
            name: v1.name,
            framework_id: v1.framework_id,
            role: v1.role,
            command: v1.command,
            resources: v1.resources,
            env: v1.env,
            labels: v1.labels,
            kill_grace_ms: v1.kill_grace_ms,
            health_check: v1.health_check,
            fetch: Vec::new(),
            discovery: None,
        }
    }
}
