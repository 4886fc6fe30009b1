//! Native task drivers: the isolating driver (root: namespaces and cgroups) and the plain
//! driver (no root: the same process handling without isolation), their shim, and
//! [`detect`], which picks one for the host and says why.
//!
//! # How a task runs
//!
//! ```text
//! agent ──exec──▶ shim = supervisor (own session, host namespaces, no cgroup)
//!                   │  copies stdout/stderr into the sandbox, rotating;
//!                   │  writes <run_dir>/leader, then <run_dir>/exit
//!                   └─fork─▶ init = pid 1 of a new pid namespace, in the task's cgroups,
//!                            own mount (fresh /proc), uts and ipc namespaces
//!                            └─exec─▶ the task's command (`sh -c` or argv)
//! ```
//!
//! The plain driver has no init: the command is the supervisor's child and leads its own
//! process group. Either way a [`TaskHandle`] names the supervisor by pid and start time, and
//! everything else a later agent process needs is in the run directory and the handle's
//! cgroup list, so `wait`, `is_running`, `signal` and `cleanup` work on handles from an
//! earlier agent process. `wait` watches the supervisor through a pidfd registered with the
//! tokio reactor, so it must be polled on a runtime with I/O enabled (the agent's is); the
//! other methods are blocking calls bounded by the configured timeouts. See `shim.rs` for the
//! processes, `cgroups.rs` for the cgroup work and [`core`] for the pure parts.
//!
//! # The shim binary
//!
//! The agent is multithreaded, and namespaces are made in a fresh single-threaded process,
//! so the driver execs [`IsolationConfig::shim_program`]: the flotilla binary, whose `main`
//! calls [`task_init_main`] for the hidden [`TASK_INIT_SUBCOMMAND`] before it starts any
//! runtime — or the same entry point alone in the small `flotilla-task-init` binary
//! ([`SHIM_BINARY`], preferred by [`IsolationConfig::for_flotilla_binary`] when installed
//! beside flotilla). Tests and benchmarks pass a built binary's path.

pub mod core;

mod cgroups;
mod launch;
mod process;
mod shim;

use std::collections::BTreeSet;
use std::fs;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use tracing::{debug, info, warn};

use self::cgroups::Cgroups;
pub use self::core::records::TASK_INIT_SUBCOMMAND;
use self::core::records::{EXIT_FILE, LEADER_FILE, SHIM_LOG_FILE, check_task_id, decode_exit, with_oom};
use self::launch::ShimPlan;
pub use self::shim::task_init_main;
use super::{
    DriverError, DriverFuture, IsolationReport, LaunchSpec, LogRotation, StopSignal, TaskCommand, TaskDriver, TaskExit,
    TaskHandle,
};

/// The shim-only binary's name (`src/bin/flotilla-task-init.rs` in the flotilla package).
pub const SHIM_BINARY: &str = "flotilla-task-init";

/// The longest hostname the kernel accepts.
const MAX_HOSTNAME: usize = 64;

/// How the native drivers start their shim and where their cgroups live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsolationConfig {
    /// The program exec'd as the task shim: a flotilla binary (its `main` hands
    /// [`TASK_INIT_SUBCOMMAND`] to [`task_init_main`] before anything else).
    pub shim_program: PathBuf,
    /// The arguments before the shim's own, normally `["__task-init"]`.
    pub shim_args: Vec<String>,
    /// The directory, relative to each cgroup hierarchy's mountpoint, that holds one
    /// directory per task (`/sys/fs/cgroup/memory/<root>/<task id>`). It also tells the
    /// shims of different drivers apart, so `reap_orphans` only touches this driver's
    /// tasks: give each agent on a host its own.
    pub cgroup_root: String,
    /// How long a launch waits for the shim to report that the command started.
    pub launch_timeout: Duration,
    /// How long a kill or a cleanup waits for the kernel to empty and remove cgroups.
    pub kill_timeout: Duration,
    /// Treat a hybrid host as pure cgroup v1: ignore its cgroup2 hierarchy, so a kill uses
    /// the v1 freezer instead of `cgroup.kill` (for testing that path on a hybrid host).
    pub ignore_unified: bool,
}

