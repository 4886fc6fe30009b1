//! What operators ask of the launcher (over the transport, on the leading master).

use flotilla_transport::{RemoteCall, RemoteMessage};
use serde::{Deserialize, Serialize};

use crate::mesos::core::TaskStatus;
use crate::mesos::legacy::TaskInfoV1;
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

/// The leading bytes of a launcher record in the current format. A record of the first format
/// (no prefix) begins with its task id's length, never zero (ids are never empty), so the
/// leading zero byte tells the two apart.
const RECORD_FORMAT_V2: &[u8; 3] = b"\0L2";

impl LaunchRecord {
    /// The record's value in the registry.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = RECORD_FORMAT_V2.to_vec();
        bytes.extend(postcard::to_stdvec(self).expect("launcher records serialize"));
        bytes
    }

    /// A record as [`encode`](Self::encode) or an earlier version wrote it.
    pub fn decode(bytes: &[u8]) -> Result<LaunchRecord, String> {
        match bytes.strip_prefix(RECORD_FORMAT_V2) {
            Some(body) => postcard::from_bytes(body).map_err(|e| e.to_string()),
            None => postcard::from_bytes::<LaunchRecordV1>(bytes).map(Into::into).map_err(|e| e.to_string()),
        }
    }
}

/// A [`LaunchRecord`] of the first format.
#[derive(Serialize, Deserialize)]
struct LaunchRecordV1 {
    task: TaskInfoV1,
    launched: bool,
    kill: bool,
    latest: Option<TaskStatus>,
}

impl From<LaunchRecordV1> for LaunchRecord {
    fn from(v1: LaunchRecordV1) -> LaunchRecord {
        let LaunchRecordV1 { task, launched, kill, latest } = v1;
        LaunchRecord { task: task.into(), launched, kill, latest }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::driver::TaskCommand;
    use crate::mesos::core::Resources;

    #[test]
    fn records_of_both_formats_decode() {
        let v1 = TaskInfoV1 {
            task_id: "job.1".to_owned(),
            name: "job".to_owned(),
            framework_id: LAUNCHER_FRAMEWORK_ID.to_owned(),
            role: "*".to_owned(),
            command: TaskCommand { shell: true, value: "true".to_owned(), arguments: Vec::new() },
            resources: Resources::default(),
            env: Default::default(),
            labels: Default::default(),
            kill_grace_ms: 0,
            health_check: None,
        };
        let old = postcard::to_stdvec(&LaunchRecordV1 { task: v1.clone(), launched: true, kill: false, latest: None })
            .unwrap();
        let record = LaunchRecord::decode(&old).unwrap();
        assert_eq!(record, LaunchRecord { task: v1.into(), launched: true, kill: false, latest: None });
        assert_eq!(LaunchRecord::decode(&record.encode()).unwrap(), record);
        assert!(LaunchRecord::decode(b"\0L2\xff").is_err());
    }
}
