//! How a task's end becomes its terminal Mesos state.

use crate::agent::driver::TaskExit;
use crate::mesos::core::{TaskState, UpdateReason};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitOutcome {
    pub state: TaskState,
    pub reason: Option<UpdateReason>,
    pub message: String,
}

/// `killing`: the agent was asked to kill the task before it ended. An OOM kill is a
/// failure with Mesos's memory-limitation reason even during a kill: the limit, not the kill,
/// ended it.
pub fn exit_outcome(exit: &TaskExit, killing: bool) -> ExitOutcome {
    let message = exit.message.clone();
    if exit.oom_killed {
        let message = format!("Memory limit exceeded: {message}");
        return ExitOutcome {
            state: TaskState::Failed,
            reason: Some(UpdateReason::ContainerLimitationMemory),
            message,
        };
    }
    if killing {
        return ExitOutcome { state: TaskState::Killed, reason: None, message };
    }
    if exit.succeeded() {
        ExitOutcome { state: TaskState::Finished, reason: None, message }
    } else {
        ExitOutcome { state: TaskState::Failed, reason: Some(UpdateReason::CommandExecutorFailed), message }
    }
}