impl IsolationConfig {
    /// A configuration with the default root (`flotilla`) and timeouts.
    pub fn new(shim_program: impl Into<PathBuf>, shim_args: Vec<String>) -> IsolationConfig {
        IsolationConfig {
            shim_program: shim_program.into(),
            shim_args,
            cgroup_root: "flotilla".to_owned(),
            launch_timeout: Duration::from_secs(10),
            kill_timeout: Duration::from_secs(10),
            ignore_unified: false,
        }
    }

    /// For the flotilla binary itself: the small `flotilla-task-init` binary installed
    /// beside it when there is one (it execs in half the CPU time of the full binary, which
    /// matters at hundreds of launches a second; it must come from the same build), else
    /// `/proc/self/exe __task-init`, which is the running binary even after an upgrade
    /// replaced it on disk.
    pub fn for_flotilla_binary() -> IsolationConfig {
        let beside = std::env::current_exe().ok().and_then(|exe| Some(exe.parent()?.join(SHIM_BINARY)));
        match beside.filter(|path| path.is_file()) {
            Some(shim) => IsolationConfig::new(shim, Vec::new()),
            None => IsolationConfig::new("/proc/self/exe", vec![TASK_INIT_SUBCOMMAND.to_owned()]),
        }
    }
}

/// Picks the isolating driver when this process can isolate (root, writable cgroups with
/// cpu and memory controllers, and a probe task that really gets its namespaces — a
/// container may deny `unshare` even to root), the plain driver otherwise; logs which and
/// why.
pub fn detect(config: IsolationConfig) -> Arc<dyn TaskDriver> {
    match IsolatingDriver::new(config.clone()).and_then(|driver| driver.probe().map(|()| driver)) {
        Ok(driver) => Arc::new(driver),
        Err(why) => Arc::new(PlainDriver::new(config, &why)),
    }
}

/// Tasks in their own pid, mount, uts and ipc namespaces under cgroup cpu and memory limits.
pub struct IsolatingDriver {
    engine: Engine,
    cgroups: Cgroups,
}

impl IsolatingDriver {
    /// Prepares the cgroup root (creating it, and on cgroup v2 delegating cpu and memory to
    /// it); fails with the reason when this process cannot isolate tasks.
    pub fn new(config: IsolationConfig) -> Result<IsolatingDriver, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("the agent is not running as root, which namespaces and cgroups need".to_owned());
        }
        let cgroups = Cgroups::prepare(&config.cgroup_root, config.ignore_unified)?;
        info!(root = %config.cgroup_root, provided = ?cgroups.provided(), missing = ?cgroups.missing(), "isolating task driver ready");
        Ok(IsolatingDriver { engine: Engine { config, cgroups: Some(cgroups.clone()) }, cgroups })
    }
}

impl IsolatingDriver {
    fn config(&self) -> &IsolationConfig {
        &self.engine.config
    }

