//! The small text records the driver and its shim exchange: files in the task's run
//! directory, the shim's command line and the lines of its launch handshake. Text, so an
//! operator can read them with `cat`.

use std::path::PathBuf;

use crate::agent::driver::TaskExit;

/// The exit record, written by the shim (temp file + rename) when the task has ended.
pub const EXIT_FILE: &str = "exit";
/// The leader record: the task's top process that the driver signals.
pub const LEADER_FILE: &str = "leader";
/// The shim's own diagnostics (its stderr).
pub const SHIM_LOG_FILE: &str = "shim.log";

/// The hidden subcommand the flotilla binary dispatches to [`crate::agent::driver::isolation::task_init_main`].
pub const TASK_INIT_SUBCOMMAND: &str = "__task-init";

const ROOT_FLAG: &str = "--driver-root";
const TASK_FLAG: &str = "--task";
const RUN_DIR_FLAG: &str = "--run-dir";

/// A task's exit as the exit record stores it: `code N` or `signal N`, then `oom 0|1`.
pub fn encode_exit(exit: &TaskExit) -> String {
    let how = match (exit.code, exit.signal) {
        (Some(code), _) => format!("code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "signal 9".to_owned(),
    };
    format!("{how}\noom {}\n", u8::from(exit.oom_killed))
}

/// Reads an exit record back; `None` if it is not one.
pub fn decode_exit(record: &str) -> Option<TaskExit> {
    let mut exit = None;
    let mut oom = false;
    for line in record.lines() {
        match line.split_once(' ')? {
            ("code", code) => exit = Some(TaskExit::exited(code.parse().ok()?)),
            ("signal", signal) => exit = Some(TaskExit::signalled(signal.parse().ok()?)),
            ("oom", flag) => oom = flag == "1",
            _ => return None,
        }
    }
    exit.map(|exit| with_oom(exit, oom))
}

/// Marks an exit as an OOM kill (the message says so) when `oom` is set.
pub fn with_oom(exit: TaskExit, oom: bool) -> TaskExit {
    if !oom {
        return exit;
    }
    let message = format!("Memory limit exceeded: the OOM killer ended the task ({})", exit.message);
    TaskExit { oom_killed: true, message, ..exit }
}

/// What the task's leader is, which decides how it is signalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaderKind {
    /// The init (pid 1) of the task's pid namespace: SIGTERM to it is forwarded to every
    /// process of the namespace; its death kills them all.
    Init,
    /// The task's command, leader of its own process group: signals go to the group.
    Group,
}

/// The leader record: which host process to signal, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderRecord {
    pub kind: LeaderKind,
    pub pid: i32,
    pub start_ticks: u64,
}

impl LeaderRecord {
    pub fn encode(&self) -> String {
        let kind = match self.kind {
            LeaderKind::Init => "init",
            LeaderKind::Group => "group",
        };
        format!("{kind} {} {}\n", self.pid, self.start_ticks)
    }

    pub fn decode(record: &str) -> Option<LeaderRecord> {
        let mut fields = record.split_whitespace();
        let kind = match fields.next()? {
            "init" => LeaderKind::Init,
            "group" => LeaderKind::Group,
            _ => return None,
        };
        let pid = fields.next()?.parse().ok().filter(|pid| *pid > 0)?;
        let start_ticks = fields.next()?.parse().ok()?;
        Some(LeaderRecord { kind, pid, start_ticks })
    }
}

/// The shim's own arguments (after the program and the configured leading arguments). They
/// are on its command line, not only in its plan, so that a later agent finds its shims by
/// scanning `/proc` (`reap_orphans`), and `ps` shows which task a shim runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShimArgs {
    /// The driver's cgroup root name, which also tells apart the shims of two drivers.
    pub driver_root: String,
    pub task_id: String,
    pub run_dir: PathBuf,
}

impl ShimArgs {
    pub fn to_args(&self) -> Vec<String> {
        vec![
            ROOT_FLAG.to_owned(),
            self.driver_root.clone(),
            TASK_FLAG.to_owned(),
            self.task_id.clone(),
            RUN_DIR_FLAG.to_owned(),
            self.run_dir.to_string_lossy().into_owned(),
        ]
    }

    /// Finds the shim arguments in an argument list: the three flags in order, anywhere
    /// (the leading arguments are the configuration's).
    pub fn find(args: &[String]) -> Option<ShimArgs> {
        let start = args.iter().position(|arg| arg == ROOT_FLAG)?;
        match &args[start..] {
            [_, root, task_flag, task, run_flag, run_dir, ..] if task_flag == TASK_FLAG && run_flag == RUN_DIR_FLAG => {
                Some(ShimArgs { driver_root: root.clone(), task_id: task.clone(), run_dir: PathBuf::from(run_dir) })
            }
            _ => None,
        }
    }
}

/// One line of the launch handshake, written by the shim on its stdout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handshake {
    /// The task's command has started; the supervisor's pid and start time.
    Ready { pid: i32, start_ticks: u64 },
    /// The task could not be started, and why.
    Error(String),
}

impl Handshake {
    pub fn encode(&self) -> String {
        match self {
            Handshake::Ready { pid, start_ticks } => format!("ready {pid} {start_ticks}\n"),
            // One line: a message's own line breaks would split it.
            Handshake::Error(message) => format!("error {}\n", message.replace('\n', " ")),
        }
    }

    pub fn decode(line: &str) -> Option<Handshake> {
        let (kind, rest) = line.trim_end_matches('\n').split_once(' ')?;
        match kind {
            "ready" => {
                let (pid, ticks) = rest.split_once(' ')?;
                Some(Handshake::Ready { pid: pid.parse().ok()?, start_ticks: ticks.parse().ok()? })
            }
            "error" => Some(Handshake::Error(rest.to_owned())),
            _ => None,
        }
    }
}

/// Checks that a task id can name a cgroup directory and a shim argument: not empty, at most
/// 200 bytes, no `/`, no NUL or other control character, not `.` or `..`.
pub fn check_task_id(task_id: &str) -> Result<(), String> {
    let bad = task_id.is_empty()
        || task_id.len() > 200
        || task_id == "."
        || task_id == ".."
        || task_id.chars().any(|c| c == '/' || c.is_control());
    if bad {
        return Err(format!(
            "task id {task_id:?} cannot name a cgroup: use 1 to 200 bytes without '/' or control characters, not '.' or '..'"
        ));
    }
    Ok(())
}

/// Checks a driver cgroup root: a relative path of one or more components, none of them
/// empty, `.` or `..`.
pub fn check_cgroup_root(root: &str) -> Result<(), String> {
    let bad = root.is_empty()
        || root.starts_with('/')
        || root
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == ".." || part.chars().any(char::is_control));
    if bad {
        return Err(format!(
            "cgroup root {root:?} must be a relative path such as \"flotilla\" or \"flotilla/agent-1\""
        ));
    }
    Ok(())
}
