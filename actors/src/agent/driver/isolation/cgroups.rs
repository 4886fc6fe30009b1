//! The cgroup file system work of the isolating driver, for v1, v2 and hybrid hosts.
//!
//! A task's cgroups are `<mount>/<root>/<task id>` in each hierarchy the driver uses:
//! - v1: `cpu`, `memory` and (when mounted) `freezer`, which the kill falls back on;
//! - hybrid: `cpu` and `memory` from v1, plus the cgroup2 hierarchy for its `cgroup.kill`
//!   and `cgroup.events` (no controller is needed for those);
//! - v2: the one directory, with `cpu` and `memory` enabled in `cgroup.subtree_control` of
//!   the mount and of every directory down to the root (the "no internal processes" rule
//!   means those directories never hold processes themselves).
//!
//! Everything after creation works from a task's directory list alone (what a
//! [`TaskHandle`](crate::agent::driver::TaskHandle) carries), by which files a directory has,
//! so a later agent process — or the task's shim — needs no layout to kill, read or remove.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tracing::{debug, warn};

use super::core::limits::{Controller, LimitWrite, v1_limits, v2_limits};
use super::core::mountinfo::{CgroupMode, CgroupMounts};
use super::core::procfs::{flat_keyed, parse_pids};
use super::core::records::{check_cgroup_root, check_task_id};

const PROCS: &str = "cgroup.procs";
const KILL: &str = "cgroup.kill";
const EVENTS: &str = "cgroup.events";
const FREEZER_STATE: &str = "freezer.state";

/// How often a kill or a removal re-checks a cgroup while it waits on the kernel.
const RECHECK: Duration = Duration::from_millis(1);

/// Which hierarchies the driver uses, and where they are mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Layout {
    V1 { cpu: PathBuf, memory: PathBuf, freezer: Option<PathBuf> },
    Hybrid { cpu: PathBuf, memory: PathBuf, unified: PathBuf },
    V2 { unified: PathBuf },
}

/// The driver's cgroups: a layout and the root every task directory sits under.
#[derive(Clone, Debug)]
pub(crate) struct Cgroups {
    layout: Layout,
    root: String,
    /// Whether the kernel has a swap limit file, so "no swap" is enforced.
    swap_limited: bool,
}

impl Cgroups {
    /// Reads the mount table, picks the hierarchies, creates the root directories (and on v2
    /// delegates `cpu` and `memory` down to them). `ignore_unified` treats a hybrid host as
    /// pure v1 (its kill then uses the freezer).
    pub(crate) fn prepare(root: &str, ignore_unified: bool) -> Result<Cgroups, String> {
        check_cgroup_root(root)?;
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo ({e}): is /proc mounted?"))?;
        let mut mounts = CgroupMounts::parse(&mountinfo);
        if ignore_unified && !mounts.v1.is_empty() {
            mounts.unified = None;
        }
        let layout = layout(&mounts)?;
        let cgroups = Cgroups { swap_limited: false, layout, root: root.to_owned() };
        for mount in cgroups.mounts() {
            create_dir_all(&mount.join(root))?;
        }
        if let Layout::V2 { unified } = &cgroups.layout {
            delegate_controllers(unified, root)?;
        }
        let swap_limited = match &cgroups.layout {
            Layout::V1 { memory, .. } | Layout::Hybrid { memory, .. } => {
                memory.join(root).join("memory.memsw.limit_in_bytes").exists()
            }
            // With swap accounting on, every non-root cgroup with the memory controller has
            // the swap files; the root directory (a child of the mount) is one.
            Layout::V2 { unified } => unified.join(root).join("memory.swap.current").exists(),
        };
        Ok(Cgroups { swap_limited, ..cgroups })
    }

