//! Task states and status updates as Mesos defines them (`mesos.proto`: `TaskState`,
//! `TaskStatus.Source`, `TaskStatus.Reason`), with their protobuf numbers and names.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A task's state; the discriminants are Mesos's protobuf numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskState {
    /// Accepted by the master, not yet started by the agent (master-side initial state).
    Staging = 6,
    Starting = 0,
    Running = 1,
    /// Being killed, in its grace period (for frameworks with `TASK_KILLING_STATE`).
    Killing = 8,
    Finished = 2,
    Failed = 3,
    Killed = 4,
    /// The task description was invalid.
    Error = 7,
    /// Legacy: the task may or may not be running (for frameworks that are not partition aware).
    Lost = 5,
    /// The task never launched (e.g. its agent went away first).
    Dropped = 9,
    /// Its agent is unreachable; the task may still be running.
    Unreachable = 10,
    /// Known to be gone (its agent was removed).
    Gone = 11,
    GoneByOperator = 12,
    /// The master has no record of the task.
    Unknown = 13,
}

impl TaskState {
    pub const ALL: [TaskState; 14] = [
        TaskState::Staging,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Killing,
        TaskState::Finished,
        TaskState::Failed,
        TaskState::Killed,
        TaskState::Error,
        TaskState::Lost,
        TaskState::Dropped,
        TaskState::Unreachable,
        TaskState::Gone,
        TaskState::GoneByOperator,
        TaskState::Unknown,
    ];

    /// Mesos's name, e.g. `TASK_RUNNING`.
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Staging => "TASK_STAGING",
            TaskState::Starting => "TASK_STARTING",
            TaskState::Running => "TASK_RUNNING",
            TaskState::Killing => "TASK_KILLING",
            TaskState::Finished => "TASK_FINISHED",
            TaskState::Failed => "TASK_FAILED",
            TaskState::Killed => "TASK_KILLED",
            TaskState::Error => "TASK_ERROR",
            TaskState::Lost => "TASK_LOST",
            TaskState::Dropped => "TASK_DROPPED",
            TaskState::Unreachable => "TASK_UNREACHABLE",
            TaskState::Gone => "TASK_GONE",
            TaskState::GoneByOperator => "TASK_GONE_BY_OPERATOR",
            TaskState::Unknown => "TASK_UNKNOWN",
        }
    }

    pub fn from_name(name: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The protobuf number.
    pub fn number(self) -> i32 {
        self as i32
    }

    /// Terminal states never change again (Mesos: `protobuf::isTerminalState`; `TASK_LOST`
    /// counts as terminal there, and a task that comes back is reported afresh).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Error
                | TaskState::Lost
                | TaskState::Dropped
                | TaskState::Gone
                | TaskState::GoneByOperator
        )
    }

    /// Whether the task (may) hold resources on its agent.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            TaskState::Staging | TaskState::Starting | TaskState::Running | TaskState::Killing | TaskState::Unreachable
        )
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who produced a status update (`TaskStatus.Source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateSource {
    Master,
    Agent,
    Executor,
}

impl UpdateSource {
    pub fn name(self) -> &'static str {
        match self {
            UpdateSource::Master => "SOURCE_MASTER",
            UpdateSource::Agent => "SOURCE_SLAVE",
            UpdateSource::Executor => "SOURCE_EXECUTOR",
        }
    }
}

/// Why a status update was sent (`TaskStatus.Reason`, the ones Flotilla produces).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateReason {
    CommandExecutorFailed,
    ContainerLaunchFailed,
    ContainerLimitationMemory,
    ExecutorTerminated,
    TaskKilledDuringLaunch,
    TaskInvalid,
    TaskUnknown,
    AgentRemoved,
    AgentRestarted,
    AgentUnknown,
    AgentDisconnected,
    Reconciliation,
    InvalidOffers,
    ResourcesUnknown,
    MasterDisconnected,
    /// A running task's health changed (the update carries `healthy`).
    TaskHealthCheckStatusUpdated,
}

impl UpdateReason {
    /// Mesos's name (the agent is still a "slave" in these names).
    pub fn name(self) -> &'static str {
        match self {
            UpdateReason::CommandExecutorFailed => "REASON_COMMAND_EXECUTOR_FAILED",
            UpdateReason::ContainerLaunchFailed => "REASON_CONTAINER_LAUNCH_FAILED",
            UpdateReason::ContainerLimitationMemory => "REASON_CONTAINER_LIMITATION_MEMORY",
            UpdateReason::ExecutorTerminated => "REASON_EXECUTOR_TERMINATED",
            UpdateReason::TaskKilledDuringLaunch => "REASON_TASK_KILLED_DURING_LAUNCH",
            UpdateReason::TaskInvalid => "REASON_TASK_INVALID",
            UpdateReason::TaskUnknown => "REASON_TASK_UNKNOWN",
            UpdateReason::AgentRemoved => "REASON_SLAVE_REMOVED",
            UpdateReason::AgentRestarted => "REASON_SLAVE_RESTARTED",
            UpdateReason::AgentUnknown => "REASON_SLAVE_UNKNOWN",
            UpdateReason::AgentDisconnected => "REASON_SLAVE_DISCONNECTED",
            UpdateReason::Reconciliation => "REASON_RECONCILIATION",
            UpdateReason::InvalidOffers => "REASON_INVALID_OFFERS",
            UpdateReason::ResourcesUnknown => "REASON_RESOURCES_UNKNOWN",
            UpdateReason::MasterDisconnected => "REASON_MASTER_DISCONNECTED",
            UpdateReason::TaskHealthCheckStatusUpdated => "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED",
        }
    }
}

/// One status update of a task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub task_id: String,
    pub agent_id: String,
    pub state: TaskState,
    pub source: UpdateSource,
    pub reason: Option<UpdateReason>,
    pub message: String,
    /// Identifies an update that must be acknowledged (agent updates); `None` for updates that
    /// are not (reconciliation answers, master-generated updates).
    pub uuid: Option<u128>,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The task's health, on updates from its health check (`None` elsewhere).
    pub healthy: Option<bool>,
}