    /// Launches `true` in a scratch directory and cleans it up: proves the shim runs and the
    /// namespaces and cgroups can be made here.
    pub fn probe(&self) -> Result<(), String> {
        // One per probe, as drivers of different roots may probe at once in one process.
        static PROBES: AtomicU64 = AtomicU64::new(0);
        let probe = PROBES.fetch_add(1, Ordering::Relaxed);
        let scratch = std::env::temp_dir().join(format!("flotilla-probe-{}-{probe}", std::process::id()));
        let (sandbox, run_dir) = (scratch.join("sandbox"), scratch.join("run"));
        let made = fs::create_dir_all(&sandbox).and_then(|()| fs::create_dir_all(&run_dir));
        made.map_err(|e| format!("cannot create the probe directory {} ({e})", scratch.display()))?;
        let spec = LaunchSpec {
            task_id: format!("probe-{}-{probe}", std::process::id()),
            command: TaskCommand { shell: false, value: "/bin/true".to_owned(), arguments: vec!["true".to_owned()] },
            env: Default::default(),
            sandbox,
            run_dir,
            cpu_millis: 100,
            mem_bytes: 64 << 20,
            hostname: "probe".to_owned(),
            logs: LogRotation::default(),
        };
        let launched = self.engine.launch(&spec);
        if let Ok(handle) = &launched {
            // `true` ends at once; its supervisor follows after writing the exit record.
            process::wait_gone(&[(supervisor_pid(handle), handle.start_ticks)], self.config().launch_timeout);
            self.engine.cleanup(handle);
        }
        let _ = fs::remove_dir_all(&scratch);
        launched.map(|_| ()).map_err(|e| format!("a probe task could not be isolated: {e}"))
    }
}

/// Tasks as plain processes: sandbox, environment, captured and rotated output, process
/// group kill, exit records and re-adoption, but no namespaces and no cgroups.
pub struct PlainDriver {
    engine: Engine,
    missing: Vec<String>,
}

impl PlainDriver {
    /// `why` says why the isolating driver is not used (e.g. "not running as root"); the
    /// driver logs what that leaves missing, once.
    pub fn new(config: IsolationConfig, why: &str) -> PlainDriver {
        let missing = vec![
            format!("pid, mount, uts and ipc namespaces: {why}"),
            format!("cpu and memory limits: {why}"),
            "OOM kills: not detected without a memory cgroup".to_owned(),
            "tree kill: by process group only, so a process that leaves the task's group survives a kill".to_owned(),
        ];
        warn!(?missing, "plain task driver: tasks run without isolation");
        PlainDriver { engine: Engine { config, cgroups: None }, missing }
    }
}

/// Forwards the [`TaskDriver`] methods both drivers share to their [`Engine`].
macro_rules! native_driver {
    ($driver:ty, $name:literal, $report:expr) => {
        impl TaskDriver for $driver {
            fn name(&self) -> &'static str {
                $name
            }

            fn isolation(&self) -> IsolationReport {
                ($report)(self)
            }

            fn launch(&self, spec: &LaunchSpec) -> Result<TaskHandle, DriverError> {
                self.engine.launch(spec)
            }

            fn wait(&self, handle: &TaskHandle) -> DriverFuture<TaskExit> {
                Engine::wait(handle)
            }

            fn is_running(&self, handle: &TaskHandle) -> bool {
                Engine::is_running(handle)
            }

            fn signal(&self, handle: &TaskHandle, signal: StopSignal) -> Result<(), DriverError> {
                self.engine.signal(handle, signal)
            }

            fn cleanup(&self, handle: &TaskHandle) {
                self.engine.cleanup(handle)
            }

            fn reap_orphans(&self, keep: &BTreeSet<String>) -> Vec<String> {
                self.engine.reap_orphans(keep)
            }
        }
    };
}

native_driver!(IsolatingDriver, "isolating", |driver: &IsolatingDriver| {
    let mut provided: Vec<String> = [
        "pid namespace (an init is pid 1, the task never)",
        "mount namespace (private propagation, its own /proc)",
        "uts namespace (the task's hostname)",
        "ipc namespace",
    ]
    .map(str::to_owned)
    .to_vec();
    provided.extend(driver.cgroups.provided());
    let mut missing = driver.cgroups.missing();
    missing.push("network namespace: tasks share the host's network (ports come from offers)".to_owned());
    IsolationReport { provided, missing }
});

native_driver!(PlainDriver, "plain", |driver: &PlainDriver| IsolationReport {
    provided: vec!["sandbox, environment, captured output, exit records and re-adoption".to_owned()],
    missing: driver.missing.clone(),
});

