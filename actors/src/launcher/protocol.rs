//! What operators ask of the launcher (over the transport, on the leading master).

use flotilla_transport::{RemoteCall, RemoteMessage};
use serde::{Deserialize, Serialize};

use crate::mesos::core::TaskStatus;
use crate::mesos::protocol::TaskInfo;

/// The name the launcher is exported under on the leading master.
pub const LAUNCHER_NAME: &str = "launcher";

/// The framework id the launcher keeps across leaders.
pub const LAUNCHER_FRAMEWORK_ID: &str = "flotilla-launcher";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LauncherRequest {
    /// Run this task once (its `framework_id` and `role` are set by the launcher; an empty
    /// `task_id` gets one made from the name).
    Run(Box<TaskInfo>),
    Kill {
        task_id: String,
    },
    List,
}

impl RemoteMessage for LauncherRequest {
    const TAG: u32 = 0x4c41_554e; // "LAUN"
}

impl RemoteCall for LauncherRequest {
    type Reply = LauncherReply;
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LauncherReply {
    /// Accepted and recorded; launched at the next fitting offer.
    Accepted {
        task_id: String,
    },
    Killing {
        task_id: String,
    },
    Tasks(Vec<LaunchRecord>),
    /// The request is invalid or cannot be served; nothing changed.
    Refused(String),
}

/// What the launcher keeps about one requested task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LaunchRecord {
    pub task: TaskInfo,
    /// The launch left for an agent (set in the registry before it leaves).
    pub launched: bool,
    pub kill: bool,
    pub latest: Option<TaskStatus>,
}