    /// The mountpoints of the hierarchies in use, without repeats (v1 controllers may be
    /// co-mounted).
    fn mounts(&self) -> Vec<PathBuf> {
        let mut mounts: Vec<PathBuf> = Vec::new();
        let all: Vec<&PathBuf> = match &self.layout {
            Layout::V1 { cpu, memory, freezer } => {
                [Some(cpu), Some(memory), freezer.as_ref()].into_iter().flatten().collect()
            }
            Layout::Hybrid { cpu, memory, unified } => vec![cpu, memory, unified],
            Layout::V2 { unified } => vec![unified],
        };
        for mount in all {
            if !mounts.contains(mount) {
                mounts.push(mount.clone());
            }
        }
        mounts
    }

    /// The task's directories, one per hierarchy in use.
    pub(crate) fn task_dirs(&self, task_id: &str) -> Vec<PathBuf> {
        self.mounts().into_iter().map(|mount| mount.join(&self.root).join(task_id)).collect()
    }

    /// Creates the task's directories and writes its limits; on failure removes what it made.
    pub(crate) fn create(&self, task_id: &str, cpu_millis: u64, mem_bytes: u64) -> Result<Vec<PathBuf>, String> {
        check_task_id(task_id)?;
        let dirs = self.task_dirs(task_id);
        let made = dirs
            .iter()
            .try_for_each(|dir| make_task_dir(dir))
            .and_then(|()| self.write_limits(task_id, cpu_millis, mem_bytes));
        if let Err(error) = made {
            remove(&dirs, Duration::from_secs(1));
            return Err(error);
        }
        Ok(dirs)
    }

    fn write_limits(&self, task_id: &str, cpu_millis: u64, mem_bytes: u64) -> Result<(), String> {
        let (writes, dir_of): (Vec<LimitWrite>, Box<dyn Fn(Controller) -> PathBuf>) = match &self.layout {
            Layout::V1 { cpu, memory, .. } | Layout::Hybrid { cpu, memory, .. } => {
                let (cpu, memory) = (cpu.join(&self.root).join(task_id), memory.join(&self.root).join(task_id));
                let dir_of = move |controller| if controller == Controller::Cpu { cpu.clone() } else { memory.clone() };
                (v1_limits(cpu_millis, mem_bytes), Box::new(dir_of))
            }
            Layout::V2 { unified } => {
                let dir = unified.join(&self.root).join(task_id);
                (v2_limits(cpu_millis, mem_bytes), Box::new(move |_| dir.clone()))
            }
        };
        for write in writes {
            let path = dir_of(write.controller).join(write.file);
            if !write.required && !path.exists() {
                continue;
            }
            fs::write(&path, &write.value)
                .map_err(|e| format!("cannot write {} to {} ({e})", write.value, path.display()))?;
        }
        Ok(())
    }

