//! Task drivers: how an agent's executor starts, watches, signals and cleans up one task.
//!
//! The executor only ever talks to a [`TaskDriver`]; which one runs is chosen when the agent
//! starts:
//! - the isolating driver (`isolation`): a native command in its own pid, mount, uts and ipc
//!   namespaces, under cgroup cpu and memory limits (v1 or v2, detected), with its output
//!   captured and rotated in the sandbox — the default when running as root;
//! - the plain driver: the same process handling without namespaces or cgroups, for agents
//!   run without root; it says exactly which isolation is missing;
//! - the mock driver ([`mock::MockDriver`]): tasks with scripted lifetimes and exit codes on
//!   the tokio clock, for simulated clusters.
//!
//! A task outlives the agent process that launched it: [`TaskHandle`] is what the agent
//! checkpoints, and every method works on a handle from an earlier agent process.

pub mod isolation;
pub mod mock;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

/// What to run, as Mesos's `CommandInfo` has it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCommand {
    /// `true`: `value` runs as `/bin/sh -c value`; `false`: `value` is the program and
    /// `arguments` its argv (argv[0] included, as in Mesos).
    pub shell: bool,
    pub value: String,
    pub arguments: Vec<String>,
}

/// Size-based rotation of a task's `stdout` and `stderr` files in its sandbox: when a file
/// reaches `max_bytes` it becomes `stdout.1` (the older ones shift up to `stdout.<keep>`,
/// and the oldest is dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRotation {
    pub max_bytes: u64,
    pub keep: u32,
}

impl Default for LogRotation {
    fn default() -> Self {
        LogRotation { max_bytes: 10 * 1024 * 1024, keep: 5 }
    }
}

/// Everything a driver needs to start one task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LaunchSpec {
    pub task_id: String,
    pub command: TaskCommand,
    /// The task's whole environment (the executor has already added Mesos's and Marathon's
    /// variables); nothing of the agent's own environment leaks in.
    pub env: BTreeMap<String, String>,
    /// The task's working directory (`MESOS_SANDBOX`); it exists when `launch` is called.
    pub sandbox: PathBuf,
    /// The driver's private directory for this task (its pid and exit records); it exists when
    /// `launch` is called and lives as long as the agent's record of the task.
    pub run_dir: PathBuf,
    /// CPU limit in thousandths of a CPU (1000 = one CPU).
    pub cpu_millis: u64,
    /// Memory limit in bytes.
    pub mem_bytes: u64,
    /// The hostname the task sees (its own uts namespace).
    pub hostname: String,
    pub logs: LogRotation,
}

/// What the agent checkpoints about a launched task, enough for a later agent process to
/// watch, signal and clean it up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskHandle {
    pub task_id: String,
    /// The host pid of the task's top process (the driver's own supervisor of the task, for
    /// the isolating driver); 0 for the mock driver.
    pub pid: u32,
    /// That process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22), so
    /// a reused pid is never mistaken for the task.
    pub start_ticks: u64,
    pub run_dir: PathBuf,
    /// The task's cgroup directories (empty without cgroups).
    pub cgroups: Vec<PathBuf>,
}

/// How a task ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskExit {
    /// The exit code of the task's command, if it exited.
    pub code: Option<i32>,
    /// The signal that ended it, if a signal did.
    pub signal: Option<i32>,
    /// The kernel's OOM killer killed a process of the task (its memory limit was hit).
    pub oom_killed: bool,
    /// A line for the task's status message (e.g. "exited with status 3").
    pub message: String,
}

impl TaskExit {
    pub fn exited(code: i32) -> TaskExit {
        TaskExit {
            code: Some(code),
            signal: None,
            oom_killed: false,
            message: format!("Command exited with status {code}"),
        }
    }

    pub fn signalled(signal: i32) -> TaskExit {
        TaskExit {
            code: None,
            signal: Some(signal),
            oom_killed: false,
            message: format!("Command terminated with signal {signal}"),
        }
    }

    pub fn succeeded(&self) -> bool {
        self.code == Some(0) && !self.oom_killed
    }
}

/// Which signal [`TaskDriver::signal`] sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM to the task's processes: ask it to stop (the grace period starts).
    Terminate,
    /// SIGKILL to every process of the task, the whole tree.
    Kill,
}

/// What isolation a driver provides, and what it cannot, in words for the operator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsolationReport {
    /// e.g. "pid", "mount", "uts", "ipc" namespaces; "cpu", "memory" cgroup limits (v1/v2).
    pub provided: Vec<String>,
    /// What is missing and why, e.g. "memory limits: not running as root".
    pub missing: Vec<String>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DriverError {
    #[error("cannot start the task: {0}")]
    Launch(String),
    #[error("task {0} is not running")]
    NotRunning(String),
    #[error("{0}")]
    Io(String),
}

/// A future a driver hands out; boxed so drivers are chosen at run time.
pub type DriverFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Starts, watches, signals and cleans up tasks. Implementations are cheap to share (`Arc`).
pub trait TaskDriver: Send + Sync + 'static {
    /// "isolating", "plain" or "mock".
    fn name(&self) -> &'static str;

    fn isolation(&self) -> IsolationReport;

    /// Starts the task and returns once it is running (its process exists); the handle is
    /// what the agent checkpoints.
    fn launch(&self, spec: &LaunchSpec) -> Result<TaskHandle, DriverError>;

    /// Resolves when the task has exited (at once if it already has), also for a handle from
    /// an earlier agent process. Cancel-safe: dropping it stops nothing.
    fn wait(&self, handle: &TaskHandle) -> DriverFuture<TaskExit>;

    /// Whether the task of this handle is still running (same pid and start time).
    fn is_running(&self, handle: &TaskHandle) -> bool;

    /// Sends a stop signal to the task; [`StopSignal::Kill`] kills its whole process tree.
    fn signal(&self, handle: &TaskHandle, signal: StopSignal) -> Result<(), DriverError>;

    /// Releases what the task held (cgroups, run files) once it has exited.
    fn cleanup(&self, handle: &TaskHandle);

    /// Kills and cleans up every task this driver started on this agent whose id is not in
    /// `keep` (processes and cgroups left from records the agent no longer has); returns the
    /// ids it cleaned up.
    fn reap_orphans(&self, keep: &BTreeSet<String>) -> Vec<String>;
}