/// What both native drivers do; `cgroups` is `None` for the plain driver.
struct Engine {
    config: IsolationConfig,
    cgroups: Option<Cgroups>,
}

impl Engine {
    fn launch(&self, spec: &LaunchSpec) -> Result<TaskHandle, DriverError> {
        self.check(spec).map_err(DriverError::Launch)?;
        for stale in [EXIT_FILE, LEADER_FILE] {
            remove_file(&spec.run_dir.join(stale));
        }
        let cgroups = match &self.cgroups {
            Some(cgroups) => {
                cgroups.create(&spec.task_id, spec.cpu_millis, spec.mem_bytes).map_err(DriverError::Launch)?
            }
            None => Vec::new(),
        };
        let plan = ShimPlan { spec: spec.clone(), isolate: self.cgroups.is_some(), cgroups };
        match launch::start(&self.config, &plan) {
            Ok(started) => {
                debug!(task = %spec.task_id, pid = started.pid, cgroups = ?plan.cgroups, "task started");
                Ok(TaskHandle {
                    task_id: spec.task_id.clone(),
                    pid: u32::try_from(started.pid).unwrap_or(0),
                    start_ticks: started.start_ticks,
                    run_dir: spec.run_dir.clone(),
                    cgroups: plan.cgroups,
                })
            }
            Err(error) => {
                warn!(task = %spec.task_id, %error, "task launch failed");
                // A plain command may have started before the supervisor failed.
                if let Some(leader) = process::leader_record(&spec.run_dir) {
                    let _ = process::signal_leader(&leader, Signal::SIGKILL);
                }
                self.release_cgroups(&plan.cgroups);
                Err(error)
            }
        }
    }

    /// Refuses a spec the shim could not run, with what to fix.
    fn check(&self, spec: &LaunchSpec) -> Result<(), String> {
        check_task_id(&spec.task_id)?;
        for (what, dir) in [("sandbox", &spec.sandbox), ("run_dir", &spec.run_dir)] {
            if !dir.is_dir() {
                return Err(format!(
                    "the {what} {} is not a directory (the executor creates it before launch)",
                    dir.display()
                ));
            }
        }
        let hostname_ok = !spec.hostname.is_empty() && spec.hostname.len() <= MAX_HOSTNAME;
        if self.cgroups.is_some() && !hostname_ok {
            return Err(format!("hostname {:?} must be 1 to {MAX_HOSTNAME} bytes", spec.hostname));
        }
        Ok(())
    }

    fn wait(handle: &TaskHandle) -> DriverFuture<TaskExit> {
        let handle = handle.clone();
        Box::pin(async move {
            process::exited(supervisor_pid(&handle), handle.start_ticks).await;
            process::reap_child(supervisor_pid(&handle), handle.start_ticks);
            exit_of(&handle)
        })
    }

    fn is_running(handle: &TaskHandle) -> bool {
        process::is_alive(supervisor_pid(handle), handle.start_ticks)
    }

    fn signal(&self, handle: &TaskHandle, signal: StopSignal) -> Result<(), DriverError> {
        if !Engine::is_running(handle) {
            return Err(DriverError::NotRunning(handle.task_id.clone()));
        }
        let leader = process::find_leader(supervisor_pid(handle), handle.start_ticks, &handle.run_dir);
        if leader.is_none() && handle.cgroups.is_empty() {
            let where_ = handle.run_dir.display();
            return Err(DriverError::Io(format!("task {}: no leader record in {where_}", handle.task_id)));
        }
        if signal == StopSignal::Kill {
            cgroups::kill_all(&handle.cgroups, self.config.kill_timeout).map_err(DriverError::Io)?;
        }
        // No leader with cgroups: the init has just ended and the task with it.
        if let Some(leader) = leader {
            let number = if signal == StopSignal::Kill { Signal::SIGKILL } else { Signal::SIGTERM };
            process::signal_leader(&leader, number).map_err(|e| {
                DriverError::Io(format!("task {}: cannot signal pid {} ({e})", handle.task_id, leader.pid))
            })?;
        }
        info!(task = %handle.task_id, ?signal, "task signalled");
        Ok(())
    }