    /// The ids of every task directory under the root, in any hierarchy in use.
    pub(crate) fn list_tasks(&self) -> BTreeSet<String> {
        let mut tasks = BTreeSet::new();
        for mount in self.mounts() {
            let Ok(entries) = fs::read_dir(mount.join(&self.root)) else { continue };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    tasks.insert(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        tasks
    }

    /// What these cgroups provide, for the isolation report.
    pub(crate) fn provided(&self) -> Vec<String> {
        let swap = if self.swap_limited { ", no swap" } else { "" };
        match &self.layout {
            Layout::V1 { freezer, .. } => {
                let kill = if freezer.is_some() { "freezer + SIGKILL loop" } else { "SIGKILL loop over cgroup.procs" };
                vec![
                    "cpu limit: cgroup v1 (cfs quota + shares)".to_owned(),
                    format!("memory limit: cgroup v1{swap}, OOM kills reported"),
                    format!("tree kill: cgroup v1 {kill}"),
                ]
            }
            Layout::Hybrid { .. } => vec![
                "cpu limit: cgroup v1 (cfs quota + shares)".to_owned(),
                format!("memory limit: cgroup v1{swap}, OOM kills reported"),
                "tree kill: cgroup.kill on the hybrid host's cgroup2 hierarchy".to_owned(),
            ],
            Layout::V2 { .. } => vec![
                "cpu limit: cgroup v2 (cpu.max + cpu.weight)".to_owned(),
                format!("memory limit: cgroup v2{swap}, OOM kills reported"),
                "tree kill: cgroup.kill".to_owned(),
            ],
        }
    }

    /// What these cgroups lack, for the isolation report.
    pub(crate) fn missing(&self) -> Vec<String> {
        let mut missing = Vec::new();
        if !self.swap_limited {
            missing.push("swap limit: the kernel has no swap accounting (boot with swapaccount=1), so a task may swap beyond its memory limit".to_owned());
        }
        if let Layout::V1 { freezer: None, .. } = &self.layout {
            missing.push("freezer: no v1 freezer hierarchy, so a forking task may race the SIGKILL loop".to_owned());
        }
        missing
    }
}

/// The hierarchies to use for a host's mounts, or why there are none usable.
fn layout(mounts: &CgroupMounts) -> Result<Layout, String> {
    let v1 = |name: &str| {
        mounts
            .v1
            .get(name)
            .cloned()
            .ok_or_else(|| format!("no v1 '{name}' controller is mounted (see /proc/self/mountinfo)"))
    };
    match mounts.mode() {
        None => Err("no cgroup file system is mounted (see /proc/self/mountinfo)".to_owned()),
        Some(CgroupMode::V1) => {
            Ok(Layout::V1 { cpu: v1("cpu")?, memory: v1("memory")?, freezer: mounts.v1.get("freezer").cloned() })
        }
        Some(CgroupMode::Hybrid) => Ok(Layout::Hybrid {
            cpu: v1("cpu")?,
            memory: v1("memory")?,
            unified: mounts.unified.clone().unwrap_or_default(),
        }),
        Some(CgroupMode::V2) => Ok(Layout::V2 { unified: mounts.unified.clone().unwrap_or_default() }),
    }
}

fn create_dir_all(dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| {
        format!("cannot create cgroup {} ({e}): run the agent as root with cgroups mounted read-write", dir.display())
    })
}

/// v2: enables `cpu` and `memory` for the children of the mount and of each directory down
/// to the root, so task directories get the controllers' files.
fn delegate_controllers(unified: &Path, root: &str) -> Result<(), String> {
    let available = fs::read_to_string(unified.join("cgroup.controllers")).unwrap_or_default();
    for controller in ["cpu", "memory"] {
        if !available.split_whitespace().any(|c| c == controller) {
            return Err(format!("the cgroup2 hierarchy at {} has no '{controller}' controller", unified.display()));
        }
    }
    let mut dir = unified.to_path_buf();
    let levels = std::iter::once(String::new()).chain(root.split('/').map(str::to_owned));
    for level in levels {
        dir.push(level);
        let control = dir.join("cgroup.subtree_control");
        fs::write(&control, "+cpu +memory").map_err(|e| {
            format!("cannot enable cpu and memory in {} ({e}): the directory must hold no processes (cgroup v2's no-internal-process rule)", control.display())
        })?;
    }
    Ok(())
}

/// Makes a task directory; an existing one is reused only if it holds no process (a
/// leftover of a task whose cleanup did not finish).
fn make_task_dir(dir: &Path) -> Result<(), String> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists && procs(dir).is_empty() => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(format!(
            "cgroup {} already exists and holds processes: another task of this id is running",
            dir.display()
        )),
        Err(e) => Err(format!("cannot create cgroup {} ({e})", dir.display())),
    }
}

/// Moves a process (and so its future children) into every directory.
pub(crate) fn join(dirs: &[PathBuf], pid: i32) -> Result<(), String> {
    for dir in dirs {
        let path = dir.join(PROCS);
        fs::write(&path, pid.to_string())
            .map_err(|e| format!("cannot move pid {pid} into {} ({e})", path.display()))?;
    }
    Ok(())
}

/// The pids in a cgroup directory (none if it is gone).
pub(crate) fn procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join(PROCS)).map(|s| parse_pids(&s)).unwrap_or_default()
}

