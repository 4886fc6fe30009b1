//! A driver for simulated clusters: tasks are entries in a table whose lifetimes, exit codes
//! and reactions to signals come from a script, and whose time is the tokio clock (virtual in
//! simulations). The table lives in the driver, not in the agent: share one `Arc<MockDriver>`
//! across an agent's restarts and its tasks keep "running", as processes outlive an agent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{DriverError, DriverFuture, IsolationReport, LaunchSpec, StopSignal, TaskDriver, TaskExit, TaskHandle};

/// How one mock task behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MockBehaviour {
    /// The task exits on its own after this long (`None`: runs until stopped).
    pub lifetime: Option<Duration>,
    /// Its exit code when it exits on its own.
    pub exit_code: i32,
    /// It exits on its own by hitting its memory limit instead (OOM kill).
    pub oom: bool,
    /// It ignores SIGTERM (only SIGKILL stops it).
    pub ignores_term: bool,
    /// `launch` fails with this message.
    pub launch_error: Option<String>,
}

impl Default for MockBehaviour {
    /// Runs until stopped and stops on SIGTERM.
    fn default() -> Self {
        MockBehaviour { lifetime: None, exit_code: 0, oom: false, ignores_term: false, launch_error: None }
    }
}

/// Picks each task's behaviour from its launch spec (e.g. from its command line).
pub type MockScript = Arc<dyn Fn(&LaunchSpec) -> MockBehaviour + Send + Sync>;

struct MockTask {
    behaviour: MockBehaviour,
    started: Instant,
    exit: watch::Sender<Option<TaskExit>>,
}

/// The mock driver; see the module documentation.
pub struct MockDriver {
    script: MockScript,
    tasks: Arc<Mutex<BTreeMap<String, MockTask>>>,
    /// Successful launches per task id.
    launches: Mutex<BTreeMap<String, u32>>,
}

impl MockDriver {
    pub fn new(script: MockScript) -> Arc<MockDriver> {
        Arc::new(MockDriver { script, tasks: Arc::default(), launches: Mutex::default() })
    }

    /// Every task runs until stopped.
    pub fn forever() -> Arc<MockDriver> {
        MockDriver::new(Arc::new(|_| MockBehaviour::default()))
    }

    /// Tasks whose process has not exited.
    pub fn running(&self) -> BTreeSet<String> {
        self.table().iter().filter(|(_, t)| t.exit.borrow().is_none()).map(|(id, _)| id.clone()).collect()
    }

    /// How many launches succeeded since the driver was made.
    pub fn launches(&self) -> u64 {
        self.launch_counts().values().map(|count| u64::from(*count)).sum()
    }

    /// How many times each task id was launched (a correct cluster never launches one twice).
    pub fn launch_counts(&self) -> BTreeMap<String, u32> {
        self.launches.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Ends a running task now, as if its process exited with `exit` (a crash from outside).
    pub fn end(&self, task_id: &str, exit: TaskExit) {
        if let Some(task) = self.table().get(task_id) {
            finish(task, exit);
        }
    }

    fn table(&self) -> MutexGuard<'_, BTreeMap<String, MockTask>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Records the task's exit unless it already has one.
fn finish(task: &MockTask, exit: TaskExit) {
    task.exit.send_if_modified(|current| {
        if current.is_some() {
            return false;
        }
        *current = Some(exit);
        true
    });
}

/// The exit a task reaches on its own at the end of its lifetime.
fn natural_exit(behaviour: &MockBehaviour) -> TaskExit {
    if behaviour.oom {
        TaskExit { oom_killed: true, message: "Memory limit exceeded".to_owned(), ..TaskExit::signalled(9) }
    } else {
        TaskExit::exited(behaviour.exit_code)
    }
}

impl TaskDriver for MockDriver {
    fn name(&self) -> &'static str {
        "mock"
    }

    fn isolation(&self) -> IsolationReport {
        IsolationReport { provided: Vec::new(), missing: vec!["everything: simulated tasks run no process".to_owned()] }
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<TaskHandle, DriverError> {
        let behaviour = (self.script)(spec);
        if let Some(error) = &behaviour.launch_error {
            return Err(DriverError::Launch(error.clone()));
        }
        let mut table = self.table();
        if table.get(&spec.task_id).is_some_and(|t| t.exit.borrow().is_none()) {
            return Err(DriverError::Launch(format!("task {} is already running", spec.task_id)));
        }
        let (exit, _) = watch::channel(None);
        table.insert(spec.task_id.clone(), MockTask { behaviour, started: Instant::now(), exit });
        *self.launches.lock().unwrap_or_else(|e| e.into_inner()).entry(spec.task_id.clone()).or_default() += 1;
        Ok(TaskHandle {
            task_id: spec.task_id.clone(),
            pid: 0,
            start_ticks: 0,
            run_dir: spec.run_dir.clone(),
            cgroups: Vec::new(),
        })
    }

    fn wait(&self, handle: &TaskHandle) -> DriverFuture<TaskExit> {
        let tasks = Arc::clone(&self.tasks);
        let task_id = handle.task_id.clone();
        Box::pin(async move {
            let found = {
                let table = tasks.lock().unwrap_or_else(|e| e.into_inner());
                table.get(&task_id).map(|t| (t.exit.subscribe(), t.behaviour.clone(), t.started))
            };
            // A task the driver never launched (or forgot) is gone, like a vanished process.
            let Some((mut exit, behaviour, started)) = found else {
                return TaskExit { message: "no such task".to_owned(), ..TaskExit::signalled(9) };
            };
            let natural_end = behaviour.lifetime.map(|life| started + life);
            loop {
                if let Some(done) = exit.borrow_and_update().clone() {
                    return done;
                }
                let ended = async {
                    match natural_end {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = ended => {
                        if let Some(task) = tasks.lock().unwrap_or_else(|e| e.into_inner()).get(&task_id) {
                            finish(task, natural_exit(&behaviour));
                        }
                    }
                    changed = exit.changed() => {
                        if changed.is_err() {
                            return TaskExit::signalled(9);
                        }
                    }
                }
            }
        })
    }

    fn is_running(&self, handle: &TaskHandle) -> bool {
        self.table().get(&handle.task_id).is_some_and(|t| {
            let ended_naturally = t.behaviour.lifetime.is_some_and(|life| Instant::now() >= t.started + life);
            t.exit.borrow().is_none() && !ended_naturally
        })
    }

    fn signal(&self, handle: &TaskHandle, signal: StopSignal) -> Result<(), DriverError> {
        let table = self.table();
        let task = table.get(&handle.task_id).ok_or_else(|| DriverError::NotRunning(handle.task_id.clone()))?;
        match signal {
            StopSignal::Terminate if task.behaviour.ignores_term => {}
            StopSignal::Terminate => finish(task, TaskExit::signalled(15)),
            StopSignal::Kill => finish(task, TaskExit::signalled(9)),
        }
        Ok(())
    }

    fn cleanup(&self, handle: &TaskHandle) {
        let mut table = self.table();
        if table.get(&handle.task_id).is_some_and(|t| t.exit.borrow().is_some()) {
            table.remove(&handle.task_id);
        }
    }

    fn reap_orphans(&self, keep: &BTreeSet<String>) -> Vec<String> {
        let mut table = self.table();
        let orphans: Vec<String> = table.keys().filter(|id| !keep.contains(*id)).cloned().collect();
        for id in &orphans {
            if let Some(task) = table.remove(id) {
                finish(&task, TaskExit::signalled(9));
            }
        }
        orphans
    }
}