    fn cleanup(&self, handle: &TaskHandle) {
        if Engine::is_running(handle) {
            warn!(task = %handle.task_id, "cleanup of a task that still runs: killing it");
            if let Err(error) = self.signal(handle, StopSignal::Kill) {
                warn!(task = %handle.task_id, %error, "cannot kill the task");
            }
            process::kill_process(supervisor_pid(handle), handle.start_ticks);
            process::wait_gone(&[(supervisor_pid(handle), handle.start_ticks)], self.config.kill_timeout);
        }
        process::reap_child(supervisor_pid(handle), handle.start_ticks);
        self.release_cgroups(&handle.cgroups);
        for file in [EXIT_FILE, LEADER_FILE, SHIM_LOG_FILE] {
            remove_file(&handle.run_dir.join(file));
        }
        debug!(task = %handle.task_id, "task cleaned up");
    }

    /// Kills whatever is left in the cgroups and removes them.
    fn release_cgroups(&self, dirs: &[PathBuf]) {
        if dirs.is_empty() {
            return;
        }
        if let Err(error) = cgroups::kill_all(dirs, self.config.kill_timeout) {
            warn!(%error, "cannot empty the task's cgroups");
        }
        cgroups::remove(dirs, self.config.kill_timeout);
    }

    fn reap_orphans(&self, keep: &BTreeSet<String>) -> Vec<String> {
        let mut reaped = BTreeSet::new();
        let mut killed = Vec::new();
        for (pid, start_ticks, shim) in process::shims(&self.config.cgroup_root) {
            if keep.contains(&shim.task_id) {
                continue;
            }
            if let Some(leader) = process::find_leader(pid, start_ticks, &shim.run_dir) {
                let _ = process::signal_leader(&leader, Signal::SIGKILL);
            }
            process::kill_process(pid, start_ticks);
            killed.push((pid, start_ticks));
            reaped.insert(shim.task_id);
        }
        if !process::wait_gone(&killed, self.config.kill_timeout) {
            warn!(?killed, "orphan shims still alive after SIGKILL");
        }
        for (pid, start_ticks) in killed {
            process::reap_child(pid, start_ticks);
        }
        if let Some(cgroups) = &self.cgroups {
            for task in cgroups.list_tasks() {
                if !keep.contains(&task) {
                    self.release_cgroups(&cgroups.task_dirs(&task));
                    reaped.insert(task);
                }
            }
        }
        for task in &reaped {
            info!(%task, "orphan task killed and cleaned up");
        }
        reaped.into_iter().collect()
    }
}

fn supervisor_pid(handle: &TaskHandle) -> i32 {
    i32::try_from(handle.pid).unwrap_or(0)
}

/// The task's exit from its record; without one (the supervisor was killed) the task counts
/// as killed, and the OOM counter still tells a memory kill.
fn exit_of(handle: &TaskHandle) -> TaskExit {
    let record = fs::read_to_string(handle.run_dir.join(EXIT_FILE)).ok().and_then(|r| decode_exit(&r));
    record.unwrap_or_else(|| {
        let exit = TaskExit {
            message: format!("the task's supervisor (pid {}) ended without an exit record", handle.pid),
            ..TaskExit::signalled(Signal::SIGKILL as i32)
        };
        with_oom(exit, cgroups::oom_kills(&handle.cgroups) > 0)
    })
}

fn remove_file(path: &std::path::Path) {
    if let Err(error) = fs::remove_file(path)
        && error.kind() != ErrorKind::NotFound
    {
        warn!(path = %path.display(), %error, "cannot remove a run file");
    }
}