/// Whether any directory still holds a process.
fn populated(dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|dir| match fs::read_to_string(dir.join(EVENTS)) {
        Ok(events) => flat_keyed(&events, "populated") != Some(0),
        Err(_) => !procs(dir).is_empty(),
    })
}

/// How many times the OOM killer killed a process in these directories (v1
/// `memory.oom_control` or v2 `memory.events`). Read it before the directories are removed.
pub(crate) fn oom_kills(dirs: &[PathBuf]) -> u64 {
    dirs.iter()
        .flat_map(|dir| ["memory.events", "memory.oom_control"].map(|file| dir.join(file)))
        .filter_map(|path| fs::read_to_string(path).ok())
        .filter_map(|content| flat_keyed(&content, "oom_kill"))
        .max()
        .unwrap_or(0)
}

/// Kills every process in the directories and waits (up to `timeout`) until none is left:
/// `cgroup.kill` where a directory has it (v2, hybrid), otherwise freeze, SIGKILL every pid,
/// thaw, until empty (v1), so a forking task cannot outrun the kill.
pub(crate) fn kill_all(dirs: &[PathBuf], timeout: Duration) -> Result<(), String> {
    if !populated(dirs) {
        return Ok(());
    }
    let deadline = Instant::now() + timeout;
    if let Some(dir) = dirs.iter().find(|dir| dir.join(KILL).exists()) {
        fs::write(dir.join(KILL), "1").map_err(|e| format!("cannot write {} ({e})", dir.join(KILL).display()))?;
    }
    let freezer = dirs.iter().find(|dir| dir.join(FREEZER_STATE).exists());
    while populated(dirs) {
        if Instant::now() >= deadline {
            return Err(format!("processes are still alive in {} after {timeout:?}", show(dirs)));
        }
        if !dirs.iter().any(|dir| dir.join(KILL).exists()) {
            kill_round(dirs, freezer.map(PathBuf::as_path), deadline);
        }
        std::thread::sleep(RECHECK);
    }
    Ok(())
}

/// One v1 round: freeze (if there is a freezer), SIGKILL every listed pid, thaw.
fn kill_round(dirs: &[PathBuf], freezer: Option<&Path>, deadline: Instant) {
    if let Some(freezer) = freezer {
        set_freezer(freezer, "FROZEN", deadline);
    }
    for pid in dirs.iter().flat_map(|dir| procs(dir)).collect::<BTreeSet<_>>() {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    if let Some(freezer) = freezer {
        // Frozen processes die only once thawed.
        set_freezer(freezer, "THAWED", deadline);
    }
}

/// Writes a freezer state and waits (until the deadline) for the cgroup to reach it.
fn set_freezer(dir: &Path, state: &str, deadline: Instant) {
    let path = dir.join(FREEZER_STATE);
    if let Err(error) = fs::write(&path, state) {
        warn!(path = %path.display(), %error, "cannot set the freezer state");
        return;
    }
    while Instant::now() < deadline {
        match fs::read_to_string(&path) {
            Ok(now) if now.trim() != state => std::thread::sleep(RECHECK),
            _ => return,
        }
    }
}

/// Removes the directories, retrying while the kernel still reports them busy (exiting
/// processes leave a cgroup a moment after they die); gives up after `timeout`.
pub(crate) fn remove(dirs: &[PathBuf], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    for dir in dirs {
        loop {
            match fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                Err(e) if is_busy(&e) && Instant::now() < deadline => std::thread::sleep(RECHECK),
                Err(error) => {
                    warn!(dir = %dir.display(), %error, "cannot remove the task's cgroup");
                    break;
                }
            }
        }
        debug!(dir = %dir.display(), "cgroup removed");
    }
}

fn is_busy(error: &io::Error) -> bool {
    error.kind() == ErrorKind::ResourceBusy || error.raw_os_error() == Some(nix::libc::EBUSY)
}

fn show(dirs: &[PathBuf]) -> String {
    dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
}
